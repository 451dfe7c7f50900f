"""Collect a results run into the tables of docs/results.md: cross-dataset, calibrated tracking, in-dataset.

python benchmarks/summarize_results.py runs/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("MAE", "ME ± SD", "MASE", "BHS")
PPG_BP_CV_PPG_ONLY_SBP = 13.34  # the in-dataset bar the generalist's recipe must stay at or below (within noise)


def cell(m: dict) -> str:
    return f"{m['mae']:.2f} | {m['me']:+.2f} ± {m['sd']:.2f} | {m['mase']:.3f} | {m['bhs_grade']}"


def main(root: str) -> None:
    generalist = Path(root) / "generalist" / "report"
    if (generalist / "lodo.md").is_file():
        print("## Cross-dataset: leave-one-dataset-out, subject-wise\n")
        print((generalist / "lodo.md").read_text())
        print("## Calibrated tracking on AIST\n")
        print((generalist / "tracking.md").read_text())
    print("## In-dataset: subject-wise cross-validation (and the notebook's leaky split)\n")
    in_dataset(root)


def in_dataset(root: str) -> None:
    reports = sorted(Path(root).glob("*/report/report.json"))
    head = "| run | windows / subjects | " + " | ".join(f"{t} {m}" for t in ("SBP", "DBP") for m in METRICS) + " |"
    print(head)
    print("|---|---|---|---|---|---|---|---|---|---|")
    baselines_done = set()
    verdicts: list[str] = []
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
        if name == "ppg_bp-subject__generalist-recipe":
            mae = r["sbp"]["model"]["mae"]
            verdicts.append(
                f"- PPG-BP subject CV of the generalist's recipe, PPG only: SBP MAE {mae:.2f} against today's "
                f"{PPG_BP_CV_PPG_ONLY_SBP} — {'met' if mae <= PPG_BP_CV_PPG_ONLY_SBP else 'missed'}"
            )
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
