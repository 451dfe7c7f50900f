"""Quality gate: whether a raw PPG window is fit for an estimate, and why not; with an SQI and the pulse rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.fft import next_fast_len

from p2p_stream.ppg.preprocess import PreprocessConfig, ppg_bandpass, ppg_normalize, resample, resample_rows

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


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """Length of the longest run of True in each row of a 2-D boolean array."""
    pos = np.arange(mask.shape[1])
    last_false = np.maximum.accumulate(np.where(mask, -1, pos), axis=1)  # index of the latest False so far
    return (pos - last_false).max(axis=1, initial=0)


def _pulse_periodicity(y: np.ndarray, fs: float, config: QualityConfig) -> tuple[np.ndarray, np.ndarray]:
    """(sqi, hr_bpm) per row from the unbiased, normalised autocorrelation of band-passed windows `y` (N, T).

    hr_bpm is NaN where no pulse period was found (sqi is then 0).
    """
    y = y.astype(np.float64)
    y = y - y.mean(axis=1, keepdims=True)
    rows, n = y.shape
    sqi, hr = np.zeros(rows), np.full(rows, np.nan)
    lag_min = int(np.floor(fs * 60.0 / config.hr_max_bpm))
    # Long lags overlap too little to be trusted: keep at least 40 % of the window in the product.
    lag_max = min(int(np.ceil(fs * 60.0 / config.hr_min_bpm)), int(0.6 * n))
    # Lags up to lag_max only: zero-padding by lag_max + 1 keeps them free of wrap-around, so a transform of
    # n + lag_max + 1 points (next fast length) gives what 2n did, in about half the work.
    size = next_fast_len(n + lag_max + 1, real=True)
    spectrum = np.fft.rfft(y, size, axis=1)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, : lag_max + 1]
    live = acf[:, 0] > 0
    if lag_max <= lag_min + 2 or not live.any():
        return sqi, hr
    acf = acf[live] / (n - np.arange(lag_max + 1)) / (acf[live, :1] / n)  # unbiased, 1.0 at lag 0
    seg = acf[:, lag_min : lag_max + 1]
    inner = seg[:, 1:-1]
    peak = (inner > seg[:, :-2]) & (inner >= seg[:, 2:])
    has_peak = peak.any(axis=1)
    best = np.where(peak, inner, -np.inf).max(axis=1)
    # The first peak nearly as high as the best is the beat period; later ones are its multiples.
    k = np.argmax(peak & (inner >= 0.8 * best[:, None]), axis=1) + 1
    r = np.arange(len(seg))
    a, b, c = seg[r, k - 1], seg[r, k], seg[r, k + 1]
    denom = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):  # parabolic interpolation for a sub-sample period
        shift = np.where(denom != 0, 0.5 * (a - c) / denom, 0.0)
    lag = lag_min + k + shift
    sqi[live] = np.where(has_peak, np.clip(b, 0.0, 1.0), 0.0)
    hr[live] = np.where(has_peak, 60.0 * fs / lag, np.nan)
    return sqi, hr


def ppg_quality_batch(
    windows: np.ndarray,
    fs: float,
    config: QualityConfig = QualityConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    filtered: np.ndarray | None = None,
) -> list[Quality]:
    """Check raw PPG windows (N, T) sampled at `fs` Hz, all rows at once; the first failing check names the reason.

    `filtered` is the windows already band-passed with `preprocess` (the daemon has them anyway); else computed.
    Vectorised over rows because the daemon gates every window here: row by row in Python it held the
    interpreter long enough to slow ingest (docs/performance.md).
    """
    x = np.atleast_2d(np.asarray(windows, dtype=np.float64))
    rows, n = x.shape
    reason = np.full(rows, None, dtype=object)
    sqi, hr = np.zeros(rows), np.full(rows, np.nan)
    if n < config.min_s * fs:
        reason[:] = "too_short"
        return _qualities(reason, sqi, hr)
    finite = np.isfinite(x).all(axis=1)
    reason[~finite] = "nan"
    x = np.where(finite[:, None], x, 0.0)  # rejected rows are zeroed so the checks below stay warning-free
    top, bottom = x.max(axis=1), x.min(axis=1)
    span = top - bottom
    flat = span <= 1e-9 * np.maximum(1.0, np.abs(x).max(axis=1))
    clip = (
        np.maximum(
            (x >= (top - config.clip_band * span)[:, None]).mean(axis=1),
            (x <= (bottom + config.clip_band * span)[:, None]).mean(axis=1),
        )
        > config.clip_fraction
    )
    still = np.abs(np.diff(x, axis=1)) <= config.flat_tolerance * span[:, None]
    flat_run = _longest_runs(still) + 1 >= config.flat_s * fs
    for name, failed in (("flatline", flat), ("clipping", clip), ("flatline", flat_run)):
        reason[(reason == None) & failed] = name  # noqa: E711 (elementwise on an object array)
    todo = np.flatnonzero(reason == None)  # noqa: E711
    if todo.size:
        band = ppg_bandpass(x[todo], fs, preprocess) if filtered is None else np.atleast_2d(filtered)[todo]
        sqi[todo], hr[todo] = _pulse_periodicity(band, fs, config)
        pulseless = todo[np.isnan(hr[todo]) | (sqi[todo] < config.min_sqi)]
        reason[pulseless] = "no_pulse"
        hr[pulseless] = np.nan
    return _qualities(reason, sqi, hr)


def _qualities(reason: np.ndarray, sqi: np.ndarray, hr: np.ndarray) -> list[Quality]:
    return [
        Quality(r is None, r, float(s) if r in (None, "no_pulse") else 0.0, None if r is not None else float(h))
        for r, s, h in zip(reason, sqi, hr)
    ]


def ppg_quality(
    window: np.ndarray,
    fs: float,
    config: QualityConfig = QualityConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    filtered: np.ndarray | None = None,
) -> Quality:
    """Check one raw PPG window sampled at `fs` Hz: `ppg_quality_batch` on one row."""
    x = np.asarray(window, dtype=np.float64).ravel()
    return ppg_quality_batch(x[None], fs, config, preprocess, None if filtered is None else np.ravel(filtered)[None])[0]


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
    return _assess_resampled(x, config, preprocess)


def _assess_resampled(
    x: np.ndarray, config: QualityConfig, preprocess: PreprocessConfig
) -> tuple[list[Quality], np.ndarray]:
    """Windows (N, T) already at the model rate → (quality of each, model inputs (N, T)): `ppg_assess`'s second half."""
    filtered = ppg_bandpass(x, preprocess.fs, preprocess)  # a NaN row stays a NaN row: rows are independent
    qualities = ppg_quality_batch(x, preprocess.fs, config, preprocess, filtered=filtered)
    # NaN rows, and samples near float32's limit, give non-finite inputs: the worker rejects their output ("nan").
    with np.errstate(invalid="ignore", over="ignore"):
        return qualities, ppg_normalize(filtered)


