"""Ring buffer and device table: windows by sample count, breaks on holes, drops of replays, limits and eviction."""

import numpy as np
import pytest

from p2p_stream.stream.ingest.devices import DeviceLimitError, DeviceTable
from p2p_stream.stream.ingest.ring_buffer import DeviceStream
from p2p_stream.wire.protocol import Ingest

FS = 100.0


def msg(seq, start, n, fs=FS, device="d", values=None):
    x = np.arange(start, start + n, dtype=np.float32) if values is None else np.asarray(values, np.float32)
    return Ingest(device, seq, start / fs, fs, x, None, None)


def stream(window_s=2.0, hop_s=0.5, max_chunk=64, **budget):
    return DeviceStream("d", FS, window_s, hop_s, max_chunk, gap_tolerance_s=0.05, **budget)


@pytest.mark.parametrize("chunk", [1, 7, 25, 50, 64, 300])
def test_windows_every_hop_whatever_the_chunking(chunk):
    s = stream()
    windows = []
    for seq, start in enumerate(range(0, 1000, chunk)):
        windows += s.push(msg(seq, start, min(chunk, 1000 - start)), arrival=0.0).windows
    ends = [int(w.x[-1]) for w in windows]
    assert ends == list(range(199, 1000, 50))  # every 0.5 s once 2 s have arrived
    for w in windows:
        np.testing.assert_array_equal(w.x, np.arange(w.x[-1] - 199, w.x[-1] + 1))
        assert w.t_last == pytest.approx(w.x[-1] / FS)


def test_seq_gap_time_gap_and_fs_change_restart_the_run():
    s = stream()
    s.push(msg(0, 0, 150), 0.0)
    r = s.push(msg(2, 150, 100), 0.0)  # seq 1 lost
    assert r.breaks == ["seq_gap"]
    (marker,) = r.windows  # no window yet, but one marker saying the run broke after the sample at 1.49 s
    assert marker.reason == "gap" and marker.x is None and marker.t_last == pytest.approx(1.49)
    r = s.push(msg(3, 400, 100), 0.0)  # 1.5 s later than expected
    assert r.breaks == ["time_gap"]
    r = s.push(Ingest("d", 4, 5.0, 200.0, np.ones(10, np.float32), None, None), 0.0)
    assert r.breaks == ["fs_change"] and s.fs == 200.0 and s.length == 400


def test_duplicates_out_of_order_and_counter_restart():
    s = stream()
    s.push(msg(0, 0, 50), 0.0)
    s.push(msg(1, 50, 50), 0.0)
    assert s.push(msg(1, 50, 50), 0.0).dropped == "duplicate"
    assert s.push(msg(0, 0, 50), 0.0).dropped == "out_of_order"
    r = s.push(msg(0, 100, 50), 0.0)  # seq went back but time carries on: the device rebooted
    assert r.dropped is None and r.breaks == ["seq_reset"]


def test_nan_is_a_hole():
    s = stream()
    values = np.arange(300, dtype=np.float32)
    values[250] = np.nan
    r = s.push(msg(0, 0, 300, values=values), 0.0)
    assert r.breaks == ["nan"]
    assert [w.reason for w in r.windows] == [None, None, "gap"]  # in the order they happened
    assert [w.seq for w in r.windows] == [0, 1, 2]
    windows = [w for w in r.windows if w.reason is None]
    assert all(np.isfinite(w.x).all() for w in windows)
    assert [int(w.x[-1]) for w in windows] == [199, 249]  # both before the hole; 251-299 is too short
    assert s.run == 49


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_any_non_finite_sample_breaks_but_huge_finite_ones_do_not(bad):
    # The finiteness check (np.isfinite) must not mistake a huge finite sample for a hole, nor miss a real one.
    huge = np.full(30, 3e38, dtype=np.float32)  # its squares would overflow float32
    s = stream()
    assert s.push(msg(0, 0, 30, values=huge), 0.0).breaks == [] and s.run == 30
    values = huge.copy()
    values[17] = bad
    assert s.push(msg(1, 30, 30, values=values), 0.0).breaks == ["nan"]
    assert s.run == 12


