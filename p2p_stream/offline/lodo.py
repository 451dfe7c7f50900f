"""Leave-one-dataset-out: the yardstick models are chosen by, and the recipe of the shipped generalist model.

Members are networks trained on a subset of the pooled datasets (each dataset weighted equally, subjects
held out of each for early stopping). With datasets A, B, C:

- fold "C held out" scores member AB on C. Its head (gain, interval) is fitted on what AB's own training sets
  look like when unseen: member A on B and member B on A. Nothing of C touches the fold.
- the shipped model is member ABC, with a head fitted on the three folds' predictions (AB on C, AC on B, BC on
  A): its gain and interval are what held up on datasets the networks never saw.

Seven trainings in all. Scoring is subject-wise: one estimate per subject and cuff reading (the mean of that
recording's windows), against the training data's constant (its datasets weighted equally).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from p2p_stream.config.train import TrainConfig
from p2p_stream.model.estimator import run_network
from p2p_stream.model.generalisation import Head, Trust, age_decades, fit_gain, fit_interval, fit_trust
from p2p_stream.model.prior import Prior, fit_prior
from p2p_stream.offline.datasets.pool import balanced_weights
from p2p_stream.offline.training import Prepared, fit
from p2p_stream.ppg.preprocess import window_samples

log = logging.getLogger(__name__)


@dataclass
class Member:
    """A network trained on some datasets, with its prior and the feature statistics of its training windows."""

    datasets: tuple[str, ...]
    model: nn.Module
    stats: dict  # label stats of the deviation it predicts
    prior: Prior
    trust: Trust
    epochs: int


@dataclass
class OutOfDataset:
    """A member's predictions on windows of a dataset it never saw."""

    rows: np.ndarray
    prior: np.ndarray  # (n, 2) mmHg
    deviation: np.ndarray  # (n, 2) mmHg
    features: np.ndarray  # (n, D)
    trust: np.ndarray  # (n,)


def usable(data: Prepared, gate: bool = True) -> np.ndarray:
    labelled = np.isfinite(data.y).all(axis=1)
    return labelled & (data.ok if gate else True)


