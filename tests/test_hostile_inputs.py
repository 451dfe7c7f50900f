"""One sender cannot hurt another (issue 14): each attack against a real daemon process while 50 good devices stream.

For every attack, at the rate that broke the daemon before: the good devices lose no window, their estimates reach a
subscriber within 1 s of the message holding their last sample being sent (p99), `ping`
answers within 1 s, and the daemon's peak RSS grows by less than the bound its configuration states
(`stream.bounds.memory_bounds`, docs/reliability.md). Longer runs of the same attacks: benchmarks/hostile.py.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np
import zmq
from hostile import Attack, lost_windows, peak_rss_mb
from zmq_helpers import Subscriber, daemon_process, fleet, ipc_addresses, request, wait_ready

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.stream.ingest.bounds import CONTROL_MAX_BYTES, memory_bounds
from p2p_stream.wire.protocol import decode_map, pack

GOOD_DEVICES = 50
CHUNK_S = 0.2  # seconds of samples in each of fleet.py's messages
# Tight limits, so a bound that does not hold shows within seconds.
LIMITS = {
    "limits": {"ingest_queue_mb": 32.0, "ring_memory_mb": 32.0, "max_devices": 1000},
    "batching": {"max_queue_mb": 32.0},
}
ALLOWANCE_MB = 64.0  # Python's allocator and ZeroMQ's own buffers, beyond what the bounds count


def flags(sections: dict) -> list[str]:
    return [arg for s, kv in sections.items() for k, v in kv.items() for arg in ("--set", f"{s}.{k}={v}")]


def bound_mb(connections: int) -> float:
    return sum(memory_bounds(load_daemon_config(None, [LIMITS]), connections).values()) + ALLOWANCE_MB


class Pinger(threading.Thread):
    """`ping` every 0.2 s on a fresh socket; the longest answer time."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address, self.stop, self.times = address, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            request(self.address, {"cmd": "ping"}, timeout_s=10)
            self.times.append(time.monotonic() - start)
            self.stop.wait(0.2)


def under_attack(names: str | list[str], seconds: float = 8.0, connections: int = 3) -> dict:
    """Run the attack(s) `names` together for `seconds` against a daemon with 50 good devices; return what was
    measured. `connections`: the ingest and control connections they open, for the memory bound."""
    with ipc_addresses() as a, daemon_process(a, *flags(LIMITS)) as proc:
        wait_ready(a["control"])
        good = fleet(a["ingest"], devices=GOOD_DEVICES)
        sub = Subscriber(a["publish"])
        try:
            sub.collect(lambda g: len({e["device"] for _, e in g}) >= GOOD_DEVICES, 60)  # every device has started
            before_mb = peak_rss_mb(proc.pid)
            started = time.time()
            pinger = Pinger(a["control"])
            with contextlib.ExitStack() as attacks:
                for name in [names] if isinstance(names, str) else names:
                    attacks.enter_context(Attack(name, a))
                pinger.start()
                end = time.monotonic() + seconds
                sub.collect(lambda g: time.monotonic() >= end, seconds + 30)
                pinger.stop.set()
            ended = time.time()
            pinger.join(timeout=15)
            settle = time.monotonic() + 3.0  # windows cut during the attack still reach the subscriber
            sub.collect(lambda g: time.monotonic() >= settle, 30)
            stats = request(a["control"], {"cmd": "stats"})
            peak_mb = peak_rss_mb(proc.pid)
        finally:
            sub.close()
            good.kill()
            good.wait(timeout=10)
        assert proc.poll() is None, proc.output()[-3000:]
    ours = [(r, e) for r, e in sub.got if e["device"].startswith("sim")]
    during = [r - e["t"] for r, e in ours if started <= r <= ended + 2.0]
    return {
        "lost": {d: n for d, n in lost_windows([e for _, e in ours]).items() if n},
        "delay_p99_s": float(np.percentile(during, 99)) if during else float("inf"),
        "estimates_during": len(during),
        "ping_max_s": max(pinger.times, default=float("inf")),
        "growth_mb": peak_mb - before_mb,
        "bound_mb": bound_mb(connections),
        "rejected": stats["rejected"],
        "latency_p99_ms": stats["latency_p99_ms"],
    }


def check(m: dict, seconds: float = 8.0) -> None:
    print(m)  # the figures docs/reliability.md quotes: `pytest -s tests/test_hostile_inputs.py`
    assert not m["lost"], f"good devices lost windows: {m}"
    assert m["estimates_during"] >= GOOD_DEVICES * (seconds - 2), m  # a window per device per second went out
    # fleet.py stamps a message's samples from when it sends it: the last sample of a window was sent at most
    # CHUNK_S before its `t`, so receipt − t + CHUNK_S bounds the time from sending to the subscriber.
    assert m["delay_p99_s"] + CHUNK_S <= 1.0, m
    assert m["ping_max_s"] <= 1.0, m
    assert m["growth_mb"] <= m["bound_mb"], m


def test_a_nan_flood_is_shed_as_its_own_and_the_others_lose_nothing():
    m = under_attack("nan_flood")
    check(m)
    assert m["rejected"].get("over_budget", 0) > 0, m  # its markers and messages over its share, counted


