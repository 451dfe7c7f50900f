"""A cluster of daemons behind a p2p-proxy: every device owned by exactly one daemon, by rendezvous hashing over the
live daemons (stream/cluster/ownership.py) — whatever its id looks like; with Redis leases
(stream/cluster/membership.py), a daemon killed with -9 has its devices taken over by the others, and gets them back
when it returns. Real processes: a proxy, daemons, the fleet simulator, redis-server on a unix socket; one subscriber
on the proxy sees it all."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from zmq_helpers import ROOT, Subscriber, daemon_process, request, wait_ready

from p2p_stream.stream.cluster.ownership import owner, weight
from p2p_stream.tools.cluster.proxy import Proxy

# Ids as wards name them: prefixes that overlap (ward3 / ward30), ones no prefix scheme foresaw, UUIDs.
IDS = (
    [f"ward3-bed{b}" for b in range(1, 7)]
    + [f"ward30-bed{b}" for b in range(1, 5)]
    + ["icu-bed1", "icu-bed2", "ER:trolley.7", "home_0042"]
    + [str(uuid.UUID(int=n * 0x9E3779B97F4A7C15 + 1)) for n in range(6)]
)


def test_rendezvous_covers_every_id_once_and_moves_only_the_leaver_s_devices():
    ids = [f"dev-{n}" for n in range(20_000)] + IDS
    three = ("a", "b", "c")
    owners = {d: owner(d, three) for d in ids}
    share = Counter(owners.values())
    assert set(share) == set(three) and all(abs(n / len(ids) - 1 / 3) < 0.02 for n in share.values()), share
    two = ("a", "c")  # b leaves: only b's devices move, each to whichever of a, c is next for it
    assert all(owner(d, two) == (o if o != "b" else max(two, key=lambda m: weight(m, d))) for d, o in owners.items())
    four = ("a", "b", "c", "d")  # d joins: it takes about a quarter, from each alike; nothing else moves
    moved = [d for d in ids if owner(d, four) != owners[d]]
    assert all(owner(d, four) == "d" for d in moved) and abs(len(moved) / len(ids) - 1 / 4) < 0.02
    assert owner("x", ()) is None
    assert weight("a", "ward3-bed1") == weight("a", "ward3-bed1") != weight("b", "ward3-bed1")


@contextmanager
def cluster_ends() -> Iterator[tuple[dict[str, str], Subscriber]]:
    """A proxy (in this process, as a["proxy"]) on ipc addresses, and a subscriber on its subscribers' side."""
    folder = tempfile.mkdtemp(prefix="p2pc")
    a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers")}
    a["folder"] = folder
    proxy = Proxy(a["wearables"], a["shards"], a["estimates"], a["subscribers"])
    proxy.start()
    a["proxy"] = proxy
    sub = Subscriber(a["subscribers"])
    try:
        yield a, sub
    finally:
        sub.close()  # the proxy's threads are daemonic: they end with the test process, as in test_scaleout
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def member(a: dict[str, str], name: str, *flags: str) -> Iterator[subprocess.Popen]:
    """Daemon `name` of the cluster, connected to the proxy; its control socket at a[name]."""
    a[name] = f"ipc://{a['folder']}/control-{name}"
    addresses = {"ingest": a["shards"], "publish": a["estimates"], "control": a[name]}
    with daemon_process(addresses, "--set", "sockets.connect=true", "--set", f"cluster.id={name}", *flags) as proc:
        yield proc


