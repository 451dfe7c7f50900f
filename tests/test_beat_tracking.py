"""Calibrated tracking from beat features, offline (issue 25, deliverable 4): the fit, the dead-band, the two-point
refinement and the scoring against carrying the cuff forward, on constructed beats whose answer is known; and on
the whole stress_beats_zjx set where ../shared/data is on the machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from p2p_stream.offline import beat_tracking as bt
from p2p_stream.offline.datasets.stress_beats import Beats, load_stress_beats

SHIPPED = Path(bt.__file__).parents[1] / "assets" / "tracking.json"


def constructed(persons: int = 8, gain: float = -0.5, gains: np.ndarray | None = None, noise: float = 0.0) -> Beats:
    """Each person: BL, CP, BL, MA blocks of 60 beats; SBP = 120 + g·(PAT − 250 ms), PAT moved per block."""
    rng = np.random.default_rng(1)
    cols: dict[str, list] = {k: [] for k in ("recording", "block", "label", "t_s", "sbp", "dbp", "pat_ms", "hr")}
    for p in range(persons):
        g = gain if gains is None else gains[p]
        for k, (label, shift) in enumerate((("BL", 0.0), ("CP", -30.0), ("BL", -2.0), ("MA", -15.0))):
            pat = 250.0 + shift + rng.normal(0, 1.0, 60)
            cols["recording"].append(np.full(60, p))
            cols["block"].append(np.full(60, k))
            cols["label"].append(np.full(60, label))
            cols["t_s"].append(k * 100.0 + np.arange(60.0))
            cols["sbp"].append(120.0 + g * (pat - 250.0) + rng.normal(0, noise, 60))
            cols["dbp"].append(np.full(60, 75.0))
            cols["pat_ms"].append(pat)
            cols["hr"].append(np.full(60, 70.0))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(c["sbp"])
    return Beats("finger", c["recording"], c["recording"], c["block"], c["label"], c["t_s"], c["sbp"], c["dbp"],
                 c["pat_ms"], c["hr"], np.ones(n), np.full(n, 150.0))  # fmt: skip


def test_the_fit_finds_the_known_arrival_time_gain_and_scores_far_below_carrying_the_cuff():
    beats = constructed(gain=-0.5)
    blocks = bt.units_of(beats)
    c = bt.changes_since_first_baseline(blocks, blocks)
    assert len(c.dbp) == 8 * 3  # the three blocks after each first baseline
    model = bt.fit(c, 0, ("pat_ms",), np.ones(len(c.dbp), bool))
    assert abs(model.coef[0] + 0.5) < 0.02
    pred, half = bt.leave_one_subject_out(c, 0, ("pat_ms",))
    result = bt.mase(c.dbp[:, 0] - pred, c.dbp[:, 0], c.units.person)
    assert result["mase"] < 0.1 and result["better"] == 8
    assert np.all(np.isfinite(half))


def test_no_movement_in_the_features_gives_the_cuff_value_exactly():
    model = bt.Fit(("pat_ms", "hr_bpm"), np.array([-0.4, -0.3]), tau=3.0)
    still = np.zeros((3, len(bt.ALL_FEATURES)))
    still[1, 0] = 5.0  # 5 ms × 0.4 = 2 mmHg: inside the 3 mmHg dead-band
    assert np.array_equal(model.change(still), np.zeros(3))
    moved = np.zeros((1, len(bt.ALL_FEATURES)))
    moved[0, 0] = -20.0  # +8 mmHg predicted, 3 of it inside the band
    assert model.change(moved)[0] == 5.0


def test_a_second_reading_moves_a_persons_gain_toward_their_own():
    assert bt.person_gain(predicted=10.0, observed=20.0, lam=0.0) == 2.0  # alone, the two readings decide
    assert abs(bt.person_gain(10.0, 20.0, lam=1e12) - 1.0) < 1e-6  # shrunk all the way: the population's
    between = bt.person_gain(10.0, 20.0, lam=100.0)
    assert 1.0 < between < 2.0
    # Persons whose gains differ: two readings recover more of each one's own than the population's average.
    gains = np.linspace(-0.2, -0.9, 8)
    beats = constructed(gains=gains, noise=0.5)
    blocks = bt.units_of(beats)
    c = bt.changes_since_first_baseline(blocks, blocks)
    one = bt.leave_one_subject_out(c, 0, ("pat_ms",))[0]
    one_point = bt.mase(c.dbp[:, 0] - one, c.dbp[:, 0], c.units.person)["mase"]
    two = bt.two_point(blocks, blocks, c, 0, ("pat_ms",))
    assert bt.mase(two.error, two.carry, two.person)["mase"] < 0.5 * one_point


def test_the_shipped_tracking_model_is_the_one_the_command_writes(shared_data):
    beats = load_stress_beats(shared_data)
    fitted = bt.shipped(beats)
    shipped = json.loads(SHIPPED.read_text())
    for way in bt.WAYS:
        assert np.allclose(fitted["sbp"][way]["coef"], shipped["sbp"][way]["coef"], atol=1e-6)
    assert shipped["dbp"] is None


def test_on_the_whole_set_arrival_time_beats_carrying_the_cuff_forward(shared_data):
    beats = load_stress_beats(shared_data)
    blocks = bt.units_of(beats)
    c = bt.changes_since_first_baseline(blocks, blocks)
    pred = bt.leave_one_subject_out(c, 0, bt.FEATURES["ecg+ppg"])[0]
    result = bt.mase(c.dbp[:, 0] - pred, c.dbp[:, 0], c.units.person)
    assert result["mase"] < 0.95 and result["better"] > result["persons"] / 2
