"""Calibration against a robust reference: the median of the device's estimates around the cuff reading, the
change-gain formula, the interval, and the per-device state that forms, refines and freezes the reference."""

import threading
import time

import numpy as np
import pytest
from helpers import simulated_ppg

from p2p_stream import Estimator
from p2p_stream.backends import LocalBackend
from p2p_stream.errors import CheckpointError
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.ring_buffer import Window
from p2p_stream.stream.state.calibration import (
    Calibrations,
    calibrate_row,
    calibrated_value,
    history_capacity,
    params_from_metadata,
    robust_reference,
)
from p2p_stream.stream.state.smoothing import Smoother

T0 = 1_700_000_000.0

# ---------------------------------------------------------------- pure functions


def test_reference_is_the_median_of_the_span():
    estimates = [(T0 + k, 120.0 + k, 80.0 - k) for k in range(-5, 6)]  # 11 estimates, 1 s apart
    assert robust_reference(estimates, T0, span_s=4.0, min_estimates=3) == (120.0, 80.0)  # k = -2..2
    assert robust_reference(estimates, T0 + 3, span_s=2.0, min_estimates=3) == (123.0, 77.0)  # k = 2..4
    far = [*estimates, (T0 - 100, 300.0, 10.0), (T0 + 100, 300.0, 10.0)]  # outside the span: not counted
    assert robust_reference(far, T0, span_s=4.0, min_estimates=3) == (120.0, 80.0)


def test_one_outlier_window_does_not_move_the_reference():
    rng = np.random.default_rng(3)
    sbp = 125 + rng.normal(0, 1.0, 9)
    dbp = 78 + rng.normal(0, 1.0, 9)
    estimates = [(T0 + 2 * k - 8, float(s), float(d)) for k, (s, d) in enumerate(zip(sbp, dbp))]
    clean = robust_reference(estimates, T0, 60.0, 3)
    bad = list(estimates)
    bad[4] = (bad[4][0], 240.0, 20.0)  # the window nearest the cuff reading is garbage
    ref = robust_reference(bad, T0, 60.0, 3)
    assert ref[0] == pytest.approx(clean[0], abs=1.0) and ref[1] == pytest.approx(clean[1], abs=1.0)
    assert abs(np.mean([e[1] for e in bad]) - clean[0]) > 10  # a mean would have moved by 12 mmHg


def test_reference_needs_min_estimates_and_takes_the_first_after_a_short_span():
    inside = [(T0 - 1, 120.0, 80.0), (T0 + 1, 130.0, 70.0)]
    assert robust_reference(inside, T0, 10.0, 3) is None
    later = [(T0 + 50, 140.0, 60.0), (T0 + 40, 110.0, 90.0)]  # after the span: the earliest makes up the count
    assert robust_reference(inside + later, T0, 10.0, 3) == (120.0, 80.0)  # median of 120, 130, 110
    assert robust_reference([], T0, 10.0, 1) is None


@pytest.mark.parametrize(
    "gain,expected", [(1.0, 130.0 + (118.0 - 110.0)), (0.0, 130.0), (0.5, 130.0 + 0.5 * 8.0), (1.25, 140.0)]
)
def test_change_gain(gain, expected):
    assert calibrated_value(130.0, 118.0, 110.0, gain) == pytest.approx(expected)


def test_calibrated_interval_is_shifted_or_given_halfwidths():
    row = np.array([118.0, 75.0, 110.0, 128.0, 70.0, 81.0])
    shifted = calibrate_row(row, cuff=(130.0, 80.0), reference=(110.0, 72.0))
    np.testing.assert_allclose(shifted, [138.0, 83.0, 130.0, 148.0, 78.0, 89.0])  # +20, +8 everywhere
    half = calibrate_row(row, (130.0, 80.0), (110.0, 72.0), change_gain=0.5, halfwidths=(9.0, None))
    np.testing.assert_allclose(half[:2], [134.0, 81.5])
    np.testing.assert_allclose(half[2:4], [125.0, 143.0])  # 134 ± 9
    np.testing.assert_allclose(half[4:], [70.0 + 6.5, 81.0 + 6.5])  # no DBP halfwidth: moved with the estimate
    np.testing.assert_allclose(calibrate_row(row[:2], (130.0, 80.0), (110.0, 72.0)), [138.0, 83.0])


