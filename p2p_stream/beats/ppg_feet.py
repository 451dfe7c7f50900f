"""PPG feet, peaks, amplitude and rise time, beat by beat, as samples stream in.

Per beat, on the low-passed PPG (causal, its delay at the upstroke's frequency subtracted from every time):

- the steepest point of the upstroke: a local maximum of the slope, above `SLOPE_SHARE` of the recent steepest,
  at least `REFRACTORY_S` after the previous beat's;
- the beat's minimum: the lowest sample in the `SEARCH_S` before it; its peak: the highest in the `SEARCH_S` after;
- the foot by the intersecting tangent: where the tangent at the steepest point crosses the horizontal through the
  minimum (sub-sample), as stress_beats_zjx defines it;
- amplitude = peak − minimum (the sensor's units), rise time = peak − foot.

A beat is reported once its peak's search span has arrived, so the detector runs `SEARCH_S` behind the stream.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.ndimage import maximum_filter1d

from p2p_stream.beats.stream_filter import StreamFilter

LOW_PASS_HZ = 10.0
UPSTROKE_HZ = 3.0  # the frequency whose delay is taken off: an upstroke of ~100–200 ms
SEARCH_S = 0.35
REFRACTORY_S = 0.27  # up to ~220 bpm
SLOPE_SHARE = 0.5  # a dicrotic upstroke is rarely half the systolic one (the fleet's, at low SBP: 0.43)
SLOPE_MEMORY_S = 3.0  # how far back "the recent steepest" looks


class PulseBeat(NamedTuple):
    foot_t: float  # s, the stream's clock
    peak_t: float
    amplitude: float
    rise_ms: float


class FootDetector:
    """One device's PPG stream → `PulseBeat`s, incrementally. Feed consecutive chunks of one sampling rate."""

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self.filter = StreamFilter(fs, (None, LOW_PASS_HZ))
        self.delay_s = self.filter.delay_s(UPSTROKE_HZ)
        self.search = max(2, int(round(SEARCH_S * fs)))
        self.half_beat = max(1, int(round(REFRACTORY_S * fs / 2)))  # a steepest point is the steepest this near
        self._y = np.empty(0)  # filtered samples still needed: from `search` before the next point to judge
        self._start = 0  # the index of _y[0] in the stream
        self._t0: float | None = None  # the stream's time at index 0
        self._last_beat = -(10**12)  # index of the previous steepest point
        self._slopes: list[tuple[int, float]] = []  # (index, slope) of recent steepest points

    def feed(self, x: np.ndarray, t0: float) -> list[PulseBeat]:
        """Samples `x`, the first at `t0`: the beats whose search spans are now complete. Time is anchored on each
        call's `t0`: a sensor whose rate is a little off its nominal `fs` never accumulates an error."""
        self._t0 = t0 - (self._start + len(self._y)) / self.fs  # the time of stream index 0, as of this chunk
        y = np.concatenate([self._y, self.filter(x)])
        beats: list[PulseBeat] = []
        slope = np.diff(y) * self.fs  # slope[j]: between samples j and j + 1
        r = self.half_beat
        # Judged here: the points whose search spans, back and ahead, are known; the next chunk starts where
        # these end (`cut`), so every point is judged exactly once.
        last = len(y) - 1 - self.search
        if last > self.search:  # candidates: the steepest within ±half a beat (numpy; Python only per candidate)
            peak = maximum_filter1d(slope, size=2 * r + 1, mode="nearest")
            part = slice(self.search, last)
            candidates = self.search + np.flatnonzero((slope[part] > 0) & (slope[part] >= peak[part]))
        else:
            candidates = np.empty(0, dtype=np.int64)
        for j in candidates.tolist():
            i = self._start + j
            if i - self._last_beat < REFRACTORY_S * self.fs:
                continue
            recent = [s for k, s in self._slopes if i - k < SLOPE_MEMORY_S * self.fs]
            if recent and slope[j] < SLOPE_SHARE * max(recent):
                continue
            beat = self._beat(y, slope, j)
            if beat is not None:
                beats.append(beat)
                self._slopes.append((i, float(slope[j])))
                self._last_beat = i
        end = self._start + len(y)
        self._slopes = [(k, s) for k, s in self._slopes if end - k < SLOPE_MEMORY_S * self.fs]
        cut = max(0, last - self.search)
        self._y, self._start = y[cut:], self._start + cut
        return beats

    def _beat(self, y: np.ndarray, slope: np.ndarray, j: int) -> PulseBeat | None:
        lo = max(0, j - self.search)
        m = lo + int(np.argmin(y[lo : j + 1]))
        p = j + int(np.argmax(y[j : j + self.search + 1]))
        # Slope at the steepest point, from the central difference, and its time between samples j and j+1.
        steep_t = j + 0.5
        level = (y[j] + y[j + 1]) / 2
        if slope[j] <= 0 or y[p] <= y[m]:
            return None
        foot = steep_t - (level - y[m]) * self.fs / slope[j]  # in samples
        if foot < m - 1:  # the tangent crosses the minimum's level before the minimum: not a clean upstroke
            return None
        to_t = lambda k: self._t0 + (self._start + k) / self.fs - self.delay_s  # noqa: E731
        foot_t, peak_t = to_t(foot), to_t(p)
        return PulseBeat(foot_t, peak_t, float(y[p] - y[m]), 1000.0 * (peak_t - foot_t))
