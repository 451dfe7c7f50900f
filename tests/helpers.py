"""Test helpers that are not fixtures: where the real data lies, one real PPG-BP segment, a simulated PPG.

Import them from here (`from helpers import simulated_ppg`); conftest.py holds fixtures only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SAMPLE = HERE / "data" / "ppg_bp_sample"  # the bundled real PPG-BP sample
SHARED_DATA = HERE.parent.parent / "shared" / "data"  # the full datasets, where this machine has them


def read_segment(name: str) -> np.ndarray:
    """One real PPG-BP segment (1 kHz raw ADC counts) from the bundled sample."""
    return np.array((SAMPLE / "0_subject" / f"{name}.txt").read_text().split(), dtype=np.float64)


def simulated_ppg(hr_bpm: float, seconds: float, fs: float, seed: int = 0, noise: float = 2.0) -> np.ndarray:
    """Systolic wave plus a smaller, later dicrotic wave per beat, with sensor noise (raw-count scale)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fs))) / fs
    phase = (t * hr_bpm / 60.0) % 1.0
    beat = np.exp(-((phase - 0.15) ** 2) / 0.005) + 0.4 * np.exp(-((phase - 0.45) ** 2) / 0.01)
    return 1000 + 200 * beat + noise * rng.normal(size=t.size)