def test_params_from_checkpoint_metadata():
    assert params_from_metadata({}) == {"change_gain": 1.0, "halfwidths": (None, None)}
    meta = {"calibration": {"change_gain": 0.7, "sbp_halfwidth": 9, "dbp_halfwidth": 6.5}}
    assert params_from_metadata(meta) == {"change_gain": 0.7, "halfwidths": (9.0, 6.5)}
    with pytest.raises(CheckpointError, match="change_gain"):
        params_from_metadata({"calibration": {"change_gain": float("nan")}})


# ---------------------------------------------------------------- the per-device state


def feed(c: Calibrations, device: str, ts, values) -> list:
    return [c.apply(device, t, np.array(v, dtype=float)) for t, v in zip(ts, values)]


def test_uncalibrated_until_min_estimates_then_refined_then_frozen():
    c = Calibrations(span_s=10.0, min_estimates=3)
    feed(c, "d", [T0 - 30, T0 - 2], [(200.0, 100.0), (120.0, 80.0)])  # T0-30 is outside the span
    assert not c.calibrate("d", 130.0, 85.0, T0)  # one estimate in the span: not enough
    a = feed(c, "d", [T0 + 1], [(124.0, 78.0)])[0]
    assert not a.calibrated and a.row[0] == 124.0 and a.version == 0  # still two
    b = feed(c, "d", [T0 + 2], [(110.0, 90.0)])[0]  # three: median (120, 80), this one calibrated by it
    assert b.calibrated and b.version == 1
    np.testing.assert_allclose(b.row, [130.0 + 110.0 - 120.0, 85.0 + 90.0 - 80.0])
    r = feed(c, "d", [T0 + 3, T0 + 4], [(126.0, 82.0), (128.0, 84.0)])  # refining: median of 5 = (124, 82)
    np.testing.assert_allclose(r[1].row, [130.0 + 128.0 - 124.0, 85.0 + 84.0 - 82.0])
    frozen = feed(c, "d", [T0 + 6, T0 + 7], [(300.0, 10.0), (124.0, 82.0)])  # past T0 + 5: frozen
    np.testing.assert_allclose(frozen[1].row, [130.0, 85.0])  # still against (124, 82)
    assert frozen[1].version == 1
    n = 2 * c.capacity
    much_later = feed(c, "d", [T0 + 8 + k for k in range(n)], [(200.0, 50.0)] * n)
    np.testing.assert_allclose(much_later[-1].row, [130.0 + 200.0 - 124.0, 85.0 + 50.0 - 82.0])  # and stays


def test_applied_at_once_when_the_history_holds_enough():
    c = Calibrations(span_s=60.0, min_estimates=3)
    feed(c, "d", [T0 - 6, T0 - 4, T0 - 2], [(118.0, 75.0), (250.0, 30.0), (122.0, 79.0)])
    assert c.calibrate("d", 140.0, 90.0, T0)  # median (122, 75) despite the outlier
    np.testing.assert_allclose(feed(c, "d", [T0 + 1], [(122.0, 75.0)])[0].row, [140.0, 90.0])


def test_a_new_reading_waits_under_the_old_calibration():
    c = Calibrations(span_s=4.0, min_estimates=2)
    feed(c, "d", [T0, T0 + 1], [(120.0, 80.0), (120.0, 80.0)])
    assert c.calibrate("d", 130.0, 85.0, T0 + 1)
    feed(c, "d", [T0 + 10], [(120.0, 80.0)])  # freezes the first
    assert not c.calibrate("d", 110.0, 70.0, T0 + 30)  # nothing in its span yet
    kept = feed(c, "d", [T0 + 31], [(120.0, 80.0)])[0]
    assert kept.calibrated and kept.version == 1 and kept.row[0] == 130.0  # the old one still applies
    new = feed(c, "d", [T0 + 32], [(120.0, 80.0)])[0]
    assert new.version == 2 and new.row[0] == 110.0


