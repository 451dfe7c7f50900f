"""One device's beats: its PPG feet and, with an ECG, its R peaks; per window, the medians the tracking reads.

Fed from the ingest thread as samples arrive (each sample filtered once); a stream that breaks (a time gap beyond
`CONTINUE_S`, a hole, a change of rate) restarts its detector, since a causal filter's state means nothing across a
hole; each detection's times are anchored on its first message's `t0`, so neither jitter nor a rate a little off
its nominal value accumulates. Bounded: the detectors keep under a second of samples (up to `PENDING_S` more wait
for them), and beats and R peaks for `keep_s` (the daemon: its window and `KEEP_MARGIN_S`; at most 240 a minute):
about 12 kB a device with 10-s windows.

Per window (`features`), over the beats whose foot lies in it (those of its last `SEARCH_S` are not yet found):

- `pat_ms`: pulse arrival time, each foot minus the latest R peak `PAT_RANGE_S` before it (a foot without one has
  none: a lost or late ECG never pairs a beat with a far R peak), ms;
- `hr_bpm`: pulse rate, from the R-R intervals with an ECG, else from foot-to-foot intervals;
- `rise_ms`, `log_amplitude`: the PPG upstroke's duration and the log of its height (the sensor's units: only
  its change since a calibration means anything).

Each is the median over the window, NaN with fewer than `MIN_BEATS` beats giving it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np

from p2p_stream.beats.ppg_feet import FootDetector, PulseBeat
from p2p_stream.beats.r_peaks import RPeakDetector

KEEP_S = 180.0  # beats and R peaks kept by default: the longest window the daemon cuts (120 s) and some
KEEP_MARGIN_S = 5.0  # kept beyond a window: the beats of its last seconds are found after it is cut
MAX_RATE_HZ = 4.0  # 240 bpm
PAT_RANGE_S = (0.05, 0.6)
RR_RANGE_S = (0.3, 1.7)  # 35–200 bpm: an interval outside is a missed or extra beat
MIN_BEATS = 2


class BeatFeatures(NamedTuple):
    """A window's medians; NaN where too few beats gave one."""

    pat_ms: float
    hr_bpm: float
    rise_ms: float
    log_amplitude: float
    beats: int  # PPG beats found in the window


NO_FEATURES = BeatFeatures(np.nan, np.nan, np.nan, np.nan, 0)


PENDING_S = 2.0  # samples wait to be detected at most this long (or until a window asks)
# A message starting this close to where the last ended continues it (the daemon's default windowing.gap_tolerance_s):
# time stamps jitter (an LSL outlet's do by milliseconds); a farther one is a hole and restarts the detector.
CONTINUE_S = 0.2


class _Channel:
    """A detector that restarts when its samples stop continuing each other. Samples wait (`add`) and are detected
    together when a window asks (`detect`) or `PENDING_S` of them wait: one detector call per window, not per
    message, each sample still filtered once."""

    def __init__(self, make) -> None:
        self.make, self.detector, self.fs, self.next_t = make, None, None, None
        self.pending: list[np.ndarray] = []
        self.pending_t0, self.pending_n = 0.0, 0

    def add(self, x: np.ndarray, t0: float, fs: float) -> list:
        """Queue `x`; the events detected now (when the queue was full or `x` does not continue it)."""
        found = []
        off = abs(t0 - self.next_t) if self.next_t is not None else np.inf
        continues = self.fs == fs and off <= CONTINUE_S  # the stream's own gap tolerance: jitter is not a hole
        if self.pending and (not continues or off > 1.5 / fs):
            found = self.detect()  # queued samples are timed by their first's t0: a chunk off by more starts anew
        if not continues:
            self.detector, self.fs = self.make(fs), fs  # a hole, a jump or another rate: start again
        if not self.pending:
            self.pending_t0 = t0
        self.pending.append(np.asarray(x, dtype=np.float64))
        self.pending_n += len(x)
        self.next_t = t0 + len(x) / fs
        if self.pending_n >= PENDING_S * fs:
            found += self.detect()
        return found

    def detect(self) -> list:
        """Run the detector over the queued samples: the events found."""
        if not self.pending:
            return []
        x = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending, self.pending_n = [], 0
        return self.detector.feed(x, self.pending_t0)


