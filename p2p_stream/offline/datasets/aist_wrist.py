"""Dataset: AIST one-month wrist PPG (aistairc, IEEE Sensors J. 2024) — 11 subjects × 8 sessions, one cuff each.

Layout as published: ``<subject>/week<1-4>/session<1-2>/<timestamp>/processed.csv``, no header, one row per
8 s segment: columns 0–249 = 250 PPG samples at 31.25 Hz (filtered, centred), 250 = HR (bpm), 251 = SBP,
252 = DBP (mmHg); HR, SBP and DBP are one reading per session, repeated on every row.

Consecutive rows overlap: row i+1 is row i shifted by 62.289 samples (1.993 s), the same in all 88 sessions
(fitted by sub-sample alignment: residual 0.1 % of the signal's SD, against 9 % and 23 % at the integer shifts
62 and 63). The ratio is 250 · 74/297, so rows look like 297-sample raw segments cut every 74 samples and each
resampled to 250. As the hop is not a whole number of samples, a session cannot be rebuilt as one stream without
interpolating; instead **each row is its own 8 s recording** (so `window_s` can be at most 8 s). By default only
rows that do not overlap are used (every fifth row, 9.97 s apart), as the other loaders cut without overlap.

The first row of each session is dropped: it starts with the filter's start-up transient (its first 0.5 s
reach a median 11 SD of the session, against 2 SD for the rest of the row) and fails the quality gate in 64 of 88
sessions, where later rows fail in under 1 %. HR is one value per session, and is not the PPG's pulse rate:
the rate measured on the PPG is a median 3 bpm above it (mean absolute gap 4 bpm; C3's sessions 12–18 bpm).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.windows import WindowSet, build_window_set, window_grid
from p2p_stream.ppg.preprocess import cut_windows, resample, window_samples

FS_HZ = 31.25
ROW_SAMPLES = 250
ROW_S = ROW_SAMPLES / FS_HZ  # 8.0 s
ROW_HOP_SAMPLES = ROW_SAMPLES * 74 / 297  # 62.289: the shift from one row to the next, at FS_HZ
ROW_HOP_S = ROW_HOP_SAMPLES / FS_HZ  # 1.993 s
FILE = "processed.csv"
FIRST_ROW = 1  # row 0 holds the filter's start-up transient
HR_COL, SBP_COL, DBP_COL = 250, 251, 252
_SUBJECT = re.compile(r"^[A-Z]\d+$")
_WEEK = re.compile(r"^week(\d+)$")
_SESSION = re.compile(r"^session(\d+)$")


def find_root(path: str | Path) -> Path:
    """Accept the dataset folder itself or a parent holding ``aist_wrist_ppg/``."""
    path = Path(path)
    for candidate in (path, path / "aist_wrist_ppg"):
        if candidate.is_dir() and any(session_files(candidate)):
            return candidate
    raise DatasetError(
        f"{path}: not an AIST wrist PPG folder (expected '<subject>/week<N>/session<N>/<timestamp>/{FILE}' "
        "in it or in aist_wrist_ppg/)"
    )


def session_files(root: Path) -> list[tuple[str, int, int, Path]]:
    """(subject, week, session, processed.csv) for every session under `root`, in subject/week/session order."""
    found = []
    for p in root.glob(f"*/week*/session*/*/{FILE}"):
        subject, week, session = p.parts[-5:-2]
        w, s = _WEEK.match(week), _SESSION.match(session)
        if _SUBJECT.match(subject) and w and s:
            found.append((subject, int(w.group(1)), int(s.group(1)), p))
    return sorted(found, key=lambda t: (t[0][0], int(t[0][1:]), t[1], t[2]))


def read_session(path: Path) -> np.ndarray:
    """One ``processed.csv`` → (rows, 253) float64; a wrong shape or a non-number is an error naming the file."""
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{path}: not a table of numbers ({exc})") from exc
    if table.shape[0] == 0 or table.shape[1] != DBP_COL + 1:
        raise DatasetError(f"{path}: expected rows of {DBP_COL + 1} columns (250 PPG, HR, SBP, DBP), got {table.shape}")
    return table


def _evenly(n: int, k: int | None) -> np.ndarray:
    """At most `k` of `n` positions, evenly spaced, first and last included."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def load_aist_wrist(
    path: str | Path,
    fs: float = 125.0,
    window_s: float = 8.0,
    hop_s: float | None = None,
    max_windows_per_session: int | None = None,
) -> WindowSet:
    """Load AIST wrist PPG rows resampled to `fs` Hz, cut into `window_s` windows every `hop_s` (default: no overlap).

    Windows are cut within each 8 s row; rows are used every ``ceil(span / 1.993 s)`` rows, where span is the
    time the windows of one row advance (``n_windows · hop_s``), so windows of one session start at least `hop_s`
    apart (to within 1 %: ``hop_s=2`` uses every row, 1.993 s apart; the default uses every fifth).
    `max_windows_per_session` keeps at most that many per session, evenly spaced (None: all).
    """
    if window_s > ROW_S + 1e-9:
        raise DatasetError(
            f"AIST rows are {ROW_S:g} s long and are not joined (their overlap is not a whole sample): "
            f"window_s must be ≤ {ROW_S:g}, got {window_s}"
        )
    if max_windows_per_session is not None and max_windows_per_session < 1:
        raise DatasetError(f"max_windows_per_session must be ≥ 1 or None, got {max_windows_per_session}")
    root = find_root(path)
    length, hop = window_grid(window_s, hop_s, fs)
    per_row = (window_samples(ROW_S, fs) - length) // hop + 1  # windows cut from one row
    row_step = max(1, math.ceil(per_row * hop / fs / ROW_HOP_S - 0.01))  # 1 % slack: hop_s=2 → every row
    rows = []
    for subject, week, session, p in session_files(root):
        table = read_session(p)
        labels = table[:, [SBP_COL, DBP_COL]]
        if not np.all(labels == labels[0]):
            raise DatasetError(f"{p}: SBP/DBP differ between rows; expected one cuff reading per session")
        used = table[FIRST_ROW::row_step, :ROW_SAMPLES]
        if not len(used):
            continue
        x = resample(used, FS_HZ, fs, axis=-1)[:, : window_samples(ROW_S, fs)]
        windows = np.concatenate([cut_windows(r, length, hop) for r in x])
        windows = windows[_evenly(len(windows), max_windows_per_session)]
        rows.append(
            {
                "x": windows,
                "sbp": labels[0, 0],
                "dbp": labels[0, 1],
                "age": np.nan,  # the dataset gives only group-level demographics
                "sex": "",
                "subject": subject,
                "group": subject,
                "record": f"{subject}/week{week}/session{session}",
            }
        )
    return build_window_set(rows, fs, length, source="aist_wrist")
