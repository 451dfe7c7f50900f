"""Dataset: every cuff-labelled set on hand in one `WindowSet`, each window tagged with its dataset.

Windows are cut at one rate and length for all (the model's crop), so the sets differ only in what the sensors
and people differ in. Subject and group names get the dataset as a prefix (PPG-BP's "23" is not the
four-wavelength set's "23"). A subject contributes at most `max_windows_per_subject` windows, evenly spread
over its recordings, so a 6-minute session does not outweigh a 2-second segment a hundredfold; balancing the
datasets themselves is the trainer's job (`balanced_weights`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from p2p_stream.offline.datasets.windows import WindowSet

POOL = ("ppg_bp", "four_wavelength", "aist_wrist")


def _even_subset(ws: WindowSet, max_per_subject: int) -> WindowSet:
    keep = []
    for s in np.unique(ws.subject):
        rows = np.flatnonzero(ws.subject == s)
        if len(rows) > max_per_subject:
            rows = rows[np.linspace(0, len(rows) - 1, max_per_subject).round().astype(int)]
        keep.append(rows)
    return ws.subset(np.sort(np.concatenate(keep)))


def concat(sets: list[WindowSet], source: str = "pool") -> WindowSet:
    """Stack window sets of one rate and length."""
    if len({(w.fs, w.x.shape[1]) for w in sets}) != 1:
        raise ValueError("window sets must share the rate and window length to be pooled")
    kw = {}
    for f in fields(WindowSet):
        first = getattr(sets[0], f.name)
        kw[f.name] = np.concatenate([getattr(w, f.name) for w in sets]) if isinstance(first, np.ndarray) else first
    kw["source"] = source
    return WindowSet(**kw)


def load_pool(
    path: str | Path,
    names: tuple[str, ...] = POOL,
    fs: float = 125.0,
    window_s: float = 2.1,
    max_windows_per_subject: int = 40,
    exclude_subjects: tuple[str, ...] = (),
) -> WindowSet:
    """Load each dataset in `names` from `path` (e.g. ../shared/data) and pool them, without the subjects named
    in `exclude_subjects` ("ppg_bp:116": kept out for the demo, which should show people the model never saw)."""
    from p2p_stream.offline.datasets import load_dataset  # the registry imports this module

    sets = []
    for name in names:
        options: dict = {"fs": fs, "window_s": window_s}
        ws = load_dataset(name, path, **options)
        ws = _even_subset(ws, max_windows_per_subject)
        ws.subject = np.char.add(f"{name}:", ws.subject.astype(str)).astype(str)
        ws.group = np.char.add(f"{name}:", ws.group.astype(str)).astype(str)
        ws.dataset = np.full(len(ws), name).astype(str)
        sets.append(ws.subset(~np.isin(ws.subject, list(exclude_subjects))))
    return concat(sets, source="pool:" + "+".join(names))


def balanced_weights(ws: WindowSet) -> np.ndarray:
    """(N,) weights summing to 1 per dataset and equal per subject within it: each dataset counts the same."""
    w = np.zeros(len(ws))
    datasets = np.unique(ws.dataset)
    for d in datasets:
        rows = ws.dataset == d
        subjects = np.unique(ws.subject[rows])
        for s in subjects:
            m = rows & (ws.subject == s)
            w[m] = 1.0 / (len(datasets) * len(subjects) * m.sum())
    return w
