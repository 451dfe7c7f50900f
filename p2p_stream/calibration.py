"""Calibration: a cuff reading, against a robust reference of the device's own estimates, calibrates later ones.

Method, for SBP and DBP separately:

1. A `calibrate` request stores the cuff reading ``cuff`` with its time ``t_cal``: the time of the device's latest
   sample when the request arrives, on the device's clock (the clock of the estimates' ``t``).
2. The reference is the median of the device's uncalibrated per-window estimates whose ``t`` lies within
   ``[t_cal - span_s/2, t_cal + span_s/2]``::

       ref = median{ estimate_i : |t_i - t_cal| <= span_s / 2 }

   It is formed once at least ``min_estimates`` of them are known. Those before the request come from a short
   history each device keeps (the last ``span_s/2`` of estimates, at most `HISTORY_MAX`); those that arrive after
   it refine the reference until an estimate later than ``t_cal + span_s/2`` arrives, which freezes it. If the
   span closes with fewer than ``min_estimates``, the first estimates after it make up the count. Until the
   reference is formed, the device's estimates stay as they were (uncalibrated, or under its previous
   calibration).
3. From then on::

       calibrated = cuff + change_gain * (estimate - ref)

   ``change_gain = 1`` is the classic offset method (the estimate plus ``cuff - ref``); ``0`` carries the cuff
   reading forward; a checkpoint may give its own gain, fitted on its validation subjects (metadata
   ``"calibration": {"change_gain": ...}``).
4. The interval: ``calibrated ± halfwidth`` when the checkpoint gives halfwidths (``sbp_halfwidth``,
   ``dbp_halfwidth``), else the model's interval shifted by the same amount as the point estimate.

The median means one bad window near the cuff reading cannot shift every later estimate. Like PulseDB's CalBased
test, calibration removes a subject's constant bias, not errors that change over time.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError

HISTORY_MAX = 64  # uncalibrated estimates a device keeps (and a calibration collects) at most

Estimate = tuple[float, float, float]  # (t in Unix s, sbp, dbp in mmHg), uncalibrated


def robust_reference(
    estimates: Sequence[Estimate], t_cal: float, span_s: float, min_estimates: int
) -> tuple[float, float] | None:
    """The median (SBP, DBP) of the estimates within ``span_s/2`` of ``t_cal``, or None with fewer than
    ``min_estimates`` there; when short, the earliest estimates after the span make up the count."""
    half = span_s / 2
    chosen = [e for e in estimates if abs(e[0] - t_cal) <= half]
    if len(chosen) < min_estimates:
        later = sorted((e for e in estimates if e[0] > t_cal + half), key=lambda e: e[0])
        chosen += later[: min_estimates - len(chosen)]
    if not chosen or len(chosen) < min_estimates:
        return None
    values = np.array([(e[1], e[2]) for e in chosen], dtype=np.float64)  # (n, 2)
    sbp, dbp = np.median(values, axis=0)
    return float(sbp), float(dbp)


def calibrated_value(cuff: float, estimate: float, reference: float, change_gain: float = 1.0) -> float:
    """``cuff + change_gain * (estimate - reference)``, in mmHg."""
    return cuff + change_gain * (estimate - reference)


def calibrate_row(
    row: np.ndarray,
    cuff: tuple[float, float],
    reference: tuple[float, float],
    change_gain: float | tuple[float, float] = 1.0,
    halfwidths: tuple[float | None, float | None] = (None, None),
) -> np.ndarray:
    """One window's answer ``[sbp, dbp]`` or ``[sbp, dbp, sbp_lo, sbp_hi, dbp_lo, dbp_hi]`` → calibrated.

    Each interval is ``calibrated ± halfwidth`` when that halfwidth is given, else the model's interval moved by
    the same amount as its point estimate.
    """
    out = np.array(row, dtype=np.float64)
    for k in (0, 1):  # SBP, DBP
        gain = change_gain[k] if isinstance(change_gain, (tuple, list)) else change_gain  # one for both, or (sbp, dbp)
        out[k] = calibrated_value(cuff[k], row[k], reference[k], gain)
        if len(row) >= 6:
            lo, hi = 2 + 2 * k, 3 + 2 * k
            if halfwidths[k] is not None:
                out[lo], out[hi] = out[k] - halfwidths[k], out[k] + halfwidths[k]
            else:
                shift = out[k] - row[k]
                out[lo], out[hi] = row[lo] + shift, row[hi] + shift
    return out


def params_from_metadata(metadata: dict) -> dict:
    """A checkpoint's ``metadata["calibration"]`` → keyword arguments of `Calibrations` (gain 1, no halfwidths)."""
    section = metadata.get("calibration") or {}
    if not isinstance(section, dict):
        raise CheckpointError(f"metadata 'calibration' must be a map, got {type(section).__name__}")

    def number_of(key: str, value: object, low: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise CheckpointError(f"metadata calibration.{key} must be a finite number ≥ {low}, got {value!r}")
        return float(value)

    def number(key: str, default: float | None, low: float) -> float | None:
        value = section.get(key, default)
        return None if value is None else number_of(key, value, low)

    gain = section.get("change_gain", 1.0)
    if isinstance(gain, list) and len(gain) == 2:  # per target: (SBP, DBP)
        pair = [number_of(f"change_gain[{k}]", v) for k, v in enumerate(gain)]
        change_gain: float | tuple[float, float] = (pair[0], pair[1])
    else:
        change_gain = number("change_gain", 1.0, 0.0)
    return {
        "change_gain": change_gain,
        "halfwidths": (number("sbp_halfwidth", None, 0.0), number("dbp_halfwidth", None, 0.0)),
    }


@dataclass
class _Reading:
    """One cuff reading and the estimates that form (and, until the span closes, refine) its reference."""

    cuff: tuple[float, float]
    t: float
    collected: deque[Estimate]
    reference: tuple[float, float] | None = None
    frozen: bool = False


@dataclass
class _Device:
    history: deque[Estimate] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))
    active: _Reading | None = None  # the calibration applied now
    pending: _Reading | None = None  # a newer reading whose reference is not formed yet
    epoch: int = 0  # +1 each time a calibration starts to apply


