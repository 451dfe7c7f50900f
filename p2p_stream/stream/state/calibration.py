"""Calibration: a cuff reading, against a robust reference of the device's own estimates, calibrates later ones.

Method, for SBP and DBP separately:

1. A `calibrate` request stores the cuff reading ``cuff`` with its time ``t_cal``: the time of the device's latest
   sample when the request arrives, on the device's clock (the clock of the estimates' ``t``).
2. The reference is the median of the device's uncalibrated per-window estimates whose ``t`` lies within
   ``[t_cal - span_s/2, t_cal + span_s/2]``::

       ref = median{ estimate_i : |t_i - t_cal| <= span_s / 2 }

   It is formed once at least ``min_estimates`` of them are known. Those before the request come from a short
   history each device keeps (the last ``span_s/2`` of estimates); those that arrive after it refine the
   reference until an estimate later than ``t_cal + span_s/2`` arrives, which freezes it. If the span closes with
   fewer than ``min_estimates``, the first estimates after it make up the count. Until the reference is formed,
   the device's estimates stay as they were (uncalibrated, or under its previous calibration). Both the history
   and a reading's estimates are sized from the configuration (`history_capacity`: every window a span can hold
   at ``hop_s``, plus ``min_estimates``), so the median really is over the whole span.
3. From then on::

       calibrated = cuff + change_gain * (estimate - ref)

   ``change_gain = 1`` is the classic offset method (the estimate plus ``cuff - ref``); ``0`` carries the cuff
   reading forward; a checkpoint may give its own gain, fitted on its validation subjects (metadata
   ``"calibration": {"change_gain": ...}``).
4. The interval: ``calibrated ± halfwidth`` when the checkpoint gives halfwidths (``sbp_halfwidth``,
   ``dbp_halfwidth``), else the model's interval shifted by the same amount as the point estimate.

The median means one bad window near the cuff reading cannot shift every later estimate. Like PulseDB's CalBased
test, calibration removes a subject's constant bias, not errors that change over time.

5. Tracking (with a `Tracker`, model/tracking.py, and windows that carry their beats' features): the reading's
   *baseline* is the median of the same span's feature vectors, formed and frozen with its reference; then SBP
   moves by the change the tracker predicts from the baseline to each window's features, and its interval is the
   tracker's (widening with the predicted change and the time since the reading)::

       calibrated_sbp = cuff + change_gain * (estimate - ref) + shrink(g · coef · (features - baseline), τ)

   A later reading at another pressure gives the person's own gain `g` (from the two readings' baselines). A
   reading carried from an earlier stream (the state store) keeps no baseline: it applies untracked.

State belongs to one *stream generation* of a device (`Window.generation`, numbered by `DeviceTable`): a device
forgotten or evicted and heard from again is a new generation. A window of a newer generation than the one held
first drops the device's history and calibrations; a window of an older one (queued, or at the backend, when its
device was forgotten) changes nothing and goes out uncalibrated (`Applied.stale`). A cuff reading is for the
generation streaming when it arrives, so a previous wearer's estimates never form its reference.

Readings belong to the wearer session (stream/state/sessions.py) streaming when they were made: a new wearer is a
new generation, and a new generation starts with its *session's* readings only. With a state store (`state.path`,
stream/state/store.py) they outlive the stream: each reference formed or refined is saved (`on_reference`), and a
new generation of the same session — after a restart or an eviction, not a `forget` or `end_session`, which delete
them — starts with its stored readings (`recall`), the reference kept as it was: `Applied.carried`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from p2p_stream.errors import CheckpointError
from p2p_stream.model.tracking import median_features

if TYPE_CHECKING:
    from p2p_stream.model.tracking import Tracker
    from p2p_stream.stream.state.store import Saved

# A hop is cut as round(hop_s * fs) samples, which at fs ≥ 20 Hz and hop_s ≥ 0.1 s (the accepted ranges) is ≥ 2
# samples and so never shorter than 0.8 hop_s (2.5 samples → 2): windows can come that much faster than hop_s.
HOP_SHORTENING = 0.8
MIN_PULSE_PRESSURE = 10.0  # mmHg: tracked SBP never comes closer than this to the (untracked) DBP
SLACK = 4  # a few estimates more than the arithmetic gives, so no rounding of t ever drops one from a span

# (t in Unix s, sbp, dbp in mmHg, uncalibrated; the window's beat features in model/tracking.py's order, or None)
Estimate = tuple[float, float, float, "np.ndarray | None"]


def history_capacity(span_s: float, hop_s: float, min_estimates: int) -> int:
    """Estimates a device's history, and a cuff reading, hold at most: every window a span of ``span_s`` can hold at
    a hop of ``hop_s`` (shortened by rounding to whole samples, both ends counted), plus the ``min_estimates`` after
    it that may make up the count, plus `SLACK`. Bounded by the configuration's ranges (span ≤ 3600 s, hop ≥ 0.1 s:
    45,069). Only a device whose timestamps fall behind its sample count packs more into a span; then the earliest
    are left out."""
    if not hop_s > 0:
        raise ValueError(f"hop_s must be > 0, got {hop_s}")
    return math.ceil(span_s / (HOP_SHORTENING * hop_s)) + 1 + min_estimates + SLACK


def _in_span(estimates: Sequence[Estimate], t_cal: float, span_s: float, min_estimates: int) -> list | None:
    """The estimates within ``span_s/2`` of ``t_cal``, or None with fewer than ``min_estimates`` there; when short,
    the earliest estimates after the span make up the count."""
    half = span_s / 2
    chosen = [e for e in estimates if abs(e[0] - t_cal) <= half]
    if len(chosen) < min_estimates:
        later = sorted((e for e in estimates if e[0] > t_cal + half), key=lambda e: e[0])
        chosen += later[: min_estimates - len(chosen)]
    if not chosen or len(chosen) < min_estimates:
        return None
    return chosen


def robust_reference(
    estimates: Sequence[Estimate], t_cal: float, span_s: float, min_estimates: int
) -> tuple[float, float] | None:
    """The median (SBP, DBP) of the estimates of the span (`_in_span`), or None while too few."""
    chosen = _in_span(estimates, t_cal, span_s, min_estimates)
    return None if chosen is None else _median_pressure(chosen)


def _median_pressure(chosen: Sequence[Estimate]) -> tuple[float, float]:
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
    key: int | None = None  # its row in the state store, when there is one
    carried: bool = False  # recalled from the store: made in an earlier stream of the session
    baseline: np.ndarray | None = None  # the span's median beat features (tracking), formed with `reference`
    previous: _Before | None = None  # what is kept of the reading it followed: its person's gain is measured from it
    gain: float | None = None  # the person's gain, once its baseline is frozen


class _Before(NamedTuple):
    """Of the reading a new one replaced, only what the person's gain needs: no chain of readings is kept."""

    cuff: tuple[float, float]
    baseline: np.ndarray | None
    gain: float  # the gain it applied when it was replaced


