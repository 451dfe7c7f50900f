"""Preprocessing: resampling, band-pass and per-window normalisation, one path for training, evaluation, daemon."""

from __future__ import annotations

from collections.abc import Sequence
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


MAX_RATIO_TERM = 320  # largest up or down factor `resample` uses: its filter has at most 20·320 + 1 = 6401 taps


def resample_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """The (up, down) factors `resample` uses from `fs_in` to `fs_out` (Hz): the closest fraction to
    ``fs_out / fs_in`` whose numerator and denominator are both ≤ `MAX_RATIO_TERM`, in lowest terms.

    Exact for every common sensor rate into 125 Hz (25, 30, 31.25, 50, 60, 64, 100, 125, 128, 200, 250, 256,
    500 and 1000 Hz: the largest term is 256, of 125/256). Any other rate is approximated: from 20 to 1000 Hz
    into 125 Hz the rate is off by at most 0.159 % (worst at 873.6 Hz, halfway between 1/7 and 45/314), so a
    60 bpm pulse reads at most 0.1 bpm off; up to 10 kHz, by at most 0.195 % (at 8015.6 Hz, between 4/257 and
    1/64). Windows whose rates give the same factors resample alike (25.001 and 25.002 Hz both give 5/1),
    which lets the daemon resample them together.
    """
    if not (np.isfinite(fs_in) and np.isfinite(fs_out) and fs_in > 0 and fs_out > 0):
        raise ValueError(f"sampling rates must be positive and finite, got {fs_in} → {fs_out} Hz")
    return _closest_ratio(float(fs_out) / float(fs_in))


@lru_cache(maxsize=4096)
def _closest_ratio(ratio: float) -> tuple[int, int]:
    down = np.arange(1, MAX_RATIO_TERM + 1)
    up = np.clip(np.rint(ratio * down), 1, MAX_RATIO_TERM)
    k = int(np.argmin(np.abs(up / down - ratio)))  # the first of equals: the smallest denominator
    best = Fraction(int(up[k]), int(down[k]))
    return best.numerator, best.denominator


@lru_cache(maxsize=128)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter `scipy.signal.resample_poly` designs by default for (up, down), in lowest
    terms: a Kaiser (β = 5) windowed sinc of 20·max(up, down) + 1 taps with its cut-off at the lower Nyquist
    rate. Unscaled: resample_poly multiplies a copy by `up` itself. Designed once per ratio, not once per call."""
    max_rate = max(up, down)
    h = signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)  # shared by every call: resample_poly copies it before scaling
    return h


def resample(x: np.ndarray, fs_in: float, fs_out: float, axis: int = -1) -> np.ndarray:
    """Resample `x` from `fs_in` to `fs_out` (Hz) with a polyphase anti-aliasing filter.

    The rate ratio is `resample_ratio`'s: exact for the usual rates, both terms ≤ `MAX_RATIO_TERM` always, so
    no declared rate can make the filter long (a ratio of 6246/1000 once meant 125,000 taps on every call).
    The filter is resample_poly's default design, cached per ratio: the same numbers, designed once.
    """
    up, down = resample_ratio(fs_in, fs_out)
    if up == down:
        return np.asarray(x, dtype=np.float32)
    y = signal.resample_poly(
        np.asarray(x, dtype=np.float64), up, down, axis=axis, window=_resample_filter(up, down), padtype="line"
    )
    return y.astype(np.float32)


def resample_rows(rows: Sequence[np.ndarray], fs: Sequence[float], fs_out: float) -> list[np.ndarray]:
    """1-D rows, each at its own rate `fs[i]` Hz → each at `fs_out`, in their order: what `resample` gives each
    alone, but one call for all rows whose rates give the same `resample_ratio` and whose lengths match (25.001
    and 25.002 Hz both resample by 5/1), so rows at many slightly different rates cost one pass, not one each."""
    if len(rows) != len(fs):
        raise ValueError(f"one rate per row: got {len(rows)} rows and {len(fs)} rates")
    by_ratio: dict[tuple[int, int, int], list[int]] = {}  # (up, down, raw length) → positions
    for i, (row, rate) in enumerate(zip(rows, fs)):
        by_ratio.setdefault((*resample_ratio(rate, fs_out), len(row)), []).append(i)
    out: dict[int, np.ndarray] = {}
    for group in by_ratio.values():  # every rate in a group gives the same ratio, so the same numbers
        x = resample(np.stack([np.asarray(rows[i], dtype=np.float32) for i in group]), fs[group[0]], fs_out)
        out.update(zip(group, x))
    return [out[i] for i in range(len(rows))]


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