class Applied(NamedTuple):
    row: np.ndarray  # the answer, calibrated when `calibrated`
    calibrated: bool
    epoch: int  # changes whenever a new calibration starts to apply: values of two epochs are not to be mixed


class Calibrations:
    """Every device's cuff readings and recent estimates; thread-safe (control thread writes, worker applies)."""

    def __init__(
        self,
        span_s: float = 60.0,
        min_estimates: int = 3,
        change_gain: float | tuple[float, float] = 1.0,
        halfwidths: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.span_s, self.min_estimates = span_s, min_estimates
        self.change_gain, self.halfwidths = change_gain, halfwidths
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}

    def calibrate(self, device: str, sbp: float, dbp: float, t: float) -> bool:
        """Store a cuff reading taken at `t` (the device's clock); True when its reference could be formed now."""
        with self._lock:
            d = self._devices.setdefault(device, _Device())
            collected = deque((e for e in d.history if e[0] >= t - self.span_s / 2), maxlen=HISTORY_MAX)
            reading = _Reading((sbp, dbp), t, collected)
            reading.reference = robust_reference(collected, t, self.span_s, self.min_estimates)
            if reading.reference is None:
                d.pending = reading  # the previous calibration, if any, applies until this one can
                return False
            d.active, d.pending, d.epoch = reading, None, d.epoch + 1
            return True

    def apply(self, device: str, t: float, row: np.ndarray) -> Applied:
        """One window's uncalibrated answer (its last sample at `t`) → `Applied`; remembers it in the history."""
        estimate = (t, float(row[0]), float(row[1]))
        with self._lock:
            d = self._devices.setdefault(device, _Device())
            d.history.append(estimate)
            while d.history[0][0] < t - self.span_s / 2:
                d.history.popleft()
            for reading in (d.pending, d.active):
                if reading is not None and not reading.frozen:
                    self._refine(reading, estimate)
            if d.pending is not None and d.pending.reference is not None:
                d.active, d.pending, d.epoch = d.pending, None, d.epoch + 1
            active, epoch = d.active, d.epoch
        if active is None or active.reference is None:
            return Applied(np.asarray(row, dtype=np.float64), False, epoch)
        calibrated = calibrate_row(row, active.cuff, active.reference, self.change_gain, self.halfwidths)
        return Applied(calibrated, True, epoch)

    def _refine(self, reading: _Reading, estimate: Estimate) -> None:
        if estimate[0] > reading.t + self.span_s / 2 and reading.reference is not None:
            reading.frozen = True  # the span is over: the reference stays as it is
            reading.collected.clear()
            return
        reading.collected.append(estimate)
        reading.reference = robust_reference(reading.collected, reading.t, self.span_s, self.min_estimates)
        if reading.reference is not None and estimate[0] > reading.t + self.span_s / 2:
            reading.frozen = True  # formed only after the span, from the first estimates beyond it
            reading.collected.clear()

    def retain(self, devices: Iterable[str]) -> None:
        """Drop every device not in `devices` (evicted or forgotten ones), so nothing grows unbounded."""
        keep = set(devices)
        with self._lock:
            for device in [d for d in self._devices if d not in keep]:
                del self._devices[device]

    def forget(self, device: str) -> None:
        with self._lock:
            self._devices.pop(device, None)
