"""Population prior: what to answer for SBP/DBP knowing only age and sex — the estimate's fallback.

A weighted ridge line in age plus a sex term, fitted on the training subjects with every dataset weighted
equally. Age is clipped to the range it was fitted on, so a slope learned on 21–27-year-olds is never carried
to an 86-year-old. Unknown age or sex falls back to the mean over the training data, never to an indicator
(an indicator of "age missing" learns which dataset lacked ages, not anything about blood pressure).

That is `Prior.line`, what the network is trained against. What is *published* (`Prior.predict`) is anchored on
a national survey instead of our three small datasets, whose equal-weighted mean sits below both older
populations the estimate was checked on: with neither age nor sex known, the survey's adult mean (`SURVEY`);
with either, the line moved by `survey_blend` of the gap between the survey and the line's own mean, the share
chosen by leave-one-dataset-out (offline/lodo.py: `choose_survey_blend`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

TARGETS = ("sbp", "dbp")
# Mean SBP and DBP of US adults aged 18 and over, NHANES 2001–2008 (19,921 adults, mean of up to three readings at
# a physician examination): Wright JD, Hughes JP, Ostchega Y, Yoon SS, Nwankwo T. Mean systolic and diastolic
# blood pressure in adults aged 18 and over in the United States, 2001–2008. National Health Statistics Reports
# No. 35. Hyattsville, MD: National Center for Health Statistics; 2011.
SURVEY = (122.0, 71.0)
SURVEY_SOURCE = "NHANES 2001-2008 adults 18+, National Health Statistics Reports No. 35 (2011)"


@dataclass
class Prior:
    mean: list[float]  # (2,) marginal SBP, DBP mmHg: the answer with no age and no sex
    intercept: list[float]  # (2,) at age_center, female
    age_slope: list[float]  # (2,) mmHg per year
    male: list[float]  # (2,) mmHg, male minus female
    age_center: float  # years
    age_range: list[float]  # [lo, hi] years: the ages the slope was fitted on
    male_share: float  # share of men among training subjects with a known sex
    survey: list[float] | None = None  # (2,) the published answer knowing nothing: `SURVEY`; None: `mean`
    survey_blend: list[float] = field(default_factory=lambda: [0.0, 0.0])  # (2,) share of survey − mean added

    def predict(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray:
        """(N,) ages (NaN unknown) and (N,) "M"/"F"/"" → (N, 2) published prior SBP, DBP in mmHg."""
        out = self.line(age, sex).astype(np.float64)
        if self.survey is None:
            return out.astype(np.float32)
        gap = np.asarray(self.survey) - np.asarray(self.mean)
        sex = np.char.upper(np.asarray(sex).astype(str))
        known = np.isfinite(np.asarray(age, dtype=np.float64)) | np.isin(sex, ("M", "F"))
        out += np.where(known[:, None], np.asarray(self.survey_blend) * gap, gap)
        return out.astype(np.float32)

    def line(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray:
        """(N,) ages (NaN unknown) and (N,) "M"/"F"/"" → (N, 2) the fitted line's SBP, DBP in mmHg."""
        age = np.asarray(age, dtype=np.float64)
        sex = np.char.upper(np.asarray(sex).astype(str))
        n = age.size
        out = np.tile(np.asarray(self.mean, dtype=np.float64), (n, 1))
        known_age, known_sex = np.isfinite(age), np.isin(sex, ("M", "F"))
        known = known_age | known_sex
        if not known.any():
            return out.astype(np.float32)
        a = np.clip(np.where(known_age, age, self.age_center), *self.age_range) - self.age_center
        m = np.where(known_sex, (sex == "M").astype(np.float64), self.male_share)
        line = np.asarray(self.intercept) + a[:, None] * np.asarray(self.age_slope) + m[:, None] * np.asarray(self.male)
        # Only age known: the line at the training mix of sexes; only sex known: at the training mean age.
        out[known] = line[known]
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        return cls(**d)


def fit_prior(y: np.ndarray, age: np.ndarray, sex: np.ndarray, weight: np.ndarray, ridge: float = 1.0) -> Prior:
    """Fit on one row per subject: y (N, 2) mmHg, age (N,), sex (N,), weight (N,) (datasets balanced by the caller).

    `ridge` is in units of "subjects' worth" of shrinkage of the age slope (per decade) and the sex term to 0.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    sex = np.char.upper(np.asarray(sex).astype(str))
    mean = (w[:, None] * y).sum(0) / w.sum()
    rows = np.isfinite(age) & np.isin(sex, ("M", "F"))
    if rows.sum() < 3:
        zero = [0.0, 0.0]
        return Prior(mean.tolist(), mean.tolist(), zero, zero, 50.0, [50.0, 50.0], 0.5, list(SURVEY))
    a, s, yy, ww = age[rows], (sex[rows] == "M").astype(np.float64), y[rows], w[rows] / w[rows].mean()
    lo, hi = float(a.min()), float(a.max())
    center = float(np.average(a, weights=ww))
    X = np.column_stack([np.ones(a.size), (a - center) / 10.0, s])  # slope per decade: comparable ridge scale
    penalty = np.diag([0.0, ridge, ridge])
    beta = np.linalg.solve(X.T @ (ww[:, None] * X) + penalty, X.T @ (ww[:, None] * yy))  # (3, 2)
    return Prior(
        survey=list(SURVEY),
        mean=mean.tolist(),
        intercept=beta[0].tolist(),
        age_slope=(beta[1] / 10.0).tolist(),
        male=beta[2].tolist(),
        age_center=center,
        age_range=[lo, hi],
        male_share=float(np.average(s, weights=ww)),
    )
