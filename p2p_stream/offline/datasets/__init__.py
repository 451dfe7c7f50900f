"""Datasets: loaders that read each public dataset as published and yield one common `WindowSet`."""

from __future__ import annotations

from pathlib import Path

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.aist_wrist import load_aist_wrist
from p2p_stream.offline.datasets.four_wavelength import load_four_wavelength
from p2p_stream.offline.datasets.ppg_bp import load_ppg_bp
from p2p_stream.offline.datasets.pulsedb import load_pulsedb
from p2p_stream.offline.datasets.replay_csv import load_replay_csv, read_replay_csv, write_replay_csv
from p2p_stream.offline.datasets.windows import WindowSet

LOADERS = {
    "ppg_bp": load_ppg_bp,
    "four_wavelength": load_four_wavelength,
    "pulsedb": load_pulsedb,
    "replay_csv": load_replay_csv,
    "aist_wrist": load_aist_wrist,
}


def load_dataset(name: str, path: str | Path, **options) -> WindowSet:
    """Load dataset `name` from `path`; `options` go to its loader (fs, window_s, hop_s, channel, limit...)."""
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    try:
        return LOADERS[name](path, **options)
    except TypeError as exc:
        raise DatasetError(f"dataset {name!r}: bad options {options} ({exc})") from exc


__all__ = [
    "LOADERS",
    "WindowSet",
    "load_aist_wrist",
    "load_dataset",
    "load_four_wavelength",
    "load_ppg_bp",
    "load_pulsedb",
    "load_replay_csv",
    "read_replay_csv",
    "write_replay_csv",
]
