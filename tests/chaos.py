"""Chaos at load (issue 15): `kill -9` and restart each process of the streaming path while a fleet streams.

    p2p fleet ──▶ p2p proxy ──▶ p2p daemon (state.path) ──▶ p2p proxy ─┬─▶ witness (a SUB in this process)
                                                                       ├─▶ p2p record (killed)
                                                                       └─▶ a small subscriber process (killed)

Real processes on ipc:// sockets, each with a log file. Once every device is known, a sample is calibrated
(`calibrate` on the control socket); then the daemon, the proxy, the subscriber and the recorder are each killed
with SIGKILL and started again at once, in turn, `kills_each` times. Measured (`run`): for each kill, the time from
the restart to the first estimate seen again — by the witness for the daemon and the proxy, by the restarted process
itself for the subscriber (its first estimate) and the recorder (its first row) —, and how long until every device
was back; afterwards, the calibrated devices' estimates of each later daemon epoch that are not `calibrated: true`;
the recorder's rows against the witness's estimates over each recorder up-interval, matched on (device, epoch,
seq), each miss placed (before its first row, within its last flush before a kill -9, or elsewhere); any (device,
epoch, seq) seen twice; any device that did not come back. `check` states what must hold; tests/test_chaos.py runs
it small, benchmarks/chaos.py at full size (1,000 devices, each role killed twice).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zmq
from zmq_helpers import ROOT, Subscriber, request

from p2p_stream.errors import ProtocolError
from p2p_stream.wire import probe
from p2p_stream.wire.protocol import decode_estimate

ROLES = ("daemon", "proxy", "subscriber", "recorder")  # the order they are killed in, each round
WITNESSED = ("daemon", "proxy")  # their stream's return is seen by the witness; the others' by themselves
ADDRESSES = ("wearables", "shards", "estimates", "subscribers", "control")

# The killed subscriber: as small as a client can be (no p2p import, so it starts in a fraction of a second). It
# prints one JSON line at its first estimate, then its count once a second, each flushed (a kill -9 loses nothing).
SUBSCRIBER = """
import json, sys, time, msgpack, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"sbp.")
sub.connect(sys.argv[1])
n, next_report = 0, time.monotonic() + 1.0
while True:
    if sub.poll(200):
        e = msgpack.unpackb(sub.recv_multipart()[1])
        n += 1
        if n == 1:
            print(json.dumps({"first": time.time(), "device": e["device"], "epoch": e.get("epoch"),
                              "seq": e["seq"]}), flush=True)
    if time.monotonic() >= next_report:
        print(json.dumps({"t": time.time(), "estimates": n}), flush=True)
        next_report += 1.0
