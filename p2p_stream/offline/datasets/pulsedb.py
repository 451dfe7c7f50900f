"""Dataset: PulseDB subset files (MATLAB v7.3 / HDF5) — 10 s segments at 125 Hz with ECG, PPG and ABP channels.

Through h5py the arrays come back transposed: ``Subset/Signals`` is (1250, 3, N) with PPG in
channel 1; ``Subset/SBP`` etc. are (1, N); ``Subset/Subject`` and ``Subset/Gender`` hold object
references into ``#refs#``, each a uint16 array of character codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.windows import WindowSet, build_window_set, window_grid
from p2p_stream.ppg.preprocess import cut_windows, resample

FS_HZ = 125.0
PPG_CHANNEL = 1  # 0 ECG, 1 PPG, 2 ABP
_REQUIRED = ("Signals", "SBP", "DBP", "Subject")


def _chars(f, ref) -> str:
    """Dereference a MATLAB char cell → str."""
    return "".join(map(chr, np.asarray(f[ref][()]).ravel()))


def load_pulsedb(
    path: str | Path,
    fs: float = 125.0,
    window_s: float = 10.0,
    hop_s: float | None = None,
    limit: int | None = None,
) -> WindowSet:
    """Load PPG and segment labels from a PulseDB ``*_Subset.mat``; `limit` keeps the first N segments."""
    import h5py  # only this loader needs it

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
    with f:
        if "Subset" not in f:
            raise DatasetError(f"{path}: no 'Subset' struct; top-level keys are {list(f.keys())}")
        subset = f["Subset"]
        missing = [k for k in _REQUIRED if k not in subset]
        if missing:
            raise DatasetError(f"{path}: Subset lacks {missing}; it has {list(subset.keys())}")
        signals = subset["Signals"]
        if signals.ndim != 3 or signals.shape[1] < 2:
            raise DatasetError(f"{path}: Subset/Signals has shape {signals.shape}, expected (T, 3, N)")
        n = signals.shape[2] if limit is None else min(limit, signals.shape[2])
        ppg = np.asarray(signals[:, PPG_CHANNEL, :n], dtype=np.float64).T  # (N, T)

        def numeric(key: str) -> np.ndarray:
            if key not in subset:
                return np.full(n, np.nan)
            return np.asarray(subset[key][()], dtype=np.float64).ravel()[:n]

        sbp, dbp, age = numeric("SBP"), numeric("DBP"), numeric("Age")
        subjects = [_chars(f, r) for r in np.asarray(subset["Subject"][()]).ravel()[:n]]
        if "Gender" in subset:
            sexes = [_chars(f, r).strip().upper()[:1] for r in np.asarray(subset["Gender"][()]).ravel()[:n]]
        else:
            sexes = [""] * n

    length, hop = window_grid(window_s, hop_s, fs)
    x = resample(ppg, FS_HZ, fs, axis=-1)
    rows = []
    for i in range(n):
        windows = cut_windows(x[i], length, hop)
        rows.append(
            {
                "x": windows,
                "sbp": sbp[i],
                "dbp": dbp[i],
                "age": age[i],
                "sex": sexes[i] if sexes[i] in ("M", "F") else "",
                "subject": subjects[i],
                "group": subjects[i],
                "record": f"{path.stem}:{i}",
            }
        )
    return build_window_set(rows, fs, length, source=f"pulsedb:{path.stem}")
