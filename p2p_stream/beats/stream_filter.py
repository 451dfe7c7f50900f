"""A causal Butterworth filter that keeps its state between chunks, and the delay it puts on a pulse."""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal


@functools.lru_cache(maxsize=256)
def _design(fs: float, band: tuple[float | None, float], order: int) -> tuple[np.ndarray, np.ndarray]:
    """(sos, its initial-state template) for a band at a rate: designed once per rate, not once per device (a
    Butterworth design costs about 2 ms; a daemon meets a few rates and thousands of devices)."""
    low, high = band
    high = min(high, 0.45 * fs)  # a rate too low for the band: the highest corner it can take
    if low is None:
        sos = signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
    else:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return sos, signal.sosfilt_zi(sos)  # shared by every filter of this design: never written to


@functools.lru_cache(maxsize=256)
def _delay_s(fs: float, band: tuple[float | None, float], order: int, at_hz: float) -> float:
    b, a = signal.sos2tf(_design(fs, band, order)[0])
    _, gd = signal.group_delay((b, a), w=[at_hz], fs=fs)
    return float(gd[0]) / fs


class StreamFilter:
    """`sosfilt` over consecutive chunks: filtering a signal in pieces gives what filtering it whole gives."""

    def __init__(self, fs: float, band: tuple[float | None, float], order: int = 2) -> None:
        self.fs, self.band, self.order = fs, band, order
        self.sos, self._zi0 = _design(fs, band, order)
        self._zi: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._zi is None:  # start as if the signal had always been at its first value: no step at the start
            self._zi = self._zi0 * (x[0] if len(x) else 0.0)
        y, self._zi = signal.sosfilt(self.sos, x, zi=self._zi)
        return y

    def delay_s(self, at_hz: float) -> float:
        """The filter's group delay at `at_hz`, s: what a feature of that frequency is late by."""
        return _delay_s(self.fs, self.band, self.order, at_hz)
