"""Reports: a predictions table's metrics as JSON and markdown, with Bland–Altman, scatter and error PNGs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from p2p_stream.model.prior import TARGETS  # a constant: no torch to import for a report
from p2p_stream.offline.metrics import per_subject_errors, regression_report
from p2p_stream.offline.predictions import as_arrays


def evaluate(table: dict[str, list]) -> dict:
    """Model and mean-predictor metrics for SBP and DBP, plus per-subject errors."""
    a = as_arrays(table)
    out: dict = {
        "n_windows": int(len(a["fold"])),
        "n_subjects": int(len(np.unique(a["subject"]))),
        "folds": int(len(np.unique(a["fold"]))),
    }
    for t in TARGETS:
        ok = np.isfinite(a[f"{t}_pred"]) & np.isfinite(a[f"{t}_ref"])
        if not ok.any():
            continue
        ref, pred, base, subj = a[f"{t}_ref"][ok], a[f"{t}_pred"][ok], a[f"{t}_base"][ok], a["subject"][ok]
        out[t] = {
            "model": regression_report(pred, ref, base, subj),
            "mean_predictor": regression_report(base, ref, base, subj),
            "per_subject": per_subject_errors(pred, ref, subj),
        }
    return out


def _plots(table: dict[str, list], out_dir: Path, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = as_arrays(table)
    names = []
    targets = [t for t in TARGETS if np.isfinite(a[f"{t}_pred"]).any()]
    for kind in ("bland_altman", "scatter", "error_hist"):
        fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.5), squeeze=False)
        for ax, t in zip(axes[0], targets):
            ref, pred = a[f"{t}_ref"], a[f"{t}_pred"]
            ok = np.isfinite(ref) & np.isfinite(pred)
            ref, pred = ref[ok], pred[ok]
            err = pred - ref
            label = t.upper()
            if kind == "bland_altman":
                me, sd = err.mean(), err.std(ddof=1)
                ax.scatter((pred + ref) / 2, err, s=8, alpha=0.5)
                for y, style in ((me, "-"), (me + 1.96 * sd, "--"), (me - 1.96 * sd, "--")):
                    ax.axhline(y, color="k", linestyle=style, linewidth=1)
                ax.set(
                    xlabel=f"mean of estimate and reference {label} (mmHg)",
                    ylabel="estimate − reference (mmHg)",
                    title=f"{label}: ME {me:+.1f}, limits ±{1.96 * sd:.1f} mmHg",
                )
            elif kind == "scatter":
                lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
                ax.scatter(ref, pred, s=8, alpha=0.5)
                ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
                ax.set(xlabel=f"reference {label} (mmHg)", ylabel=f"estimated {label} (mmHg)", title=label)
            else:
                ax.hist(err, bins=40)
                for v in (-15, -10, -5, 5, 10, 15):
                    ax.axvline(v, color="grey", linewidth=0.6)
                ax.set(xlabel=f"{label} error (mmHg)", ylabel="windows", title=f"{label} error")
        fig.suptitle(title)
        fig.tight_layout()
        name = f"{kind}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def _r(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{value:.3f}"  # a constant predictor has no correlation


def markdown(result: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{result['n_windows']} windows from {result['n_subjects']} subjects, "
        f"{result['folds']} fold(s). Mean predictor = mean label of the same training rows.",
        "",
        "| target | predictor | MAE | RMSE | r | ME ± SD | MASE | BHS ≤5/≤10/≤15 % | BHS | AAMI | IEEE 1708 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        if t not in result:
            continue
        for who in ("model", "mean_predictor"):
            m = result[t][who]
            b = m["bhs"]
            lines.append(
                f"| {t.upper()} | {who.replace('_', ' ')} | {m['mae']:.2f} | {m['rmse']:.2f} | {_r(m['r'])} | "
                f"{m['me']:+.2f} ± {m['sd']:.2f} | {m['mase']:.3f} | {b['le5']:.0f}/{b['le10']:.0f}/{b['le15']:.0f} | "
                f"{m['bhs_grade']} | {'pass' if m['aami_pass'] else 'fail'} | {m['ieee1708_grade']} |"
            )
    for t in TARGETS:
        if t in result:
            worst = result[t]["per_subject"][:5]
            lines += [
                "",
                f"Worst subjects, {t.upper()} (MAE mmHg): "
                + ", ".join(f"{r['subject']} ({r['mae']:.1f}, ref {r['ref']:.0f})" for r in worst),
            ]
    return "\n".join(lines) + "\n"


def summary_lines(result: dict) -> list[str]:
    """One line per target for a terminal: the model against the mean predictor, and the clinical grades."""
    lines = []
    for t in TARGETS:
        if t in result:
            m, b = result[t]["model"], result[t]["mean_predictor"]
            lines.append(
                f"{t.upper()}: MAE {m['mae']:.2f} (mean predictor {b['mae']:.2f}), ME {m['me']:+.2f} ± {m['sd']:.2f}, "
                f"r {_r(m['r'])}, MASE {m['mase']:.3f}, BHS {m['bhs_grade']}, IEEE 1708 {m['ieee1708_grade']}"
            )
    return lines


def write_report(table: dict[str, list], out_dir: str | Path, title: str, extra: dict | None = None) -> dict:
    """Compute metrics and write report.json, report.md, per_subject.csv and the three PNGs under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(table)
    if extra:
        result.update(extra)
    result["plots"] = _plots(table, out_dir, title)
    (out_dir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown(result, title))
    with (out_dir / "per_subject.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "subject", "n", "ref", "me", "mae"])
        for t in TARGETS:
            for r in result.get(t, {}).get("per_subject", []):
                w.writerow([t, r["subject"], r["n"], f"{r['ref']:.1f}", f"{r['me']:.2f}", f"{r['mae']:.2f}"])
    return result
