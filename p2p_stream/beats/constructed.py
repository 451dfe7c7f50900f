"""Constructed ECG and PPG whose beats are known exactly, for checking the detectors (tests/test_beats.py,
benchmarks/beat_accuracy.py): narrow R spikes, each followed a chosen arrival time later by a pulse whose upstroke
is a raised cosine, so its intersecting-tangent foot is known in closed form."""

from __future__ import annotations

import numpy as np

RISE_S = 0.15  # the constructed upstroke: a raised cosine this long
TANGENT_FOOT_S = RISE_S * (0.5 - 1 / np.pi)  # where its steepest tangent meets its minimum's level, after its onset


def constructed(fs: float, seconds: float, pat_s, rr_s: float = 0.8, noise: float = 0.01, seed: int = 0):
    """(t, ecg, ppg, R times, expected tangent feet): R spikes every `rr_s`, each followed `pat_s` later (a number,
    or one per beat) by a pulse; Gaussian noise of SD `noise` (the pulse is 1 high, the R spike 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / fs)
    r = np.arange(0.5, seconds - 1.0, rr_s)
    pat = np.broadcast_to(np.asarray(pat_s, dtype=float), r.shape)
    ecg = np.exp(-0.5 * ((t[:, None] - r) / 0.012) ** 2).sum(1) + noise * rng.normal(size=len(t))
    ppg = np.zeros_like(t)
    for onset in r + pat:
        u = (t - onset) / RISE_S
        ppg += np.where((u >= 0) & (u < 1), 0.5 - 0.5 * np.cos(np.pi * u), 0.0)
        ppg += np.where(u >= 1, np.exp(-np.maximum(t - onset - RISE_S, 0.0) / 0.35), 0.0)
    ppg += noise * rng.normal(size=len(t))
    return t, ecg, ppg, r, r + pat + TANGENT_FOOT_S