"""


class ChaosError(RuntimeError):
    """A process of the run could not start, or died unasked, or the stream never came back."""


@dataclass
class ChaosConfig:
    devices: int = 1000  # wearables in the fleet (sim00000 …), 125 Hz, 0.2 s per message
    kills_each: int = 2  # kill -9 + restart of each role, in turn
    spacing_s: float = 25.0  # from one kill to the next at least (longer if the stream is not back by then)
    settle_s: float = 3.0  # and at least this long after the previous kill's stream was back (all devices)
    calibrate: int = 50  # devices given a cuff reading once they are known (spread over the fleet)
    window_s: float = 10.0  # the daemon's window …
    hop_s: float = 2.0  # … and hop
    flush_s: float = 0.5  # the recorder's --flush-s
    tail_slack_s: float = 0.5  # a kill -9 may lose the last flush_s + this (ZeroMQ's queue, the recorder's poll)
    start_timeout_s: float = 120.0  # for the daemon to answer ping (torch, the model) and for every device to show
    back_timeout_s: float = 90.0  # for the stream (every device) to come back after a restart
    final_s: float = 0.0  # after the last kill, keep streaming this long (at least settle_s) before stopping
    seed: int = 0


@dataclass
class Incarnation:
    started: float  # time.time() just before the process was started
    log: str
    ended: float | None = None  # killed (or stopped at the end)
    killed: bool = False  # by SIGKILL (not the graceful stop at the end)


class Role:
    """One process of the path, restartable; each incarnation logs to its own file."""

    def __init__(self, name: str, cmd: list[str], logs: Path) -> None:
        self.name, self.cmd, self.logs = name, cmd, logs
        self.proc: subprocess.Popen | None = None
        self.incarnations: list[Incarnation] = []

    def start(self) -> Incarnation:
        log = self.logs / f"{self.name}-{len(self.incarnations)}.log"
        inc = Incarnation(time.time(), str(log))
        with open(log, "w") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        self.incarnations.append(inc)
        return inc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fail(self, what: str) -> ChaosError:
        tail = Path(self.incarnations[-1].log).read_text()[-2000:] if self.incarnations else ""
        rc = None if self.proc is None else self.proc.poll()
        return ChaosError(f"{self.name} {what} (exit status {rc}); its log {self.incarnations[-1].log} ends:\n{tail}")

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise self.fail("had died before it was to be killed")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.incarnations[-1].ended, self.incarnations[-1].killed = time.time(), True

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; its exit status (None: had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            code = None
        self.incarnations[-1].ended = time.time()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Witness(threading.Thread):
    """A SUB on the proxy's subscriber side, in this process, never killed: (receipt, device, epoch, seq, ok,
    calibrated, reason, t) for every estimate, and the receipt time of every heartbeat."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber(address)
        self.sub.sock.setsockopt(zmq.SUBSCRIBE, b"status")
        self.got: list[tuple] = []
        self.devices: dict[str, int] = defaultdict(int)  # ok estimates per device
        self.beats: list[float] = []
        self.malformed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        sock = self.sub.sock
        while not self.stopping.is_set():
            if not sock.poll(100):
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time()
                if frames[0] == b"status":
                    self.beats.append(now)
                    continue
                try:
                    e = decode_estimate(frames)
                except ProtocolError:
                    self.malformed += 1
                    continue
                self.got.append((now, e["device"], e.get("epoch"), e["seq"], e["ok"], e.get("calibrated"),
                                 e.get("reason"), e["t"]))  # fmt: skip
                if e["ok"]:
                    self.devices[e["device"]] += 1

    def since(self, t: float, start: int = 0) -> int:
        """Index of the first estimate received at or after `t` (searching from `start`), len(got) if none yet."""
        got = self.got
        i = start
        while i < len(got) and got[i][0] < t:
            i += 1
        return i

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.sub.close()


def calibration_sample(devices: int, k: int) -> list[str]:
    """`k` device ids spread evenly over the fleet's sim00000 … ids."""
    return [f"sim{i:05d}" for i in sorted({int(j) for j in np.linspace(0, devices - 1, min(k, devices))})]


