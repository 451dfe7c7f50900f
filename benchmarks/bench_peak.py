"""Benchmark: how far inference is from the machine's limit, and what bfloat16 gives (speed and accuracy).

    python benchmarks/bench_peak.py [--torch-device cpu] [--batch 128] [--data ../shared/data/ppg_bp] [--out peak.json]

1. The peak: GFLOP/s of a 4096 x 4096 matrix product, float32 and bfloat16, on the device (best of 5).
2. The work: floating-point operations per 10 s window of each model, counted from the layer shapes
   (2 per multiply-add in convolutions, LSTMs and linear layers; activations and norms left out).
3. The distance: windows/s of the network at `--batch` times the work per window, against the float32 peak.
4. bfloat16: the default model under `torch.autocast` — windows/s beside float32 in the same run, and the
   largest change of any SBP/DBP estimate on real PPG-BP windows (the bundled sample, or `--data`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from torch import nn

from p2p_stream import Estimator
from p2p_stream.model.estimator import resolve_torch_device
from p2p_stream.model.networks import build_model
from p2p_stream.offline.datasets import load_dataset

WINDOW = 1250  # 10 s at 125 Hz


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_window(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-add work of one forward pass over `x` (B, T), per window, from each layer's shapes."""
    total = [0.0]

    def conv(m: nn.Conv1d, inp, out) -> None:
        total[0] += 2 * m.in_channels // m.groups * m.kernel_size[0] * out.numel()

    def linear(m: nn.Linear, inp, out) -> None:
        total[0] += 2 * m.in_features * out.numel()

    def lstm(m: nn.LSTM, inp, out) -> None:
        seq = inp[0]
        steps = seq.shape[0] * seq.shape[1]  # batch x time
        dirs = 2 if m.bidirectional else 1
        for layer in range(m.num_layers):
            width = m.input_size if layer == 0 else m.hidden_size * dirs
            total[0] += dirs * steps * 2 * 4 * m.hidden_size * (width + m.hidden_size)

    hooks = []
    for module in model.modules():
        for kind, fn in ((nn.Conv1d, conv), (nn.Linear, linear), (nn.LSTM, lstm)):
            if isinstance(module, kind):
                hooks.append(module.register_forward_hook(fn))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return total[0] / x.shape[0]


def windows_per_s(fn, batch: int, seconds: float, device: torch.device) -> float:
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        fn()
        calls += 1
    sync(device)
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-device", "--device", dest="device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--data", default="tests/data/ppg_bp_sample", help="PPG-BP folder for the bfloat16 accuracy check")
    p.add_argument("--out", help="write results as JSON here")
    args = p.parse_args()
    device = resolve_torch_device(args.device)
    est = Estimator.load(torch_device=str(device))
    seed = build_model("seed-lstm", {"outputs": 1}).to(device).eval()
    peak32 = matmul_gflops(device, torch.float32)
    # Without native bfloat16 units (AMX, AVX512-BF16) a CPU emulates it about 100x slower: keep that run short.
    native16 = device.type == "cuda" or "AMX" in str(torch.backends.cpu.get_cpu_capability())
    peak16 = matmul_gflops(device, torch.bfloat16, 4096 if native16 else 1024, 5 if native16 else 1)
    print(f"peak: 4096² matmul float32 {peak32:,.0f} GFLOP/s, bfloat16 {peak16:,.0f} GFLOP/s", flush=True)
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(args.batch, WINDOW)) + 2000).astype(np.float32)
    x = torch.from_numpy(est.prepare(raw, 125.0)).to(device)
    meta = torch.zeros(args.batch, 4, device=device)
    rows = []
    with torch.inference_mode():
        for name, model, call, batch in (
            ("default", est.model, lambda: est.model(x, meta), args.batch),
            ("seed-lstm", seed, lambda: seed(x[:8]), 8),  # its best batch on 2 CPU cores
        ):
            work = flops_per_window(model, x[:batch])
            rate = windows_per_s(call, batch, args.seconds, device)
            rows.append({"model": name, "batch": batch, "mflop_per_window": work / 1e6, "windows_per_s": rate,
                         "gflops": rate * work / 1e9, "fraction_of_fp32_peak": rate * work / 1e9 / peak32})  # fmt: skip

        def bf16() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return est.model(x, meta)

        rate32 = windows_per_s(lambda: est.model(x, meta), args.batch, args.seconds, device)
        rate16 = windows_per_s(bf16, args.batch, args.seconds if native16 else 0.0, device)
    ws = load_dataset("ppg_bp", args.data)
    prepared = est.prepare(ws.x, ws.fs)
    features = np.zeros((len(prepared), 4), dtype=np.float32)
    fp32 = est.predict_prepared(prepared, features)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = est.predict_prepared(prepared, features)
    diff = np.abs(low - fp32)
    sbp_mae = {k: float(np.nanmean(np.abs(v[:, 0] - ws.sbp))) for k, v in (("float32", fp32), ("bfloat16", low))}
    result = {
        "device": str(device),
        "machine": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "peak_gflops": {"float32": peak32, "bfloat16": peak16},
        "models": rows,
        "bfloat16": {
            "windows_per_s": {"float32": rate32, "bfloat16": rate16},
            "windows": len(prepared),
            "max_abs_change_mmhg": float(diff.max()),
            "mean_abs_change_mmhg": float(diff.mean()),
            "sbp_mae_vs_cuff": sbp_mae,
        },  # fmt: skip
    }
    print(f"device {device} ({result['machine']}, {result['cpu_capability']}), {result['threads']} threads")
    print()
    print("| model | batch | MFLOP/window | windows/s | GFLOP/s | of float32 peak |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['mflop_per_window']:.1f} | {r['windows_per_s']:,.1f} | "
              f"{r['gflops']:.1f} | {r['fraction_of_fp32_peak']:.1%} |")  # fmt: skip
    b = result["bfloat16"]
    print(f"\nbfloat16 autocast, default model, batch {args.batch}: {rate16:,.0f} windows/s vs float32 {rate32:,.0f} "
          f"({rate16 / rate32:.2f}x); on {b['windows']} real windows the estimates move by at most "
          f"{b['max_abs_change_mmhg']:.2f} mmHg (mean {b['mean_abs_change_mmhg']:.3f}); SBP MAE vs cuff "
          f"{sbp_mae['float32']:.2f} → {sbp_mae['bfloat16']:.2f}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
