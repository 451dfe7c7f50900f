"""A causal Butterworth filter that keeps its state between chunks, and the delay it puts on a pulse."""

from __future__ import annotations

import numpy as np
from scipy import signal


class StreamFilter:
    """`sosfilt` over consecutive chunks: filtering a signal in pieces gives what filtering it whole gives."""

    def __init__(self, fs: float, band: tuple[float | None, float], order: int = 2) -> None:
        low, high = band
        high = min(high, 0.45 * fs)  # a rate too low for the band: the highest corner it can take
        if low is None:
            self.sos = signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
        else:
            self.sos = signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
        self.fs = fs
        self._zi: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._zi is None:  # start as if the signal had always been at its first value: no step at the start
            self._zi = signal.sosfilt_zi(self.sos) * (x[0] if len(x) else 0.0)
        y, self._zi = signal.sosfilt(self.sos, x, zi=self._zi)
        return y

    def delay_s(self, at_hz: float) -> float:
        """The filter's group delay at `at_hz`, s: what a feature of that frequency is late by."""
        b, a = signal.sos2tf(self.sos)
        _, gd = signal.group_delay((b, a), w=[at_hz], fs=self.fs)
        return float(gd[0]) / self.fs
