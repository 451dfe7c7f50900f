"""Metrics: MAE, RMSE, r, MASE and the clinical standards (AAMI/ISO 81060-2 ME±SD, BHS, IEEE 1708 MAD)."""

from __future__ import annotations

import numpy as np

# BHS protocol (O'Brien et al., J Hypertens 1993): cumulative % of |error| within 5/10/15 mmHg.
BHS_THRESHOLDS_MMHG = (5.0, 10.0, 15.0)
BHS_GRADES = {"A": (60.0, 85.0, 95.0), "B": (50.0, 75.0, 90.0), "C": (40.0, 65.0, 85.0)}
# AAMI / ISO 81060-2 criterion 1: mean error within ±5 mmHg, SD ≤ 8 mmHg, at least 85 subjects.
AAMI_MAX_ME_MMHG = 5.0
AAMI_MAX_SD_MMHG = 8.0
AAMI_MIN_SUBJECTS = 85
# IEEE 1708-2014: mean absolute difference classes A ≤ 5, B ≤ 6, C ≤ 7, else D (mmHg).
IEEE1708_CLASSES = (("A", 5.0), ("B", 6.0), ("C", 7.0))


def bhs_grade(abs_err: np.ndarray) -> tuple[dict[str, float], str]:
    """Cumulative percentages within 5/10/15 mmHg and the BHS grade (A–D)."""
    pct = [100.0 * float(np.mean(abs_err <= t)) for t in BHS_THRESHOLDS_MMHG]
    grade = next((g for g, need in BHS_GRADES.items() if all(p >= n for p, n in zip(pct, need))), "D")
    return {f"le{int(t)}": p for t, p in zip(BHS_THRESHOLDS_MMHG, pct)}, grade


def ieee1708_grade(mad: float) -> str:
    return next((g for g, limit in IEEE1708_CLASSES if mad <= limit), "D")


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_report(pred: np.ndarray, ref: np.ndarray, baseline: np.ndarray, subjects: np.ndarray) -> dict:
    """Every metric for one target (SBP or DBP), over windows; `baseline` is the mean predictor's output."""
    pred, ref, baseline = (np.asarray(v, dtype=np.float64) for v in (pred, ref, baseline))
    err = pred - ref
    abs_err = np.abs(err)
    mae = float(abs_err.mean())
    mae_base = float(np.abs(baseline - ref).mean())
    bhs, grade = bhs_grade(abs_err)
    me, sd = float(err.mean()), float(err.std(ddof=1)) if len(err) > 1 else float("nan")
    n_subjects = int(len(np.unique(subjects)))
    return {
        "n_windows": int(len(err)),
        "n_subjects": n_subjects,
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r": pearson_r(pred, ref),
        "me": me,
        "sd": sd,
        "mase": mae / mae_base if mae_base > 0 else float("nan"),
        "baseline_mae": mae_base,
        "bhs": bhs,
        "bhs_grade": grade,
        "aami_pass": bool(abs(me) <= AAMI_MAX_ME_MMHG and sd <= AAMI_MAX_SD_MMHG and n_subjects >= AAMI_MIN_SUBJECTS),
        "ieee1708_grade": ieee1708_grade(mae),
    }


def per_subject_errors(pred: np.ndarray, ref: np.ndarray, subjects: np.ndarray) -> list[dict]:
    """Mean error and mean absolute error of each subject's windows, worst first."""
    out = []
    for s in np.unique(subjects):
        m = subjects == s
        err = pred[m] - ref[m]
        out.append(
            {
                "subject": str(s),
                "n": int(m.sum()),
                "ref": float(ref[m].mean()),
                "me": float(err.mean()),
                "mae": float(np.abs(err).mean()),
            }
        )
    return sorted(out, key=lambda r: -r["mae"])
