"""Benchmark: what a device's declared rate costs the others — the gate (the local backend's, on the worker's
thread) and the resampler.

    python benchmarks/bench_resample.py [--repeats 20] [--devices 400] [--window-s 8] [--no-before]

1. Submit: `InferenceWorker.submit` on one batch of `--devices` windows, all at 25 Hz, against the same windows at
   that many distinct rates within ±0.01 Hz of 25 Hz (one per device's crystal). The backend answers at once
   with zeros for the network, so the time is the gate's: resample, band-pass, quality gate, normalisation. The ratio is
   what the odd rates cost; it should be near 1.
2. Resample: one `--window-s` window at 20.0119 Hz against one at 20 Hz, into 125 Hz. The ratio is what an odd
   rate costs the resampler; it should be near 1.

Each figure is the median of `--repeats` runs after one warm-up run (the warm-up designs and caches the filters);
the two sides of a ratio run alternately, so the machine's drift falls on both.
Unless `--no-before`, both are also measured with the code before the cost bound, for comparison: the ratio
approximated with any numerator and a denominator ≤ 1000, scipy's filter designed on every call, and one gate
pass per distinct (rate, length).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from p2p_stream.backends.local import LocalBackend
from p2p_stream.model.estimator import Estimator
from p2p_stream.ppg import quality
from p2p_stream.ppg.preprocess import resample, resample_ratio
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.ring_buffer import Window
from p2p_stream.stream.state.calibration import Calibrations

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from test_preprocess import resample_before_the_bound  # noqa: E402  (the old code, kept once: in its test)

MODEL_HZ = 125.0


class InstantBackend(LocalBackend):
    """The local backend's gate, and zeros for the network: the benchmark times the gate, not the network."""

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 2), dtype=np.float32)


def median_ms(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median milliseconds of `a` and of `b`, run alternately so that the machine's drift (a 2-core VM's
    neighbours, its clock) falls on both alike; each is run once first as a warm-up (filters designed and cached)."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, kept in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times[0]), 1000.0 * statistics.median(times[1])


def pulse(fs: float, window_s: float, seed: int) -> np.ndarray:
    """A window of `window_s` seconds cut as the ring buffer cuts it (round(window_s · fs) samples): a 72 bpm pulse
    with sensor noise, raw-count scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(window_s * fs)) / fs
    phase = (t * 72.0 / 60.0) % 1.0
    return (1000 + 200 * np.exp(-((phase - 0.15) ** 2) / 0.005) + 2 * rng.normal(size=t.size)).astype(np.float32)


def batch_at(rates: np.ndarray, window_s: float) -> list[Window]:
    now = time.monotonic()
    return [Window(f"d{k}", pulse(float(fs), window_s, k), float(fs), 0.0, now, seq=k) for k, fs in enumerate(rates)]


def gate_before(est: Estimator, batch: list[Window]) -> None:
    """The worker's gate before: one resample + band-pass + gate + normalisation per distinct (rate, length)."""
    for fs, length in {(w.fs, len(w.x)) for w in batch}:
        rows = np.stack([w.x for w in batch if w.fs == fs and len(w.x) == length])
        quality._assess_resampled(resample_before_the_bound(rows, fs, est.fs), est.quality_config, est.preprocess)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure (the median is shown)")
    parser.add_argument("--devices", type=int, default=400, help="windows in the batch, one per device")
    parser.add_argument("--window-s", type=float, default=8.0, help="window length, seconds")
    parser.add_argument("--no-before", action="store_true", help="skip the figures of the code before the bound")
    args = parser.parse_args()

    est = Estimator.load()
    worker = InferenceWorker(
        estimator=est,
        backend=InstantBackend(est),
        batcher=DynamicBatcher(args.devices, 0.0, args.devices),
        pub=None,
        calibrations=Calibrations(),
        counters=Counters(),
        device_count=lambda: args.devices,
        heartbeat_s=1.0,
        window_s=args.window_s,
        stop=threading.Event(),
    )
    rng = np.random.default_rng(0)
    same = batch_at(np.full(args.devices, 25.0), args.window_s)
    spread = batch_at(25.0 + rng.uniform(-0.01, 0.01, args.devices), args.window_s)
    ratios = {resample_ratio(w.fs, MODEL_HZ) for w in spread}
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{args.devices} windows of {args.window_s:g} s; medians of {args.repeats} alternating runs after a warm-up")

    t_spread, t_same = median_ms(lambda: worker.submit(spread), lambda: worker.submit(same), args.repeats)
    print(
        f"submit, {len({w.fs for w in spread})} distinct rates near 25 Hz ({len(ratios)} ratio(s)): {t_spread:.1f} ms"
        f"   all at 25 Hz: {t_same:.1f} ms   ratio {t_spread / t_same:.2f}"
    )
    x20, x_odd = pulse(20.0, args.window_s, 0)[None], pulse(20.0119, args.window_s, 0)[None]
    r_odd, r20 = median_ms(
        lambda: resample(x_odd, 20.0119, MODEL_HZ), lambda: resample(x20, 20.0, MODEL_HZ), 10 * args.repeats
    )
    up, down = resample_ratio(20.0119, MODEL_HZ)
    print(
        f"resample, one window at 20.0119 Hz ({up}/{down}): {r_odd:.3f} ms   at 20 Hz: {r20:.3f} ms"
        f"   ratio {r_odd / r20:.2f}"
    )
    if args.no_before:
        return
    few = max(1, args.repeats // 10)  # the old odd-rate path takes seconds per run
    b_spread, b_same = median_ms(lambda: gate_before(est, spread), lambda: gate_before(est, same), few)
    print(f"before: gate, distinct rates: {b_spread:.1f} ms  at 25 Hz: {b_same:.1f} ms   ratio {b_spread / b_same:.1f}")
    o_odd, o20 = median_ms(
        lambda: resample_before_the_bound(x_odd, 20.0119, MODEL_HZ),
        lambda: resample_before_the_bound(x20, 20.0, MODEL_HZ),
        args.repeats,
    )
    old = Fraction(MODEL_HZ / 20.0119).limit_denominator(1000)
    print(f"before: resample at 20.0119 Hz ({old}): {o_odd:.3f} ms   at 20 Hz: {o20:.3f} ms   ratio {o_odd / o20:.1f}")


if __name__ == "__main__":
    main()