def test_forget_retain_and_bounded_history():
    c = Calibrations(span_s=3600.0, min_estimates=1, hop_s=1.0)
    feed(c, "d", [T0 + k for k in range(500)], [(120.0, 80.0)] * 500)
    assert len(c._devices["d"].history) == 500  # all within span_s / 2
    # A clock that goes back packs more into a span than its hop allows: the count stays bounded all the same.
    feed(c, "d", [T0 + k % 10 for k in range(3 * c.capacity)], [(120.0, 80.0)] * (3 * c.capacity))
    assert len(c._devices["d"].history) == c.capacity == history_capacity(3600.0, 1.0, 1)
    feed(c, "e", [T0], [(120.0, 80.0)])
    c.calibrate("d", 130.0, 85.0, T0 + 500)
    c.retain({"e"})  # "d" was evicted: its history and calibration go
    assert not feed(c, "d", [T0 + 501], [(120.0, 80.0)])[0].calibrated
    c.calibrate("e", 130.0, 85.0, T0)
    c.forget("e")
    assert not feed(c, "e", [T0 + 1], [(120.0, 80.0)])[0].calibrated
    assert set(c._devices) == {"d", "e"}


# ---------------------------------------------------------------- the worker: calibrated, then smoothed


def test_worker_calibrates_each_window_then_smooths_and_restarts_at_calibration():
    est = Estimator.load()
    calibrations = Calibrations(span_s=4.0, min_estimates=2)
    worker = InferenceWorker(
        estimator=est,
        backend=LocalBackend(est),
        batcher=DynamicBatcher(64, 0.0, 100),
        pub=None,  # submit/finish only: nothing is published
        calibrations=calibrations,
        counters=Counters(),
        device_count=lambda: 1,
        heartbeat_s=1.0,
        window_s=4.0,
        stop=threading.Event(),
        smoother=Smoother(3),
    )

    def window(k: int) -> Window:
        x = simulated_ppg(60 + 4 * k, 4, 125.0, seed=k).astype(np.float32)
        return Window("d", x, 125.0, T0 + k, time.monotonic(), seq=k)

    def run(ks):
        return [e for _, e in worker.finish(worker.submit([window(k) for k in ks]))]

    before = run([0, 1, 2])
    assert not any(e["calibrated"] for e in before)
    raw = np.array([[e["sbp_window"], e["dbp_window"]] for e in before])
    assert calibrations.calibrate("d", 140.0, 90.0, T0 + 2)  # span T0+0..T0+4: windows 0, 1, 2 so far
    after = run([3, 4, 5])
    assert all(e["calibrated"] for e in after)
    # Window 3 refines the reference; 4 is still in the span (T0 + 4); 5 is past it.
    window_3 = est.predict(window(3).x[None], 125.0)[0, :2]
    window_4 = est.predict(window(4).x[None], 125.0)[0, :2]
    ref = np.median(np.vstack([raw, window_3, window_4]), axis=0)
    cal = np.array([[e["sbp_window"], e["dbp_window"]] for e in after])
    np.testing.assert_allclose(cal[2] - cal[1], est.predict(window(5).x[None], 125.0)[0, :2] - window_4, atol=0.05)
    np.testing.assert_allclose(cal[1], np.array([140.0, 90.0]) + window_4 - ref, atol=0.05)
    # The smoothing started again at the calibration: the first calibrated value is alone, never mixed with raw.
    assert (after[0]["sbp"], after[0]["dbp"]) == (after[0]["sbp_window"], after[0]["dbp_window"])
    np.testing.assert_allclose(after[2]["sbp"], cal[:, 0].mean(), atol=0.02)


def test_change_gain_per_target_from_a_checkpoint():
    meta = {"calibration": {"change_gain": [0.0, 0.5]}}
    params = params_from_metadata(meta)
    assert params["change_gain"] == (0.0, 0.5)
    out = calibrate_row(np.array([120.0, 80.0]), (130.0, 85.0), (110.0, 70.0), params["change_gain"])
    np.testing.assert_allclose(out, [130.0, 85.0 + 0.5 * 10.0])  # SBP carries the cuff; DBP follows half the change
    with pytest.raises(CheckpointError, match=r"change_gain\[1\]"):
        params_from_metadata({"calibration": {"change_gain": [0.2, -1]}})
