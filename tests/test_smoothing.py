"""Smoothing over a device's last K windows, and what the worker puts on the wire: smoothed and per-window values,
the prediction interval (present on accepted windows, nil on rejected ones), restarts at a gap."""

import threading
import time

import numpy as np
import pytest
from helpers import simulated_ppg

from p2p_stream import Estimator
from p2p_stream.backends import BackendUnavailable, LocalBackend
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.ring_buffer import BreakMarker, Window
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.stream.state.smoothing import Smoother, smooth_mean

FS = 125.0
T0 = 1_700_000_000.0
INTERVAL = ("sbp_lo", "sbp_hi", "dbp_lo", "dbp_hi")

# ---------------------------------------------------------------- the pure parts


def test_mean_of_the_last_k():
    s = Smoother(3)
    rows = [np.array([120.0, 80.0]), np.array([126.0, 74.0]), np.array([111.0, 83.0]), np.array([90.0, 60.0])]
    got = [s.add("d", r) for r in rows]
    np.testing.assert_allclose(got[0], [120.0, 80.0])
    np.testing.assert_allclose(got[1], [123.0, 77.0])
    np.testing.assert_allclose(got[2], [119.0, 79.0])
    np.testing.assert_allclose(got[3], [109.0, 72.33333333])  # the first one has left the window
    np.testing.assert_allclose(smooth_mean(rows[1:]), got[3])


def test_one_window_is_off():
    s = Smoother(1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = rng.normal(120, 15, size=6)
        np.testing.assert_array_equal(s.add("d", row), row)


def test_a_gap_restarts_and_devices_are_apart():
    s = Smoother(3)
    s.add("d", np.array([100.0, 60.0]))
    s.add("other", np.array([200.0, 100.0]))
    s.add("d", np.array([110.0, 70.0]))
    s.reset("d")  # the stream broke
    np.testing.assert_allclose(s.add("d", np.array([140.0, 90.0])), [140.0, 90.0])
    np.testing.assert_allclose(s.add("other", np.array([100.0, 60.0])), [150.0, 80.0])  # untouched by d's gap


def test_a_new_epoch_restarts_and_forget_retain_drop():
    s = Smoother(4)
    s.add("d", np.array([100.0, 60.0]), cal_version=0)
    np.testing.assert_allclose(s.add("d", np.array([130.0, 70.0]), cal_version=1), [130.0, 70.0])  # calibrated now
    s.add("e", np.array([100.0, 60.0]))
    s.forget("d")
    s.retain({"d"})  # "e" was evicted
    np.testing.assert_allclose(s.add("d", np.array([90.0, 50.0]), cal_version=1), [90.0, 50.0])
    np.testing.assert_allclose(s.add("e", np.array([90.0, 50.0])), [90.0, 50.0])
    with pytest.raises(ValueError, match="windows must be ≥ 1"):
        Smoother(0)


# ---------------------------------------------------------------- the worker, with the real model


class IntervalBackend(LocalBackend):
    """The real model's answer, widened to (N, 6) with an interval (unless it already has one) and moved 5 mmHg
    further for each window answered (the shipped model answers the prior for these simulated windows, the same
    each time: smoothing needs windows that differ); keeps what it answered, so the test knows each window's value."""

    def __init__(self, estimator: Estimator) -> None:
        super().__init__(estimator)
        self.answers: list[np.ndarray] = []

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        pred = super().predict(x, features)
        if pred.shape[1] == 2 or not np.isfinite(pred).all():  # a model without an interval: NaN there, or absent
            sbp, dbp = pred[:, 0], pred[:, 1]
            pred = np.column_stack([sbp, dbp, sbp - 6.0, sbp + 7.0, dbp - 4.0, dbp + 3.0])
        pred = pred + 5.0 * (len(self.answers) + np.arange(len(pred)))[:, None]
        self.answers.extend(pred.astype(np.float64))
        return pred


class DownBackend(LocalBackend):
    """A backend whose network never answers, as the Ray one's after its retries."""

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        raise BackendUnavailable("no replica answered")


def make_worker(est, backend, windows=3, calibrations=None, level=0.8) -> InferenceWorker:
    worker = InferenceWorker(
        estimator=est,
        backend=backend,
        batcher=DynamicBatcher(64, 0.0, 100),
        pub=None,  # no socket: these tests call submit/finish, which never publish
        calibrations=calibrations or Calibrations(),
        counters=Counters(),
        device_count=lambda: 1,
        heartbeat_s=1.0,
        window_s=4.0,
        stop=threading.Event(),
        smoother=Smoother(windows),
    )
    worker.interval_level = level  # as a model with an 80 % interval states it
    return worker


def ppg_window(k: int, device: str = "d") -> Window:
    """The k-th 4 s window of a device: a different pulse rate and noise each, so the model's answers differ."""
    x = simulated_ppg(60 + 4 * k, 4, FS, seed=k).astype(np.float32)
    return Window(device, x, FS, T0 + k, time.monotonic(), seq=k)


def gap(k: int, device: str = "d") -> Window:
    return BreakMarker(device, FS, T0 + k - 0.5, time.monotonic(), seq=k)


def run(worker, windows) -> list[dict]:
    return [e for _, e in worker.finish(worker.submit(windows))]


def test_published_values_are_the_mean_of_the_last_three_windows(est):
    backend = IntervalBackend(est)
    worker = make_worker(est, backend, windows=3)
    got = run(worker, [ppg_window(k) for k in range(5)])
    own = np.array(backend.answers)  # (5, 6), one row per window in order
    assert all(e["ok"] for e in got)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], own[:, :2], atol=0.006)
    for i, e in enumerate(got):
        mean = own[max(0, i - 2) : i + 1].mean(axis=0)
        np.testing.assert_allclose([e["sbp"], e["dbp"]], mean[:2], atol=0.006)
        np.testing.assert_allclose([e[k] for k in INTERVAL], mean[2:], atol=0.006)  # the mean interval
        assert e["interval"] == 0.8
    assert np.ptp(own[:, 0]) > 0.1  # the windows differ, so the mean is not trivially each window