def ppg_assess_windows(
    windows: Sequence[np.ndarray],
    fs: Sequence[float],
    config: QualityConfig = QualityConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
) -> tuple[list[Quality], list[np.ndarray]]:
    """Raw 1-D windows, each at its own rate `fs[i]` Hz → (quality of each, model input of each), in their order.

    The numbers of `ppg_assess` on each window alone, but batched by what the model sees rather than by what a
    device declares: windows are resampled together when their rates give the same `resample_ratio` and they
    have the same length (25.001 and 25.002 Hz both resample by 5/1), then band-pass, gate and normalisation run
    once per model-input length over all windows of that length. So 400 devices at 400 slightly different
    rates cost one pass, not 400: one sender's odd rate does not slow the others.
    """
    if len(windows) != len(fs):
        raise ValueError(f"one rate per window: got {len(windows)} windows and {len(fs)} rates")
    rows = [np.asarray(w, dtype=np.float32).ravel() for w in windows]
    resampled = resample_rows(rows, fs, preprocess.fs)  # each window at the model rate
    by_length: dict[int, list[int]] = {}  # model-input length → positions
    for i in range(len(rows)):
        by_length.setdefault(len(resampled[i]), []).append(i)
    checked: dict[int, tuple[Quality, np.ndarray]] = {}  # position → (quality, model input)
    for group in by_length.values():
        qualities, x = _assess_resampled(np.stack([resampled[i] for i in group]), config, preprocess)
        checked.update(zip(group, zip(qualities, x)))
    return [checked[i][0] for i in range(len(rows))], [checked[i][1] for i in range(len(rows))]
