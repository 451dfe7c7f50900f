"""Quality gate: whether a raw PPG window is fit for an estimate, and why not; with an SQI and the pulse rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .preprocess import PreprocessConfig, ppg_bandpass, ppg_normalize, resample

# The reasons a window can be rejected; these strings go on the wire (`reason`).
REASONS = ("too_short", "nan", "flatline", "clipping", "no_pulse")


@dataclass(frozen=True)
class QualityConfig:
    min_s: float = 2.0  # shorter windows cannot hold two beats at 40 bpm: "too_short"
    flat_s: float = 0.5  # a constant stretch this long (s) is a lost contact: "flatline"
    flat_tolerance: float = 1e-3  # "constant" means steps below this fraction of the window's range
    clip_band: float = 0.005  # samples within this fraction of the range from the max or min count as at the rail
    clip_fraction: float = 0.05  # more than this fraction of samples at one rail: "clipping"
    hr_min_bpm: float = 40.0  # pulse-rate search range, beats per minute
    hr_max_bpm: float = 200.0
    min_sqi: float = 0.5  # periodicity below this: "no_pulse"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Quality:
    ok: bool
    reason: str | None  # one of REASONS when not ok
    sqi: float  # 0–1: height of the autocorrelation peak at the beat period
    hr_bpm: float | None  # pulse rate from that period, None when no pulse was found


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    if not mask.any():
        return 0
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max())


def _pulse_periodicity(y: np.ndarray, fs: float, config: QualityConfig) -> tuple[float, float | None]:
    """(sqi, hr_bpm) from the unbiased, normalised autocorrelation of the band-passed window `y`."""
    y = y.astype(np.float64)
    y = y - y.mean()
    n = y.size
    spectrum = np.fft.rfft(y, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    if acf[0] <= 0:
        return 0.0, None
    acf = acf / (n - np.arange(n)) / (acf[0] / n)  # unbiased, 1.0 at lag 0
    lag_min = int(np.floor(fs * 60.0 / config.hr_max_bpm))
    # Long lags overlap too little to be trusted: keep at least 40 % of the window in the product.
    lag_max = min(int(np.ceil(fs * 60.0 / config.hr_min_bpm)), int(0.6 * n))
    if lag_max <= lag_min + 2:
        return 0.0, None
    seg = acf[lag_min : lag_max + 1]
    peaks = np.flatnonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
    if peaks.size == 0:
        return 0.0, None
    best = seg[peaks].max()
    # The first peak nearly as high as the best is the beat period; later ones are its multiples.
    k = peaks[np.argmax(seg[peaks] >= 0.8 * best)]
    # Parabolic interpolation for a sub-sample period.
    a, b, c = seg[k - 1], seg[k], seg[k + 1]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    lag = lag_min + k + shift
    return float(np.clip(seg[k], 0.0, 1.0)), float(60.0 * fs / lag)


def ppg_quality(
    window: np.ndarray,
    fs: float,
    config: QualityConfig = QualityConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    filtered: np.ndarray | None = None,
) -> Quality:
    """Check one raw PPG window sampled at `fs` Hz; the first failing check names the reason.

    `filtered` is the window already band-passed with `preprocess` (the daemon has it anyway); else it is computed.
    """
    x = np.asarray(window, dtype=np.float64).ravel()
    if x.size < config.min_s * fs:
        return Quality(False, "too_short", 0.0, None)
    if not np.isfinite(x).all():
        return Quality(False, "nan", 0.0, None)
    span = float(x.max() - x.min())
    if span <= 1e-9 * max(1.0, float(np.abs(x).max())):
        return Quality(False, "flatline", 0.0, None)
    at_top = x >= x.max() - config.clip_band * span
    at_bottom = x <= x.min() + config.clip_band * span
    if max(at_top.mean(), at_bottom.mean()) > config.clip_fraction:
        return Quality(False, "clipping", 0.0, None)
    flat = np.abs(np.diff(x)) <= config.flat_tolerance * span
    if _longest_run(flat) + 1 >= config.flat_s * fs:
        return Quality(False, "flatline", 0.0, None)
    if filtered is None:
        filtered = ppg_bandpass(x, fs, preprocess)
    sqi, hr = _pulse_periodicity(filtered, fs, config)
    if hr is None or sqi < config.min_sqi:
        return Quality(False, "no_pulse", sqi, None)
    return Quality(True, None, sqi, hr)


def ppg_assess(
    windows: np.ndarray,
    fs: float,
    config: QualityConfig = QualityConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
) -> tuple[list[Quality], np.ndarray]:
    """Raw windows (N, T) at `fs` Hz → (quality of each at the model rate, model inputs (N, T')).

    Resampling and band-pass run once for the whole batch (row by row they give the same numbers); the
    band-passed rows serve the gate and, normalised, the model — what `ppg_prepare` gives. Training, evaluation
    and the daemon all take this one path. Rows that fail the gate hold no usable input.
    """
    x = resample(np.atleast_2d(np.asarray(windows, dtype=np.float32)), fs, preprocess.fs, axis=-1)
    filtered = ppg_bandpass(x, preprocess.fs, preprocess)  # a NaN row stays a NaN row: rows are independent
    qualities = [ppg_quality(row, preprocess.fs, config, preprocess, filtered=band) for row, band in zip(x, filtered)]
    # NaN rows, and samples near float32's limit, give non-finite inputs: the worker rejects their output ("nan").
    with np.errstate(invalid="ignore", over="ignore"):
        return qualities, ppg_normalize(filtered)
