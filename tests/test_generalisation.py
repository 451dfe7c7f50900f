"""The estimate off-dataset: the prior it falls back to, the trust that decides how far, the conformal interval."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_stream.model.generalisation import Head, fit_gain, fit_interval, fit_trust
from p2p_stream.model.prior import SURVEY, Prior, fit_prior


def test_prior_clips_age_to_the_range_it_was_fitted_on(rng):
    age = rng.uniform(21, 27, 200)
    sex = np.where(rng.random(200) < 0.5, "M", "F")
    y = np.column_stack([100 + 2.0 * age + 5 * (sex == "M"), 60 + age]) + rng.normal(0, 1, (200, 2))
    prior = fit_prior(y, age, sex, np.ones(200), ridge=0.0)
    assert prior.age_range == pytest.approx([age.min(), age.max()])
    at_27, at_86 = prior.predict(np.array([age.max(), 86.0]), np.array(["F", "F"]))
    np.testing.assert_allclose(at_86, at_27)  # the slope of 21–27-year-olds is not carried to 86
    assert prior.male[0] == pytest.approx(5.0, abs=0.6)


def test_the_fitted_line_without_demographics_is_the_weighted_mean_and_the_published_prior_the_survey(rng):
    y = np.column_stack([rng.normal(120, 10, 50), rng.normal(75, 8, 50)])
    w = rng.random(50)
    prior = fit_prior(y, np.full(50, np.nan), np.full(50, ""), w)
    expected = (w[:, None] * y).sum(0) / w.sum()
    nothing = (np.array([np.nan]), np.array([""]))
    np.testing.assert_allclose(prior.line(*nothing)[0], expected, rtol=1e-5)
    np.testing.assert_allclose(prior.predict(*nothing)[0], SURVEY)  # knowing nothing: the national survey's adults


def test_with_age_or_sex_the_published_prior_moves_the_line_by_its_blend_of_the_survey_gap(rng):
    age = rng.uniform(20, 80, 300)
    sex = np.where(rng.random(300) < 0.5, "M", "F")
    y = np.column_stack([90 + 0.5 * age, 60 + 0.1 * age]) + rng.normal(0, 1, (300, 2))
    prior = fit_prior(y, age, sex, np.ones(300))
    gap = np.asarray(SURVEY) - np.asarray(prior.mean)
    asked = (np.array([30.0, np.nan, 70.0]), np.array(["", "F", "M"]))
    for blend in ([0.0, 0.0], [0.5, 1.0]):
        prior.survey_blend = blend
        np.testing.assert_allclose(prior.predict(*asked), prior.line(*asked) + np.asarray(blend) * gap, rtol=1e-5)
    old = Prior.from_dict({k: v for k, v in prior.to_dict().items() if k not in ("survey", "survey_blend")})
    np.testing.assert_allclose(old.predict(*asked), old.line(*asked))  # a checkpoint from before: as it was


def _head(rng, gain=(1.0, 1.0)) -> tuple[Head, np.ndarray]:
    train = rng.normal(0, 1, (400, 8))
    heldout = rng.normal(0, 1, (100, 8))
    y = np.column_stack([rng.normal(120, 10, 400), rng.normal(75, 8, 400)])
    prior = fit_prior(y, np.full(400, np.nan), np.full(400, ""), np.ones(400))
    head = Head(prior=prior, trust=fit_trust(train, heldout), gain=list(gain), q=[10.0, 6.0], widen=[1.0, 1.0])
    return head, heldout


def test_an_input_unlike_the_training_windows_falls_back_to_the_prior_with_a_wider_interval(rng):
    head, familiar = _head(rng)
    far = familiar[:5] + 40.0  # features far outside anything seen in training
    deviation = np.full((5, 2), 15.0)
    no_meta = (np.full(5, np.nan), np.full(5, ""))
    est_near, half_near, trust_near = head.estimate(deviation, familiar[:5], *no_meta)
    est_far, half_far, trust_far = head.estimate(deviation, far, *no_meta)
    prior = head.prior.predict(*no_meta)[0]
    assert trust_far.max() == 0.0 and trust_near.mean() > 0.8
    np.testing.assert_allclose(est_far, np.tile(prior, (5, 1)), atol=1e-4)  # all the way to the prior
    assert (np.abs(est_near - prior) > 10).all()  # the familiar ones keep most of their deviation
    assert (half_far > half_near).all()


def test_the_gain_is_chosen_by_the_worst_dataset_not_the_pooled_error(rng):
    # The deviation is right on dataset a and pure noise on dataset b: pooled, a gain helps; per dataset it hurts b.
    n = 300
    truth_dev = rng.normal(0, 10, (2 * n, 2))
    dev = truth_dev.copy()
    dev[n:] = rng.normal(0, 25, (n, 2))
    y = 120 + truth_dev
    prior = np.full((2 * n, 2), 120.0)
    dataset = np.array(["a"] * n + ["b"] * n)
    gain = fit_gain(prior, dev, np.ones(2 * n), y, np.ones(2 * n), dataset)
    assert gain == [0.0, 0.0]
    only_a = fit_gain(prior[:n], dev[:n], np.ones(n), y[:n], np.ones(n), dataset[:n])
    assert only_a == [1.0, 1.0]


def test_split_conformal_interval_covers_its_level_on_fresh_data(rng):
    def draw(n):
        trust = rng.random(n)
        scale = 1.0 + 1.0 * (1 - trust)  # errors grow as trust falls
        y = rng.normal(0, 8, (n, 2)) * scale[:, None]
        return y, trust

    y_cal, t_cal = draw(2000)
    q, widen, age_widen = fit_interval(np.zeros_like(y_cal), t_cal, np.zeros(2000), y_cal, np.ones(2000), 0.8, 2000)
    assert age_widen == [0.0, 0.0]  # no age given: no age term
    y_new, t_new = draw(5000)
    half = np.asarray(q) * (1 + np.asarray(widen) * (1 - t_new[:, None]))
    coverage = (np.abs(y_new) <= half).mean(axis=0)
    np.testing.assert_allclose(coverage, 0.8, atol=0.03)
    assert widen[0] > 0  # it learned that low trust means larger errors


def test_a_gain_that_helps_every_dataset_only_by_noise_is_dropped(rng):
    n = 400
    y = 120 + rng.normal(0, 10, (2 * n, 2))
    dev = 0.08 * (y - 120) + rng.normal(0, 10, (2 * n, 2))  # barely related: a percent or so at best
    dataset = np.array(["a"] * n + ["b"] * n)
    gain = fit_gain(np.full((2 * n, 2), 120.0), dev, np.ones(2 * n), y, np.ones(2 * n), dataset)
    assert gain == [0.0, 0.0]
