"""Dataset: the common form every loader yields — fixed-length raw windows at one rate, with labels and subjects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import numpy as np

from p2p_stream.ppg.preprocess import cut_windows, resample, window_samples


@dataclass
class WindowSet:
    """N raw PPG windows of equal length at `fs` Hz, one row per window.

    `group` is what splits must keep together: normally the subject, but subjects that share a
    recording (PPG-BP's 23_3 = 24_1) share one group so they can never straddle a split.
    """

    x: np.ndarray  # (N, T) float32, raw PPG (resampled, not filtered)
    fs: float  # Hz
    sbp: np.ndarray  # (N,) float32 mmHg, NaN when unknown
    dbp: np.ndarray  # (N,) float32 mmHg
    subject: np.ndarray  # (N,) str
    group: np.ndarray  # (N,) str, the unit of every split
    record: np.ndarray  # (N,) str, the source file or segment the window came from
    age: np.ndarray  # (N,) float32 years, NaN when unknown
    sex: np.ndarray  # (N,) str: "M", "F" or "" when unknown
    source: str  # dataset name
    dataset: np.ndarray | None = None  # (N,) str, each window's dataset (a pooled set mixes them); default: source

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.dataset is None:
            self.dataset = np.full(n, self.source.split(":")[0], dtype=object).astype(str)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and len(value) != n:
                raise ValueError(f"WindowSet.{f.name} has {len(value)} rows, x has {n}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def window_s(self) -> float:
        return self.x.shape[1] / self.fs

    @property
    def n_subjects(self) -> int:
        return len(np.unique(self.subject))

    def subset(self, index: np.ndarray) -> WindowSet:
        """Rows `index` (boolean mask or integer positions) as a new set."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in kw.items():
            if isinstance(value, np.ndarray):
                kw[name] = value[index]
        return WindowSet(**kw)

    def fingerprint(self) -> str:
        """SHA-256 over samples, labels and subjects: two sets with the same fingerprint hold the same data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        h.update(np.nan_to_num(np.stack([self.sbp, self.dbp]).astype(np.float32), nan=-1).tobytes())
        h.update("\0".join(self.subject.tolist()).encode())
        return h.hexdigest()

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self)} windows of {self.window_s:.1f} s at {self.fs:g} Hz "
            f"from {self.n_subjects} subjects"
        )


def build_window_set(rows: list[dict], fs: float, length: int, source: str) -> WindowSet:
    """Assemble a WindowSet from per-recording dicts with keys x (n, length) and the per-window labels."""
    if not rows:
        raise ValueError(f"{source}: no windows of {length} samples could be cut")

    def column(key: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.full(len(r["x"]), r[key], dtype=dtype) for r in rows])

    return WindowSet(
        x=np.concatenate([r["x"] for r in rows]).astype(np.float32).reshape(-1, length),
        fs=fs,
        sbp=column("sbp", np.float32),
        dbp=column("dbp", np.float32),
        subject=column("subject", object).astype(str),
        group=column("group", object).astype(str),
        record=column("record", object).astype(str),
        age=column("age", np.float32),
        sex=column("sex", object).astype(str),
        source=source,
    )


def window_grid(window_s: float, hop_s: float | None, fs: float) -> tuple[int, int]:
    """(length, hop) in samples at `fs` Hz for windows of `window_s` every `hop_s` (None or 0: no overlap)."""
    length = window_samples(window_s, fs)
    return length, (window_samples(hop_s, fs) if hop_s else length)


def recording_windows(x: np.ndarray, fs_in: float, fs: float, length: int, hop: int) -> np.ndarray:
    """One recording at `fs_in` Hz → its windows (n, length) at `fs` Hz: every loader's resample-then-cut."""
    return cut_windows(resample(x, fs_in, fs), length, hop)