def wait_until(what: str, done, timeout_s: float, watch: list[Role], poll_s: float = 0.1):
    """Poll `done()` until it returns something truthy (returned); ChaosError on timeout or when a role in
    `watch` has died meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = done()
        if value:
            return value
        for role in watch:
            if not role.alive():
                raise role.fail(f"died while waiting for {what}")
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class Chaos:
    """The processes, the witness and the kill schedule of one run; `run()` returns the measurements."""

    def __init__(self, config: ChaosConfig, folder: Path) -> None:
        self.c, self.folder = config, folder
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        self.ipc = tempfile.mkdtemp(prefix="p2pc")  # ipc paths must stay short
        a = self.a = {k: f"ipc://{self.ipc}/{k}" for k in ADDRESSES}
        self.db = folder / "recording.sqlite"
        self.state = folder / "state.sqlite"
        for stale in (self.db, self.state):  # a fresh run: the recording and the store start empty
            for suffix in ("", "-wal", "-shm"):
                Path(f"{stale}{suffix}").unlink(missing_ok=True)
        p2p = [sys.executable, "-m", "p2p_stream.tools.cli.main"]
        logs = folder / "logs"
        self.roles = {
            "proxy": Role("proxy", [*p2p, "proxy", "--wearables", a["wearables"], "--shards", a["shards"],
                                    "--estimates", a["estimates"], "--subscribers", a["subscribers"]], logs),
            "daemon": Role("daemon", [*p2p, "daemon", "--torch-device", "cpu", "--window-s", f"{config.window_s:g}",
                                      "--hop-s", f"{config.hop_s:g}", "--ingest", a["shards"],
                                      "--publish", a["estimates"], "--control", a["control"],
                                      "--set", "sockets.connect=true", "--set", f"state.path={self.state}"], logs),
            "recorder": Role("recorder", [*p2p, "record", "--estimates", a["subscribers"], "--db", str(self.db),
                                          "--flush-s", f"{config.flush_s:g}"], logs),
            "subscriber": Role("subscriber", [sys.executable, "-c", SUBSCRIBER, a["subscribers"]], logs),
            "fleet": Role("fleet", [*p2p, "fleet", "--devices", str(config.devices), "--ingest", a["wearables"],
                                    "--rates", "125", "--chunk-s", "0.2", "--seed", str(config.seed),
                                    "--wait-s", "60"], logs),
        }  # fmt: skip
        self.witness = Witness(a["subscribers"])
        self.kills: list[dict] = []
        self.calibrated: dict[str, bool] = {}  # device → `applied` (its reference formed at once)
        self.t0 = time.time()
        self.marks: dict[str, float] = {}

    def rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.t0, 3)

    def run(self) -> dict:
        try:
            self.start()
            self.calibrate()
            self.chaos()
            wait_until("the final settle", lambda: time.time() >= self.marks["last_back"] + max(self.c.final_s,
                       self.c.settle_s), 3600, list(self.roles.values()))  # fmt: skip
            self.marks["stop"] = time.time()
            stats = request(self.a["control"], {"cmd": "stats"}, timeout_s=10)
            self.stop()
        finally:
            for role in self.roles.values():
                role.kill()
            if self.witness.is_alive():
                self.witness.close()
            for leftover in Path(self.ipc).glob("*"):
                leftover.unlink(missing_ok=True)
            os.rmdir(self.ipc)
        return self.report(stats)

    def start(self) -> None:
        r = self.roles
        self.witness.start()
        r["proxy"].start()
        time.sleep(0.3)
        if not r["proxy"].alive():
            raise r["proxy"].fail("did not start")
        r["daemon"].start()
        if not probe.wait_ready(self.a["control"], self.c.start_timeout_s, r["daemon"].proc):
            raise r["daemon"].fail(f"did not answer ping within {self.c.start_timeout_s:.0f} s")
        r["recorder"].start()
        r["subscriber"].start()
        time.sleep(1.0)  # the daemon's subscription reaches the proxy, the subscribers join
        r["fleet"].start()
        self.marks["fleet"] = time.time()
        n = self.c.devices
        wait_until(f"all {n} devices' first estimate", lambda: len(self.witness.devices) >= n,
                   self.c.start_timeout_s, list(r.values()))  # fmt: skip
        self.marks["known"] = time.time()

    def calibrate(self) -> None:
        """A cuff reading for each device of the sample once the daemon holds 3 of its estimates (the reference's
        minimum: the reading applies at once)."""
        sample = calibration_sample(self.c.devices, self.c.calibrate)
        wait_until("3 ok estimates of each device to calibrate", lambda: all(self.witness.devices[d] >= 3
                   for d in sample), self.c.start_timeout_s, list(self.roles.values()))  # fmt: skip
        for i, device in enumerate(sample):
            reply = request(self.a["control"], {"cmd": "calibrate", "device": device, "sbp": 110.0 + i % 40,
                                                "dbp": 70.0 + i % 20}, timeout_s=10)  # fmt: skip
            if reply.get("ok") is not True:
                raise ChaosError(f"calibrate {device} was refused: {reply}")
            self.calibrated[device] = bool(reply.get("applied"))
        self.marks["calibrated"] = time.time()

    def chaos(self) -> None:
        next_kill = time.time()
        for round_ in range(self.c.kills_each):
            for name in ROLES:
                watch = [r for r in self.roles.values() if r.name != name]
                wait_until(f"the time to kill the {name}", lambda at=next_kill: time.time() >= at, 3600, watch)
                event = self.kill_and_restart(name, round_)
                self.kills.append(event)
                back = self.t0 + (event.get("all_back_at") or event["back_at"])
                next_kill = max(self.t0 + event["killed_at"] + self.c.spacing_s, back + self.c.settle_s)
        self.marks["last_back"] = next_kill - self.c.settle_s if self.kills else time.time()

    def kill_and_restart(self, name: str, round_: int) -> dict:
        role, w = self.roles[name], self.witness
        watch = [r for r in self.roles.values() if r is not role]
        last_epoch = max((g[2] or 0 for g in w.got), default=0) if name == "daemon" else None
        role.kill9()
        killed = role.incarnations[-1].ended
        last_id = self.last_row_id() if name == "recorder" else 0  # the killed one commits nothing more
        restarted = role.start().started
        event = {"role": name, "round": round_, "killed_at": self.rel(killed), "restarted_at": self.rel(restarted)}
        if name == "daemon" and not probe.wait_ready(self.a["control"], self.c.start_timeout_s, role.proc):
            raise role.fail(f"did not answer ping within {self.c.start_timeout_s:.0f} s after its restart")
        event["ready_s"] = round(time.time() - restarted, 3) if name == "daemon" else None
        timeout = self.c.back_timeout_s
        if name in WITNESSED:
            event.update(by="witness", **self.witness_back(role, restarted, last_epoch, watch))
        elif name == "subscriber":
            first = wait_until("the restarted subscriber's first estimate", lambda: self.subscriber_first(role),
                               timeout, [role, *watch])  # fmt: skip
            event.update(by="subscriber", back_at=self.rel(first), back_s=round(first - restarted, 3))
        else:
            first = wait_until("the restarted recorder's first row", lambda: self.first_row_after(last_id),
                               timeout + self.c.flush_s, [role, *watch])  # fmt: skip
            event.update(by="recorder", back_at=self.rel(first), back_s=round(first - restarted, 3))
        return event

    def witness_back(self, role: Role, restarted: float, last_epoch: int | None, watch: list[Role]) -> dict:
        """After `role`'s restart, as the witness sees it: the first estimate of any kind (the path is back), the
        first ok one (blood pressure is back: `back_s`), and when every device had an ok estimate again. For the
        daemon only estimates of a new epoch count."""
        w, timeout = self.witness, self.c.back_timeout_s
        cursor = w.since(restarted)
        first: list[tuple | None] = [None, None]  # any, ok
        seen: set[str] = set()
        reasons: Counter[str] = Counter()

        def all_back() -> float | None:
            nonlocal cursor
            got, end = w.got, len(w.got)
            for g in got[cursor:end]:
                if g[0] < restarted or (last_epoch is not None and (g[2] or 0) <= last_epoch):
                    continue
                first[0] = first[0] or g
                if not g[4]:
                    reasons[g[6]] += 1
                    continue
                first[1] = first[1] or g
                seen.add(g[1])
                if len(seen) == self.c.devices:
                    return g[0]
            cursor = end
            return None

        try:
            all_at = wait_until(f"every device after the {role.name}'s restart", all_back, timeout, [role, *watch])
        except ChaosError:
            if not all(r.alive() for r in (role, *watch)):
                raise
            all_at = None  # reported: the devices that never came back
        if first[1] is None:
            epoch = "" if last_epoch is None else f" of a new epoch (the last was {last_epoch})"
            raise ChaosError(f"no ok estimate{epoch} within {timeout:.0f} s of the {role.name}'s restart")
        any_, ok = first

        def after(t: float | None) -> float | None:
            return None if t is None else round(t - restarted, 3)

        return {"path_back_s": after(any_[0]), "back_at": self.rel(ok[0]), "back_s": after(ok[0]),
                "all_back_at": self.rel(all_at), "all_back_s": after(all_at), "devices_back": len(seen),
                "epoch": ok[2], "not_ok_before_all_back": dict(reasons)}  # fmt: skip

    def subscriber_first(self, role: Role) -> float | None:
        for line in Path(role.incarnations[-1].log).read_text().splitlines():
            if line.startswith('{"first"'):
                return json.loads(line)["first"]
        return None

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)

    def last_row_id(self) -> int:
        with self._db() as db:
            return db.execute("SELECT coalesce(max(id), 0) FROM estimates").fetchone()[0]

    def first_row_after(self, row_id: int) -> float | None:
        """When the first row written after `row_id` was received (committed rows only: WAL readers see those)."""
        try:
            with self._db() as db:
                return db.execute("SELECT min(received) FROM estimates WHERE id > ?", (row_id,)).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return None

    def stop(self) -> None:
        """Fleet first; once the estimates stop, the recorder (SIGTERM: it commits what it has), then the rest."""
        r, w = self.roles, self.witness
        r["fleet"].stop()
        quiet = [time.time(), len(w.got)]

        def settled() -> bool:
            if len(w.got) != quiet[1]:
                quiet[:] = [time.time(), len(w.got)]
            return time.time() - quiet[0] > 2.0

        wait_until("the estimates to stop after the fleet", settled, 30, [])
        self.marks["quiet"] = time.time()
        self.stop_codes = {name: r[name].stop() for name in ("recorder", "subscriber", "daemon", "proxy")}
        w.close()

    def report(self, stats: dict) -> dict:
        rows = read_recording(self.db)
        runs = read_runs(self.db)
        got = self.witness.got
        report = {
            "config": asdict(self.c),
            "started": self.t0,
            "marks": {k: self.rel(v) for k, v in self.marks.items()},
            "kills": self.kills,
            "estimates_seen_by_witness": len(got),
            "calibration": calibration_check(got, self.calibrated, self.kills),
            "recorder": recorder_completeness(got, rows, runs, self.roles["recorder"].incarnations, self.c, self.t0),
            "repeats": {"witness": repeats([(g[1], g[2], g[3]) for g in got]),
                        "recording": repeats([(r["device"], r["epoch"], r["seq"]) for r in rows])},
            "never_back": never_back(got, self.kills, self.t0, self.c.devices),
            "load": load_figures(got, self.kills, self.t0, self.c, stats, self.roles["fleet"]),
            "stop_codes": self.stop_codes,
            "logs": {n: [i.log for i in r.incarnations] for n, r in self.roles.items()},
        }  # fmt: skip
        return report


def read_recording(path: Path) -> list[dict]:
    """Every estimate row: device, epoch, seq, received, run. `epoch` from its own column where the schema has one,
    else from the JSON of keys the schema does not know (`extra`)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        columns = {c[1] for c in db.execute("PRAGMA table_info(estimates)")}
        epoch = "epoch" if "epoch" in columns else "NULL"
        extra = "extra" if "extra" in columns else "NULL"
        query = f"SELECT device, seq, received, run, {epoch}, {extra} FROM estimates ORDER BY id"
        rows = []
        for device, seq, received, run, ep, ex in db.execute(query):
            if ep is None and ex:
                ep = json.loads(ex).get("epoch")
            rows.append({"device": device, "seq": seq, "received": received, "run": run, "epoch": ep})
    return rows


