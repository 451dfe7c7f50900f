"""Demographics: age and sex → the fixed feature vector the default model takes (unknown is a valid value)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Fixed scaling, not fitted on any data: (age - 50) / 20 puts adult ages within about ±2.
AGE_CENTER_Y = 50.0
AGE_SCALE_Y = 20.0


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
    """Wire/API meta (`{"age": 54, "sex": "F"}`, one for all or one per window, or None) → (n, 4) features."""
    if meta is None or isinstance(meta, Mapping):
        meta = [meta] * n
    if len(meta) != n:
        raise ValueError(f"meta has {len(meta)} entries for {n} windows")
    ages = np.full(n, np.nan)
    sexes = np.full(n, "", dtype=object)
    for i, m in enumerate(meta):
        if not m:
            continue
        age = m.get("age")
        if isinstance(age, (int, float)) and not isinstance(age, bool) and 0 < age < 130:
            ages[i] = float(age)
        sex = str(m.get("sex", "")).strip().upper()[:1]
        sexes[i] = sex if sex in ("M", "F") else ""
    return meta_features(ages, sexes)
