"""Shared fixtures: the bundled real PPG-BP sample, the full shared datasets when present, seeded generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
SAMPLE = HERE / "data" / "ppg_bp_sample"
SHARED_DATA = HERE.parent.parent / "shared" / "data"


@pytest.fixture
def ppg_bp_sample() -> Path:
    return SAMPLE


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ppg_bp").is_dir():
        pytest.skip("../shared/data is not on this machine")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def read_segment(name: str) -> np.ndarray:
    """One real PPG-BP segment (1 kHz raw ADC counts) from the bundled sample."""
    return np.array((SAMPLE / "0_subject" / f"{name}.txt").read_text().split(), dtype=np.float64)
