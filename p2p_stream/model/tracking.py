"""Tracking after a cuff reading: SBP moves by the change of the wearer's beat features since the reading.

The model (`assets/tracking.json`, written by ``python -m p2p_stream.offline.beat_tracking --ship``, fitted on
stress_beats_zjx; docs/results.md, "Calibrated tracking") is linear in the features' change, with a dead-band::

    ΔSBP = shrink(g · coef · Δf, τ)        shrink(x, τ) = sign(x) · max(|x| − τ, 0)
    SBP  = cuff + ΔSBP,  ± (h0 + k·|ΔSBP|)

Two ways, chosen per window: `ecg+ppg` (pulse arrival time and the R-R rate) when both the reading's baseline and
the window have an arrival time, else — only where asked (`ppg_only`, the daemon's `calibration.tracking = "ppg"`)
— `ppg` (pulse rate, rise time, amplitude): it did worse than the cuff where the pressure held still (MASE 1.68 on
stress_beats_zjx's still blocks), so by default a device without an ECG keeps its cuff reading. A feature missing
on either side counts as unchanged, as in the offline fit. `g` is the person's own gain, 1 until a second cuff
reading at another pressure (≥ `SECOND_AT_MMHG` away) measures it, shrunk toward 1 (`person_gain`, λ fitted
offline). DBP is not tracked: nothing beat carrying its cuff reading forward.

Tracking lasts `HORIZON_S` after the reading, then the estimate is the cuff reading again (`cuff`) until the next
one. The features' baseline belongs to one wearing of the sensor: on AIST (a wrist sensor put on afresh each
session, days apart, at rest) the PPG-only way tracked across sessions did 2.17 times worse than the cuff carried
forward (docs/results.md), its rise time and amplitude moving with the sensor's placement, not the pressure; on
stress_beats_zjx it was validated up to 64 minutes after the reading.

The interval widens with the predicted change (h0, k fitted on stress_beats_zjx: 80 % coverage), and with time:
after `HORIZON_S` the estimate is the cuff reading with the checkpoint's interval, measured on AIST over four weeks
(±11 mmHg SBP; the tracker's h0 is ±8.1 with an ECG, ±10.6 without).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_stream.beats.device_beats import BeatFeatures
from p2p_stream.errors import CheckpointError

ASSET = Path(__file__).resolve().parent.parent / "assets" / "tracking.json"
FEATURES = ("pat_ms", "hr_bpm", "rise_ms", "log_amplitude")  # a feature vector's order (offline: ALL_FEATURES)
SECOND_AT_MMHG = 10.0  # a second reading this far from the first measures the person's gain (offline: the same)
MAX_CHANGE_MMHG = 60.0  # a predicted change is held to this: stress_beats' largest within a person was ~70 mmHg
HORIZON_S = 3600.0  # tracking applies this long after a reading (validated to 64 min; not across re-wearing)


def median_features(vectors: list[np.ndarray]) -> np.ndarray | None:
    """The per-feature median of windows' feature vectors, NaN for a feature none of them had (no ECG); None for
    no vectors. A reading's baseline (stream/state/calibration.py), a session's features (offline/aist_tracking.py)."""
    if not vectors:
        return None
    stacked = np.vstack(vectors)
    stacked[~np.isfinite(stacked)] = np.nan
    with warnings.catch_warnings():  # an all-NaN feature is NaN, as said, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(stacked, axis=0)


def feature_vector(beats: BeatFeatures | None) -> np.ndarray | None:
    """A window's beat medians in `FEATURES` order (NaN where missing), or None when it has none."""
    if beats is None or beats.beats == 0:
        return None
    return np.array([beats.pat_ms, beats.hr_bpm, beats.rise_ms, beats.log_amplitude], dtype=np.float64)


def shrink(change, tau: float):
    """Soft threshold: a predicted change within ±τ is 0, beyond it is moved τ toward 0 (a number or an array)."""
    return np.sign(change) * np.maximum(np.abs(change) - tau, 0.0)


def person_gain(predicted: float, observed: float, lam: float) -> float:
    """Least squares of the observed change on the predicted one, shrunk toward 1 with weight λ (mmHg²)."""
    return (lam + predicted * observed) / (lam + predicted * predicted)


@dataclass(frozen=True)
class Way:
    name: str
    columns: tuple[int, ...]  # into a feature vector
    coef: np.ndarray
    tau: float
    h0: float
    k: float
    lam: float

    def raw(self, baseline: np.ndarray, now: np.ndarray) -> float:
        """coef · Δf, a missing feature counting as unchanged."""
        df = np.nan_to_num(now[list(self.columns)] - baseline[list(self.columns)])
        return float(df @ self.coef)


@dataclass(frozen=True)
class Tracked:
    """A window's tracking: the predicted SBP change since the reading, its interval's half-width, the way used."""

    sbp_change: float
    halfwidth: float
    way: str


class Tracker:
    def __init__(self, ways: dict[str, Way], ppg_only: bool = True) -> None:
        self.ways = ways
        self.ppg_only = ppg_only  # whether a window without an arrival time is tracked by the PPG-only way

    @classmethod
    def load(cls, path: Path = ASSET, ppg_only: bool = False) -> Tracker:
        """The shipped model (or another written the same way); CheckpointError saying what is wrong."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            ways = {}
            for name, m in (doc.get("sbp") or {}).items():
                columns = tuple(FEATURES.index(f) for f in m["features"])
                coef = np.asarray(m["coef"], dtype=np.float64)
                if coef.shape != (len(columns),) or not np.isfinite(coef).all():
                    raise ValueError(f"{name}: coef must be {len(columns)} finite numbers")
                h0, k = (float(v) for v in m["halfwidth"])
                ways[name] = Way(name, columns, coef, float(m["tau"]), h0, k, float(m["second_reading_lambda"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"tracking model {path}: {exc}") from exc
        if "ppg" not in ways:
            raise CheckpointError(f"tracking model {path}: no 'ppg' way (the one every device can use)")
        return cls(ways, ppg_only)

    def way(self, baseline: np.ndarray, now: np.ndarray) -> Way | None:
        """ECG+PPG when both have an arrival time, else (`ppg_only`) PPG-only when both have one of its features, else
        None."""
        ecg = self.ways.get("ecg+ppg")
        if ecg is not None and np.isfinite(baseline[0]) and np.isfinite(now[0]):
            return ecg
        if not self.ppg_only:
            return None
        ppg = self.ways["ppg"]
        both = np.isfinite(baseline[list(ppg.columns)]) & np.isfinite(now[list(ppg.columns)])
        return ppg if both.any() else None

    def gain(self, baseline: np.ndarray, second: np.ndarray, observed: float) -> float | None:
        """The person's gain from a second reading `observed` mmHg from the first; None when it cannot tell."""
        way = self.way(baseline, second)
        if way is None or abs(observed) < SECOND_AT_MMHG:
            return None
        return person_gain(way.raw(baseline, second), observed, way.lam)

    def track(self, baseline: np.ndarray, now: np.ndarray, elapsed_s: float, gain: float = 1.0) -> Tracked | None:
        """The SBP change since a reading whose features were `baseline`, for a window with `now`, `elapsed_s`
        after it; None when neither way has the features, or the reading is older than `HORIZON_S`."""
        way = self.way(baseline, now)
        if way is None or elapsed_s > HORIZON_S:
            return None
        change = float(np.clip(shrink(gain * way.raw(baseline, now), way.tau), -MAX_CHANGE_MMHG, MAX_CHANGE_MMHG))
        return Tracked(change, way.h0 + way.k * abs(change), way.name)
