"""What one 10 s window costs the daemon, step by step, in steady state with crops reused.

    python benchmarks/bench_window_steps.py [--batch-sizes 8,32,64,256] [--threads 1]

Per window (µs, best of repeated calls, 100 Hz windows of a noisy pulse): the quality gate over the window, the
preparation of its one new 2 s crop, that crop's network pass, and the head over its five crops' features — the
four things the crop cache leaves for a window (backends/crop_cache.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from p2p_stream import Estimator


def best_us(fn, per: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / per * 1e6


def steps(est: Estimator, batch: int, rng: np.random.Generator) -> list[float]:
    """µs per window of each step, for `batch` windows at a time."""
    t = np.arange(1000) / 100.0
    rows = list((np.sin(2 * np.pi * 1.2 * t)[None] + 0.05 * rng.standard_normal((batch, 1000))).astype(np.float32))
    rates = [100.0] * batch
    crops = [r[-200:] for r in rows]
    inputs = np.stack(est.prepare_crops(crops, rates))
    kept = np.repeat(est.embed_crops(inputs), 5, axis=0)
    zeros = np.zeros((batch, 4), np.float32)
    repeats = max(3, 2000 // batch)
    return [
        best_us(lambda: est.assess_windows(rows, rates), batch, repeats),
        best_us(lambda: est.prepare_crops(crops, rates), batch, repeats),
        best_us(lambda: est.embed_crops(inputs, batch), batch, repeats),
        best_us(lambda: est.infer_embedded(kept, [5] * batch, zeros), batch, repeats),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="8,32,64,256")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    est = Estimator.load()
    rng = np.random.default_rng(0)
    print("| batch | gate µs | new crop prepared µs | its network µs | head over 5 µs | total µs |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        cost = steps(est, batch, rng)
        print(f"| {batch} | " + " | ".join(f"{v:.1f}" for v in cost) + f" | {sum(cost):.0f} |", flush=True)


if __name__ == "__main__":
    main()
