"""Dataset: the replay CSV of the wire contract — long format, one row per sample:
``device,t,ppg[,ecg][,sbp_ref,dbp_ref]``.

``t`` is seconds from the start of that device's recording and gives the sampling rate. A CSV
without ``device`` is one device; a single column of numbers needs `fs`.

An optional ``ecg`` column is the same device's ECG, sample for sample with its PPG (on the same clock): replay sends
it on the device's ``ecg.<device>`` topic; a blank cell is a hole.

Optional ``age`` (years) and ``sex`` (``M``/``F``) columns are the device's subject facts, which our replay tool
sends as the ingest ``meta``; other clients may ignore them like any extra column. A blank cell is unknown; a
device's non-blank values must agree across its rows.

A jump in ``t`` (more than 1.5 sample steps) marks a join: the samples after it were recorded apart from those before
(PPG-BP's three 2.1 s segments of a subject, for one). No window may span it: replay sends it as a time gap, which
breaks the daemon's run, and offline windows are cut within each segment.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError
from p2p_stream.model.demographics import MAX_AGE_Y
from p2p_stream.offline.datasets.windows import WindowSet, build_window_set, recording_windows, window_grid

DEFAULT_DEVICE = "device0"


@dataclass
class Recording:
    """One device's samples from a replay CSV."""

    device: str
    fs: float  # Hz
    ppg: np.ndarray  # (T,) float64
    sbp_ref: np.ndarray  # (T,) float64, NaN where absent
    dbp_ref: np.ndarray  # (T,)
    age: float = np.nan  # years, NaN when unknown
    sex: str = ""  # "M", "F" or "" when unknown
    starts: tuple[int, ...] = (0,)  # the first sample of each segment (recorded apart: no window spans a join)
    ecg: np.ndarray | None = None  # (T,) float64 at the same times as `ppg`, NaN where blank; None without a column

    def segments(self) -> list[tuple[int, int]]:
        """(start, stop) sample indices of each segment, in order."""
        return list(zip(self.starts, (*self.starts[1:], self.ppg.size)))

    def longest_segment_s(self) -> float:
        return max(stop - start for start, stop in self.segments()) / self.fs

    def meta(self) -> dict | None:
        """The ingest `meta` for this device: only the facts that are known; None when none is."""
        meta: dict = {}
        if np.isfinite(self.age):
            meta["age"] = int(self.age) if float(self.age).is_integer() else float(self.age)
        if self.sex:
            meta["sex"] = self.sex
        return meta or None


MAX_AGE = MAX_AGE_Y  # the model's limit: an older "age" is a typo
JOIN_STEPS = 1.5  # a step in `t` longer than this many sample periods is a join between segments
JOIN_GAP_S = 1.0  # how far apart `write_replay_csv` puts segments in `t`
SEXES = ("M", "F")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_age(text: str, where: str) -> float:
    if text == "":
        return np.nan
    try:
        age = float(text)
    except ValueError:
        age = np.nan
    if not 0.0 < age <= MAX_AGE:  # NaN fails this too
        raise DatasetError(f"{where}: age {text!r} is not a number of years (0–{MAX_AGE:g}) or blank")
    return age


def _parse_sex(text: str, where: str) -> str:
    sex = text.upper()
    if sex not in ("", *SEXES):
        raise DatasetError(f"{where}: sex {text!r} must be M, F or blank")
    return sex


