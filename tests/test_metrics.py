"""Metrics against hand-computed values and the published thresholds (BHS, AAMI/ISO 81060-2, IEEE 1708)."""

import numpy as np
import pytest

from p2p_stream.offline.metrics import bhs_grade, ieee1708_grade, per_subject_errors, regression_report


def test_bhs_grades_at_their_boundaries():
    def errors(le5, le10, le15, n=100):
        # le5 % within 5, le10 % within 10, le15 % within 15, rest at 20 mmHg.
        e = [3.0] * le5 + [8.0] * (le10 - le5) + [13.0] * (le15 - le10) + [20.0] * (n - le15)
        return np.array(e)

    assert bhs_grade(errors(60, 85, 95))[1] == "A"
    assert bhs_grade(errors(59, 85, 95))[1] == "B"
    assert bhs_grade(errors(50, 75, 90))[1] == "B"
    assert bhs_grade(errors(40, 65, 85))[1] == "C"
    assert bhs_grade(errors(40, 65, 84))[1] == "D"
    pct, _ = bhs_grade(errors(50, 75, 90))
    assert pct == {"le5": 50.0, "le10": 75.0, "le15": 90.0}


@pytest.mark.parametrize("mad,grade", [(4.9, "A"), (5.0, "A"), (5.5, "B"), (6.9, "C"), (7.01, "D")])
def test_ieee1708_classes(mad, grade):
    assert ieee1708_grade(mad) == grade


def test_regression_report_values():
    ref = np.array([100.0, 120.0, 140.0, 160.0])
    pred = np.array([104.0, 118.0, 146.0, 156.0])  # errors +4, -2, +6, -4
    base = np.full(4, 130.0)  # mean predictor: |errors| 30, 10, 10, 30
    r = regression_report(pred, ref, base, np.array(["a", "a", "b", "b"]))
    assert r["mae"] == pytest.approx(4.0)
    assert r["rmse"] == pytest.approx(np.sqrt((16 + 4 + 36 + 16) / 4))
    assert r["me"] == pytest.approx(1.0)
    assert r["sd"] == pytest.approx(np.std([4, -2, 6, -4], ddof=1))
    assert r["mase"] == pytest.approx(4.0 / 20.0)
    assert r["n_subjects"] == 2
    assert not r["aami_pass"]  # |ME| and SD pass, but 2 subjects are far below the 85 required
    assert r["ieee1708_grade"] == "A"


def test_aami_pass_needs_small_bias_small_sd_and_85_subjects(rng):
    ref = rng.uniform(90, 160, size=300)
    subjects = np.arange(300) % 100
    good = regression_report(ref + rng.normal(0, 5, 300), ref, np.full(300, ref.mean()), subjects)
    biased = regression_report(ref + 6 + rng.normal(0, 5, 300), ref, np.full(300, ref.mean()), subjects)
    assert good["aami_pass"] and not biased["aami_pass"]


def test_per_subject_errors_worst_first():
    rows = per_subject_errors(np.array([1.0, 1.0, 10.0]), np.array([0.0, 0.0, 0.0]), np.array(["a", "a", "b"]))
    assert [r["subject"] for r in rows] == ["b", "a"] and rows[1]["n"] == 2