def test_device_table_limit_and_eviction():
    t = DeviceTable(window_s=2.0, hop_s=0.5, max_chunk=64, gap_tolerance_s=0.05, max_devices=2, idle_s=10.0)
    t.push(msg(0, 0, 10, device="a"), arrival=0.0)
    t.push(msg(0, 0, 10, device="b"), arrival=3.0)
    with pytest.raises(DeviceLimitError, match="max_devices"):  # neither has gone 2 windows (4 s) without one
        t.push(msg(0, 0, 10, device="c"), arrival=3.5)
    assert t.evict_idle(now=12.0) == ["a"] and len(t) == 1
    t.push(msg(0, 0, 10, device="c"), arrival=12.0)
    assert t.forget("b") and not t.forget("b")


def test_markers_and_windows_keep_their_order_in_one_message():
    s = stream()
    s.push(msg(0, 0, 150), 0.0)
    r = s.push(msg(2, 150, 500), 0.0)  # seq 1 lost, then a long message: the marker comes before the new windows
    assert [w.reason for w in r.windows] == ["gap", None, None, None, None, None, None, None]
    assert [w.seq for w in r.windows] == list(range(8))


def test_huge_message_with_small_slack_does_not_recurse():
    s = DeviceStream("d", FS, 2.0, 0.5, max_chunk=16, gap_tolerance_s=0.05, burst_s=1_000.0)  # 1,000 s at once
    r = s.push(msg(0, 0, 100_000), 0.0)
    assert len(r.windows) == (100_000 - 200) // 50 + 1
    assert int(r.windows[-1].x[-1]) == 99_999


def test_a_seq_leap_the_time_cannot_hold_is_refused_alone():
    # seq 2**63 with samples where the stream's next ones belong: refused on its own, the run goes on untouched.
    s = stream()
    s.push(msg(0, 0, 150), 0.0)
    assert s.push(msg(2**63, 150, 50), 0.0).dropped == "seq_jump"
    r = s.push(msg(1, 150, 100), 0.0)
    assert r.dropped is None and r.breaks == [] and s.run == 250 and s.last_seq == 1
    # A leap the time skipped can hold (messages lost during a 10 s silence) is a gap, as before.
    assert s.push(msg(1500, 1250, 50), 0.0).breaks == ["seq_gap"] and s.last_seq == 1500


def test_a_forged_position_ahead_costs_the_real_stream_two_messages_then_it_resyncs():
    s = stream()
    s.push(msg(0, 0, 100), 0.0)
    # A forgery inside every bound: seq a little ahead, clock 200 s ahead. Accepted: it breaks the run.
    assert s.push(msg(5, 20_000, 50), 0.0).breaks == ["seq_gap"]
    # The real device goes on from seq 1: its messages now look old, refused until RESYNC_MESSAGES in a row agree.
    assert s.push(msg(1, 100, 50), 0.0).dropped == "out_of_order"
    assert s.push(msg(2, 150, 50), 0.0).dropped == "out_of_order"
    r = s.push(msg(3, 200, 50), 0.0)
    assert r.dropped is None and r.breaks == ["resync"] and r.windows[0].t_last == pytest.approx(2.0)
    windows = []
    for seq, start in enumerate(range(250, 700, 50), start=4):  # and it streams as before
        r = s.push(msg(seq, start, 50), 0.0)
        assert r.dropped is None and r.breaks == []
        windows += r.windows
    assert [int(w.x[-1]) for w in windows] == [399, 449, 499, 549, 599, 649, 699]  # 2 s after the resync, every hop


def test_one_message_repeated_or_scattered_stale_messages_never_resync():
    s = stream()
    s.push(msg(0, 0, 100), 0.0)
    s.push(msg(1, 100, 100), 0.0)
    assert [s.push(msg(1, 100, 100), 0.0).dropped for _ in range(5)] == ["duplicate"] * 5  # the same one
    for seq in (2, 3, 4):  # late duplicates interleaved with the live stream: each accepted message resets the count
        assert s.push(msg(seq, seq * 100, 100), 0.0).breaks == []
        assert s.push(msg(seq - 1, (seq - 1) * 100, 100), 0.0).dropped == "out_of_order"
    assert s.last_seq == 4 and s.run == 500


