"""ECG R peaks, as samples stream in.

On the band-passed ECG (causal, 5–20 Hz: the QRS complex, without baseline wander or T waves), an R peak is a
local maximum of the absolute value (either polarity of lead) that is the largest within `REFRACTORY_S` either
side and above `HEIGHT_SHARE` of the median of the recent ones. Its time is then taken on the raw ECG, as the
dataset's R peak is: the largest deflection from the local median within `REFINE_S` of the detection moved back
by the filter's delay, refined by a parabola through the three samples around it. A peak is reported once
`REFRACTORY_S` of samples after it has arrived.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

from p2p_stream.beats.stream_filter import StreamFilter

BAND_HZ = (5.0, 20.0)
QRS_HZ = 10.0  # the frequency whose delay is taken off
REFRACTORY_S = 0.25  # up to 240 bpm
HEIGHT_SHARE = 0.45
HEIGHT_MEMORY_S = 4.0
REFINE_S = 0.05


class RPeakDetector:
    """One device's ECG stream → R-peak times (s, the stream's clock), incrementally."""

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self.filter = StreamFilter(fs, BAND_HZ)
        self.delay_s = self.filter.delay_s(QRS_HZ)
        self.near = max(1, int(round(REFRACTORY_S * fs)))
        self._x = np.empty(0)  # the raw samples beside them
        self._y = np.empty(0)  # band-passed samples still needed: from `near` before the next point to judge
        self._start = 0
        self._t0: float | None = None
        self._last = -(10**12)
        self._heights: list[tuple[int, float]] = []

    def feed(self, x: np.ndarray, t0: float) -> list[float]:
        """Samples `x`, the first at `t0`: the R peaks now certain. Time is anchored on each call's `t0` (the kept
        samples before it counted back at `fs`): a clock a little off its nominal rate never accumulates."""
        self._t0 = t0 - (self._start + len(self._y)) / self.fs  # the time of stream index 0, as of this chunk
        x = np.asarray(x, dtype=np.float64)
        self._y = np.concatenate([self._y, self.filter(x)])
        self._x = np.concatenate([self._x, x])
        y = np.abs(self._y)
        peaks: list[float] = []
        n = self.near
        last = len(y) - n
        if last > n:  # candidates: the largest within ±REFRACTORY_S (numpy; Python only per candidate)
            peak = maximum_filter1d(y, size=2 * n + 1, mode="nearest")
            candidates = n + np.flatnonzero((y[n:last] > 0) & (y[n:last] >= peak[n:last]))
        else:
            candidates = np.empty(0, dtype=np.int64)
        for j in candidates.tolist():
            i = self._start + j
            if i - self._last < n:
                continue
            recent = [h for k, h in self._heights if i - k < HEIGHT_MEMORY_S * self.fs]
            if recent and y[j] < HEIGHT_SHARE * np.median(recent):
                continue
            peaks.append(self._t0 + (self._start + self._on_raw(j)) / self.fs)
            self._heights.append((i, float(y[j])))
            self._last = i
        end = self._start + len(y)
        self._heights = [(k, h) for k, h in self._heights if end - k < HEIGHT_MEMORY_S * self.fs]
        cut = max(0, last - n)
        self._y, self._x, self._start = self._y[cut:], self._x[cut:], self._start + cut
        return peaks

    def _on_raw(self, j: int) -> float:
        """The R peak detected at filtered sample j, on the raw ECG: its sub-sample index in the buffer."""
        centre = j - int(round(self.delay_s * self.fs))
        w = max(1, int(round(REFINE_S * self.fs)))
        lo, hi = max(1, centre - w), min(len(self._x) - 1, centre + w + 1)
        if hi <= lo:
            return j - self.delay_s * self.fs
        span = self._x[lo:hi] - np.median(self._x[lo:hi])
        k = lo + int(np.argmax(np.abs(span)))
        sign = 1.0 if span[k - lo] > 0 else -1.0  # the lead's polarity: the R wave is the largest deflection
        a, b, c = sign * self._x[k - 1], sign * self._x[k], sign * self._x[min(k + 1, len(self._x) - 1)]
        bend = a - 2 * b + c
        return k + (0.5 * (a - c) / bend if bend < 0 else 0.0)
