"""Generalisation head: the network's deviation from the prior, shrunk as far as it held up off-dataset, with an
interval from split-conformal calibration on out-of-dataset predictions.

    estimate = prior(age, sex) + gain · trust(x) · deviation(x)
    interval = estimate ± q · (1 + widen · (1 − trust(x))) · exp(age_widen · (age − age_center) / 10 y)

`deviation` is the network's output (trained on label − prior). `gain` (per target, 0–1) is fitted on
predictions for datasets the network never saw, so it measures how much of the deviation survives a change of
sensor and population. `trust` (0–1) falls from 1 to 0 as the window's features move away from the training
windows' (Mahalanobis distance in the network's feature space, scaled by what held-out subjects of the training
datasets reach): an input unlike anything seen gets the prior and a wider interval. `q` and `widen` come from
the same out-of-dataset predictions (normalised split-conformal), so the interval's level is what was measured
on new datasets, not on the training ones. `age_widen` lets the interval grow with age (blood pressure spreads
wider in older people), with age clipped to the prior's range and an unknown age taken at its centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.covariance import LedoitWolf

from p2p_stream.model.prior import Prior

GAIN_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
WIDEN_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
MIN_GAIN_BENEFIT = 0.02  # a gain must cut every unseen dataset's MAE by this share, or the deviation is dropped
AGE_WIDEN_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)  # log-width per decade of age


@dataclass
class Trust:
    """How far a window's features are from the training windows', mapped to 1 (familiar) … 0 (unlike any)."""

    mean: list[float]  # (D,) feature mean of the training windows
    components: list[list[float]]  # (k, D) principal axes kept
    precision: list[list[float]]  # (k, k) Ledoit–Wolf precision in that space
    d_ref: float  # distance held-out windows of the training datasets stay within (their 90th percentile)
    zero_at: float = 2.5  # trust reaches 0 at this multiple of d_ref

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N,) Mahalanobis distance in units of d_ref."""
        z = (np.asarray(features, np.float64) - np.asarray(self.mean)) @ np.asarray(self.components).T
        d2 = np.einsum("nk,kl,nl->n", z, np.asarray(self.precision), z)
        return np.sqrt(np.maximum(d2, 0.0)) / self.d_ref

    def trust(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N,) in [0, 1]: 1 within d_ref, falling linearly to 0 at zero_at · d_ref."""
        return np.clip((self.zero_at - self.distance(features)) / (self.zero_at - 1.0), 0.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_trust(train_features: np.ndarray, heldout_features: np.ndarray, k: int = 16) -> Trust:
    """Feature statistics of the training windows; the scale from windows of held-out (validation) subjects."""
    x = np.asarray(train_features, np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[: min(k, vt.shape[0])]
    lw = LedoitWolf().fit((x - mean) @ components.T)
    t = Trust(mean.tolist(), components.tolist(), lw.precision_.tolist(), 1.0)
    t.d_ref = float(np.quantile(t.distance(heldout_features), 0.9))
    return t


@dataclass
class Head:
    prior: Prior
    trust: Trust
    gain: list[float] = field(default_factory=lambda: [1.0, 1.0])  # (2,) share of the deviation kept
    level: float = 0.8  # the interval's level
    q: list[float] = field(default_factory=lambda: [np.inf, np.inf])  # (2,) conformal half-width at trust 1, mmHg
    widen: list[float] = field(default_factory=lambda: [0.0, 0.0])  # (2,) extra width per unit of lost trust
    age_widen: list[float] = field(default_factory=lambda: [0.0, 0.0])  # (2,) log-width per decade of age

    def estimate(
        self,
        deviation: np.ndarray,
        features: np.ndarray,
        age: np.ndarray,
        sex: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Deviation (N, 2), features (N, D), demographics → (estimate (N, 2), half-width (N, 2), trust (N,))."""
        trust = self.trust.trust(features)
        prior = self.prior.predict(age, sex)
        est = prior + np.asarray(self.gain) * trust[:, None] * deviation
        scale = interval_scale(trust, self.widen, age_decades(age, self.prior), self.age_widen)
        half = np.asarray(self.q) * scale
        return est.astype(np.float32), half.astype(np.float32), trust.astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "prior": self.prior.to_dict(),
            "trust": self.trust.to_dict(),
            "gain": self.gain,
            "level": self.level,
            "q": self.q,
            "widen": self.widen,
            "age_widen": self.age_widen,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Head:
        return cls(
            prior=Prior.from_dict(d["prior"]),
            trust=Trust(**d["trust"]),
            gain=list(d["gain"]),
            level=float(d["level"]),
            q=list(d["q"]),
            widen=list(d["widen"]),
            age_widen=list(d.get("age_widen", [0.0, 0.0])),
        )


