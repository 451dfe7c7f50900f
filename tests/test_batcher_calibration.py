"""Dynamic batching (in the batcher and through the daemon's parts), the classic calibration offset, heartbeat
counters and rate-limited warnings."""

import logging
import threading
import time

import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import ipc_addresses

from p2p_stream.backends import LocalBackend
from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.model.estimator import Estimator
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.daemon import Daemon
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.ingest.ring_buffer import Window
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.wire.protocol import encode_ingest


def window(i=0):
    return Window(f"d{i}", np.zeros(10, np.float32), 125.0, 0.0, time.monotonic())


def test_full_batch_goes_at_once_and_the_rest_waits():
    b = DynamicBatcher(max_batch=4, max_wait_ms=10_000, max_queue=100)
    for i in range(6):
        assert b.put(window(i)) is None
    assert [w.device for w in b.next_batch(1.0)] == ["d0", "d1", "d2", "d3"]


def test_a_lone_window_goes_after_max_wait_without_waiting_for_a_full_batch():
    b = DynamicBatcher(max_batch=64, max_wait_ms=30, max_queue=100)
    b.put(window())
    got = b.next_batch(5.0)
    assert len(got) == 1  # did not wait for 64


def test_a_batch_waits_max_wait_ms_for_company_and_no_longer():
    """Windows that arrive within max_wait_ms of the first join its batch; one that arrives long after does not.

    Ordering, not speed: ignoring max_wait_ms either sends d0 alone at once (d1 and d2 missing) or waits for the
    late d3 (or for ever). The lower bound on the wait only says the batcher did not leave early.
    """
    max_wait_s = 1.0
    b = DynamicBatcher(max_batch=64, max_wait_ms=1000 * max_wait_s, max_queue=100)
    first = window(0)
    b.put(first)
    timers = [
        threading.Timer(0.05, b.put, [window(1)]),  # well within the wait
        threading.Timer(0.5, b.put, [window(2)]),
        threading.Timer(4 * max_wait_s, b.put, [window(3)]),  # long after it
    ]
    for t in timers:
        t.start()
    try:
        batch = b.next_batch(5.0)
        waited_s = time.monotonic() - first.enqueued
    finally:
        for t in timers:
            t.cancel()
    assert [w.device for w in batch] == ["d0", "d1", "d2"]
    assert waited_s >= max_wait_s - 0.02  # it waited the deadline out: up to 64 windows could have come


def test_late_arrivals_join_before_the_deadline():
    b = DynamicBatcher(max_batch=4, max_wait_ms=2000, max_queue=100)
    b.put(window(0))
    threading.Timer(0.05, lambda: [b.put(window(i)) for i in (1, 2, 3)] and None).start()
    batch = b.next_batch(5.0)  # one call: the three that came meanwhile are in the same batch as d0
    assert [w.device for w in batch] == ["d0", "d1", "d2", "d3"]


def test_full_queue_refuses_without_blocking():
    b = DynamicBatcher(max_batch=4, max_wait_ms=0, max_queue=2)
    assert b.put(window(0)) is None and b.put(window(1)) is None
    assert b.put(window(2)) == "overloaded"
    assert len(b.next_batch(0.01)) == 2


def test_the_queue_is_bounded_in_bytes_and_a_big_window_is_shed_not_the_small_ones():
    small = window(0)  # 10 samples
    big = Window("big", np.zeros(100_000, np.float32), 10_000.0, 0.0, time.monotonic())
    b = DynamicBatcher(max_batch=4, max_wait_ms=0, max_queue=100, max_bytes=100_000)
    assert b.put(big) == "overloaded"  # 400 kB of samples in a 100 kB queue
    assert b.put(small) is None and b.nbytes() > 0
    b.next_batch(0.01)
    assert b.nbytes() == 0  # what leaves the queue is no longer counted


def test_one_device_cannot_take_the_queue_from_the_others():
    b = DynamicBatcher(max_batch=64, max_wait_ms=0, max_queue=100, per_device=3)
    flood = [b.put(window(0)) for _ in range(10)]
    assert flood == [None] * 3 + ["over_budget"] * 7  # shed under its own name…
    assert b.put(window(1)) is None  # …while another device still gets in
    assert [w.device for w in b.next_batch(0.01)] == ["d0"] * 3 + ["d1"]
    assert b.put(window(0)) is None  # its share frees as its windows leave


def test_empty_queue_returns_nothing_after_timeout():
    assert DynamicBatcher(4, 0, 4).next_batch(0.01) == []


