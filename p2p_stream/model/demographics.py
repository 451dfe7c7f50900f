"""Demographics: age and sex → the fixed feature vector the default model takes (unknown is a valid value)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Fixed scaling, not fitted on any data: (age - 50) / 20 puts adult ages within about ±2.
AGE_CENTER_Y = 50.0
AGE_SCALE_Y = 20.0
MAX_AGE_Y = 120.0  # the oldest age taken as a fact; above it (or at 0 and below) an age is a mistake, not a person


def age_years(value: object) -> float:
    """An age from the wire or the API → years; ValueError naming the value when it is not a number in (0, 120].

    Any real number type is taken (Python or numpy ints and floats, a numeric string): the estimate depends on it,
    so a type that slips past must not silently turn a 70-year-old into "age unknown".
    """
    if isinstance(value, bool):
        raise ValueError(f"age must be a number of years, got {value!r}")
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"age must be a number of years, got {value!r}") from None
    if not 0.0 < age <= MAX_AGE_Y:  # NaN fails this too
        raise ValueError(f"age must be within (0, {MAX_AGE_Y:g}] years, got {value!r}")
    return age


def meta_features(age: np.ndarray, sex: np.ndarray) -> np.ndarray:
    """(N,) ages in years (NaN unknown) and (N,) "M"/"F"/"" → (N, 4): age_z, male, female, age_known."""
    age = np.asarray(age, dtype=np.float64)
    sex = np.asarray(sex).astype(str)
    known = np.isfinite(age)
    out = np.zeros((age.size, 4), dtype=np.float32)
    out[known, 0] = (age[known] - AGE_CENTER_Y) / AGE_SCALE_Y
    out[:, 1] = np.char.upper(sex) == "M"
    out[:, 2] = np.char.upper(sex) == "F"
    out[:, 3] = known
    return out


def parse_meta(meta: Mapping | Sequence[Mapping | None] | None, n: int) -> np.ndarray:
    """Wire/API meta (`{"age": 54, "sex": "F"}`, one for all or one per window, or None) → (n, 4) features.

    An age that is not a number of years in (0, 120] is a ValueError (`age_years`); a sex other than M/F is unknown.
    """
    if meta is None or isinstance(meta, Mapping):
        meta = [meta] * n
    if len(meta) != n:
        raise ValueError(f"meta has {len(meta)} entries for {n} windows")
    ages = np.full(n, np.nan)
    sexes = np.full(n, "", dtype=object)
    for i, m in enumerate(meta):
        if not m:
            continue
        if m.get("age") is not None:
            ages[i] = age_years(m["age"])
        sex = str(m.get("sex", "")).strip().upper()[:1]
        sexes[i] = sex if sex in ("M", "F") else ""
    return meta_features(ages, sexes)
