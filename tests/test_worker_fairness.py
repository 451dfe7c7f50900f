"""One sender cannot hurt another: the worker batches windows by the model's input, not by a device's rate."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import simulated_ppg

from p2p_stream.backends.local import LocalBackend
from p2p_stream.model.estimator import Estimator
from p2p_stream.ppg import quality
from p2p_stream.ppg.quality import ppg_assess
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.ring_buffer import BreakMarker, Window
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.stream.state.smoothing import Smoother

T0 = 1_700_000_000.0
WINDOW_S = 8.0


class RecordingBackend(LocalBackend):
    """The real model, keeping every array it was sent: one entry per call."""

    def __init__(self, estimator: Estimator) -> None:
        super().__init__(estimator)
        self.calls: list[np.ndarray] = []

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        self.calls.append(x.copy())
        return super().predict(x, features)


@pytest.fixture
def gate_passes(monkeypatch) -> list[tuple[int, int]]:
    """The shape of every band-pass + gate + normalisation pass, in the order they ran."""
    passes: list[tuple[int, int]] = []
    real = quality._assess_resampled

    def counted(x, *args):
        passes.append(x.shape)
        return real(x, *args)

    monkeypatch.setattr(quality, "_assess_resampled", counted)
    return passes


def make_worker(est: Estimator, backend: LocalBackend) -> InferenceWorker:
    return InferenceWorker(
        estimator=est,
        backend=backend,
        batcher=DynamicBatcher(1024, 0.0, 1024),
        pub=None,  # submit/finish only: nothing is published
        calibrations=Calibrations(),
        counters=Counters(),
        device_count=lambda: 1,
        heartbeat_s=1.0,
        window_s=WINDOW_S,
        stop=threading.Event(),
        smoother=Smoother(1),
    )


def window(device: str, fs: float, k: int, hr_bpm: float = 72.0, window_s: float = WINDOW_S) -> Window:
    """A device's k-th window, cut as the ring buffer cuts it: round(window_s · fs) samples at its declared rate."""
    x = simulated_ppg(hr_bpm, round(window_s * fs) / fs, fs, seed=k).astype(np.float32)
    return Window(device, x, fs, T0 + k, time.monotonic(), seq=k)


def test_four_hundred_rates_near_25_hz_make_one_gate_pass_and_one_model_call(est, gate_passes):
    rates = 25.0 + np.linspace(-0.01, 0.01, 400)  # 400 devices, each with its own crystal
    batch = [window(f"d{k}", float(rate), k, hr_bpm=60 + k % 40) for k, rate in enumerate(rates)]
    backend = RecordingBackend(est)
    worker = make_worker(est, backend)
    out = worker.finish(worker.submit(batch))
    assert gate_passes == [(400, 1000)]  # not one per rate
    assert [x.shape for x in backend.calls] == [(400, 4, 250)]  # one call: each window's 4 crops, prepared alone
    assert all(e["ok"] for _, e in out)


def test_submit_gives_each_window_what_it_would_get_alone(est, gate_passes):
    """Rates that group together and rates that do not, gaps and rejections, interleaved: each estimate says
    what `ppg_assess` says of its window alone, in arrival order, and the model sees that window's own input."""
    batch = []
    for k, rate in enumerate([25.0, 25.001, 20.0119, 30.0, 125.0, 24.999, 64.0, 25.002]):
        batch.append(window(f"d{k}", rate, k))
    batch.insert(3, BreakMarker("d1", 25.001, T0 + 9, time.monotonic(), seq=9))
    nan = window("d8", 25.0, 10)
    nan.x[17] = np.nan
    noise = window("d9", 30.0, 11)
    noise.x[:] = np.random.default_rng(0).normal(size=noise.x.size)  # no pulse in it
    batch += [nan, noise, window("d10", 25.0, 12, window_s=4.0)]  # a shorter window: another model input
    backend = RecordingBackend(est)
    worker = make_worker(est, backend)
    out = worker.finish(worker.submit(batch))

    assert [w for w, _ in out] == batch  # arrival order
    assert sorted(gate_passes) == [(1, 500), (10, 1000)]  # one pass per model-input length, whatever the rates
    # One call per model-input shape (a window's crops, each prepared alone), whatever the rates; 2 rejected.
    assert sorted(x.shape for x in backend.calls) == [(1, 2, 250), (8, 4, 250)]
    passed: list[np.ndarray] = []
    for w, e in out:
        if w.reason:
            assert (e["ok"], e["reason"]) == (False, "gap")
            continue
        (alone,), x = ppg_assess(w.x[None], w.fs)
        assert (e["ok"], e.get("reason"), e["sqi"]) == (alone.ok, alone.reason, round(alone.sqi, 4))
        assert e["hr"] == (None if alone.hr_bpm is None else round(alone.hr_bpm, 2))
        if alone.ok:
            passed.append(est.crop_inputs([w.x], [w.fs])[0])
    assert [e.get("reason") for _, e in out].count(None) == 9
    assert worker.counters.rejected == {"nan": 1, "no_pulse": 1}
    for sent in backend.calls:  # each passing window's own crops, in arrival order within their shape
        np.testing.assert_array_equal(sent, np.stack([x for x in passed if x.shape == sent.shape[1:]]))