def test_only_accepted_messages_keep_a_device_alive():
    t = DeviceTable(window_s=2.0, hop_s=0.5, max_chunk=64, gap_tolerance_s=0.05, max_devices=1, idle_s=10.0)
    t.push(msg(0, 0, 10, device="a"), arrival=0.0)
    for k in range(1, 20):  # refused, every second: a duplicate, replays, a seq leap
        assert t.push(msg([0, 0, 2**63][k % 3], 0, 10, device="a"), arrival=float(k)).dropped
    assert t.evict_idle(now=10.5) == ["a"]  # gone 10 s after its last accepted message…
    assert t.push(msg(0, 0, 10, device="b"), arrival=11.0).dropped is None  # …its slot free for another
    assert list(t.streams) == ["b"]


# ---------------------------------------------------------------- holes: O(n), one marker per message


def test_stretches_between_holes_cut_the_windows_they_hold_and_the_last_one_goes_on():
    s = stream()
    values = np.arange(1000, dtype=np.float32)
    values[[300, 306, 557, 558, 559]] = np.nan  # stretches of 300, 5, 250, then 440 that runs to the end
    r = s.push(msg(0, 0, 1000, values=values), 0.0)
    assert r.breaks == ["nan"]  # once, for the three holes
    assert [w.reason for w in r.windows] == [None, None, None, "gap", None, None, None, None, None, None, None]
    (marker,) = [w for w in r.windows if w.reason == "gap"]
    assert marker.t_last == pytest.approx(2.99)  # at the first hole, after the first stretch's windows
    ends = [int(w.x[-1]) for w in r.windows if w.reason is None]
    assert ends == [199, 249, 299, 506, 556, 759, 809, 859, 909, 959]  # by sample count from each stretch's start
    for w in r.windows:
        if w.reason is None:
            np.testing.assert_array_equal(w.x, np.arange(w.x[-1] - 199, w.x[-1] + 1))
            assert w.t_last == pytest.approx(w.x[-1] / FS)
    assert [w.seq for w in r.windows] == list(range(11))
    assert s.run == 440  # the last stretch: the next message continues it
    (w,) = s.push(msg(1, 1000, 10), 0.0).windows
    assert int(w.x[-1]) == 1009


def test_a_hole_at_the_start_ends_the_run_of_earlier_messages():
    s = stream()
    s.push(msg(0, 0, 150), 0.0)
    values = np.arange(150, 250, dtype=np.float32)
    values[:3] = np.nan
    values[50] = np.nan
    r = s.push(msg(1, 150, 100, values=values), 0.0)
    assert r.breaks == ["nan"] and [w.reason for w in r.windows] == ["gap"]
    assert r.windows[0].t_last == pytest.approx(1.49)  # the last sample before the hole
    assert s.run == 49
    all_nan = s.push(msg(2, 250, 20, values=np.full(20, np.nan)), 0.0)
    assert all_nan.breaks == ["nan"] and [w.reason for w in all_nan.windows] == ["gap"] and s.run == 0
    assert s.push(msg(3, 270, 20, values=np.full(20, np.nan)), 0.0).breaks == []  # no run left to end
    values = np.arange(290, 320, dtype=np.float32)
    values[-1] = np.nan
    r = s.push(msg(4, 290, 30, values=values), 0.0)
    assert r.breaks == ["nan"] and r.windows[0].t_last == pytest.approx(3.18) and s.run == 0  # ends at a hole


def test_alternating_holes_cost_like_a_finite_message_and_yield_one_marker():
    # The red team's message: finite/NaN alternating, 8,192 stretches; it once cost a Python loop over each and
    # became 8,192 `gap` markers. Timed against an all-finite message of the same size, in the same test.
    import time

    n = 16_384  # protocol.MAX_SAMPLES
    holed = np.ones(n, np.float32)
    holed[1::2] = np.nan

    def cost(values, repeats=5):
        best = float("inf")
        for _ in range(repeats):
            s = stream(hop_s=2.0, max_chunk=1024, burst_s=1_000.0)  # 164 s of samples at once: within budget here
            s.push(msg(0, 0, 150), 0.0)
            started = time.perf_counter()
            r = s.push(msg(1, 150, n, values=values), 0.0)
            best = min(best, time.perf_counter() - started)
        return best, r

    finite_s, finite = cost(np.ones(n, np.float32))
    holed_s, r = cost(holed)
    assert len(finite.windows) == (150 + n - 200) // 200 + 1
    assert [w.reason for w in r.windows] == ["gap"] and r.breaks == ["nan"]
    assert holed_s < 20 * finite_s, (holed_s, finite_s)
