"""One sender cannot hurt another (issue 14): each attack against a real daemon process while 50 good devices stream.

For every attack, at the rate that broke the daemon before: the good devices lose no window and every estimate of
theirs is delivered; their delay to a subscriber, and `ping`'s answer time, stay within a few times what they were in
the same run with the same attack aimed at a decoy instead of the daemon (so the attacker's own cost to the machine,
and whatever else the machine is busy with, weigh on both alike: no absolute number of seconds is asserted); and the
daemon's peak RSS grows by less than the bound its configuration states (`stream.bounds.memory_bounds`,
docs/reliability.md). Absolute figures, and longer runs of the same attacks: benchmarks/hostile.py.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np
import pytest
import zmq
from hostile import ALLOWANCE_S, SLOWDOWN, Attack, Decoy, lost_windows, peak_rss_mb
from zmq_helpers import Subscriber, daemon_process, fleet, ipc_addresses, request, wait_ready

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.ppg.quality import REASONS
from p2p_stream.stream.ingest.bounds import CONTROL_MAX_BYTES, memory_bounds
from p2p_stream.wire.protocol import decode_map, pack

GOOD_DEVICES = 50
CHUNK_S = 0.2  # seconds of samples in each of fleet.py's messages
# The attack's phase, and the yardstick's before it: as long, for the machine's share of an attack aimed at the
# decoy comes seconds in (a subscription flood's: a 5 s yardstick missed it, p99 0.07 s against 0.44 s over 8 s).
PHASE_S = YARDSTICK_S = 8.0
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
    """`ping` every 0.2 s on a fresh socket; `times`: (when it was sent, time.time(); how long the answer took, s)."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address, self.stop, self.times = address, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            sent, start = time.time(), time.monotonic()
            request(self.address, {"cmd": "ping"}, timeout_s=10)
            self.times.append((sent, time.monotonic() - start))
            self.stop.wait(0.2)

    def longest(self, start: float, end: float = float("inf")) -> float:
        """The longest answer to a ping sent between `start` and `end` (time.time())."""
        return max((took for sent, took in self.times if start <= sent <= end), default=float("inf"))


def p99(delays: list[float]) -> float:
    return float(np.percentile(delays, 99)) if delays else float("inf")


def under_attack(
    names: str | list[str],
    seconds: float = PHASE_S,
    connections: int = 3,
    twins: dict[str, dict] | None = None,
    settings: tuple[str, ...] = (),
) -> dict:
    """50 good devices stream to one daemon through two phases: the baseline (YARDSTICK_S), with the attack(s) `names`
    aimed at a Decoy (the machine pays for sending them, the daemon does not), then with them aimed at the daemon for
    `seconds`. Return what was measured in each phase. `twins`: per attack, the options of its benign twin, aimed at
    the daemon in the baseline instead (an attack that is also load, such as 400 devices, which the daemon must carry
    either way). `connections`: the ingest and control connections the attacks open, for the memory bound.
    `settings`: the daemon's further `--set KEY=VALUE` (benchmarks/hostile.py)."""
    names = [names] if isinstance(names, str) else names
    twins = twins or {}
    extra = [arg for kv in settings for arg in ("--set", kv)]
    with ipc_addresses() as a, daemon_process(a, *flags(LIMITS), *extra) as proc, Decoy() as decoy:
        wait_ready(a["control"])
        good = fleet(a["ingest"], devices=GOOD_DEVICES)
        sub = Subscriber(a["publish"])
        pinger = Pinger(a["control"])
        try:
            sub.collect(lambda g: len({e["device"] for _, e in g}) >= GOOD_DEVICES, 60)  # every device has started
            pinger.start()
            baseline_started = time.time()
            with contextlib.ExitStack() as attacks:
                for name in names:
                    attacks.enter_context(
                        Attack(name, a, **twins[name]) if name in twins else Attack(name, decoy.addresses)
                    )
                end = time.monotonic() + YARDSTICK_S
                sub.collect(lambda g: time.monotonic() >= end, YARDSTICK_S + 30)
            before_mb = peak_rss_mb(proc.pid)
            started = time.time()
            with contextlib.ExitStack() as attacks:
                for name in names:
                    attacks.enter_context(Attack(name, a))
                end = time.monotonic() + seconds
                sub.collect(lambda g: time.monotonic() >= end, seconds + 30)
            ended = time.time()
            pinger.stop.set()
            pinger.join(timeout=15)
            # Every window cut during the attack reaches the subscriber: wait for each device's first one after it.
            # A daemon that lost or starved them leaves this wait at its limit, and the checks below say why.
            settle = time.monotonic() + 30.0
            sub.collect(lambda g: time.monotonic() >= settle or past(g, ended) >= GOOD_DEVICES, 60)
            stats = request(a["control"], {"cmd": "stats"})
            peak_mb = peak_rss_mb(proc.pid)
        finally:
            pinger.stop.set()
            sub.close()
            good.kill()
            good.wait(timeout=10)
        assert proc.poll() is None, proc.output()[-3000:]
    ours = [(r, e) for r, e in sub.got if e["device"].startswith("sim")]
    # fleet.py stamps a message's samples from when it sends it: the last sample of a window was sent at most
    # CHUNK_S before its `t`, so receipt − t + CHUNK_S bounds the time from sending to the subscriber. Each window
    # counts once, in the phase its last sample was sent in, however late it arrived.
    baseline = [r - e["t"] + CHUNK_S for r, e in ours if baseline_started <= e["t"] < started]
    during = [(e["device"], r - e["t"] + CHUNK_S) for r, e in ours if started <= e["t"] <= ended]
    per_device = {d: 0 for d in {e["device"] for _, e in ours}}
    for d, _ in during:
        per_device[d] += 1
    return {
        "lost": {d: n for d, n in lost_windows([e for _, e in ours]).items() if n},
        # Windows rejected for what happened to them on the way (a `gap`: messages lost; `overloaded`: shed), not
        # for their signal (fleet.py's few devices with a poor pulse: `no_pulse`, as without an attack).
        "not_delivered": sorted(
            {(e["device"], e.get("reason")) for _, e in ours if e.get("reason") not in (None, *REASONS)}
        ),
        "devices_past_the_attack": past(sub.got, ended),
        "fewest_estimates_during": min(per_device.values(), default=0),
        "baseline_delay_p99_s": p99(baseline),
        "delay_p99_s": p99([delay for _, delay in during]),
        "baseline_ping_max_s": pinger.longest(baseline_started, started),
        "ping_max_s": pinger.longest(started),
        "growth_mb": peak_mb - before_mb,
        "bound_mb": bound_mb(connections),
        "rejected": stats["rejected"],
        "latency_p99_ms": stats["latency_p99_ms"],
    }


