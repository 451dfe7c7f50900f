"""Preprocessing: resampling, band-pass and per-window normalisation, one path for training, evaluation, daemon."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from p2p_stream.errors import ConfigError


@dataclass(frozen=True)
class PreprocessConfig:
    fs: float = 125.0  # model sampling rate, Hz (PulseDB's rate)
    low_hz: float = 0.5  # band-pass lower edge, Hz: removes baseline wander and respiration drift
    high_hz: float = 8.0  # band-pass upper edge, Hz: keeps the pulse harmonics, drops sensor noise
    order: int = 4  # Butterworth order (applied forward and backward, so 8 in effect)

    def to_dict(self) -> dict:
        return asdict(self)


def resample(x: np.ndarray, fs_in: float, fs_out: float, axis: int = -1) -> np.ndarray:
    """Resample `x` from `fs_in` to `fs_out` (Hz) with a polyphase anti-aliasing filter.

    The rate ratio is approximated by a fraction with a denominator ≤ 1000 (exact for the
    usual 100/125/200/250/500/1000 Hz rates).
    """
    if not (np.isfinite(fs_in) and np.isfinite(fs_out) and fs_in > 0 and fs_out > 0):
        raise ValueError(f"sampling rates must be positive and finite, got {fs_in} → {fs_out} Hz")
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(x, dtype=np.float32)
    y = signal.resample_poly(
        np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=axis, padtype="line"
    )
    return y.astype(np.float32)


def window_samples(window_s: float, fs: float) -> int:
    """Number of samples in a window of `window_s` seconds at `fs` Hz."""
    return int(round(window_s * fs))


def cut_windows(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Cut a 1-D signal into windows of `length` samples every `hop` samples: (n, length), no padding."""
    if length <= 0 or hop <= 0:
        raise ValueError(f"window length and hop must be positive, got {length} and {hop}")
    if x.shape[-1] < length:
        return np.empty((0, length), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(x, length)[::hop]
    return np.ascontiguousarray(view, dtype=np.float32)


@lru_cache(maxsize=32)
def _bandpass_sos(low_hz: float, high_hz: float, order: int, fs: float) -> np.ndarray:
    if not 0 < low_hz < high_hz < fs / 2:
        raise ConfigError(
            f"band-pass edges must satisfy 0 < low_hz < high_hz < fs/2 = {fs / 2}, got {low_hz}, {high_hz}"
        )
    return signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")


def ppg_bandpass(windows: np.ndarray, fs: float, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis; `windows` is (..., T) at `fs` Hz."""
    sos = _bandpass_sos(config.low_hz, config.high_hz, config.order, float(fs))
    padlen = min(3 * (2 * len(sos) + 1), windows.shape[-1] - 1)
    return signal.sosfiltfilt(sos, windows, axis=-1, padlen=padlen).astype(np.float32)


def ppg_normalize(windows: np.ndarray) -> np.ndarray:
    """Per-window z-score along the last axis: nothing is fitted across windows, so nothing leaks."""
    mean = windows.mean(axis=-1, keepdims=True)
    std = windows.std(axis=-1, keepdims=True)
    return ((windows - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def ppg_condition(windows: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Windows already at `config.fs` → model input: band-pass, then normalise."""
    return ppg_normalize(ppg_bandpass(windows, config.fs, config))


def ppg_prepare(windows: np.ndarray, fs: float, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Raw windows (N, T) at `fs` Hz → model input (N, T') at `config.fs`: resample, band-pass, normalise."""
    x = np.atleast_2d(np.asarray(windows, dtype=np.float32))
    return ppg_condition(resample(x, fs, config.fs, axis=-1), config)