def fleet_of(a: dict[str, str], ids: list[str]) -> subprocess.Popen:
    path = f"{a['folder']}/ids.txt"
    with open(path, "w") as f:
        f.write("\n".join(ids))
    cmd = [sys.executable, "simulators/fleet.py", "--ids", path, "--ingest", a["wearables"], "--rates", "125",
           "--chunk-s", "0.2", "--wait-s", "60"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def by_device(got: list[tuple[float, dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _, e in got:
        out.setdefault(e["device"], []).append(e)
    return out


def test_three_daemons_of_a_fixed_cluster_estimate_every_device_once_every_window():
    names = ("a", "b", "c")
    flags = ("--set", f"cluster.members={','.join(names)}")
    with cluster_ends() as (a, sub), ExitStack() as stack:
        procs = {n: stack.enter_context(member(a, n, *flags)) for n in names}
        for n in names:
            wait_ready(a[n])
        time.sleep(1.0)  # every daemon's subscription has reached the proxy
        pub = fleet_of(a, IDS)
        try:
            sub.collect(lambda g: all(len(e) >= 5 for e in by_device(g).values()) and len(by_device(g)) == len(IDS), 90)
            stats = {n: request(a[n], {"cmd": "stats"}) for n in names}
        finally:
            pub.kill()
            pub.wait(10)
        assert all(p.poll() is None for p in procs.values())
    got = by_device(sub.got)
    assert sorted(got) == sorted(IDS)  # every device, whatever its id
    for device, estimates in got.items():
        assert {e["daemon"] for e in estimates} == {owner(device, names)}, device  # by its owner only
        assert [e["seq"] for e in estimates] == list(range(len(estimates))), device  # every window, once
    for n in names:
        assert stats[n]["daemon"] == n and stats[n]["members"] == list(names)
        assert stats[n]["devices"] == sum(owner(d, names) == n for d in IDS)
        assert stats[n]["foreign_total"] > 0  # it heard the others' devices and left them


def test_messages_no_daemon_takes_are_counted_at_the_proxy_and_one_leaving_cuts_no_other_off():
    with cluster_ends() as (a, sub):
        proxy = a["proxy"]
        pub = fleet_of(a, IDS[:4])
        try:
            wait_for(lambda: proxy.unowned >= 20, 30, "the proxy never counted the messages no daemon took")
            with member(a, "a", "--set", "cluster.members=a,b") as proc_a:  # b never comes: a owns only its own
                wait_ready(a["a"])
                with member(a, "b", "--set", "cluster.members=a,b") as proc_b:
                    wait_ready(a["b"])
                    sub.collect(lambda g: {e["daemon"] for _, e in g} == {"a", "b"}, 60)
                    unowned = proxy.unowned  # both take them now: not one more unowned
                    proc_b.kill()
                    proc_b.wait(10)
                gone = time.time()  # b's unsubscribe must not stop the wearables sending to the proxy for a
                a_devices = {d for d in IDS[:4] if owner(d, ("a", "b")) == "a"}
                sub.collect(lambda g: {e["device"] for t, e in g if t > gone + 5} >= a_devices, 30)
                assert proc_a.poll() is None
        finally:
            pub.kill()
            pub.wait(10)
    assert unowned == proxy.unowned or proxy.unowned - unowned < 5  # at most the few in flight as b was killed
    assert a_devices  # the four ids split between a and b


# ---------------------------------------------------------------- a live cluster: Redis leases


class RedisServer:
    """A real redis-server of a test's own, on a unix socket (no port to collide), no persistence; `kill()` and
    `start()` again, on the same socket, model an outage."""

    def __init__(self) -> None:
        self.sock = f"{tempfile.mkdtemp(prefix='p2pr')}/redis.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        cmd = ["redis-server", "--port", "0", "--unixsocket", self.sock, "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=self.sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture()
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: apt-get install redis-server (make test does, as root)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture()
def redis_url(redis_server) -> str:
    return redis_server.url


def members(a: dict[str, str], name: str) -> list[str]:
    return request(a[name], {"cmd": "stats"})["members"]


def wait_for(what, timeout_s: float, message: str) -> float:
    """Poll `what()` until true; the seconds it took."""
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < timeout_s, message
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_killed_daemon_s_devices_are_taken_over_and_come_back_when_it_returns(redis_url, tmp_path):
    """Two daemons on Redis leases (lease 2 s), one state store: b is killed with -9; a owns every device within
    the lease, its estimates of b's devices resume (calibrated where b had calibrated them) within the stated
    takeover time; b returns under the same id and gets exactly its devices back. No (device, daemon, seq) twice."""
    flags = ("--set", f"cluster.redis={redis_url}", "--set", "cluster.lease_s=2",
             "--set", f"state.path={tmp_path / 'state.db'}")  # fmt: skip
    names = ("a", "b")
    b_devices = [d for d in IDS if owner(d, names) == "b"]
    with cluster_ends() as (a, sub), member(a, "a", *flags) as proc_a:
        wait_ready(a["a"])
        with member(a, "b", *flags) as proc_b:
            wait_ready(a["b"])
            wait_for(lambda: members(a, "a") == ["a", "b"], 10, "a never saw b join")
            time.sleep(1.0)
            pub = fleet_of(a, IDS)
            try:
                sub.collect(lambda g: {e["device"] for _, e in g if e["ok"]} >= set(IDS), 60)
                calibrated = b_devices[0]
                assert request(a["b"], {"cmd": "calibrate", "device": calibrated, "sbp": 150, "dbp": 95})["ok"]
                sub.collect(lambda g: any(e["device"] == calibrated and e["calibrated"] for _, e in g), 30)
                killed = time.time()
                proc_b.send_signal(signal.SIGKILL)
                proc_b.wait(10)
                left = wait_for(lambda: members(a, "a") == ["a"], 10, "b's lease never expired")

                def taken_over(g) -> bool:
                    late = {e["device"] for t, e in g if t > killed and e["daemon"] == "a" and e["ok"]}
                    return late >= set(b_devices)

                sub.collect(taken_over, 30)

                def first_s(d: str, ok: bool) -> float:  # a's first estimate (ok) or word (any) of d after the kill
                    return min(t for t, e in sub.got if t > killed and e["device"] == d and e["daemon"] == "a"
                               and (e["ok"] or not ok)) - killed  # fmt: skip

                gap_s = max(first_s(d, ok=False) for d in b_devices)
                takeover_s = max(first_s(d, ok=True) for d in b_devices)
                assert any(e["calibrated"] for t, e in sub.got if t > killed and e["device"] == calibrated)
                for d in b_devices:  # a's first word on each: a `gap` (its seq 0 there), then its estimates
                    first = next(e for t, e in sub.got if t > killed and e["device"] == d and e["daemon"] == "a")
                    assert (first["ok"], first.get("reason"), first["seq"]) == (False, "gap", 0), first
            finally:
                pub.kill()
                pub.wait(10)
            pub = fleet_of(a, IDS)  # the fleet goes on; b comes back under its name
            try:
                with member(a, "b", *flags) as proc_b2:
                    wait_ready(a["b"])
                    wait_for(lambda: members(a, "a") == ["a", "b"], 10, "a never saw b come back")
                    back = time.time()
                    sub.collect(
                        lambda g: {e["device"] for t, e in g if t > back and e["daemon"] == "b"} >= set(b_devices), 40
                    )
                    stats = {n: request(a[n], {"cmd": "stats"}) for n in names}
                    assert proc_b2.poll() is None
            finally:
                pub.kill()
                pub.wait(10)
        assert proc_a.poll() is None
    print(f"\nb left the live set {left:.1f} s after kill -9 (seen by polling a's stats); a published a gap for each "
          f"of its devices within {gap_s:.1f} s and estimates within {takeover_s:.1f} s")  # fmt: skip
    assert takeover_s <= 15.0  # the stated takeover time: lease + one window (4 s here) + the fleet's own pace
    assert stats["a"]["devices"] == len(IDS) - len(b_devices) and stats["b"]["devices"] == len(b_devices)
    late = [e for t, e in sub.got if t > back + 1.0]  # after the handback: each device from its owner only
    assert all(e["daemon"] == owner(e["device"], names) for e in late)
    for d in b_devices:  # a joining daemon takes its devices without a double estimate: a's last before b's first
        from_a = [t for t, e in sub.got if t > back and e["device"] == d and e["daemon"] == "a" and e["ok"]]
        from_b = [t for t, e in sub.got if t > back and e["device"] == d and e["daemon"] == "b" and e["ok"]]
        assert from_b and (not from_a or max(from_a) < min(from_b)), d
    keys = Counter((e["device"], e["epoch"], e["seq"]) for _, e in sub.got)
    assert max(keys.values()) == 1  # the shared store numbers each daemon start: nothing repeats


def test_a_redis_outage_moves_nothing_and_the_leases_come_back(redis_server, tmp_path):
    """Redis killed under a two-daemon cluster: each daemon keeps the live set it saw (every device stays with its
    owner, estimated on), and says `cluster_ok: false`; Redis started again, both take their leases back."""
    flags = ("--set", f"cluster.redis={redis_server.url}", "--set", "cluster.lease_s=1")
    names = ("a", "b")
    with cluster_ends() as (a, sub), member(a, "a", *flags) as proc_a, member(a, "b", *flags) as proc_b:
        wait_ready(a["a"])
        wait_ready(a["b"])
        wait_for(lambda: members(a, "a") == members(a, "b") == ["a", "b"], 10, "a and b never saw each other")
        time.sleep(1.0)
        pub = fleet_of(a, IDS)
        try:
            sub.collect(lambda g: {e["device"] for _, e in g if e["ok"]} >= set(IDS), 60)
            redis_server.kill()
            down = time.time()
            wait_for(lambda: not any(request(a[n], {"cmd": "stats"})["cluster_ok"] for n in names), 10, "no one saw")
            time.sleep(3.0)  # three leases long: nothing moves
            sub.collect(lambda g: {e["device"] for t, e in g if t > down + 3 and e["ok"]} >= set(IDS), 30)
            assert [members(a, n) for n in names] == [["a", "b"], ["a", "b"]]
            redis_server.start()
            back = wait_for(
                lambda: all(request(a[n], {"cmd": "stats"})["cluster_ok"] for n in names), 10, "no way back"
            )
            assert [members(a, n) for n in names] == [["a", "b"], ["a", "b"]]
            assert proc_a.poll() is None and proc_b.poll() is None
        finally:
            pub.kill()
            pub.wait(10)
    assert all(e["daemon"] == owner(e["device"], names) for _, e in sub.got)  # no device ever moved
    print(f"\nRedis back: both daemons held their leases again {back:.1f} s later")
