"""Crops: a crop-averaging model's windows, cut into crops that are each prepared on their own.

A window of T raw samples is tiled from its end with crops of ``c = round(crop_s · fs)`` raw samples: the last
crop ends with the window, each one before it ends where the next begins, and a remainder at the start (T not a
multiple of c) gets one more crop flush with the start, overlapping its neighbour. Each crop is resampled,
band-passed and normalised alone, so its model input depends on its own samples and nothing else: the daemon
computes a crop once and reuses its features in every window that holds it (10 s windows every 2 s share four of
their five crops), and offline `Estimator.predict` on the same samples gives the same numbers.

Why per crop and not per window: the network was trained on 2.1 s windows prepared whole (PPG-BP's segments), so
a 2 s crop prepared alone is closer to what it learnt from than a 2 s piece of a 10 s window filtered and
normalised as one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from p2p_stream.ppg.preprocess import PreprocessConfig, ppg_condition, resample_rows, window_samples


def crop_length(crop_s: float, fs: float) -> int:
    """Raw samples in one crop of `crop_s` seconds at `fs` Hz (at least one)."""
    return max(1, window_samples(crop_s, fs))


def crop_starts(length: int, crop: int) -> np.ndarray:
    """Starts of the crops of `crop` samples that tile a window of `length`, from its end (ascending): the last
    one flush with the end, and one flush with the start when `length` is not a multiple of `crop`. A window no
    longer than `crop` is one crop of itself."""
    if crop <= 0 or length <= crop:
        return np.zeros(1, dtype=int)
    starts = np.arange(length - crop, -1, -crop)[::-1]
    return np.r_[0, starts] if starts[0] > 0 else starts


def cut_crops(window: np.ndarray, crop: int) -> np.ndarray:
    """One raw window (T,) → its crops (k, min(crop, T)), as `crop_starts` places them."""
    x = np.asarray(window, dtype=np.float32).ravel()
    width = min(crop, len(x)) if crop > 0 else len(x)
    starts = crop_starts(len(x), crop)
    return x[starts[:, None] + np.arange(width)]


def prepare_rows(
    rows: Sequence[np.ndarray], fs: Sequence[float], preprocess: PreprocessConfig = PreprocessConfig()
) -> list[np.ndarray]:
    """Raw 1-D rows, each at its own rate `fs[i]` Hz → each one's model input, prepared alone (resample,
    band-pass, normalise: `ppg_prepare` row by row).

    Batched the way `ppg_assess_windows` batches: `resample_rows`, then band-pass and normalise once per
    model-rate length.
    """
    at_rate = resample_rows(rows, fs, preprocess.fs)
    by_length: dict[int, list[int]] = {}
    for i in range(len(rows)):
        by_length.setdefault(len(at_rate[i]), []).append(i)
    out: dict[int, np.ndarray] = {}
    for group in by_length.values():
        with np.errstate(invalid="ignore", over="ignore"):  # a NaN row stays NaN; the caller rejects its answer
            out.update(zip(group, ppg_condition(np.stack([at_rate[i] for i in group]), preprocess)))
    return [out[i] for i in range(len(rows))]


def window_crops(
    windows: Sequence[np.ndarray], fs: Sequence[float], crop_s: float, preprocess: PreprocessConfig = PreprocessConfig()
) -> list[np.ndarray]:
    """Raw windows, each at its own rate → each one's crops, prepared alone (k, width): a crop-averaging model's
    input, for every crop of every window in one `prepare_rows` call."""
    cut = [cut_crops(w, crop_length(crop_s, rate)) for w, rate in zip(windows, fs)]
    flat = prepare_rows([c for crops in cut for c in crops], [r for c, r in zip(cut, fs) for _ in c], preprocess)
    bounds = np.cumsum([0] + [len(c) for c in cut])
    return [np.stack(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