def read_runs(path: Path) -> list[dict]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]


def repeats(keys: list[tuple]) -> dict:
    counts = Counter(keys)
    twice = {k: n for k, n in counts.items() if n > 1}
    return {"keys": len(counts), "repeated": len(twice), "examples": [list(k) for k in list(twice)[:5]]}


def calibration_check(got: list[tuple], calibrated: dict[str, bool], kills: list[dict]) -> dict:
    """Per daemon epoch after the first restart: the calibrated devices' ok estimates that are not `calibrated:
    true` (and, the control, other devices' that are)."""
    epochs = sorted({k["epoch"] for k in kills if k["role"] == "daemon" and k.get("epoch") is not None})
    per_epoch = []
    for epoch in epochs:
        mine = [g for g in got if g[2] == epoch and g[4]]
        cal = [g for g in mine if g[1] in calibrated]
        bad = [g for g in cal if g[5] is not True]
        others = [g for g in mine if g[1] not in calibrated and g[5]]
        per_epoch.append({
            "epoch": epoch, "calibrated_devices_seen": len({g[1] for g in cal}), "their_ok_estimates": len(cal),
            "not_calibrated": len(bad), "devices_not_calibrated": sorted({g[1] for g in bad})[:10],
            "other_devices_calibrated_true": len(others),
        })  # fmt: skip
    last = per_epoch[-1] if per_epoch else None
    return {
        "devices": len(calibrated),
        "applied_at_once": sum(calibrated.values()),
        "per_epoch_after_restart": per_epoch,
        "not_calibrated_after_last_restart": None if last is None else last["not_calibrated"],
        "calibrated_devices_missing_after_last_restart": None
        if last is None
        else len(calibrated) - last["calibrated_devices_seen"],
    }


