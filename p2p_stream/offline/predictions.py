"""Predictions: the table every evaluation is computed from — one row per scored window, written as CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError

# Column → dtype. `*_base` is the mean predictor fitted on the same training rows as the model.
COLUMNS = {
    "fold": int,
    "subject": str,
    "group": str,
    "record": str,
    "sbp_ref": float,
    "dbp_ref": float,
    "sbp_pred": float,
    "dbp_pred": float,
    "sbp_base": float,
    "dbp_base": float,
}


def new_table() -> dict[str, list]:
    return {c: [] for c in COLUMNS}


def extend(table: dict[str, list], **columns) -> None:
    n = len(next(iter(columns.values())))
    for name in COLUMNS:
        values = columns[name]
        if len(values) != n:
            raise ValueError(f"column {name} has {len(values)} values, expected {n}")
        table[name].extend(np.asarray(values).tolist())


def add_scored(table: dict[str, list], data, rows: np.ndarray, pred: np.ndarray, stats: dict, fold: int) -> None:
    """Append the windows `rows` of a prepared set (`training.Prepared`), their predictions (N, 2) and the mean
    predictor (the training label means in `stats`)."""
    ws, n = data.windows, len(rows)
    extend(
        table,
        fold=[fold] * n,
        subject=ws.subject[rows],
        group=ws.group[rows],
        record=ws.record[rows],
        sbp_ref=data.y[rows, 0],
        dbp_ref=data.y[rows, 1],
        sbp_pred=pred[:, 0],
        dbp_pred=pred[:, 1],
        sbp_base=[stats["sbp_mean"]] * n,
        dbp_base=[stats["dbp_mean"]] * n,
    )


def as_arrays(table: dict[str, list]) -> dict[str, np.ndarray]:
    return {c: np.asarray(table[c], dtype=object if t is str else t) for c, t in COLUMNS.items()}


def write_predictions(path: Path, table: dict[str, list]) -> None:
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in zip(*(table[c] for c in COLUMNS)):
            w.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in row])


def read_predictions(path: Path) -> dict[str, list]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: predictions file not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: not a predictions table, missing columns {missing}")
        table = new_table()
        for line, row in enumerate(reader, start=2):
            try:
                for c, t in COLUMNS.items():
                    table[c].append(t(row[c]))
            except ValueError as exc:
                raise DatasetError(f"{path}:{line}: {exc}") from exc
    return table
