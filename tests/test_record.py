"""`p2p record`: every estimate a real daemon publishes lands once in a real SQLite file — through a recorder crash,
a daemon restart and malformed messages — and reads back as CSV and as the offline metrics' numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from zmq_helpers import ROOT, client, daemon_process, ipc_addresses, logged_process, wait_ready

from p2p_stream.offline.datasets.replay_csv import read_replay_csv
from p2p_stream.offline.metrics import regression_report
from p2p_stream.tools.cluster.proxy import Proxy
from p2p_stream.tools.recording.db import ESTIMATE_COLUMNS, ESTIMATE_KEYS, SCHEMA_VERSION, RecordingDB
from p2p_stream.tools.recording.recorder import Recorder
from p2p_stream.tools.recording.recorder import main as record_main
from p2p_stream.wire.estimate import FIELD, FIELDS, check_estimate, example_estimate
from p2p_stream.wire.protocol import encode_estimate, encode_ingest, encode_status

DEMO_CSV = Path(ROOT) / "p2p_stream" / "assets" / "demo" / "ppg_bp_demo.csv"
RECORDINGS = read_replay_csv(DEMO_CSV)  # 8 PPG-BP subjects, each three 2.1 s segments at 250 Hz, with cuff references
WINDOW = ("--window-s", "2.1", "--hop-s", "2.1")  # one window per segment, as p2p demo runs
T0 = 1_700_000_000.0
JOIN_S = 1.0  # between two segments: the daemon publishes a `gap` estimate and starts a new run
KEY = ("device", "model", "epoch", "seq", "t")  # the natural key; epoch nil (absent) without a state store


def schedule(
    prefix: str, devices: int, passes: int, t0: float = T0, chunk: int = 25
) -> list[tuple[float, list[bytes]]]:
    """Every ingest message of `devices` wearables replaying the demo recordings `passes` times, each segment a run
    of its own: (seconds from the start on the wearables' clock, frames), in order."""
    out = []
    for k in range(devices):
        rec, cursor, seq = RECORDINGS[k % len(RECORDINGS)], 0.0, 0
        fs = round(rec.fs, 6)
        for _ in range(passes):
            for start, stop in rec.segments():
                for i in range(start, stop, chunk):
                    ref = (rec.sbp_ref[i], rec.dbp_ref[i])
                    when = cursor + (i - start) / fs
                    x = rec.ppg[i : min(i + chunk, stop)]
                    out.append(
                        (when, encode_ingest(f"{prefix}{k:02d}", seq, t0 + when, fs, x, ref=ref, meta=rec.meta()))
                    )
                    seq += 1
                cursor += (stop - start) / fs + JOIN_S
    out.sort(key=lambda m: m[0])
    return out


def expected_estimates(devices: int, passes: int) -> int:
    """Three windows per pass and a `gap` estimate at each break between two segments."""
    return devices * (3 * passes + 3 * passes - 1)


def send(pub: zmq.Socket, messages: list, speed: float | None = None, stop: threading.Event | None = None) -> None:
    """Publish `messages` at once, or paced at `speed` × the wearables' clock."""
    start = time.monotonic()
    for when, frames in messages:
        if speed is not None:
            delay = start + when / speed - time.monotonic()
            if delay > 0 and stop is not None and stop.wait(delay):
                return
        pub.send_multipart(frames)


@contextmanager
def recorder_process(address: str, db: Path, *flags: str) -> Iterator[subprocess.Popen]:
    """`p2p record` as a real process; `proc.log()` reads its stderr so far. Killed at exit if still running."""
    cmd = [sys.executable, "-m", "p2p_stream.tools.recording.recorder", "--estimates", address, "--db", str(db), *flags]
    with logged_process(cmd, split=True) as proc:
        yield proc


def wait_log(proc: subprocess.Popen, text: str, timeout_s: float = 20.0, count: int = 1) -> float:
    """Wait until the process's log holds `text` `count` times; the time it was seen."""
    deadline = time.monotonic() + timeout_s
    while proc.log().count(text) < count:  # type: ignore[attr-defined]
        assert proc.poll() is None, f"recorder exited: {proc.log()}"  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"no {text!r} in the recorder's log: {proc.log()}"  # type: ignore[attr-defined]
        time.sleep(0.02)
    return time.time()


def rows(db: Path, where: str = "1") -> list[dict]:
    """Every estimate in the file, in the order written, read with the stdlib's sqlite3 (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM estimates WHERE {where} ORDER BY id")]


def wait_rows(db: Path, done, timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = rows(db) if db.exists() else []
        if done(got):
            return got
        assert time.monotonic() < deadline, f"the file holds {len(got)} estimates"
        time.sleep(0.1)


def key(e: dict) -> tuple:
    return tuple(e.get(k) for k in KEY)


def key_but_epoch(e: dict) -> tuple:
    return tuple(e.get(k) for k in KEY if k != "epoch")


def as_row(e: dict) -> dict:
    """An estimate as the file stores it: every contract key, nil when absent, booleans as 0/1."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in ((k, e.get(k)) for k in ESTIMATE_KEYS)}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A daemon with a state store, so its estimates carry `epoch` (its first start: 1)."""
    state = tmp_path_factory.mktemp("state") / "state.sqlite"
    with ipc_addresses() as addresses, daemon_process(addresses, *WINDOW, "--set", f"state.path={state}"):
        wait_ready(addresses["control"])
        yield addresses


@pytest.fixture(scope="module")
def session(daemon, tmp_path_factory) -> dict:
    """A short session recorded by `p2p record` from the daemon, and what an independent subscriber saw meanwhile."""
    db = tmp_path_factory.mktemp("record") / "session.sqlite"
    devices, passes = 16, 2
    with recorder_process(daemon["publish"], str(db), "--heartbeat") as rec:
        wait_log(rec, "subscribed: heartbeat")
        with client(daemon) as c:  # joined: the daemon reads its PUB, and its SUB has had a heartbeat
            send(c.pub, schedule("s", devices, passes))
            want = expected_estimates(devices, passes)
            seen = c.estimates(lambda g: len([e for e in g if e["device"].startswith("s")]) >= want, timeout_s=60)
        seen = [e for e in seen if e["device"].startswith("s")]
        wait_rows(db, lambda got: len(got) >= len(seen))
        rec.send_signal(signal.SIGINT)
        assert rec.wait(timeout=10) == 0
        return {"db": db, "seen": seen, "stdout": rec.output(), "log": rec.log()}


def test_every_estimate_the_subscriber_saw_is_a_row(session):
    seen, db = session["seen"], session["db"]
    assert len(seen) == expected_estimates(16, 2)
    got = rows(db)
    assert [key(r) for r in got] == [key(e) for e in seen]  # the same estimates, in the order published
    assert [{k: r[k] for k in ESTIMATE_KEYS} for r in got] == [as_row(e) for e in seen]  # every contract key
    assert [p for p in map(check_estimate, seen) if p] == []  # what the daemon sent is what the estimate declares
    assert all(r["extra"] is None for r in got)  # this daemon sends no key the schema lacks
    assert {e.get("epoch") for e in seen} == {r["epoch"] for r in got} == {1}  # a column, not `extra`
    assert f"recorded {len(seen)} estimates" in session["stdout"]  # SIGINT: committed, counted, exit 0 (above)
    with sqlite3.connect(db) as conn:  # queryable with sqlite3, as docs/recording.md shows
        per_device = conn.execute(
            "SELECT device, count(*), sum(ok), avg(sbp) FROM estimates WHERE reason IS NOT 'gap' GROUP BY device"
        ).fetchall()
        assert len(per_device) == 16 and all(n == 6 for _, n, _, _ in per_device)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert "estimates_device_t" in [r[1] for r in conn.execute("PRAGMA index_list(estimates)")]
        assert conn.execute("SELECT count(*) FROM heartbeats").fetchone()[0] >= 1
        run = conn.execute("SELECT stopped, estimates_written, missed, already_there FROM runs").fetchall()
        assert len(run) == 1 and run[0][0] is not None and run[0][1:] == (len(seen), 0, 0)


def test_export_csv_round_trip(session, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert record_main(["export", str(session["db"]), "--csv", str(out)]) == 0
    assert f"wrote {len(session['seen'])} rows" in capsys.readouterr().out
    stored = rows(session["db"])
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(stored[0])
        back = list(reader)
    assert len(back) == len(stored)

    def parse(text: str, like: object) -> object:
        return None if text == "" else type(like)(text) if like is not None else text

    for csv_row, db_row in zip(back, stored):
        assert {k: parse(v, db_row[k]) for k, v in csv_row.items()} == db_row  # floats exact: csv writes repr


def test_parquet_without_pyarrow_names_the_install(session, tmp_path, capsys):
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed here")
    assert record_main(["export", str(session["db"]), "--parquet", str(tmp_path / "x.parquet")]) == 2
    assert "pip install pyarrow" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_parquet_export_holds_every_row_when_pyarrow_is_there(session, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")  # not a dependency: a user who wants Parquet installs it
    out = tmp_path / "x.parquet"
    assert record_main(["export", str(session["db"]), "--parquet", str(out)]) == 0
    table = pq.read_table(out).to_pylist()
    stored = rows(session["db"])
    assert [key(r) for r in table] == [key(r) for r in stored]
    assert table == stored  # every column, every value


def test_score_gives_the_offline_metrics_of_the_same_pairs(session, tmp_path, capsys):
    out = tmp_path / "score.json"
    assert record_main(["score", str(session["db"]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    # The pairs, independently: the ok estimates the subscriber saw that carry a reference.
    pairs = [e for e in session["seen"] if e["ok"] and e.get("ref_sbp") is not None]
    assert result["n_scored"] == len(pairs) > 0 and result["n_estimates"] == len(session["seen"])
    assert f"{len(pairs)} of {len(session['seen'])} estimates scored" in printed
    device = np.array([e["device"] for e in pairs], dtype=object)
    for t in ("sbp", "dbp"):
        pred, ref = np.array([e[t] for e in pairs]), np.array([e[f"ref_{t}"] for e in pairs])
        constant = np.full_like(ref, ref.mean())
        assert result["constant"][t] == pytest.approx(ref.mean())
        for name, m in [("all", np.ones(len(pairs), bool))] + [(d, device == d) for d in sorted(set(device))]:
            want = regression_report(pred[m], ref[m], constant[m], device[m])
            got = result[t][name]["model"]
            assert got["mae"] == pytest.approx(np.abs(pred[m] - ref[m]).mean())
            for k, v in want.items():
                if isinstance(v, (str, bool)):
                    assert got[k] == v, (t, name, k)
                elif isinstance(v, float) and math.isnan(v):
                    assert math.isnan(got[k]), (t, name, k)
                else:
                    assert got[k] == pytest.approx(v), (t, name, k)
            assert result[t][name]["constant"]["mae"] == pytest.approx(np.abs(constant[m] - ref[m]).mean())


def test_kill_9_then_restart_on_the_same_file(daemon, tmp_path):
    """kill -9 mid-stream, a new recorder on the same file, to the end of the stream. Exactly:

    - the rows committed before the kill are the first estimates published, in order, and survive unchanged;
    - the restarted recorder writes a run of estimates to the very last one, none of them twice;
    - what the file lacks is the run between them: published after the last commit before the kill (within one
      flush interval, plus 2 s for delivery under load) or while no recorder was subscribed; and the new run
      reports exactly that many as `missed` (the gaps in each device's seq after its last committed row).
    """
    db, flush_s = tmp_path / "crash.sqlite", 0.5
    devices, passes, speed = 16, 3, 3.0
    messages = schedule("k", devices, passes)
    with client(daemon) as c:
        done = threading.Event()
        feeder = threading.Thread(target=lambda: (send(c.pub, messages, speed, done), done.set()), daemon=True)
        with recorder_process(daemon["publish"], str(db), "--flush-s", str(flush_s)) as first:
            wait_log(first, "subscribed: heartbeat")
            feeder.start()
            seen: list[tuple[float, dict]] = []

            def collect(n: int) -> None:
                for e in c.estimates(lambda g: len(g) >= n, timeout_s=60):
                    seen.append((time.time(), e))

            collect(40)  # mid-stream: about a third of it
            wait_rows(db, lambda got: len(got) > 0)
            first.send_signal(signal.SIGKILL)
            t_kill = time.time()
            first.wait(timeout=10)
        committed = rows(db)
        with recorder_process(daemon["publish"], str(db), "--flush-s", str(flush_s)) as second:
            while "subscribed: heartbeat" not in second.log():  # estimates keep arriving meanwhile
                assert second.poll() is None, second.log()
                if c.sub.poll(20):
                    seen.extend((time.time(), e) for e in c.estimates(lambda g: len(g) >= 1))
            t_back = time.time()
            collect(expected_estimates(devices, passes) - len(seen))
            assert done.wait(30)
            published = [e for _, e in seen]
            wait_rows(db, lambda got: got and key(got[-1]) == key(published[-1]))
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=10) == 0, second.log()
    final = rows(db)
    keys = [key(e) for e in published]
    assert len(set(keys)) == len(keys) == expected_estimates(devices, passes)
    # committed before the kill: a prefix of what was published, intact
    assert 0 < len(committed) < len(published)
    assert [key(r) for r in committed] == keys[: len(committed)]
    assert final[: len(committed)] == committed
    # after the restart: the rest of the stream, to its end, no row twice
    after = [key(r) for r in final[len(committed) :]]
    assert after and after == keys[len(keys) - len(after) :]
    assert len(final) == len({key(r) for r in final}) == len(committed) + len(after)
    # lost: the run between, published around the kill
    lost = seen[len(committed) : len(keys) - len(after)]
    assert all(t_kill - flush_s - 2.0 <= when <= t_back + 0.5 for when, _ in lost), (t_kill, t_back, lost[:1])
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT stopped IS NULL, estimates_written, missed FROM runs ORDER BY id").fetchall()
    assert runs == [(1, len(committed), 0), (0, len(after), len(lost))]  # the killed run never stopped cleanly


def estimates_and_already_there(db: Path) -> int:
    """The estimates received so far by the file's recorders: rows written plus those the natural key refused."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows_ = conn.execute("SELECT count(*) FROM estimates").fetchone()[0]
        return rows_ + conn.execute("SELECT coalesce(sum(already_there), 0) FROM runs").fetchone()[0]


@pytest.mark.parametrize("store", [False, True], ids=["no-store", "state-store"])
def test_daemon_restarted_mid_recording(tmp_path, store):
    """A daemon stops and a new one starts under the recorder, fed the same recording with the same time stamps: it
    publishes the same (device, model, seq, t) again, seq from 0. With a state store each start has its own `epoch`
    and both starts' estimates are kept; without one nothing tells them apart, and the repeats are kept once."""
    db = tmp_path / "restart.sqlite"
    flags = (*WINDOW, "--set", f"state.path={tmp_path / 'state.sqlite'}" if store else "state.path=")
    n_boot = expected_estimates(4, 1)
    with ipc_addresses() as addresses:
        with recorder_process(addresses["publish"], str(db), "--heartbeat") as rec:
            for n in range(2):
                with daemon_process(addresses, *flags) as daemon:
                    wait_ready(addresses["control"])
                    with client(addresses) as c:
                        send(c.pub, schedule("r", 4, 1))
                        c.estimates(lambda g: len(g) >= n_boot, timeout_s=60)
                    deadline = time.monotonic() + 20
                    while not (db.exists() and estimates_and_already_there(db) >= (n + 1) * n_boot):
                        assert time.monotonic() < deadline, f"the recorder has {estimates_and_already_there(db)}"
                        time.sleep(0.1)
                    daemon.send_signal(signal.SIGTERM)
                    assert daemon.wait(timeout=20) == 0
                if n == 0:
                    wait_log(rec, "the daemon stopped")
            assert "heartbeat back from" in rec.log() and "a new daemon" in rec.log()
            rec.send_signal(signal.SIGTERM)
            assert rec.wait(timeout=10) == 0
    got = rows(db)
    with sqlite3.connect(db) as conn:
        started = [r - u for r, u in conn.execute("SELECT received, uptime_s FROM heartbeats ORDER BY id")]
        counts = conn.execute("SELECT estimates_written, already_there, missed FROM runs").fetchall()
    assert max(started) - min(started) > 1.0  # heartbeats of both daemons: two start times, seconds apart
    first = got[:n_boot]
    assert min(r["seq"] for r in first) == 0
    if store:
        second = got[n_boot:]
        assert [r["epoch"] for r in got] == [1] * n_boot + [2] * n_boot  # each start its own epoch
        assert sorted(map(key_but_epoch, second)) == sorted(map(key_but_epoch, first))  # the same keys but for it
        assert counts == [(2 * n_boot, 0, 0)]  # a new epoch's seq 0 is not a gap
    else:
        assert len(got) == n_boot and all(r["epoch"] is None for r in got)
        assert counts == [(n_boot, n_boot, 0)]  # the second start's estimates: all already there


# --- without a daemon: a fake one on a PUB socket, the Recorder in a thread ---------------------------------------


def good_estimate(device: str, seq: int, **extra) -> dict:
    """A well-formed estimate (`example_estimate`) with a cuff reference; a key of `extra` the declaration lacks is
    added as a newer daemon would send it."""
    declared = {k: v for k, v in extra.items() if k in FIELD}
    e = example_estimate(
        device=device, seq=seq, t=T0 + seq, window_s=2.1, hr=70.0, model="m@00000000", ref=(118.0, 79.0), **declared
    )
    return {**e, **extra}


def test_the_columns_are_the_declared_keys():
    """A column per key the estimate declares (wire/estimate.py), of its type; `daemon` goes to `extra`."""
    kinds = {"int": "int", "float": "num", "str": "text", "bool": "bool", "list": "list"}
    declared = {f.name: kinds[f.type] for f in FIELDS if f.name != "daemon"}
    assert {k: kind for k, (kind, _) in ESTIMATE_KEYS.items()} == declared


def malformed() -> list[tuple[str, list[bytes]]]:
    good = good_estimate("dev", 99)
    pack = msgpack.packb
    return [
        ("bad_frames", [b"sbp.dev"]),
        ("bad_frames", [b"sbp.dev", pack(good), b"x"]),
        ("not_msgpack", [b"sbp.dev", b"\xc1\xc1"]),
        ("bad_version", [b"sbp.dev", pack({**good, "v": 2})]),
        ("bad_version", [b"sbp.dev", pack([1, 2])]),
        ("bad_device", [b"sbp.other", pack(good)]),
        ("bad_device", [b"sbp.a b", pack({**good, "device": "a b"})]),
        ("missing_key", [b"sbp.dev", pack({k: v for k, v in good.items() if k != "model"})]),
        ("missing_key", [b"sbp.dev", pack({**good, "t": None})]),
        ("bad_type", [b"sbp.dev", pack({**good, "seq": "7"})]),
        ("bad_type", [b"sbp.dev", pack({**good, "seq": -1})]),
        ("bad_type", [b"sbp.dev", pack({**good, "seq": 2**64 - 1})]),
        ("bad_type", [b"sbp.dev", pack({**good, "epoch": "1"})]),
        ("bad_type", [b"sbp.dev", pack({**good, "epoch": 1.0})]),
        ("bad_type", [b"sbp.dev", pack({**good, "epoch": -1})]),  # would be the key's "no epoch"
        ("bad_type", [b"sbp.dev", pack({**good, "sbp": "high"})]),
        ("bad_type", [b"sbp.dev", pack({**good, "ok": [1]})]),
        ("bad_type", [b"sbp.dev", pack({**good, "model": "m" * 5000})]),
        ("bad_time", [b"sbp.dev", pack({**good, "t": float("nan")})]),
        ("bad_type", [b"status", pack({"uptime_s": "soon"})]),
        ("bad_type", [b"status", pack([1])]),
        ("bad_frames", [b"statusx", pack({})]),
    ]


@contextmanager
def fake_daemon(tmp_path: Path, proxy: bool = False, **options) -> Iterator[tuple[zmq.Socket, Path, Recorder]]:
    """A bound PUB as the daemon's estimates, and the Recorder in a thread on a fresh file; with `proxy`, a real
    `p2p proxy` too, the PUB connected to its wearables side and the recorder's `--ingest` to its shards side."""
    with ipc_addresses() as addresses, tempfile.TemporaryDirectory(prefix="p2p") as folder:
        ctx = zmq.Context()
        proxy_ = db = None
        try:  # whatever fails below (a recording that will not open), the sockets close: a failure, never a hang
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.bind(addresses["publish"])
            ingest = None
            if proxy:
                ends = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers")}
                proxy_ = Proxy(**ends)
                proxy_.start()
                pub.connect(ends["wearables"])
                ingest = ends["shards"]
            db = RecordingDB(tmp_path / "fake.sqlite")
            db.start_run(addresses["publish"], ingest, True, time.time())
            recorder = Recorder(db, addresses["publish"], ingest, heartbeat=True, **options)
            stop = threading.Event()
            thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
            thread.start()
            try:
                yield pub, db.path, recorder
            finally:
                stop.set()
                thread.join(timeout=10)
        finally:
            if db is not None:
                db.close()
            if proxy_ is not None:
                proxy_.ingest.stop()
            ctx.destroy(linger=0)


def until_recorded(
    pub: zmq.Socket, db_path: Path, table: str, probe, timeout_s: float = 10.0, where: str = "1"
) -> None:
    """Beat the slow joiner: send `probe(n)` (a fresh message each time) until a row `where` is in `table`."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        pub.send_multipart(probe(n))
        n += 1
        time.sleep(0.1)
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            if conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]:
                return
    raise TimeoutError("the recorder never received a probe")


def record_estimates(tmp_path: Path, sent: list[dict]) -> tuple[Path, Recorder]:
    """`sent` from a fake daemon to a Recorder, in order, until the last is in the file: the file and the recorder."""
    with fake_daemon(tmp_path, flush_s=0.05) as (pub, db, recorder):
        until_recorded(pub, db, "estimates", lambda n: encode_estimate(good_estimate("probe", n)))
        for e in [*sent, good_estimate("end", 0)]:
            pub.send_multipart(encode_estimate(e))
        wait_rows(db, lambda got: got[-1]["device"] == "end", timeout_s=10)
    return db, recorder


def test_malformed_messages_are_counted_and_dropped_never_a_crash(tmp_path):
    with fake_daemon(tmp_path, flush_s=0.05) as (pub, db, recorder):
        until_recorded(pub, db, "estimates", lambda n: encode_estimate(good_estimate("probe", n)))
        bad = malformed()
        for seq in range(1, 4):
            for _, frames in bad:
                pub.send_multipart(frames)
            pub.send_multipart(encode_estimate(good_estimate("dev", seq, future_key={"a": b"\x01"})))
        pub.send_multipart(encode_estimate(good_estimate("dev", 3)))  # the same estimate again: kept once
        pub.send_multipart(encode_estimate(good_estimate("dev", 6)))  # 4 and 5 never came
        pub.send_multipart(encode_status({"uptime_s": 1.0, "devices": 1, "rejected": {"nan": 2}, "future": 1}))
        wait_rows(db, lambda got: got[-1]["seq"] == 6, timeout_s=10)
    want: dict[str, int] = {}
    for reason, _ in bad:
        want[reason] = want.get(reason, 0) + 3
    assert recorder.counts.malformed == want
    assert (recorder.counts.already_there, recorder.counts.missed) == (1, 2)
    got = rows(db, "device = 'dev'")
    assert [r["seq"] for r in got] == [1, 2, 3, 6]
    assert json.loads(got[0]["extra"]) == {"future_key": {"a": "01"}}  # an unknown key, kept as JSON
    with sqlite3.connect(db) as conn:
        hb = conn.execute("SELECT uptime_s, devices, rejected, extra FROM heartbeats").fetchall()
        run = conn.execute("SELECT malformed, already_there, missed FROM runs").fetchone()
    assert hb[-1] == (1.0, 1, '{"nan":2}', '{"future":1}')
    assert json.loads(run[0]) == want and run[1:] == (1, 2)


def test_the_natural_key_holds_epoch_and_an_absent_epoch_is_one_value(tmp_path):
    """Two daemon starts (epochs 1, 2) publish the same (device, model, seq, t): both kept. The same estimate
    delivered twice is one row, with an epoch and without one (a plain UNIQUE would hold two NULL epochs apart)."""
    sent = [
        good_estimate("nostore", 0),
        good_estimate("nostore", 0),  # again, no epoch: kept once
        good_estimate("nostore", 1),
        good_estimate("boot", 0, epoch=1),
        good_estimate("boot", 1, epoch=1),
        good_estimate("boot", 1, epoch=1),  # again, epoch 1: kept once
        good_estimate("boot", 0, epoch=2),  # the next start: the same keys as epoch 1's, both kept
        good_estimate("boot", 1, epoch=2),
        good_estimate("boot", 1, epoch=2),  # again, epoch 2: kept once
        good_estimate("boot", 3, epoch=3),  # a third start whose seq 0, 1, 2 never came: 3 missed
    ]
    db, recorder = record_estimates(tmp_path, sent)
    got = rows(db, "device IN ('nostore', 'boot')")
    assert [(r["device"], r["epoch"], r["seq"]) for r in got] == [
        ("nostore", None, 0), ("nostore", None, 1),
        ("boot", 1, 0), ("boot", 1, 1), ("boot", 2, 0), ("boot", 2, 1), ("boot", 3, 3),
    ]  # fmt: skip
    kept = [sent[i] for i in (0, 2, 3, 4, 6, 7, 9)]
    assert [{k: r[k] for k in ESTIMATE_KEYS} for r in got] == [as_row(e) for e in kept]
    assert all(r["extra"] is None for r in got)  # epoch is a column, not an unknown key
    assert (recorder.counts.already_there, recorder.counts.missed) == (3, 3)
    # Exported as the daemon sent it: a blank cell (nil) where there was no epoch.
    out = tmp_path / "out.csv"
    assert record_main(["export", str(db), "--csv", str(out)]) == 0
    with out.open(newline="") as f:
        back = [r for r in csv.DictReader(f) if r["device"] in ("nostore", "boot")]
    assert [r["epoch"] for r in back] == ["", "", "1", "1", "2", "2", "3"]
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow.parquet as pq

        assert record_main(["export", str(db), "--parquet", str(tmp_path / "out.parquet")]) == 0
        table = [r for r in pq.read_table(tmp_path / "out.parquet").to_pylist() if r["device"] in ("nostore", "boot")]
        assert [r["epoch"] for r in table] == [None, None, 1, 1, 2, 2, 3]


def test_whoever_binds_the_address_is_recorded_but_never_two_rows_of_one_device_epoch_seq(tmp_path, caplog):
    """The red team's forgery: the daemon's PUB goes away (a restart) and a second publisher binds its address,
    publishing estimates of the same (device, epoch, seq) with other values. The recorder cannot tell who sent what
    (the estimates socket has no CURVE: docs/recording.md, "Who can write into a recording"), but it keeps the first
    row of each (device, epoch, seq) and counts each contradicting one as a conflict, logged, not written."""
    with fake_daemon(tmp_path, flush_s=0.05) as (pub, db, recorder):
        until_recorded(pub, db, "estimates", lambda n: encode_estimate(good_estimate("probe", n)))
        for seq in range(10):
            pub.send_multipart(encode_estimate(good_estimate("w", seq, epoch=1)))
        wait_rows(db, lambda got: (got[-1]["device"], got[-1]["seq"]) == ("w", 9), timeout_s=10)
        pub.close(linger=0)  # the daemon stops; the recorder's SUB keeps reconnecting …
        ctx = zmq.Context()
        try:
            forger = ctx.socket(zmq.PUB)  # … and finds whoever binds the address next
            forger.setsockopt(zmq.LINGER, 0)
            forger.bind(recorder.address)
            until_recorded(forger, db, "estimates", lambda n: encode_estimate(good_estimate("probe2", n)),
                           where="device = 'probe2'")  # fmt: skip
            forged = [
                *({**good_estimate("w", seq, epoch=1, sbp=200.0), "t": T0 + seq + 0.5} for seq in range(5, 10)),
                good_estimate("w", 3, epoch=1, sbp=180.0),  # its very natural key, another value
                good_estimate("w", 2, epoch=1),  # an exact copy: already there, not a conflict
                good_estimate("w", 10, epoch=1, sbp=200.0),  # a seq the daemon has not used yet: nothing tells it apart
            ]
            for e in [*forged, good_estimate("end", 0)]:
                forger.send_multipart(encode_estimate(e))
            wait_rows(db, lambda got: got[-1]["device"] == "end", timeout_s=10)
        finally:
            ctx.destroy(linger=0)
    got = rows(db, "device = 'w'")
    assert [(r["seq"], r["t"], r["sbp"]) for r in got] == [(s, T0 + s, 120.0) for s in range(10)] + [
        (10, T0 + 10, 200.0)
    ]
    assert (recorder.counts.conflicts, recorder.counts.already_there) == (6, 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT conflicts, already_there FROM runs").fetchone() == (6, 1)
    warned = [r.getMessage() for r in caplog.records if "conflicts in all" in r.getMessage()]
    assert warned and "(w, 1, " in warned[0] and recorder.address in warned[0], warned


def test_a_later_stream_of_a_device_is_kept_and_what_contradicts_one_is_not(tmp_path):
    """A daemon starts a device's seq again from 0 when it hears from it after forgetting it (silent for
    limits.device_idle_s), its epoch unchanged, and at each start without a state store (no epoch): those estimates
    are rows of their own. What no later stream explains (a t between two streams', a repeated seq at a later t with
    no seq 0 before it) is a conflict."""
    sent = [
        *(good_estimate("w", s, epoch=1) for s in range(3)),
        *({**good_estimate("w", s, epoch=1), "t": T0 + 100 + s} for s in range(3)),  # forgotten, back: seq from 0
        *(good_estimate("n", s) for s in range(3)),
        *({**good_estimate("n", s), "t": T0 + 100 + s} for s in range(3)),  # no state store: a restart, seq from 0
        {**good_estimate("w", 1, epoch=1, sbp=150.0), "t": T0 + 50},  # seq 1 between the two streams' seq 1
        *(good_estimate("x", s, epoch=1) for s in range(3)),
        {**good_estimate("x", 2, epoch=1, sbp=150.0), "t": T0 + 100},  # seq 2 again, later, but no seq 0 before it
    ]
    db, recorder = record_estimates(tmp_path, sent)
    got = rows(db, "device IN ('w', 'n', 'x')")
    streams = [(s, T0 + s) for s in range(3)] + [(s, T0 + 100 + s) for s in range(3)]
    assert [(r["seq"], r["t"]) for r in got if r["device"] == "w"] == streams
    assert [(r["seq"], r["t"]) for r in got if r["device"] == "n"] == streams
    assert [(r["seq"], r["t"]) for r in got if r["device"] == "x"] == streams[:3]
    assert all(r["sbp"] == 120.0 for r in got)
    assert (recorder.counts.conflicts, recorder.counts.already_there) == (2, 0)


# A recording as `p2p record` wrote it before `epoch` had a column: schema version 1, word for word.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    stopped REAL,
    estimates_address TEXT NOT NULL,
    ingest_address TEXT,
    heartbeat INTEGER NOT NULL,
    estimates_written INTEGER NOT NULL DEFAULT 0,
    heartbeats_written INTEGER NOT NULL DEFAULT 0,
    ppg_written INTEGER NOT NULL DEFAULT 0,
    already_there INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    malformed TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS estimates (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    "v" INTEGER, "device" TEXT NOT NULL, "seq" INTEGER NOT NULL, "t" REAL NOT NULL, "window_s" REAL, "sbp" REAL,
    "dbp" REAL, "ok" INTEGER, "reason" TEXT, "sqi" REAL, "hr" REAL, "calibrated" INTEGER, "model" TEXT NOT NULL,
    "latency_ms" REAL, "ref_sbp" REAL, "ref_dbp" REAL, "sbp_window" REAL, "dbp_window" REAL, "sbp_lo" REAL,
    "sbp_hi" REAL, "dbp_lo" REAL, "dbp_hi" REAL, "interval" REAL,
    extra TEXT,
    UNIQUE (device, model, seq, t)
);
CREATE INDEX IF NOT EXISTS estimates_device_t ON estimates (device, t);
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    "uptime_s" REAL, "devices" INTEGER, "windows_total" INTEGER, "windows_per_s" REAL, "batch_mean" REAL,
    "latency_p50_ms" REAL, "latency_p99_ms" REAL, "messages_total" INTEGER, "batches_total" INTEGER, "model" TEXT,
    "queue" INTEGER, "backend_device" TEXT,
    rejected TEXT,
    extra TEXT
);
CREATE TABLE IF NOT EXISTS ppg (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    device TEXT NOT NULL, seq INTEGER NOT NULL, t0 REAL NOT NULL, fs REAL NOT NULL, n INTEGER NOT NULL,
    samples BLOB NOT NULL, ref_sbp REAL, ref_dbp REAL, meta TEXT,
    UNIQUE (device, seq, t0)
);
CREATE INDEX IF NOT EXISTS ppg_device_t0 ON ppg (device, t0);
PRAGMA application_id = 1345474642;
PRAGMA user_version = 1;
"""


def test_a_version_1_file_is_upgraded_and_appended_to(tmp_path, capsys):
    """Yesterday's recording (schema 1, `epoch` in `extra`): export still reads it as it is; a recorder opening it
    upgrades it (epoch a column and in the key, its rows and ids unchanged, `runs` given `conflicts` and `dropped`)
    and goes on appending to it."""
    db = tmp_path / "fake.sqlite"  # the file fake_daemon records into
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("INSERT INTO runs (started, estimates_address, heartbeat, estimates_written) VALUES (?, ?, 0, 4)",
                     (T0, "tcp://127.0.0.1:5556"))  # fmt: skip
        conn.executemany(
            "INSERT INTO estimates (run, received, v, device, seq, t, sbp, model, extra) "
            "VALUES (1, ?, 1, ?, ?, ?, ?, ?, ?)",
            [
                (T0, "nostore", 0, T0, 120.0, "m@00000000", None),  # a daemon without a state store
                (T0, "nostore", 1, T0 + 1, 121.0, "m@00000000", None),
                (T0, "boot", 0, T0, 122.0, "m@00000000", '{"epoch":1}'),  # with one: epoch kept as an unknown key
                (T0, "boot", 1, T0 + 1, 123.0, "m@00000000", '{"epoch":1,"future":[2]}'),
            ],
        )
    before = rows(db)
    assert record_main(["export", str(db), "--csv", str(tmp_path / "v1.csv")]) == 0  # read-only: not upgraded
    assert "wrote 4 rows" in capsys.readouterr().out
    assert "epoch" not in (tmp_path / "v1.csv").read_text().splitlines()[0].split(",")
    with fake_daemon(tmp_path, flush_s=0.05) as (pub, path, recorder):
        assert path == db
        until_recorded(pub, db, "estimates", lambda n: encode_estimate(good_estimate("probe", n)),
                       where="device = 'probe'")  # fmt: skip
        for e in [
            # The file holds these two keys with other values (sbp 121, 123, no `ok`): each a conflict, not a second
            # row — the second proves the epoch moved out of `extra` into the key (else it would be a new row).
            good_estimate("nostore", 1),
            good_estimate("boot", 1, epoch=1),
            good_estimate("boot", 1, epoch=2),  # the next start's: a new row (seq 0 of it never came: 1 missed)
            good_estimate("nostore", 4),  # seq 2, 3 never came: the gap after the file's last row, 2 missed
            good_estimate("end", 0),
        ]:
            pub.send_multipart(encode_estimate(e))
        wait_rows(db, lambda got: got[-1]["device"] == "end", timeout_s=10)
    assert (recorder.counts.already_there, recorder.counts.conflicts, recorder.counts.missed) == (0, 2, 3)
    got = rows(db)
    old = ["id", "run", "received", "v", "device", "seq", "t", "sbp", "model"]
    assert [{k: r[k] for k in old} for r in got[:4]] == [{k: r[k] for k in old} for r in before]  # rows and ids kept
    assert [(r["epoch"], r["extra"]) for r in got[:4]] == [(None, None), (None, None), (1, None), (1, '{"future":[2]}')]
    new = [(r["device"], r["epoch"], r["seq"]) for r in got[4:] if r["device"] != "probe"]
    assert new == [("boot", 2, 1), ("nostore", None, 4), ("end", None, 0)]
    assert list(got[0]) == ["id", *ESTIMATE_COLUMNS]  # the columns of a new file, in its order
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        indexes = {r[1]: r[2] for r in conn.execute("PRAGMA index_list(estimates)")}
        assert indexes == {"estimates_key": 1, "estimates_device_t": 0, "estimates_seq": 0}  # the v1 UNIQUE is gone
        runs = conn.execute("SELECT conflicts, dropped FROM runs ORDER BY id").fetchall()
        assert runs == [(0, "{}"), (2, "{}")]  # yesterday's run, and this one
    assert record_main(["export", str(db), "--csv", str(tmp_path / "v2.csv")]) == 0
    with (tmp_path / "v2.csv").open(newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f) if r["device"] == "boot"] == ["1", "1", "2"]


def test_a_full_batch_commits_without_waiting_for_flush_s(tmp_path):
    with fake_daemon(tmp_path, flush_s=3600.0, flush_rows=50) as (pub, db, recorder):
        deadline = time.monotonic() + 10
        for n in range(10_000):  # the slow joiner: until the recorder has a probe (queued, not yet written)
            pub.send_multipart(encode_estimate(good_estimate("probe", n)))
            if recorder.last_seq:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for seq in range(120):
            pub.send_multipart(encode_estimate(good_estimate("dev", seq)))
        time.sleep(0.5)
        written = len(wait_rows(db, lambda got: len(got) >= 100, timeout_s=10))
    final = rows(db)  # stopping commits what is pending
    assert len([r for r in final if r["device"] == "dev"]) == 120
    assert written % 50 == 0 and written < len(final)  # whole batches of 50; the rest waited (flush_s is an hour)


def test_raw_ppg_from_a_proxy_shards_side(tmp_path):
    """`--ingest` at a real proxy's shards side, where ingest is published outward."""
    fs, x = 125.0, np.sin(np.arange(100) / 5.0).astype(np.float32)
    with fake_daemon(tmp_path, proxy=True, flush_s=0.05) as (pub, db, recorder):
        until_recorded(pub, db, "ppg", lambda n: encode_ingest("probe", n, T0 + n, fs, x[:1]))
        for seq in range(4):
            chunk = x[25 * seq : 25 * seq + 25]
            pub.send_multipart(encode_ingest("w1", seq, T0 + 25 * seq / fs, fs, chunk, ref=(120, 80) if seq else None))
        pub.send_multipart(encode_ingest("w1", 3, T0 + 75 / fs, fs, x[75:]))  # again: kept once
        pub.send_multipart([b"ppg.w1", b"not msgpack"])
        pub.send_multipart(encode_ingest("w2", 0, T0, fs, np.array([], np.float32)))
        deadline = time.monotonic() + 10
        while sum(recorder.counts.malformed.values()) < 2 or recorder.counts.already_there < 1:
            assert time.monotonic() < deadline, recorder.counts
            time.sleep(0.05)
    with sqlite3.connect(db) as conn:
        got = conn.execute(
            "SELECT seq, t0, fs, n, samples, ref_sbp FROM ppg WHERE device = 'w1' ORDER BY seq"
        ).fetchall()
    assert [(s, t0, f, n, r) for s, t0, f, n, _, r in got] == [
        (s, T0 + 25 * s / fs, fs, 25, 120.0 if s else None) for s in range(4)
    ]
    np.testing.assert_array_equal(np.concatenate([np.frombuffer(b, "<f4") for *_, b, _ in got]), x)
    assert recorder.counts.malformed == {"not_msgpack": 1, "empty_samples": 1}


def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    cases = [
        (["--db", str(tmp_path / "no" / "such" / "x.sqlite")], "folder that exists"),
        (["--db", str(other), "--duration-s", "0"], "not a p2p recording"),
        (["--db", str(tmp_path / "a.sqlite"), "--estimates", "localhost:5556"], "--estimates"),
        (["--db", str(tmp_path / "a.sqlite"), "--flush-s", "0"], "--flush-s"),
        (["export", str(tmp_path / "missing.sqlite"), "--csv", str(tmp_path / "o.csv")], "no such recording"),
        (["export", str(other), "--csv", str(tmp_path / "o.csv")], "not a p2p recording"),
        (["score", str(other)], "not a p2p recording"),
    ]
    for argv, message in cases:
        assert record_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
    # an empty recording has nothing to score, and says what would have some
    assert record_main(["--db", str(tmp_path / "empty.sqlite"), "--duration-s", "0"]) == 0
    assert "recorded 0 estimates" in capsys.readouterr().out
    assert record_main(["score", str(tmp_path / "empty.sqlite")]) == 2
    assert "carries a reference" in capsys.readouterr().err


def test_a_damaged_recording_is_named_as_such_and_exit_2(tmp_path, capsys):
    """An error no retry fixes ends the recorder with its cause (here SQLITE_CORRUPT), not "cannot write"."""
    db = RecordingDB(tmp_path / "d.sqlite")
    db.start_run("tcp://127.0.0.1:5556", None, False, T0)
    db.commit()
    db.close()
    with open(tmp_path / "d.sqlite", "r+b") as f:  # every page but the first (the header, the schema) overwritten
        f.seek(4096)
        f.write(b"\xff" * ((tmp_path / "d.sqlite").stat().st_size - 4096))
    assert record_main(["--db", str(tmp_path / "d.sqlite"), "--duration-s", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is damaged (SQLITE_CORRUPT" in err and err.count("\n") == 1, err


def test_export_needs_a_format(tmp_path, capsys):
    assert record_main(["--db", str(tmp_path / "e.sqlite"), "--duration-s", "0"]) == 0
    assert record_main(["export", str(tmp_path / "e.sqlite")]) == 2
    assert "--csv" in capsys.readouterr().err
