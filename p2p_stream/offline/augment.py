"""Augmentation: what changes between sensors and wearers, applied to prepared windows during training.

Each training window is shown through a random "sensor": a crop of the model's length at a random place, a
slightly different time scale (sampling-clock error and resampling), a lower sampling rate (a wrist device at
25–60 Hz, interpolated back up as the daemon's resampler would), a causal low-pass of random corner (the
front end's analogue filter and its phase lag; wrist devices filter harder than finger clips), baseline wander,
white noise and the odd motion spike, then normalised again — amplitude and offset are gone after that, as they
are at inference. The label stays: none of these changes the blood pressure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal

from p2p_stream.ppg.preprocess import ppg_normalize


@dataclass(frozen=True)
class AugmentConfig:
    stretch: float = 0.06  # time-scale factor drawn from 1 ± this (a clock or resampler off by a few %)
    rate_hz: tuple[float, float] = (25.0, 60.0)  # a sensor's own sampling rate, drawn per window, Hz
    rate_p: float = 0.3  # share of windows shown at such a rate
    lowpass_hz: tuple[float, float] = (2.5, 8.0)  # corner of a causal 2nd-order low-pass, Hz; drawn per window
    lowpass_p: float = 0.6  # share of windows passed through that low-pass
    wander: float = 0.3  # baseline-wander amplitude (0.1–0.4 Hz sine), in units of the window's SD
    noise: float = 0.15  # white-noise SD at most, in units of the window's SD
    spike_p: float = 0.1  # share of windows with one motion spike
    invert_p: float = 0.0  # share shown upside down (a sensor wired the other way); 0: not seen in our sets

    def to_dict(self) -> dict:
        return asdict(self)


def random_crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(B, T) → (B, length), each row cut at its own random start."""
    starts = rng.integers(0, x.shape[1] - length + 1, size=len(x))
    return x[np.arange(len(x))[:, None], starts[:, None] + np.arange(length)]


def sensor_augment(
    x: np.ndarray, length: int, fs: float, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> np.ndarray:
    """Prepared windows (B, T ≥ length) at `fs` Hz → augmented, normalised (B, length); a stretch is capped where
    it would read past the window's end."""
    b, t = x.shape
    out = np.empty((b, length), dtype=np.float32)
    grid = np.arange(length, dtype=np.float64)
    longest = (t - 1) / (length - 1)  # the most a crop can be stretched and still read only real samples
    for i in range(b):
        scale = min(1.0 + rng.uniform(-config.stretch, config.stretch), longest)
        span = (length - 1) * scale
        start = rng.uniform(0.0, max(0.0, t - 1 - span))
        out[i] = np.interp(start + grid * scale, np.arange(t), x[i])
    for i in np.flatnonzero(rng.random(b) < config.rate_p):
        step = fs / rng.uniform(*config.rate_hz)  # samples of ours per sample of the slower sensor
        coarse = np.arange(0.0, length - 1, step)
        out[i] = np.interp(grid, coarse, np.interp(coarse, grid, out[i]))
    low = rng.random(b) < config.lowpass_p
    for i in np.flatnonzero(low):
        corner = rng.uniform(*config.lowpass_hz)
        bb, aa = signal.butter(2, corner, btype="low", fs=fs)
        out[i] = signal.lfilter(bb, aa, out[i] - out[i, 0]) + out[i, 0]
    out = ppg_normalize(out)
    tt = grid / fs
    freq = rng.uniform(0.1, 0.4, size=(b, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(b, 1))
    out += config.wander * rng.random((b, 1)) * np.sin(2 * np.pi * freq * tt + phase)
    out += config.noise * rng.random((b, 1)) * rng.standard_normal((b, length))
    spikes = np.flatnonzero(rng.random(b) < config.spike_p)
    for i in spikes:
        at, width = rng.integers(0, length), int(rng.integers(3, 15))
        out[i, at : at + width] += rng.normal(0.0, 3.0)
    flip = rng.random(b) < config.invert_p
    out[flip] *= -1
    return ppg_normalize(out)
