"""Fair shares: a token bucket; per-device budgets of samples and markers; a bounded ring memory; slots that
squatters cannot hold against a real wearable."""

import numpy as np
import pytest

from p2p_stream.stream.ingest.budget import TokenBucket
from p2p_stream.stream.ingest.devices import DeviceLimitError, DeviceTable
from p2p_stream.stream.ingest.ring_buffer import MARKER_BURST, DeviceStream, ring_nbytes
from p2p_stream.wire.protocol import Ingest

FS = 100.0
RING = ring_nbytes(2.0, FS, 64)  # bytes of one ring at FS in `table()`


def msg(device, seq, t0, n, fs=FS):
    return Ingest(device, seq, t0, fs, np.ones(n, np.float32), None, None)


def table(**kw):
    kw = {"max_devices": 100, "idle_s": 10.0, **kw}
    return DeviceTable(window_s=2.0, hop_s=0.5, max_chunk=64, gap_tolerance_s=0.05, **kw)


# ---------------------------------------------------------------- the bucket


def test_a_bucket_starts_full_grants_whole_requests_and_refills_at_its_rate_up_to_capacity():
    b = TokenBucket(capacity=10.0, rate=2.0)
    assert b.take(8, now=100.0) and not b.take(3, now=100.0)  # 2 left: 3 is refused whole, nothing spent
    assert b.take(2, now=100.0) and not b.take(1, now=100.0)
    assert b.take(3, now=101.5)  # 1.5 s × 2 per second
    assert b.available(now=1_000.0) == 10.0  # never above capacity
    assert b.take(10, now=1_000.0)
    assert b.available(now=990.0) == 0.0  # time going back refills nothing…
    assert b.available(now=1_000.5) == pytest.approx(1.0)  # …and does not move the clock back


# ---------------------------------------------------------------- samples


def test_a_device_sending_far_above_its_rate_is_shed_and_another_loses_nothing():
    t = table(burst_s=30.0, rate_factor=4.0)  # the numbers the bounds below are written with
    fast_accepted, fast_shed, slow_windows = 0, 0, 0
    for k in range(600):  # 60 s: "fast" declares 25 Hz and sends 1,000 samples/s, "slow" 100 Hz as it says
        now = k / 10
        r = t.push(msg("fast", k, now, 100, fs=25.0), arrival=now)
        if r.dropped == "over_budget":
            fast_shed += 1
        else:
            assert r.dropped is None
            fast_accepted += 100
        r = t.push(msg("slow", k, now, 10), arrival=now)
        assert r.dropped is None and r.breaks == []
        slow_windows += len(r.windows)
    assert fast_shed > 0
    assert fast_accepted <= 25 * (30 + 4 * 60)  # its burst, then 4× its rate
    assert fast_accepted >= 25 * 4 * 60 * 0.9  # but its share it gets
    assert slow_windows == (6000 - 200) // 50 + 1


def test_a_shed_message_changes_nothing_in_the_stream():
    s = DeviceStream("d", FS, 2.0, 0.5, 64, gap_tolerance_s=0.05, rate_factor=2.0, burst_s=3.0)
    assert s.push(msg("d", 0, 0.0, 250), arrival=0.0).dropped is None  # 2.5 s of the 3 s burst
    state = (s.last_seq, s.next_t0, s.run, s.pos, s.estimates)
    assert s.push(msg("d", 1, 2.5, 100), arrival=0.1).dropped == "over_budget"  # 0.7 s left, 1 s asked
    assert (s.last_seq, s.next_t0, s.run, s.pos, s.estimates) == state
    r = s.push(msg("d", 1, 2.5, 100), arrival=0.5)  # refilled: the same message goes on from where the stream was
    assert r.dropped is None and r.breaks == [] and s.run == 350


def test_the_bucket_counts_seconds_of_signal_so_a_new_rate_keeps_its_fill():
    s = DeviceStream("d", FS, 2.0, 0.5, 64, gap_tolerance_s=0.05, burst_s=10.0)
    assert s.push(msg("d", 0, 0.0, 600), arrival=0.0).dropped is None  # 6 s of the 10 s burst at 100 Hz
    assert s.push(msg("d", 1, 6.0, 1000, fs=200.0), arrival=0.0).dropped == "over_budget"  # 5 s at 200 Hz
    r = s.push(msg("d", 1, 6.0, 800, fs=200.0), arrival=0.0)  # 4 s at 200 Hz: what was left
    assert r.dropped is None and r.breaks == ["fs_change"] and s.fs == 200.0


# ---------------------------------------------------------------- markers


def test_break_markers_beyond_their_budget_are_shed_but_the_run_still_restarts():
    s = DeviceStream("d", FS, 2.0, 0.5, 64, gap_tolerance_s=0.05)  # markers refill at 4 per 0.5 s hop
    markers, shed = 0, 0
    for k in range(20):  # every message skips a seq number: a break each time, all at once
        r = s.push(msg("d", 2 * k, k, 10), arrival=0.0)
        markers += sum(w.reason == "gap" for w in r.windows)
        shed += r.breaks.count("over_budget")
        assert s.run == 10  # restarted, marker or not
        if k:
            assert "seq_gap" in r.breaks
    assert markers == MARKER_BURST and shed == 19 - MARKER_BURST  # the first message broke nothing
    r = s.push(msg("d", 100, 100, 10), arrival=0.25)  # a quarter of a second: 2 markers' worth
    assert [w.reason for w in r.windows] == ["gap"] and r.breaks == ["seq_gap"]