def age_decades(age: np.ndarray, prior: Prior) -> np.ndarray:
    """(N,) decades from the prior's centre age, clipped to its range; 0 where the age is unknown."""
    age = np.asarray(age, dtype=np.float64)
    clipped = np.clip(np.where(np.isfinite(age), age, prior.age_center), *prior.age_range)
    return (clipped - prior.age_center) / 10.0


def interval_scale(trust: np.ndarray, widen, decades: np.ndarray, age_widen) -> np.ndarray:
    """(N, 2) multiplier of the half-width: wider for lost trust and for age."""
    return (1.0 + np.asarray(widen) * (1.0 - trust[:, None])) * np.exp(np.asarray(age_widen) * decades[:, None])


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose weighted cumulative share reaches q (conformal: the +1 is the caller's)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(np.searchsorted(cum, q), len(values) - 1)])


def fit_gain(
    prior: np.ndarray, deviation: np.ndarray, trust: np.ndarray, y: np.ndarray, weight: np.ndarray, dataset: np.ndarray
) -> list[float]:
    """Per target, the gain in GAIN_GRID whose worst dataset fares best against the prior alone.

    Minimax over the unseen datasets, not the pooled MAE: a gain that helps on one dataset and hurts on another is
    what makes an estimate worse than the prior on the next sensor. A gain is kept only if it makes every unseen
    dataset at least MIN_GAIN_BENEFIT better than the prior: 1–2 % on a few hundred subjects is noise (a gain of
    0.25 chosen on such a margin made a held-out dataset 4 % worse). Ties go to the smaller gain.
    """
    gains = []
    for t in range(2):
        worst = np.zeros(len(GAIN_GRID))
        for d in np.unique(dataset):
            m = dataset == d
            err = [
                np.average(np.abs(prior[m, t] + g * trust[m] * deviation[m, t] - y[m, t]), weights=weight[m])
                for g in GAIN_GRID
            ]
            worst = np.maximum(worst, np.asarray(err) / err[0])
        best = int(np.argmin(np.round(worst, 4)))
        gains.append(float(GAIN_GRID[best]) if worst[best] <= 1.0 - MIN_GAIN_BENEFIT else 0.0)
    return gains


def fit_interval(
    est: np.ndarray,
    trust: np.ndarray,
    decades: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    level: float,
    n: int,
    dataset: np.ndarray | None = None,
) -> tuple[list, list, list]:
    """Normalised split-conformal, worst case over datasets: per target, the (widen, age_widen) giving the narrowest
    mean interval, with q the largest of the datasets' own conformal quantiles.

    Scores |y − est| / scale (`interval_scale`); each dataset's q is the weighted quantile of its scores at
    level·(1 + k/n), n the subjects of all k datasets together (the finite-sample correction with every dataset
    taken at the mean size, not its own: a small dataset's correction is understated), so the interval reaches the
    level on every dataset it was calibrated on, not on their pool only: a new sensor is one more dataset, and the
    pooled quantile left the dataset least like the pool at a third of its cover.
    """
    dataset = np.zeros(len(y), dtype=int) if dataset is None else np.asarray(dataset)
    groups = [dataset == d for d in np.unique(dataset)]
    shares = [min(1.0, level * (1.0 + len(groups) / n)) for _ in groups]  # n subjects shared among the datasets
    qs, widens, age_widens = [], [], []
    for t in range(2):
        best = None
        for widen in WIDEN_GRID:
            for age_widen in AGE_WIDEN_GRID:
                scale = interval_scale(trust, [widen, widen], decades, [age_widen, age_widen])[:, 0]
                score = np.abs(y[:, t] - est[:, t]) / scale
                q = max(weighted_quantile(score[g], weight[g], sh) for g, sh in zip(groups, shares))
                width = float(np.average(q * scale, weights=weight))
                if best is None or width < best[0] - 1e-9:
                    best = (width, q, widen, age_widen)
        qs.append(best[1])
        widens.append(float(best[2]))
        age_widens.append(float(best[3]))
    return qs, widens, age_widens
