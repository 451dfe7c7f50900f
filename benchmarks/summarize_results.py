"""Collect the report.json files of a results run into the markdown table of docs/results.md.

python benchmarks/summarize_results.py runs/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("MAE", "ME ± SD", "MASE", "BHS")


def cell(m: dict) -> str:
    return f"{m['mae']:.2f} | {m['me']:+.2f} ± {m['sd']:.2f} | {m['mase']:.3f} | {m['bhs_grade']}"


def main(root: str) -> None:
    reports = sorted(Path(root).glob("*/report/report.json"))
    head = "| run | windows / subjects | " + " | ".join(f"{t} {m}" for t in ("SBP", "DBP") for m in METRICS) + " |"
    print(head)
    print("|---|---|---|---|---|---|---|---|---|---|")
    baselines_done = set()
    for path in reports:
        r = json.loads(path.read_text())
        name = path.parent.parent.name
        dataset_protocol = name.split("__")[0]
        if dataset_protocol not in baselines_done:  # the mean predictor of the same folds, once per dataset/protocol
            baselines_done.add(dataset_protocol)
            print(
                f"| {dataset_protocol} · mean predictor | {r['n_windows']} / {r['n_subjects']} | "
                f"{cell(r['sbp']['mean_predictor'])} | {cell(r['dbp']['mean_predictor'])} |"
            )
        dbp = cell(r["dbp"]["model"]) if "dbp" in r else "— | — | — | —"
        run = name.replace("__", " · ")
        print(f"| {run} | {r['n_windows']} / {r['n_subjects']} | {cell(r['sbp']['model'])} | {dbp} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
