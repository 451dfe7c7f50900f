"""Benchmark: ways to run the default model's network faster on this CPU, side by side in one run, each with its
effect on the numbers (issue 17, deliverable 3).

    python benchmarks/bench_network_variants.py [--batch 64] [--seconds 4] [--out runs/network_variants.json]

The inputs are real: every 2 s window of the shipped demo recording (PPG-BP subjects, 1 kHz), prepared as the
daemon prepares them (resampled, band-passed, normalised), repeated to fill the batch. For each
variant: windows/s of the network alone (prepared input in, mmHg out) at 1 and at every torch thread, and the
largest and mean absolute difference of its SBP/DBP from the float32 model on those windows. A variant that
moves the numbers by more than the estimate's own rounding (0.01 mmHg) changes accuracy and must be judged by the
cross-dataset table (`make results`) before it could ship; this benchmark only says whether it is worth that.
Variants: float32 as shipped; dynamic int8 quantisation of the LSTM and linear layers (torch.ao); channels-last is
not offered (1-D convolutions); torch.compile where it works on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from p2p_stream import Estimator
from p2p_stream.offline.datasets.replay_csv import read_replay_csv
from p2p_stream.ppg.preprocess import cut_windows

ROOT = Path(__file__).resolve().parent.parent


def real_windows(est: Estimator, window_s: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(x, meta): every `window_s` window (no overlap) of each segment of the shipped demo recording (real PPG-BP
    subjects, 1 kHz), prepared as the daemon prepares them, and zero meta features."""
    x = []
    for rec in read_replay_csv(ROOT / "p2p_stream" / "assets" / "demo" / "ppg_bp_demo.csv"):
        n = int(window_s * rec.fs)
        for start, stop in rec.segments():
            if stop - start >= n:
                windows = cut_windows(rec.ppg[start:stop].astype(np.float32), n, n)
                x.append(est.prepare(windows, rec.fs))
    xs = np.concatenate(x)
    return xs, np.zeros((len(xs), 4), dtype=np.float32)


def rate(fn, n: int, seconds: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        fn()
        calls += 1
    return calls * n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--out")
    args = p.parse_args()
    est = Estimator.load(torch_device="cpu")
    x, meta = real_windows(est)
    reps = int(np.ceil(args.batch / len(x)))
    xb = torch.from_numpy(np.tile(x, (reps, 1))[: args.batch])
    mb = torch.from_numpy(np.tile(meta, (reps, 1))[: args.batch])
    xall, mall = torch.from_numpy(x), torch.from_numpy(meta)
    model = est.model.eval()
    variants = {"float32 (shipped)": model}
    variants["int8 dynamic (LSTM, Linear)"] = torch.ao.quantization.quantize_dynamic(
        model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8
    )
    try:
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(xb, mb)  # compile now, so the timing does not include it
        variants["torch.compile (inductor)"] = compiled
    except Exception as exc:  # no compiler on the machine, or an op it cannot take: said, not hidden
        print(f"torch.compile: not available here ({type(exc).__name__}: {str(exc)[:160]})")
    rows = []
    with torch.inference_mode():
        reference = model(xall, mall)[:, :2].numpy()
        for name, net in variants.items():
            diff = np.abs(net(xall, mall)[:, :2].numpy() - reference)
            row = {"variant": name, "max_abs_diff_mmhg": float(diff.max()), "mean_abs_diff_mmhg": float(diff.mean())}
            for threads in sorted({1, torch.get_num_threads()}):
                torch.set_num_threads(threads)
                row[f"windows_per_s_{threads}t"] = round(rate(lambda net=net: net(xb, mb), args.batch, args.seconds), 1)
            rows.append(row)
            print(row, flush=True)
    threads = sorted({k for r in rows for k in r if k.startswith("windows_per_s")})
    print("\n| variant | " + " | ".join(threads) + " | max / mean abs diff vs float32, mmHg |")
    print("|---" * (len(threads) + 2) + "|")
    for r in rows:
        speeds = " | ".join(f"{r[t]:,.0f}" for t in threads)
        print(f"| {r['variant']} | {speeds} | {r['max_abs_diff_mmhg']:.3f} / {r['mean_abs_diff_mmhg']:.3f} |")
    print(f"\n{len(x)} real windows (the demo recording, 2 s); batch {args.batch}; {platform.processor() or 'cpu'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "windows": len(x), "batch": args.batch}, indent=2))


if __name__ == "__main__":
    main()