def recorder_completeness(
    got: list[tuple], rows: list[dict], runs: list[dict], incarnations: list[Incarnation], c: ChaosConfig, t0: float
) -> dict:
    """For each recorder up-interval, the witness's estimates received within it against the rows, on (device,
    epoch, seq). A miss is placed: before the restarted recorder's first row (it had not joined yet), within
    flush_s + tail_slack_s before a kill -9 (received, not yet committed), or elsewhere (a finding)."""
    recorded = {(r["device"], r["epoch"], r["seq"]) for r in rows}
    first_row: dict[int, float] = {}
    for r in rows:
        first_row[r["run"]] = min(first_row.get(r["run"], r["received"]), r["received"])
    intervals = []
    for i, inc in enumerate(incarnations):
        # The run this incarnation wrote: the one whose start lies within its life.
        run = next((r["id"] for r in runs if inc.started <= r["started"] <= (inc.ended or float("inf"))), None)
        first = first_row.get(run)
        end = inc.ended or float("inf")
        tail = c.flush_s + c.tail_slack_s
        inside = [g for g in got if inc.started <= g[0] <= end]
        missed = [g for g in inside if (g[1], g[2], g[3]) not in recorded]
        where: Counter[str] = Counter()
        elsewhere = []
        for g in missed:
            if first is None or g[0] < first:
                where["before_first_row"] += 1
            elif inc.killed and end - g[0] <= tail:
                where["last_flush_before_kill"] += 1
            else:
                where["elsewhere"] += 1
                elsewhere.append(g)
        ages = [end - g[0] for g in missed if first is not None and g[0] >= first]
        intervals.append({
            "incarnation": i, "run": run, "from": round(inc.started - t0, 3),
            "to": None if inc.ended is None else round(end - t0, 3), "ended_by": "kill -9" if inc.killed else "SIGTERM",
            "first_row_s": None if first is None else round(first - inc.started, 3),
            "witness_estimates": len(inside), "recorded": len(inside) - len(missed), "missed": len(missed),
            "missed_where": dict(where),
            "oldest_miss_before_end_s": round(max(ages), 3) if ages else None,
            "elsewhere_examples": [[round(g[0] - t0, 3), g[1], g[2], g[3]] for g in elsewhere[:5]],
        })  # fmt: skip
    witness_keys = {(g[1], g[2], g[3]) for g in got}
    unseen = [r for r in rows if (r["device"], r["epoch"], r["seq"]) not in witness_keys]
    return {
        "flush_s": c.flush_s,
        "tail_allowed_s": c.flush_s + c.tail_slack_s,
        "intervals": intervals,
        "missed_elsewhere": sum(i["missed_where"].get("elsewhere", 0) for i in intervals),
        "rows": len(rows),
        "rows_the_witness_never_saw": len(unseen),
        # where: rows per second of the run (receipt time, s after the start), the 10 seconds holding most
        "rows_the_witness_never_saw_at_s": Counter(int(r["received"] - t0) for r in unseen).most_common(10),
        "runs_missed_counted_by_recorder": [r.get("missed") for r in runs],
    }