def read_replay_csv(path: str | Path, fs: float | None = None) -> list[Recording]:
    """Read every device's recording, in order of first appearance, with its subject's age and sex if given."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"{path}: empty file")
    header = [c.strip() for c in rows[0]]
    if len(header) == 1 and _is_number(header[0]) or header == ["ppg"]:
        if fs is None:
            raise DatasetError(f"{path}: a single column of samples has no time stamps; give its sampling rate (--fs)")
        body = rows[1:] if header == ["ppg"] else rows
        try:
            ppg = np.array([float(r[0]) for r in body])
        except ValueError as exc:
            raise DatasetError(f"{path}: non-numeric sample ({exc})") from exc
        nan = np.full(ppg.size, np.nan)
        return [Recording(DEFAULT_DEVICE, float(fs), ppg, nan, nan.copy())]
    if "ppg" not in header or ("t" not in header and fs is None):
        raise DatasetError(
            f"{path}: header must name 'ppg' and 't' (and optionally device, ecg, sbp_ref, dbp_ref, age, sex); got "
            f"{header}"
        )
    names = ("device", "t", "ppg", "sbp_ref", "dbp_ref", "ecg", "age", "sex")
    col = {name: header.index(name) for name in names if name in header}
    per_device: dict[str, list[list[float]]] = {}
    # The device's subject facts: (age, sex), and the line that first stated each, for error messages.
    facts: dict[str, dict[str, tuple[float | str, int]]] = {}
    for line, r in enumerate(rows[1:], start=2):
        try:
            device = r[col["device"]].strip() if "device" in col else DEFAULT_DEVICE
            values = [
                float(r[col[k]]) if k in col and r[col[k]].strip() != "" else np.nan
                for k in ("t", "ppg", "sbp_ref", "dbp_ref", "ecg")
            ]
            cells = {k: r[col[k]].strip() if k in col and col[k] < len(r) else "" for k in ("age", "sex")}
        except (ValueError, IndexError) as exc:
            raise DatasetError(f"{path}:{line}: malformed row {r} ({exc})") from exc
        per_device.setdefault(device, []).append(values)
        known = facts.setdefault(device, {})
        for key, parse in (("age", _parse_age), ("sex", _parse_sex)):
            if cells[key] == "":
                continue
            value = parse(cells[key], f"{path}:{line}")
            if key not in known:
                known[key] = (value, line)
            elif known[key][0] != value:
                first, first_line = known[key]
                raise DatasetError(
                    f"{path}:{line}: device {device!r} has {key} {cells[key]!r} here but {first!r} on line "
                    f"{first_line}; a device's {key} must be the same on all its rows"
                )
    recordings = []
    for device, values in per_device.items():
        a = np.array(values)
        t = a[:, 0]
        starts: tuple[int, ...] = (0,)
        if "t" in col:
            steps = np.diff(t)
            if len(steps) == 0 or not (steps > 0).all():
                raise DatasetError(f"{path}: device {device!r}: t must increase strictly, sample by sample")
            rate = float(1.0 / np.median(steps))
            starts = (0, *(int(i) + 1 for i in np.flatnonzero(steps > JOIN_STEPS / rate)))
        else:
            rate = float(fs)
        known = facts[device]
        age = float(known["age"][0]) if "age" in known else np.nan
        sex = str(known["sex"][0]) if "sex" in known else ""
        ecg = a[:, 4] if "ecg" in col and np.isfinite(a[:, 4]).any() else None  # a device with blank cells only: none
        recordings.append(Recording(device, rate, a[:, 1], a[:, 2], a[:, 3], age, sex, starts, ecg))
    return recordings


def write_replay_csv(path: str | Path, recordings: list[Recording]) -> None:
    """Write recordings in the contract's long format (the inverse of `read_replay_csv`).

    ``age`` and ``sex`` columns are written (on every row, blank where unknown) when any recording has them; an
    ``ecg`` column when any has an ECG.
    """
    facts = any(np.isfinite(rec.age) or rec.sex for rec in recordings)
    ecg = any(rec.ecg is not None for rec in recordings)
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device", "t", "ppg", *(["ecg"] * ecg), "sbp_ref", "dbp_ref"] + (["age", "sex"] if facts else []))
        for rec in recordings:
            t = np.arange(rec.ppg.size) / rec.fs
            for start in rec.starts[1:]:  # each join: the later samples a gap later
                t[start:] += JOIN_GAP_S
            extra = ["" if np.isnan(rec.age) else f"{rec.age:g}", rec.sex] if facts else []
            for i in range(rec.ppg.size):
                refs = ["" if np.isnan(v) else f"{v:.2f}" for v in (rec.sbp_ref[i], rec.dbp_ref[i])]
                e = [] if not ecg else [""] if rec.ecg is None or np.isnan(rec.ecg[i]) else [f"{rec.ecg[i]:.6g}"]
                w.writerow([rec.device, f"{t[i]:.6f}", f"{rec.ppg[i]:.6g}", *e, *refs, *extra])


def load_replay_csv(
    path: str | Path,
    fs: float = 125.0,
    window_s: float = 10.0,
    hop_s: float | None = None,
    source_fs: float | None = None,
) -> WindowSet:
    """Windows of every device in a replay CSV; a window's label is the mean reference over its samples."""
    length, hop = window_grid(window_s, hop_s, fs)
    rows = []
    for rec in read_replay_csv(path, fs=source_fs):
        k = 0  # the device's window number, over its segments
        for start, stop in rec.segments():  # windows within each segment: none spans a join
            windows = recording_windows(rec.ppg[start:stop], rec.fs, fs, length, hop)
            sbp_ref, dbp_ref = rec.sbp_ref[start:stop], rec.dbp_ref[start:stop]
            for i, w in enumerate(windows):
                # Map the window's span back to the source rate to average its references.
                lo = int(i * hop * rec.fs / fs)
                hi = max(lo + 1, int((i * hop + length) * rec.fs / fs))
                with np.errstate(all="ignore"):
                    sbp = np.nanmean(sbp_ref[lo:hi]) if np.isfinite(sbp_ref[lo:hi]).any() else np.nan
                    dbp = np.nanmean(dbp_ref[lo:hi]) if np.isfinite(dbp_ref[lo:hi]).any() else np.nan
                rows.append(
                    {
                        "x": w[None],
                        "sbp": sbp,
                        "dbp": dbp,
                        "age": rec.age,
                        "sex": rec.sex,
                        "subject": rec.device,
                        "group": rec.device,
                        "record": f"{rec.device}:{k}",
                    }
                )
                k += 1
    return build_window_set(rows, fs, length, source=f"replay:{Path(path).name}")
