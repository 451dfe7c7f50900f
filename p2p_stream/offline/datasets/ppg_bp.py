"""Dataset: PPG-BP (Liang et al., Sci Data 2018) — 1 kHz finger PPG segments of 2.1 s, one cuff reading per subject.

Layout as published: ``0_subject/<subject>_<k>.txt`` (one line of tab-separated ADC counts) and
``PPG-BP dataset.xlsx`` (a title row, then the header). Byte-identical segments are dropped; subjects
that share a segment are put in one split group.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.windows import WindowSet, build_window_set, recording_windows, window_grid
from p2p_stream.offline.datasets.xlsx import read_sheet

log = logging.getLogger(__name__)

FS_HZ = 1000.0
SHEET = "PPG-BP dataset.xlsx"
SEGMENTS = "0_subject"
_FILE = re.compile(r"^(\d+)_(\d+)\.txt$")
_COLUMNS = {
    "subject": "subject_ID",
    "sex": "Sex(M/F)",
    "age": "Age(year)",
    "sbp": "Systolic Blood Pressure(mmHg)",
    "dbp": "Diastolic Blood Pressure(mmHg)",
}


def find_root(path: str | Path) -> Path:
    """Accept the dataset folder itself or a parent holding ``ppg_bp/``."""
    path = Path(path)
    for candidate in (path, path / "ppg_bp"):
        if (candidate / SEGMENTS).is_dir() and (candidate / SHEET).is_file():
            return candidate
    raise DatasetError(f"{path}: not a PPG-BP folder (expected '{SEGMENTS}/' and '{SHEET}' in it or in ppg_bp/)")


def read_segment(path: Path) -> np.ndarray:
    """One segment file → float64 samples; a non-numeric token is an error naming the file."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path}: not a list of numbers ({exc})") from exc
    if values.size == 0:
        raise DatasetError(f"{path}: empty segment")
    return values


def read_subjects(root: Path) -> dict[str, dict]:
    """Subject id → {sbp, dbp, age, sex} from the spreadsheet."""
    rows = read_sheet(root / SHEET, header_row=1, required=list(_COLUMNS.values()))
    subjects = {}
    for row in rows:
        try:
            sid = str(int(row[_COLUMNS["subject"]]))
            sex = str(row[_COLUMNS["sex"]] or "").strip().upper()[:1]
            subjects[sid] = {
                "sbp": float(row[_COLUMNS["sbp"]]),
                "dbp": float(row[_COLUMNS["dbp"]]),
                "age": float(row[_COLUMNS["age"]]) if row[_COLUMNS["age"]] is not None else np.nan,
                "sex": sex if sex in ("M", "F") else "",
            }
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{root / SHEET}: bad row {row} ({exc})") from exc
    return subjects


def _union_groups(shared: list[tuple[str, str]], subjects: list[str]) -> dict[str, str]:
    """Subjects linked by a shared segment → one group name ("23+24")."""
    parent = {s: s for s in subjects}

    def root(s: str) -> str:
        while parent[s] != s:
            s = parent[s]
        return s

    for a, b in shared:
        parent[root(b)] = root(a)
    members: dict[str, list[str]] = {}
    for s in subjects:
        members.setdefault(root(s), []).append(s)
    return {s: "+".join(sorted(members[root(s)], key=int)) for s in subjects}


def load_ppg_bp(path: str | Path, fs: float = 125.0, window_s: float = 2.1, hop_s: float | None = None) -> WindowSet:
    """Load PPG-BP resampled to `fs` Hz and cut into `window_s` windows every `hop_s` (default: no overlap)."""
    root = find_root(path)
    subjects = read_subjects(root)
    files = sorted(
        (p for p in (root / SEGMENTS).iterdir() if _FILE.match(p.name)),
        key=lambda p: tuple(int(v) for v in _FILE.match(p.name).groups()),
    )
    if not files:
        raise DatasetError(f"{root / SEGMENTS}: no '<subject>_<k>.txt' segment files")

    seen: dict[str, str] = {}  # md5 → first file's subject
    shared: list[tuple[str, str]] = []
    kept: list[tuple[Path, str]] = []
    for p in files:
        sid = _FILE.match(p.name).group(1)
        if sid not in subjects:
            raise DatasetError(f"{p}: subject {sid} is not in {SHEET}")
        digest = hashlib.md5(p.read_bytes()).hexdigest()
        if digest in seen:
            log.info("PPG-BP: dropping %s, byte-identical to a segment of subject %s", p.name, seen[digest])
            if seen[digest] != sid:
                shared.append((seen[digest], sid))
            continue
        seen[digest] = sid
        kept.append((p, sid))

    groups = _union_groups(shared, sorted({sid for _, sid in kept} | {b for _, b in shared}, key=int))
    length, hop = window_grid(window_s, hop_s, fs)
    rows = []
    for p, sid in kept:
        x = recording_windows(read_segment(p), FS_HZ, fs, length, hop)
        if len(x):
            rows.append({"x": x, **subjects[sid], "subject": sid, "group": groups[sid], "record": p.stem})
    return build_window_set(rows, fs, length, source="ppg_bp")