def never_back(got: list[tuple], kills: list[dict], t0: float, devices: int) -> dict:
    """Devices with ok estimates before the last daemon or proxy restart and none after it; devices never seen."""
    witnessed = [k for k in kills if k["role"] in WITNESSED]
    seen_ever = {g[1] for g in got if g[4]}
    if not witnessed:
        return {"after": None, "devices": [], "never_seen": devices - len(seen_ever)}
    last = t0 + witnessed[-1]["restarted_at"]
    before = {g[1] for g in got if g[0] < last and g[4]}
    after = {g[1] for g in got if g[0] >= last and g[4]}
    gone = sorted(before - after)
    return {"after": f"{witnessed[-1]['role']} restart at {witnessed[-1]['restarted_at']} s", "count": len(gone),
            "devices": gone[:20], "never_seen": devices - len(seen_ever)}  # fmt: skip


def load_figures(got: list[tuple], kills: list[dict], t0: float, c: ChaosConfig, stats: dict, fleet: Role) -> dict:
    """Could the machine carry the fleet? The witness's delay (receipt − the window's last sample) outside the
    windows after each restart, the daemon's own counters, and the fleet's "Congestion" warnings."""
    outages = [(t0 + k["killed_at"], t0 + k["restarted_at"] + (k["all_back_s"] or k["back_s"] or 0) + c.window_s)
               for k in kills if k["role"] in WITNESSED]  # fmt: skip
    steady = [g[0] - g[7] for g in got if g[4] and not any(a <= g[0] <= b for a, b in outages)]
    fleet_log = "".join(Path(i.log).read_text() for i in fleet.incarnations)
    reasons = Counter(g[6] for g in got if not g[4])
    return {
        "delay_p50_s": round(float(np.percentile(steady, 50)), 3) if steady else None,
        "delay_p99_s": round(float(np.percentile(steady, 99)), 3) if steady else None,
        "delay_max_s": round(float(np.max(steady)), 3) if steady else None,
        "rejected_seen_by_witness": dict(reasons),
        "fleet_congestion_warnings": fleet_log.count("Congestion"),
        "daemon_stats_at_end": {k: stats.get(k) for k in ("uptime_s", "devices", "windows_per_s", "latency_p50_ms",
                                                           "latency_p99_ms", "messages_total", "rejected")},
    }  # fmt: skip