@dataclass
class _Device:
    history: deque[Estimate]  # the last span_s/2 of uncalibrated estimates, at most `history_capacity`
    generation: int = 0  # the stream generation this state belongs to
    closed: bool = False  # forgotten: windows of `generation` are stale too, until a newer generation comes
    active: _Reading | None = None  # the calibration applied now
    pending: _Reading | None = None  # a newer reading whose reference is not formed yet
    version: int = 0  # +1 each time a calibration starts to apply


class Applied(NamedTuple):
    row: np.ndarray  # the answer, calibrated when `calibrated`
    calibrated: bool
    version: int  # changes whenever a new calibration starts to apply: values of two versions are not to be mixed
    stale: bool = False  # the window is of an older stream generation than the device's: not remembered, not smoothed
    carried: bool = False  # the calibration applied was made in an earlier stream of the session (before a restart)
    tracked: str | None = None  # SBP moved by the beats' change since the reading: the tracker's way (ecg+ppg, ppg)


class Calibrations:
    """Every device's cuff readings and recent estimates; thread-safe (control thread writes, worker applies)."""

    def __init__(
        self,
        span_s: float = 60.0,
        min_estimates: int = 3,
        change_gain: float | tuple[float, float] = 1.0,
        halfwidths: tuple[float | None, float | None] = (None, None),
        hop_s: float = 0.1,  # the windows' hop; the default, the shortest the configuration accepts, fits any
        tracker: Tracker | None = None,  # SBP follows the beats' change after a reading (model/tracking.py)
    ) -> None:
        self.span_s, self.min_estimates = span_s, min_estimates
        self.tracker = tracker
        self.change_gain, self.halfwidths = change_gain, halfwidths
        self.capacity = history_capacity(span_s, hop_s, min_estimates)
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        # With a state store (stream/state/store.py): a new stream generation takes the device's stored readings
        # (`recall`), and a reference formed or refined is saved (`on_reference`). Both run under the lock.
        self.recall: Callable[[str, int], tuple[Saved | None, Saved | None]] | None = None
        self.on_reference: Callable[[str, int, tuple[float, float]], None] | None = None

    def _state(self, device: str, generation: int, session: int) -> _Device | None:
        """The device's state for `generation` (new when it has none or an older one: with the stored readings of
        its wearer `session`); None when it is stale."""
        d = self._devices.get(device)
        if d is None or generation > d.generation:
            d = self._devices[device] = _Device(deque(maxlen=self.capacity), generation)
            if self.recall is not None and session:
                self._restore(d, *self.recall(device, session))
        elif generation < d.generation or d.closed:
            return None
        return d

    def _restore(self, d: _Device, active: Saved | None, pending: Saved | None) -> None:
        """A stored calibration applies to the device's new stream as it was: its reference no longer refined (its
        span's estimates are gone); a stored reading without one forms it from the new stream's estimates."""
        if active is not None:
            d.active = _Reading(active.cuff, active.t, deque(maxlen=1), active.reference, True, active.key, True)
            d.version = 1
        if pending is not None:
            d.pending = _Reading(pending.cuff, pending.t, deque(maxlen=self.capacity), key=pending.key, carried=True)

    def _saved(self, device: str, reading: _Reading) -> None:
        if self.on_reference is not None and reading.key is not None and reading.reference is not None:
            self.on_reference(device, reading.key, reading.reference)

    def calibrate(
        self, device: str, sbp: float, dbp: float, t: float, generation: int = 0, key: int | None = None,
        session: int = 0,
    ) -> bool:  # fmt: skip
        """Store a cuff reading taken at `t` (the device's clock) for the device's stream `generation` (of wearer
        `session`); True when its reference could be formed now. A reading for an older generation than the one held
        is ignored (False). `key`: the reading's row in the state store, given to `on_reference`."""
        with self._lock:
            d = self._state(device, generation, session)
            if d is None:
                return False
            collected = deque((e for e in d.history if e[0] >= t - self.span_s / 2), maxlen=self.capacity)
            reading = _Reading((sbp, dbp), t, collected, key=key)
            self._form(reading)
            if reading.reference is None:
                d.pending = reading  # the previous calibration, if any, applies until this one can
                return False
            reading.previous, d.active, d.pending, d.version = self._before(d.active), reading, None, d.version + 1
            self._saved(device, reading)
            return True

    def _form(self, reading: _Reading) -> None:
        """The reading's reference and (tracking) feature baseline, from one choice of its span's estimates."""
        chosen = _in_span(reading.collected, reading.t, self.span_s, self.min_estimates)
        reading.reference = None if chosen is None else _median_pressure(chosen)
        if self.tracker is not None and not reading.carried:  # a stored reading's span is gone: no baseline
            reading.baseline = median_features([e[3] for e in chosen or () if len(e) > 3 and e[3] is not None])

    def apply(
        self, device: str, t: float, row: np.ndarray, generation: int = 0, session: int = 0,
        features: np.ndarray | None = None,
    ) -> Applied:  # fmt: skip
        """One window's uncalibrated answer (its last sample at `t`, cut by stream `generation` of wearer `session`,
        its beats' `features`: model/tracking.py) → `Applied`; remembers it in the history. A window of an older
        generation than the device's changes nothing and comes back as it was, `stale`."""
        estimate = (t, float(row[0]), float(row[1]), features)
        with self._lock:
            d = self._state(device, generation, session)
            if d is None:
                return Applied(np.asarray(row, dtype=np.float64), False, 0, stale=True)
            d.history.append(estimate)
            while d.history[0][0] < t - self.span_s / 2:
                d.history.popleft()
            for reading in (d.pending, d.active):
                if reading is not None and not reading.frozen:
                    before = reading.reference
                    self._refine(reading, estimate)
                    if reading.reference != before:
                        self._saved(device, reading)
            if d.pending is not None and d.pending.reference is not None:
                d.pending.previous = self._before(d.active)
                d.active, d.pending, d.version = d.pending, None, d.version + 1
            active, version = d.active, d.version
        if active is None or active.reference is None:
            return Applied(np.asarray(row, dtype=np.float64), False, version)
        calibrated = calibrate_row(row, active.cuff, active.reference, self.change_gain, self.halfwidths)
        tracked = self._track(active, calibrated, t, features)
        return Applied(calibrated, True, version, carried=active.carried, tracked=tracked)

    def _track(self, reading: _Reading, row: np.ndarray, t: float, features: np.ndarray | None) -> str | None:
        """Move the calibrated SBP (and its interval) by the beats' change since `reading`; the way used, or None."""
        if self.tracker is None or reading.baseline is None or features is None:
            return None
        tracked = self.tracker.track(reading.baseline, features, t - reading.t, self._gain(reading))
        if tracked is None:
            return None
        row[0] = max(row[0] + tracked.sbp_change, row[1] + MIN_PULSE_PRESSURE)  # DBP is the cuff's: SBP stays above
        if len(row) >= 6:
            row[2], row[3] = row[0] - tracked.halfwidth, row[0] + tracked.halfwidth
        return tracked.way

    def _before(self, reading: _Reading | None) -> _Before | None:
        """What a replaced reading leaves its successor: its cuff, baseline and the gain it applied."""
        if reading is None:
            return None
        return _Before(reading.cuff, reading.baseline, self._gain(reading))

    def _gain(self, reading: _Reading) -> float:
        """The person's own gain: from this reading and the one before it, when both baselines are known and far
        enough apart in pressure (model/tracking.py); else the one before's; 1 with no history. Never recursive:
        the one before is kept as numbers (`_Before`)."""
        if reading.gain is not None:
            return reading.gain
        before = reading.previous
        if before is None or self.tracker is None:
            return 1.0 if before is None else before.gain
        measured = None
        if before.baseline is not None and reading.baseline is not None:
            measured = self.tracker.gain(before.baseline, reading.baseline, reading.cuff[0] - before.cuff[0])
        gain = before.gain if measured is None else measured
        if reading.frozen:  # its baseline final (the one before is no longer refined): so is the gain
            reading.gain, reading.previous = gain, None
        return gain

    def _refine(self, reading: _Reading, estimate: Estimate) -> None:
        if estimate[0] > reading.t + self.span_s / 2 and reading.reference is not None:
            reading.frozen = True  # the span is over: the reference stays as it is
            reading.collected.clear()
            return
        reading.collected.append(estimate)
        self._form(reading)
        if reading.reference is not None and estimate[0] > reading.t + self.span_s / 2:
            reading.frozen = True  # formed only after the span, from the first estimates beyond it
            reading.collected.clear()

    def retain(self, devices: Iterable[str]) -> None:
        """Drop every device not in `devices` (evicted or forgotten ones), so nothing grows unbounded."""
        keep = set(devices)
        with self._lock:
            for device in [d for d in self._devices if d not in keep]:
                del self._devices[device]

    def forget(self, device: str, generation: int | None = None) -> None:
        """Drop the device's state. Given the forgotten stream's `generation`, a marker stays until a newer
        generation (or `retain`) replaces it, so that stream's windows still on their way change nothing."""
        with self._lock:
            self._devices.pop(device, None)
            if generation is not None:
                self._devices[device] = _Device(deque(maxlen=1), generation, closed=True)
