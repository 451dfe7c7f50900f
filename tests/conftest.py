"""Shared fixtures only: the bundled real PPG-BP sample, the full shared datasets when present, seeded generators,
the shipped estimator. Helpers that are not fixtures live in helpers.py and zmq_helpers.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers import SAMPLE, SHARED_DATA

if TYPE_CHECKING:
    from p2p_stream.model.estimator import Estimator


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


@pytest.fixture(scope="session")
def est() -> Estimator:
    """The shipped model, loaded once for the whole run. Shared: a test must not change it (its model, metadata or
    head); one that needs a different estimator builds its own, from this one's parts if it likes."""
    from p2p_stream.model.estimator import Estimator  # here, not at the top: torch only for tests that need it

    return Estimator.load()