# ---------------------------------------------------------------- ring memory


def test_ring_memory_refuses_a_new_device_and_a_growing_rate_and_is_given_back():
    t = table(ring_memory_bytes=2 * RING)
    t.push(msg("a", 0, 0.0, 10), arrival=0.0)
    t.push(msg("b", 0, 0.0, 10), arrival=0.0)
    assert t.ring_bytes == 2 * RING
    with pytest.raises(DeviceLimitError, match="ring memory"):
        t.push(msg("c", 0, 0.0, 10), arrival=1.0)  # a and b are young: neither gives up its slot
    r = t.push(msg("a", 1, 0.1, 10, fs=400.0), arrival=1.0)  # a's ring would grow fourfold
    assert r.dropped == "over_budget" and t.streams["a"].fs == FS and t.ring_bytes == 2 * RING
    assert t.forget("a") and t.ring_bytes == RING
    t.push(msg("b", 1, 0.1, 10, fs=50.0), arrival=1.0)  # a rate change that fits: the total follows it
    assert t.ring_bytes == ring_nbytes(2.0, 50.0, 64)
    t.push(msg("c", 0, 0.0, 10), arrival=2.0)
    assert t.evict_idle(now=11.5) == ["b"] and t.ring_bytes == RING


# ---------------------------------------------------------------- eviction and slots


def test_a_device_whose_every_message_is_refused_is_evicted_on_time():
    t = table(max_devices=1)
    for k in range(10):  # 25 Hz and 16,384 samples: 655 s of signal, far over its 30 s burst, every time
        assert t.push(msg("hog", k, k, 16_384, fs=25.0), arrival=float(k)).dropped == "over_budget"
    assert t.evict_idle(now=10.5) == ["hog"] and len(t) == 0 and t.ring_bytes == 0  # 10 s after it appeared
    assert t.push(msg("real", 0, 0.0, 10), arrival=11.0).dropped is None  # its slot is free: a real wearable gets in
    assert list(t.streams) == ["real"]


def squat(t, devices, k):
    """`devices` keep their slots with their k-th message, a sample at k / 10 s: alive, never a window."""
    for d in devices:
        assert t.push(msg(d, k, k / FS, 1), arrival=k / 10).dropped is None


def test_a_new_wearable_takes_the_slot_of_the_longest_unproductive_squatter():
    t = table(max_devices=4)
    t.push(msg("s0", 0, 0.0, 1), arrival=0.0)  # the first squatter: the longest without a window
    for k in range(50):  # for 5 s, a wearable streams (a window every hop) and three squatters keep their slots
        t.push(msg("worn", k, k / 10, 10), arrival=k / 10)
        if k:
            squat(t, ["s0", "s1", "s2"], k)
    r = t.push(msg("real", 0, 0.0, 10), arrival=5.0)
    assert r.dropped is None and r.replaced == ["s0"]
    assert set(t.streams) == {"worn", "s1", "s2", "real"} and t.ring_bytes == 4 * RING
    assert t.push(msg("next", 0, 0.0, 10), arrival=5.0).replaced == ["s1"]
    assert t.push(msg("last", 0, 0.0, 10), arrival=5.0).replaced == ["s2"]
    with pytest.raises(DeviceLimitError, match="max_devices"):  # the others are young, the wearable productive
        t.push(msg("more", 0, 0.0, 10), arrival=5.0)
    assert set(t.streams) == {"worn", "real", "next", "last"} and set(t.last_seen) == set(t.streams)


def test_productive_or_young_devices_keep_their_slots():
    t = table(max_devices=2)
    for k in range(100):  # 10 s of two wearables streaming: a window every hop
        for d in ("a", "b"):
            t.push(msg(d, k, k / 10, 10), arrival=k / 10)
    with pytest.raises(DeviceLimitError, match="max_devices"):
        t.push(msg("new", 0, 0.0, 10), arrival=10.0)
    t = table(max_devices=1)
    t.push(msg("quiet", 0, 0.0, 1), arrival=0.0)
    with pytest.raises(DeviceLimitError):  # no window yet, but not for 2 window lengths (4 s)
        t.push(msg("new", 0, 0.0, 10), arrival=4.0)
    assert t.push(msg("new", 0, 0.0, 10), arrival=4.1).replaced == ["quiet"]


def test_a_fast_new_wearable_may_need_the_ring_memory_of_several_unproductive_ones():
    t = table(ring_memory_bytes=3 * RING)
    for d in ("s0", "s1", "s2"):
        t.push(msg(d, 0, 0.0, 1), arrival=0.0)
    r = t.push(msg("fast", 0, 0.0, 10, fs=200.0), arrival=5.0)  # its ring is 1.76 of theirs
    assert r.replaced == ["s0", "s1"] and set(t.streams) == {"s2", "fast"}
    assert t.ring_bytes == RING + ring_nbytes(2.0, 200.0, 64) <= 3 * RING