def test_a_costly_sampling_rate_and_400_slightly_different_rates_cost_the_others_nothing():
    for attack in ("odd_rate", "many_rates"):
        check(under_attack(attack))


def test_a_device_sending_far_faster_than_its_rate_is_shed_under_its_own_name():
    m = under_attack("fast_sender")
    check(m)
    assert m["rejected"].get("over_budget", 0) > 0, m


def test_huge_multi_frame_messages_and_control_requests_are_refused_before_they_are_held():
    for attack in ("big_frames", "control_flood"):
        check(under_attack(attack, connections=21))


def test_a_subscription_flood_is_refused_and_publishing_goes_on():
    """100,000 subscriptions of 513 bytes took 2.4 GB before (measured again with the limit off: 2.15 GB in 8 s);
    the first one now drops the subscriber's connection, each time it reconnects."""
    check(under_attack("subscription_flood"))


def test_the_heartbeat_latency_counts_the_time_messages_queued_in_zeromq():
    """SIGSTOP the daemon for 3 s while a device streams: its messages wait in ZeroMQ. The estimates' latency_ms and
    the heartbeat's p99 must show those seconds, as a subscriber sees them (receipt − the window's last sample)."""
    with ipc_addresses() as a, daemon_process(a) as proc:
        wait_ready(a["control"])
        good = fleet(a["ingest"], devices=5)
        sub = Subscriber(a["publish"])
        try:
            sub.collect(lambda g: len({e["device"] for _, e in g}) >= 5, 60)
            proc.send_signal(signal.SIGSTOP)
            time.sleep(3.0)
            proc.send_signal(signal.SIGCONT)
            resumed = time.time()
            sub.collect(lambda g: g[-1][0] > resumed + 3.0, 30)
            heartbeat_p99 = request(a["control"], {"cmd": "stats"})["latency_p99_ms"]
        finally:
            sub.close()
            good.kill()
            good.wait(timeout=10)
    after = [(r - e["t"], e["latency_ms"] / 1000) for r, e in sub.got if resumed - 1 <= r <= resumed + 1.5]
    seen = max(s for s, _ in after)
    reported = max(lat for _, lat in after)
    assert seen > 1.5, after  # the windows did wait (the test works)…
    assert seen - 0.5 <= reported <= seen + 0.5, after  # …and the daemon says so (before: tens of ms)
    assert heartbeat_p99 / 1000 >= seen - 0.5, (heartbeat_p99, seen)


def test_squatted_slots_go_to_a_real_wearable_and_a_mass_expiry_stalls_nothing():
    """Item 9: 300 ids kept alive with a tiny message each every 5 s fill a table of 300; real wearables that come
    later still get in (each takes the slot of a squatter that cut no window), and `ping` stays within 1 s."""
    limits = {"limits": {"max_devices": 300, "device_idle_s": 5.0}}
    with ipc_addresses() as a, daemon_process(a, *flags(limits)) as proc:
        wait_ready(a["control"])
        sub = Subscriber(a["publish"])
        pinger = Pinger(a["control"])
        good = None
        try:
            with Attack("squatters", a, ids=300, every_s=5.0):
                pinger.start()
                time.sleep(10.0)  # the table is full, and every squatter has gone 2 windows (8 s) without one
                assert request(a["control"], {"cmd": "stats"})["devices"] == 300
                good = fleet(a["ingest"], devices=5)
                sub.collect(lambda g: len({e["device"] for _, e in g if e["ok"]}) >= 5, 60)
                stats = request(a["control"], {"cmd": "stats"})
            time.sleep(7.0)  # the squatters stop: ~295 expire at once
            pinger.stop.set()
            pinger.join(timeout=15)
        finally:
            sub.close()
            if good is not None:
                good.kill()
                good.wait(timeout=10)
        assert proc.poll() is None
    assert stats["rejected"].get("replaced", 0) >= 5, stats
    assert max(pinger.times) <= 1.0, pinger.times


def test_a_control_request_over_64_kib_is_never_read_and_a_smaller_one_is_answered():
    """Item 5: the control socket had no size limit (four 400 MB requests: +1.1 GB). Now ZeroMQ drops a requester
    whose frame is over 64 KiB before it is held; one under it gets its (error) reply."""
    with ipc_addresses() as a, daemon_process(a) as proc:
        wait_ready(a["control"])
        ctx = zmq.Context()
        try:
            replies = {}
            for name, pad in (("over", CONTROL_MAX_BYTES), ("under", CONTROL_MAX_BYTES - 200)):
                req = ctx.socket(zmq.REQ)
                req.setsockopt(zmq.LINGER, 0)
                req.connect(a["control"])
                request_bytes = pack({"cmd": "stats", "pad": "x" * pad})
                assert (len(request_bytes) > CONTROL_MAX_BYTES) == (name == "over")
                req.send(request_bytes)
                replies[name] = decode_map(req.recv()) if req.poll(3000) else None
            assert replies["over"] is None  # never read: its connection was dropped
            assert replies["under"] is not None and "ok" in replies["under"]
            assert request(a["control"], {"cmd": "ping"}, timeout_s=1.0) == {"ok": True}
        finally:
            ctx.destroy(linger=0)
        assert proc.poll() is None
