"""Shared fixtures only: the bundled real PPG-BP sample, the full shared datasets when present, seeded generators,
the shipped estimator. Helpers that are not fixtures live in helpers.py and zmq_helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers import SAMPLE, SHARED_DATA

if TYPE_CHECKING:
    from p2p_stream.model.estimator import Estimator


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Daemons started with the default state store (`state.path`: under $XDG_STATE_HOME) keep it in this run's
    own folder, never in the user's; the daemons a test starts through zmq_helpers get a store each."""
    folder = tmp_path_factory.mktemp("xdg-state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


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