class DeviceBeats:
    def __init__(self, keep_s: float = KEEP_S) -> None:
        """Beats and R peaks of the last `keep_s` seconds (at the highest rate) are kept: a window asks for no more."""
        self.ppg = _Channel(FootDetector)
        self.ecg = _Channel(RPeakDetector)
        kept = int(math.ceil(MAX_RATE_HZ * keep_s))
        self.beats: deque[PulseBeat] = deque(maxlen=kept)
        self.r_peaks: deque[float] = deque(maxlen=kept)

    def add_ppg(self, x: np.ndarray, t0: float, fs: float) -> None:
        """Finite PPG samples, the first at `t0`, at `fs` Hz."""
        _in_order(self.beats, self.ppg.add(x, t0, fs), lambda b: b.foot_t)

    def add_ecg(self, x: np.ndarray, t0: float, fs: float) -> None:
        """Finite ECG samples on the same clock as the PPG."""
        _in_order(self.r_peaks, self.ecg.add(x, t0, fs), float)

    def detect(self) -> None:
        """Detect the queued samples of both channels now."""
        _in_order(self.beats, self.ppg.detect(), lambda b: b.foot_t)
        _in_order(self.r_peaks, self.ecg.detect(), float)

    def features(self, t_first: float, t_last: float) -> BeatFeatures:
        """The medians over the beats whose foot lies in [t_first, t_last] (the samples queued detected first)."""
        self.detect()
        mine = []
        for b in reversed(self.beats):  # the newest first: a window is the stream's latest seconds
            if b.foot_t < t_first:
                break
            if b.foot_t <= t_last:
                mine.append(b)
        mine.reverse()
        if len(mine) < MIN_BEATS:
            return NO_FEATURES._replace(beats=len(mine))
        feet = np.array([b.foot_t for b in mine])
        pat, hr = np.nan, np.nan
        if self.r_peaks:
            r = np.asarray(self.r_peaks)
            before = np.searchsorted(r, feet) - 1  # the latest R peak before each foot
            ok = before >= 0
            lag = np.where(ok, feet - r[np.clip(before, 0, None)], np.nan)
            paired = (PAT_RANGE_S[0] <= lag) & (lag <= PAT_RANGE_S[1])
            if paired.sum() >= MIN_BEATS:
                pat = 1000.0 * float(np.median(lag[paired]))
            inside = r[(r >= t_first) & (r <= t_last)]
            hr = _rate(np.diff(inside))
        if not np.isfinite(hr):
            hr = _rate(np.diff(feet))
        positive = [b.amplitude for b in mine if b.amplitude > 0]
        log_amplitude = _median([math.log(a) for a in positive]) if positive else np.nan
        return BeatFeatures(pat, hr, _median([b.rise_ms for b in mine]), log_amplitude, len(mine))


def _in_order(kept: deque, found: list, time_of) -> None:
    """Append `found` to `kept`, which stays in time order (features() searches it): an event not after the last
    kept one means the clock went back (a restarted device, a stepped clock), and what was kept is dropped."""
    for event in found:
        if kept and time_of(event) <= time_of(kept[-1]):
            kept.clear()
        kept.append(event)


def _median(values) -> float:
    """The median of a few numbers, in Python: np.median costs ~40 µs of overhead on a window's dozen beats."""
    s = sorted(values)
    n = len(s)
    return float(s[n // 2]) if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _rate(intervals: np.ndarray) -> float:
    good = intervals[(RR_RANGE_S[0] <= intervals) & (intervals <= RR_RANGE_S[1])]
    return 60.0 / _median(good.tolist()) if len(good) >= MIN_BEATS - 1 and len(good) else np.nan
