"""Benchmark: inference throughput (windows/s) of the shipped default and `seed-lstm` on 10 s windows at 125 Hz.

    python benchmarks/bench_inference.py [--batch-sizes 1,32,256] [--seconds 3] [--torch-device cpu] [--out FILE]

Per model and batch size: the network alone (prepared input); for the default model, which averages 2 s crops, its
five crops of each window, then one new crop per window with the other four's features kept (what the daemon's
crop cache runs in steady state), and the whole `Estimator.predict` path (gate, each crop resampled, band-passed and
normalised alone, the network on all five). The windows are a synthetic pulse that passes the quality gate (noise
would be rejected before the network and measure the gate alone). Both models run in the same process, so their
ratio is a like-for-like comparison on whatever machine this runs on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from p2p_stream import Estimator
from p2p_stream.model.estimator import resolve_torch_device
from p2p_stream.model.networks import build_model

WINDOW = 1250  # 10 s at 125 Hz


def pulses(batch: int, rng: np.random.Generator) -> np.ndarray:
    """(batch, WINDOW) raw PPG at 125 Hz: a systolic and a dicrotic wave per beat, 60–100 bpm, sensor noise."""
    t = np.arange(WINDOW) / 125.0
    bpm = rng.uniform(60.0, 100.0, (batch, 1))
    phase = (t * bpm / 60.0 + rng.uniform(0.0, 1.0, (batch, 1))) % 1.0
    beat = np.exp(-((phase - 0.15) ** 2) / 0.005) + 0.4 * np.exp(-((phase - 0.45) ** 2) / 0.01)
    return (2000.0 + 300.0 * beat + rng.normal(0.0, 5.0, beat.shape)).astype(np.float32)


def rate(fn, batch: int, seconds: float) -> tuple[float, float]:
    """(windows/s, mean ms per call) of `fn()` processing `batch` windows, after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        fn()
        calls += 1
    elapsed = time.perf_counter() - start
    return calls * batch / elapsed, 1000 * elapsed / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,8,32,128,256")
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per point")
    p.add_argument("--torch-device", "--device", dest="device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", help="write results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_torch_device(args.device)
    est = Estimator.load(torch_device=str(device))
    seed = build_model("seed-lstm", {"outputs": 1}).to(device).eval()
    rng = np.random.default_rng(0)
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        raw = pulses(batch, rng)
        if np.isnan(est.predict(raw, 125.0)).any():
            raise SystemExit("a benchmark window failed the quality gate: the figures would not include the network")
        x = torch.from_numpy(est.prepare(raw, 125.0)).to(device)
        crops = np.stack(est.crop_inputs(list(raw), [125.0] * batch))  # (batch, 5, 250)
        zeros = np.zeros((batch, 4), np.float32)
        kept = est.embed_crops(crops[:, :-1].reshape(-1, crops.shape[2]))  # the four crops earlier windows had

        def one_new_crop(crops=crops, kept=kept, zeros=zeros, batch=batch):
            h = np.concatenate([kept.reshape(batch, -1, kept.shape[1]), est.embed_crops(crops[:, -1])[:, None]], 1)
            return est.infer_embedded(h.reshape(-1, h.shape[2]), [h.shape[1]] * batch, zeros)

        with torch.inference_mode():
            cases = {  # bind this batch's tensors now (default arguments), not at call time
                "default (network, 5 crops)": lambda crops=crops, zeros=zeros: est.infer_prepared(crops, zeros),
                "default (network, 1 new crop)": one_new_crop,
                "default (Estimator.predict)": lambda raw=raw: est.predict(raw, 125.0),
                "seed-lstm (network)": lambda x=x: seed(x),
            }
            for name, fn in cases.items():
                if name.startswith("seed") and batch > 32 and device.type == "cpu":
                    continue  # ~0.1 s per window on a small CPU: larger batches only add minutes
                wps, ms = rate(fn, batch, args.seconds)
                rows.append(
                    {"model": name, "batch": batch, "windows_per_s": round(wps, 1), "ms_per_batch": round(ms, 2)}
                )
                print(f"{name:30s} batch {batch:4d}: {wps:9.1f} windows/s  {ms:9.2f} ms/batch", flush=True)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "device": str(device),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
    print("\n| model | batch | windows/s | ms/batch |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['windows_per_s']:.1f} | {r['ms_per_batch']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
