"""The markdown summary of benchmarks/gpu_check.sh: the card, each step's outcome, the inference and daemon tables.

python benchmarks/summarize_gpu.py runs/gpu > runs/gpu/gpu_check.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path) -> str:
    lines = ["# GPU check (benchmarks/gpu_check.sh)", ""]
    for name in ("card.txt", "torch.txt"):
        text = (out / name).read_text().strip() if (out / name).exists() else "(missing)"
        lines.append(f"- {name[:-4]}: {text}")
    lines += ["", "| step | exit | seconds |", "|---|---|---|"]
    steps = (out / "steps.txt").read_text().split("\n") if (out / "steps.txt").exists() else []
    lines += [f"| {s.split()[0]} | {s.split()[1]} | {s.split()[2]} |" for s in steps if s.strip()]
    inference = _read(out / "inference_cuda.json")
    if inference is not None:
        dump = json.dumps(inference, indent=1)[:6000]
        lines += ["", "## Inference on CUDA (bench_inference.py)", "", "```json", dump, "```"]
    daemon = _read(out / "daemon_cuda.json")
    if daemon is not None:
        lines += ["", "## The daemon on --torch-device cuda under the fleet (bench_daemon.py)", ""]
        lines += [
            "| devices | windows/s | p50 ms | p99 ms | lost | daemon CPU % | sustained |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in daemon.get("rows", []):
            lines.append(f"| {r['devices']} | {r['windows_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['lost']} | "
                         f"{r['daemon_cpu_pct']} | {'yes' if r['sustained'] else 'no'} |")  # fmt: skip
        lines.append(f"\nlargest sustained: {daemon.get('sustained')}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu")))