def past(got: list[tuple[float, dict]], when: float) -> int:
    """How many good devices have an estimate of a window that ended after `when`."""
    return len({e["device"] for _, e in got if e["device"].startswith("sim") and e["t"] > when})


def check(m: dict, seconds: float = PHASE_S) -> None:
    print(m)  # the figures docs/reliability.md quotes: `pytest -s tests/test_hostile_inputs.py`
    # Counts: nothing lost, every estimate delivered and sound.
    assert not m["lost"], f"good devices lost windows: {m}"
    assert not m["not_delivered"], f"good devices' windows were cut short or shed: {m}"
    assert m["devices_past_the_attack"] == GOOD_DEVICES, f"some good devices' estimates stopped: {m}"
    assert m["fewest_estimates_during"] >= seconds - 1, m  # a window per device per second of the attack went out
    # Ratios, in this run: the attack slowed the good devices and the control socket by a few times at most.
    assert m["delay_p99_s"] <= SLOWDOWN * m["baseline_delay_p99_s"] + ALLOWANCE_S, m
    assert m["ping_max_s"] <= SLOWDOWN * m["baseline_ping_max_s"] + ALLOWANCE_S, m
    assert m["growth_mb"] <= m["bound_mb"], m


def test_a_nan_flood_is_shed_as_its_own_and_the_others_lose_nothing():
    m = under_attack("nan_flood")
    check(m)
    assert m["rejected"].get("over_budget", 0) > 0, m  # its markers and messages over its share, counted


# ~45 s; in CI: test_preprocess.py (an odd rate gets small resampling terms), test_quality.py and
# test_worker_fairness.py (400 rates near 25 Hz make one gate pass and one model call)
@pytest.mark.slow
def test_a_costly_sampling_rate_and_400_slightly_different_rates_cost_the_others_nothing():
    twins = {"odd_rate": {"base_hz": 25.0, "step_hz": 0.0}, "many_rates": {"step_hz": 0.0}}  # the same, one cheap rate
    for attack in ("odd_rate", "many_rates"):
        check(under_attack(attack, twins=twins))


@pytest.mark.slow  # ~25 s; in CI: test_budget.py's device far above its rate, shed while another loses nothing
def test_a_device_sending_far_faster_than_its_rate_is_shed_under_its_own_name():
    m = under_attack("fast_sender")
    check(m)
    assert m["rejected"].get("over_budget", 0) > 0, m


# ~25 s; in CI: test_hostile_links.py (a frame over MAXMSGSIZE drops its link, the daemon counts nothing oversized)
# and test_a_control_request_over_64_kib_is_never_read_and_a_smaller_one_is_answered (below)
@pytest.mark.slow
def test_huge_multi_frame_messages_and_control_requests_are_refused_before_they_are_held():
    """Both at once, in one daemon (one after the other took twice the CI time for no more strictness)."""
    check(under_attack(["big_frames", "control_flood"], connections=41))


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


# ~30 s, 19 of them sleeps; in CI: test_budget.py's squatter tests (a new wearable takes the longest unproductive
# squatter's slot; productive or young devices keep theirs). The mass expiry is judged here only.
@pytest.mark.slow
def test_squatted_slots_go_to_a_real_wearable_and_a_mass_expiry_stalls_nothing():
    """Item 9: 300 ids kept alive with a tiny message each every 5 s fill a table of 300; real wearables that come
    later still get in (each takes the slot of a squatter that cut no window), and `ping`, through the squatting
    and their mass expiry, answers within a few times what it took before they came."""
    limits = {"limits": {"max_devices": 300, "device_idle_s": 5.0}}
    with ipc_addresses() as a, daemon_process(a, *flags(limits)) as proc:
        wait_ready(a["control"])
        sub = Subscriber(a["publish"])
        pinger = Pinger(a["control"])
        good = None
        try:
            pinger.start()
            baseline_started = time.time()
            time.sleep(2.0)  # `ping` before the squatters: the baseline
            started = time.time()
            with Attack("squatters", a, ids=300, every_s=5.0):
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
    baseline_s = pinger.longest(baseline_started, started)
    assert pinger.longest(started) <= SLOWDOWN * baseline_s + ALLOWANCE_S, (baseline_s, pinger.times)


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
            assert request(a["control"], {"cmd": "ping"}) == {"ok": True}  # the daemon still answers
        finally:
            ctx.destroy(linger=0)
        assert proc.poll() is None