def _val_split(data: Prepared, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `fraction` of each dataset's groups: every dataset takes part in early stopping."""
    rng = np.random.default_rng(seed)
    ws = data.windows
    val = []
    for d in np.unique(ws.dataset[rows]):
        groups = np.unique(ws.group[rows][ws.dataset[rows] == d])
        n_val = max(1, int(round(fraction * len(groups))))
        val.append(rng.choice(groups, n_val, replace=False))
    is_val = np.isin(ws.group[rows], np.concatenate(val))
    return rows[~is_val], rows[is_val]


def crop_samples(config: TrainConfig) -> int:
    return window_samples(config.optim.crop_s, config.data.fs) if config.optim.crop_s > 0 else 0


def train_member(
    config: TrainConfig, data: Prepared, datasets: tuple[str, ...], on_epoch: Callable | None = None
) -> Member:
    ws = data.windows
    rows = np.flatnonzero(usable(data, config.data.quality_gate) & np.isin(ws.dataset, datasets))
    weights = np.zeros(len(ws))
    weights[rows] = balanced_weights(ws.subset(rows))
    prior = fit_prior(data.y[rows], ws.age[rows], ws.sex[rows], weights[rows])
    offset = prior.line(ws.age, ws.sex)  # the network learns the deviation from the fitted line
    train, val = _val_split(data, rows, config.split.val_fraction, config.split.seed)
    log.info("member %s: %d training windows, %d validation", "+".join(datasets), len(train), len(val))
    model, stats, history = fit(config, data, train, val, on_epoch, offset=offset, weights=weights)
    crop = crop_samples(config)
    _, f_train = run_network(model, data.x[train], data.meta[train], stats, crop)
    _, f_val = run_network(model, data.x[val], data.meta[val], stats, crop)
    return Member(tuple(datasets), model, stats, prior, fit_trust(f_train, f_val), len(history))


BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def choose_survey_blend(held_out: list[tuple[Prior, np.ndarray]], data: Prepared) -> list[float]:
    """Per target, the share of (survey − training mean) that brings each fold's prior closest to the dataset it
    never saw: the mean over folds of the subject-weighted MAE there (`BLEND_GRID`)."""
    ws = data.windows
    chosen = []
    for t in range(2):

        def error(blend: float, t: int = t) -> float:
            total = 0.0
            for prior, rows in held_out:
                trial = Prior(**{**prior.to_dict(), "survey_blend": [blend, blend]})
                err = np.abs(trial.predict(ws.age[rows], ws.sex[rows])[:, t] - data.y[rows, t])
                total += np.average(err, weights=balanced_weights(ws.subset(rows)))
            return total / len(held_out)

        chosen.append(float(min(BLEND_GRID, key=error)))
    log.info("survey blend (sbp, dbp): %s", chosen)
    return chosen


def predict_member(member: Member, data: Prepared, rows: np.ndarray, crop: int) -> OutOfDataset:
    deviation, features = run_network(member.model, data.x[rows], data.meta[rows], member.stats, crop)
    prior = member.prior.predict(data.windows.age[rows], data.windows.sex[rows])
    return OutOfDataset(rows, prior, deviation, features, member.trust.trust(features))


def fit_head(member: Member, unseen: list[OutOfDataset], data: Prepared, level: float) -> Head:
    """The head of `member` from out-of-dataset predictions of its sisters (every dataset weighted equally)."""
    rows = np.concatenate([u.rows for u in unseen])
    prior = np.concatenate([u.prior for u in unseen])
    deviation = np.concatenate([u.deviation for u in unseen])
    trust = np.concatenate([u.trust for u in unseen])
    weight = balanced_weights(data.windows.subset(rows))
    y = data.y[rows]
    gain = fit_gain(prior, deviation, trust, y, weight, data.windows.dataset[rows])
    est = prior + np.asarray(gain) * trust[:, None] * deviation
    n = len(np.unique(data.windows.subject[rows]))
    decades = age_decades(data.windows.age[rows], member.prior)
    q, widen, age_widen = fit_interval(est, trust, decades, y, weight, level, n, data.windows.dataset[rows])
    return Head(
        prior=member.prior,
        trust=member.trust,
        gain=gain,
        level=level,
        q=q,
        widen=widen,
        age_widen=age_widen,
    )


@dataclass
class Fold:
    held_out: str
    member: Member
    head: Head
    rows: np.ndarray
    estimate: np.ndarray  # (n, 2)
    half: np.ndarray  # (n, 2) interval half-width
    trust: np.ndarray
    raw: np.ndarray  # (n, 2) prior + deviation, no shrinkage: what the unshrunk network would say
    prior: np.ndarray  # (n, 2)


def leave_one_dataset_out(
    config: TrainConfig, data: Prepared, datasets: tuple[str, ...], level: float = 0.8, on_member: Callable = None
) -> tuple[list[Fold], dict[tuple[str, ...], Member]]:
    """Train every member of the protocol and score each held-out dataset; returns the folds and the members."""
    crop = crop_samples(config)
    members: dict[tuple[str, ...], Member] = {}

    def member(subset: tuple[str, ...]) -> Member:
        if subset not in members:
            members[subset] = train_member(config, data, subset)
            if on_member:
                on_member(members[subset])
        return members[subset]

    ok = usable(data, config.data.quality_gate)
    held_rows = {held: np.flatnonzero(ok & (data.windows.dataset == held)) for held in datasets}
    blend = choose_survey_blend([(member(tuple(d for d in datasets if d != h)).prior, rows) for h, rows in
                                 held_rows.items()], data)  # fmt: skip
    for m in members.values():  # before any head: every published prior, and so every head, uses it
        m.prior.survey_blend = blend
    folds = []
    for held in datasets:
        rest = tuple(d for d in datasets if d != held)
        m = member(rest)
        if len(rest) > 1:
            unseen = []
            for d in rest:
                sister = member(tuple(x for x in rest if x != d))
                unseen.append(predict_member(sister, data, np.flatnonzero(ok & (data.windows.dataset == d)), crop))
            head = fit_head(m, unseen, data, level)
        else:  # one training dataset: nothing unseen to fit a head on, so keep the deviation whole
            head = Head(prior=m.prior, trust=m.trust, level=level)
        rows = np.flatnonzero(ok & (data.windows.dataset == held))
        ood = predict_member(m, data, rows, crop)
        ws = data.windows
        est, half, trust = head.estimate(ood.deviation, ood.features, ws.age[rows], ws.sex[rows])
        folds.append(Fold(held, m, head, rows, est, half, trust, ood.prior + ood.deviation, ood.prior))
    return folds, members