@dataclass
class Bounds:
    """What `check` demands: the stream back within `back_s[role]` of a restart. The daemon's bound covers starting
    (Python, torch, the model: `start_s`) and filling one window, then a hop; the proxy's, its links reconnecting
    (`reconnect_s`) and one window plus a hop, as every stream breaks at the messages lost meanwhile; a subscriber
    and the recorder need only to start and join."""

    back_s: dict[str, float]

    @classmethod
    def for_config(cls, c: ChaosConfig, start_s: float = 15.0, reconnect_s: float = 5.0, join_s: float = 5.0):
        refill = c.window_s + c.hop_s
        return cls({"daemon": start_s + refill, "proxy": reconnect_s + refill, "subscriber": join_s,
                    "recorder": join_s})  # fmt: skip


def check(report: dict, bounds: Bounds) -> None:
    """Assert what a chaos run must show; the message says which promise broke."""
    for k in report["kills"]:
        assert k["back_s"] is not None and k["back_s"] <= bounds.back_s[k["role"]], (
            f"{k['role']} kill {k['round']}: stream back after {k['back_s']} s, bound {bounds.back_s[k['role']]} s"
        )
        if k["role"] in WITNESSED:
            assert k["all_back_s"] is not None, f"{k['role']} kill {k['round']}: only {k['devices_back']} came back"
    cal = report["calibration"]
    assert cal["per_epoch_after_restart"], "no daemon restart was observed"
    assert cal["not_calibrated_after_last_restart"] == 0, cal
    assert cal["calibrated_devices_missing_after_last_restart"] == 0, cal
    rec = report["recorder"]
    assert rec["missed_elsewhere"] == 0, rec["intervals"]
    assert report["repeats"]["witness"]["repeated"] == 0, report["repeats"]
    assert report["repeats"]["recording"]["repeated"] == 0, report["repeats"]
    assert report["never_back"]["count"] == 0 and report["never_back"]["never_seen"] == 0, report["never_back"]


def table(report: dict) -> str:
    """The kills and the verdicts as a short markdown table."""
    lines = ["| kill | role | restarted at (s) | first estimate after (s) | stream back after (s) | seen by | "
             "every device ok again after (s) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, k in enumerate(report["kills"], 1):
        witnessed = k["role"] in WITNESSED
        every = "—" if not witnessed else k["all_back_s"] if k["all_back_s"] is not None else "never"
        every = f"{every} ({k['devices_back']} devices)" if witnessed else every
        first = k["path_back_s"] if witnessed else k["back_s"]
        lines.append(f"| {i} | {k['role']} | {k['restarted_at']} | {first} | {k['back_s']} | {k['by']} | {every} |")
    cal, rec, rep, nb = report["calibration"], report["recorder"], report["repeats"], report["never_back"]
    load = report["load"]
    misses = ", ".join(
        f"#{i['incarnation']} ({i['ended_by']}): {i['missed']} of {i['witness_estimates']}"
        + (f" {i['missed_where']}" if i["missed"] else "")
        for i in rec["intervals"]
    )
    lines += [
        "",
        "| check | result |",
        "|---|---|",
        f"| calibrated devices ({cal['devices']}) not `calibrated: true` after the last daemon restart | "
        f"{cal['not_calibrated_after_last_restart']} estimates; "
        f"{cal['calibrated_devices_missing_after_last_restart']} devices unseen |",
        f"| recorder: witness estimates missing from the recording, per up-interval | {misses} |",
        f"| recorder: missed outside its own kill windows (last {rec['tail_allowed_s']} s before a kill -9, before its "
        f"first row) | {rec['missed_elsewhere']} |",
        f"| repeated (device, epoch, seq): witness / recording | {rep['witness']['repeated']} / "
        f"{rep['recording']['repeated']} |",
        f"| devices that never came back / never seen | {nb['count']} / {nb['never_seen']} |",
        f"| witness delay (receipt − the window's last sample, which the fleet sends up to 0.2 s early) p50 / p99 "
        f"outside outages (s); fleet Congestion warnings | {load['delay_p50_s']} / "
        f"{load['delay_p99_s']}; {load['fleet_congestion_warnings']} |",
    ]
    return "\n".join(lines)