def test_calibration_offsets():
    """With one estimate and no span, the robust method is the classic offset: cuff − the estimate at that time."""

    def apply(c, device, t, sbp, dbp):
        a = c.apply(device, t, np.array([sbp, dbp]))
        return float(a.row[0]), float(a.row[1]), a.calibrated

    c = Calibrations(span_s=0.0, min_estimates=1)
    assert apply(c, "d", 0.0, 120.0, 80.0) == (120.0, 80.0, False)
    assert c.calibrate("d", 130.0, 75.0, t=0.0)  # against the estimate at t = 0: +10, -5
    assert apply(c, "d", 1.0, 124.0, 82.0) == (134.0, 77.0, True)
    assert not c.calibrate("new", 110.0, 70.0, t=5.0)  # no estimate yet: pending
    assert apply(c, "new", 6.0, 100.0, 60.0) == (110.0, 70.0, True)  # the first one after it
    c.forget("d")
    assert apply(c, "d", 2.0, 120.0, 80.0) == (120.0, 80.0, False)
    c.calibrate("d", 130.0, 75.0, t=2.0)
    c.retain({"new"})  # "d" was evicted: its offset goes
    assert apply(c, "d", 3.0, 120.0, 80.0) == (120.0, 80.0, False)
    assert apply(c, "new", 7.0, 100.0, 60.0)[2]


def test_counters_snapshot():
    m = Counters()
    m.reject("not_msgpack")
    m.reject("not_msgpack")
    m.batch(3, [10.0, 20.0, 30.0])
    s = m.snapshot(devices=2)
    assert s["rejected"] == {"not_msgpack": 2} and s["windows_total"] == 3 and s["batch_mean"] == 3.0
    assert s["latency_p50_ms"] == 20.0 and s["devices"] == 2 and s["windows_per_s"] > 0


def test_repeated_warnings_are_rate_limited(caplog):
    log = RateLimitedLog(logging.getLogger("t"), period_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            log.warning("k", "bad message %d", 1)
    assert len(caplog.records) == 1


# ---------------------------------------------------------------- batching through the daemon's parts


class CountingBackend(LocalBackend):
    """The local backend, recording how many windows each call to the model carried."""

    def __init__(self, estimator: Estimator, crop_cache) -> None:
        super().__init__(estimator, crop_cache)
        self.calls: list[int] = []

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        return super().predict(x, features)


@pytest.mark.parametrize("reuse_crops", [False, True])
def test_windows_from_several_devices_reach_the_model_in_one_batch(reuse_crops):
    """Five wearables' windows queued together go to the model as one batch of five, in one call: what dynamic
    batching is for. Fails if the batcher, the daemon's wiring of `batching.max_batch` or the worker sends them
    one at a time. With the crop cache the network sees their ten crops (two per 4 s window) in two passes of five:
    each window's first crop, cut ahead as its samples came in, then each window's last."""
    est = Estimator.load()
    with ipc_addresses() as addresses:
        overrides = [
            {"sockets": addresses, "windowing": {"window_s": 4.0, "hop_s": 1.0}},
            {"model": {"reuse_crops": reuse_crops}},
        ]
        daemon = Daemon(load_daemon_config(None, overrides), est)
        try:
            cache = daemon.parts.backend.crop_cache
            backend = daemon.worker.backend = CountingBackend(est, cache)
            assert (cache is not None) == reuse_crops
            if cache is not None:  # the cache runs the network itself: count its passes instead
                passes, embed = backend.calls, cache._embed
                cache._embed = lambda rows, rates: passes.append(len(rows)) or embed(rows, rates)
            devices = [f"watch-{k}" for k in range(5)]
            t0 = time.time()  # within the daemon's clock skew, as a live wearable's
            for k, device in enumerate(devices):
                x = simulated_ppg(65 + 5 * k, 4, 125.0, seed=k)
                for i in range(0, len(x), 25):  # one 4 s window each
                    frames = encode_ingest(device, i // 25, t0 + i / 125.0, 125.0, x[i : i + 25])
                    daemon.on_ingest(frames, time.monotonic())
            batch = daemon.parts.batcher.next_batch(timeout_s=1.0)
            estimates = [e for _, e in daemon.worker.finish(daemon.worker.submit(batch))]
        finally:
            daemon.close()
    assert [e["device"] for e in estimates] == devices
    assert all(e["ok"] for e in estimates)
    assert backend.calls == ([5, 5] if reuse_crops else [5])
