"""Dataset: CardioWorks four-wavelength PPG (figshare 23283518), 78 of 180 subjects, 60 s at 200 Hz, one cuff each.

Layout as published: ``bp_dataset_<N>.csv`` (header ``green_channel,red_channel,ir_channel``) and
``Subjects Information.xlsx``; file N belongs to subject ID N (the repository's convention).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.windows import WindowSet, build_window_set, recording_windows, window_grid
from p2p_stream.offline.datasets.xlsx import read_sheet

FS_HZ = 200.0
SHEET = "Subjects Information.xlsx"
CHANNELS = ("green_channel", "red_channel", "ir_channel")
_FILE = re.compile(r"^bp_dataset_(\d+)\.csv$")


def find_root(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "cardioworks_4wl_ppg_bp"):
        if (candidate / SHEET).is_file() and any(_FILE.match(p.name) for p in candidate.iterdir()):
            return candidate
    raise DatasetError(f"{path}: not a four-wavelength folder (expected '{SHEET}' and bp_dataset_<N>.csv files)")


def read_channel(path: Path, channel: str) -> np.ndarray:
    """One column of a subject's CSV as float64."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or channel not in header:
            raise DatasetError(f"{path}: no '{channel}' column; header is {header}")
        col = header.index(channel)
        try:
            return np.array([float(row[col]) for row in reader if row], dtype=np.float64)
        except (ValueError, IndexError) as exc:
            raise DatasetError(f"{path}: malformed row ({exc})") from exc


def load_four_wavelength(
    path: str | Path,
    channel: str = "red_channel",
    fs: float = 125.0,
    window_s: float = 10.0,
    hop_s: float | None = None,
) -> WindowSet:
    """Load one PPG channel, resampled to `fs` Hz and cut into `window_s` windows every `hop_s`."""
    if channel not in CHANNELS:
        raise DatasetError(f"unknown channel {channel!r}; choose one of {CHANNELS}")
    root = find_root(path)
    info = read_sheet(root / SHEET, header_row=0, required=["ID", "SBP(mmHg)", "DBP(mmHg)", "Age", "Gender"])
    subjects = {str(int(r["ID"])): r for r in info if r.get("ID") is not None}
    length, hop = window_grid(window_s, hop_s, fs)
    rows = []
    files = sorted((p for p in root.iterdir() if _FILE.match(p.name)), key=lambda p: int(_FILE.match(p.name).group(1)))
    for p in files:
        sid = _FILE.match(p.name).group(1)
        if sid not in subjects:
            raise DatasetError(f"{p}: subject {sid} is not in {SHEET}")
        s = subjects[sid]
        sex = str(s.get("Gender") or "").strip().lower()
        x = recording_windows(read_channel(p, channel), FS_HZ, fs, length, hop)
        rows.append(
            {
                "x": x,
                "sbp": float(s["SBP(mmHg)"]),
                "dbp": float(s["DBP(mmHg)"]),
                "age": float(s["Age"]) if s.get("Age") is not None else np.nan,
                "sex": {"male": "M", "female": "F"}.get(sex, ""),
                "subject": sid,
                "group": sid,
                "record": p.stem,
            }
        )
    return build_window_set(rows, fs, length, source=f"four_wavelength:{channel}")