def test_a_gap_restarts_the_smoothing_and_a_rejection_does_not(est):
    backend = IntervalBackend(est)
    worker = make_worker(est, backend, windows=3)
    flat = Window("d", np.full(int(4 * FS), 2048.0, np.float32), FS, T0 + 3, time.monotonic(), seq=3)
    # 0 1 2 | flatline | 4 ; gap ; 6 7 — one batch, so the order inside it is what counts
    got = run(worker, [ppg_window(0), ppg_window(1), ppg_window(2), flat, ppg_window(4), gap(5), ppg_window(6)])
    got += run(worker, [ppg_window(7)])
    own = dict(zip([0, 1, 2, 4, 6, 7], backend.answers))
    by_seq = {e["seq"]: e for e in got}
    assert by_seq[3]["reason"] == "flatline" and by_seq[5]["reason"] == "gap"
    # After the rejected window the mean still runs over the last three accepted ones: 1, 2, 4.
    np.testing.assert_allclose(by_seq[4]["sbp"], np.mean([own[k][0] for k in (1, 2, 4)]), atol=0.006)
    # After the gap it starts again: 6 alone, then 6 and 7 — never 4.
    assert by_seq[6]["sbp"] == by_seq[6]["sbp_window"] and by_seq[6]["dbp"] == by_seq[6]["dbp_window"]
    np.testing.assert_allclose(by_seq[7]["dbp"], np.mean([own[k][1] for k in (6, 7)]), atol=0.006)


def test_one_window_publishes_each_windows_own_value(est):
    backend = IntervalBackend(est)
    worker = make_worker(est, backend, windows=1)
    got = run(worker, [ppg_window(k) for k in range(4)])
    for e, row in zip(got, backend.answers):
        assert (e["sbp"], e["dbp"]) == (e["sbp_window"], e["dbp_window"])
        np.testing.assert_allclose([e[k] for k in INTERVAL], row[2:], atol=0.006)


def test_interval_keys_are_nil_on_rejected_windows(est):
    worker = make_worker(est, IntervalBackend(est))
    flat = Window("d", np.full(int(4 * FS), 2048.0, np.float32), FS, T0, time.monotonic(), seq=0)
    got = run(worker, [flat, gap(1), ppg_window(2)])
    for e in got[:2]:
        assert not e["ok"] and e["sbp"] is None and e["sbp_window"] is None
        assert all(k in e and e[k] is None for k in INTERVAL) and e["interval"] == 0.8
    ok = got[2]
    assert ok["ok"] and all(isinstance(ok[k], float) for k in INTERVAL)
    assert ok["sbp_lo"] < ok["sbp"] < ok["sbp_hi"] and ok["dbp_lo"] < ok["dbp"] < ok["dbp_hi"]
    down = make_worker(est, DownBackend(est))
    (e,) = run(down, [ppg_window(3)])
    assert e["reason"] == "backend_unavailable" and all(e[k] is None for k in INTERVAL)


class HalfDownBackend(LocalBackend):
    """A network that answers windows of one input shape and not the other (a replica that died mid-batch)."""

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        if x.shape[1] > 2:  # an 8 s window's four crops: this call fails
            raise BackendUnavailable("no replica answered")
        return super().predict(x, features)


def test_a_network_that_answers_part_of_a_batch_keeps_what_it_answered(est):
    """Windows of two lengths go to the network in two calls; one fails: its windows go out backend_unavailable, the
    others with their numbers, and a window the gate refused keeps the gate's reason."""
    long = Window("d8", simulated_ppg(66, 8, FS, seed=8).astype(np.float32), FS, T0, time.monotonic(), seq=0)
    flat = Window("flat", np.full(int(4 * FS), 2048.0, np.float32), FS, T0, time.monotonic(), seq=0)
    got = run(make_worker(est, HalfDownBackend(est)), [ppg_window(1, "d4"), long, flat])
    assert [(e["device"], e["ok"], e.get("reason")) for e in got] == [
        ("d4", True, None), ("d8", False, "backend_unavailable"), ("flat", False, "flatline"),
    ]  # fmt: skip
    assert isinstance(got[0]["sbp"], float) and got[1]["sbp"] is None


class NoIntervalBackend(LocalBackend):
    """The real network's estimate without an interval: two columns (the old answer), or NaN where one would be."""

    def __init__(self, estimator: Estimator, columns: int) -> None:
        super().__init__(estimator)
        self.columns = columns

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        bp = super().predict(x, features)[:, :2]
        return bp if self.columns == 2 else np.column_stack([bp, np.full((len(bp), 4), np.nan)])


@pytest.mark.parametrize("columns", [2, 6])
def test_a_model_without_an_interval_puts_none_of_its_keys_on_the_wire(est, columns):
    worker = make_worker(est, NoIntervalBackend(est, columns), level=None)
    flat = Window("d", np.full(int(4 * FS), 2048.0, np.float32), FS, T0, time.monotonic(), seq=0)
    rejected, ok = run(worker, [flat, ppg_window(1)])
    assert not rejected["ok"] and ok["ok"] and isinstance(ok["sbp"], float)  # a NaN interval is not a NaN estimate
    for e in (rejected, ok):
        assert not any(k in e for k in (*INTERVAL, "interval"))
        assert "sbp_window" in e
