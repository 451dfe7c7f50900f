"""Reading a recording: `p2p record export` (CSV, Parquet) and `p2p record score` (against the references it carries).

Scoring reuses `p2p_stream.offline.metrics.regression_report`, the function every offline evaluation reports
with, on the ok estimates that carry a reference: MAE, ME ± SD (AAMI / ISO 81060-2), BHS grade, IEEE 1708 MAD,
per device and overall, beside a constant that always answers the mean of those references.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from p2p_stream.errors import ConfigError
from p2p_stream.offline import predictions
from p2p_stream.offline.metrics import regression_report
from p2p_stream.tools.common import parent_parser, setup_logging
from p2p_stream.tools.recording.db import TABLES, connect

TARGETS = ("sbp", "dbp")


def read_table(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[tuple]]:
    """Every row of `table` in the order written: (column names, rows), `id` first."""
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY id")
    return [d[0] for d in cur.description], cur.fetchall()


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bytes):  # ppg samples: the float32 values, space-separated, 9 digits (exact for float32)
        return " ".join(f"{v:.9g}" for v in np.frombuffer(value, dtype="<f4"))
    return value  # csv writes a float as repr: it reads back exactly


def write_csv(path: Path, columns: list[str], rows: list[tuple]) -> None:
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows([_csv_cell(v) for v in row] for row in rows)


def write_parquet(path: Path, columns: list[str], rows: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)}), path)


def export(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Write a table of a recording as CSV and/or Parquet.",
                                parents=[parent_parser()])  # fmt: skip
    p.add_argument("db", type=Path, help="the recording (p2p record --db)")
    p.add_argument("--table", choices=list(TABLES), default="estimates", help="which table (default %(default)s)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write it as CSV (blank: nil)")
    p.add_argument("--parquet", type=Path, metavar="FILE", help="write it as Parquet (needs pyarrow)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.csv is None and args.parquet is None:
        raise ConfigError("give --csv FILE, --parquet FILE or both")
    if args.parquet is not None and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("--parquet needs pyarrow, which is not installed: pip install pyarrow (or use --csv)")
    conn = connect(args.db, readonly=True)
    try:
        columns, rows = read_table(conn, args.table)
    finally:
        conn.close()
    for path, write in ((args.csv, write_csv), (args.parquet, write_parquet)):
        if path is not None:
            write(path, columns, rows)
            print(f"wrote {len(rows)} rows of {args.table} to {path}", flush=True)
    return 0


def scored_pairs(conn: sqlite3.Connection, window: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """The ok estimates with a reference: device (N,), pred (N, 2), ref (N, 2) mmHg; and how many estimates in all.

    `window`: each window's own value (`sbp_window`) instead of the smoothed `sbp` a client is shown.
    """
    s, d = ("sbp_window", "dbp_window") if window else ("sbp", "dbp")
    total = conn.execute("SELECT count(*) FROM estimates").fetchone()[0]
    rows = conn.execute(
        f"SELECT device, {s}, {d}, ref_sbp, ref_dbp FROM estimates WHERE ok = 1 AND {s} IS NOT NULL AND "
        f"{d} IS NOT NULL AND ref_sbp IS NOT NULL AND ref_dbp IS NOT NULL ORDER BY id"
    ).fetchall()
    rows = [r for r in rows if all(isinstance(v, (int, float)) and math.isfinite(v) for v in r[1:])]
    values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4)  # (N, 4)
    device = np.array([r[0] for r in rows], dtype=object)
    return {"device": device, "pred": values[:, :2], "ref": values[:, 2:]}, int(total)


def score(pairs: dict[str, np.ndarray]) -> dict:
    """Per target, overall and per device: the model's `regression_report` and the constant's, the constant being
    the mean of every scored reference (one number per target for all devices)."""
    device, pred, ref = pairs["device"], pairs["pred"], pairs["ref"]
    constant = ref.mean(axis=0)  # (2,)
    base = np.broadcast_to(constant, ref.shape)
    groups = {"all": np.ones(len(device), dtype=bool)} | {str(k): device == k for k in sorted(set(device))}
    out: dict = {"n_scored": int(len(device)), "n_devices": len(groups) - 1, "constant": {}}
    for i, t in enumerate(TARGETS):
        out["constant"][t] = float(constant[i])
        out[t] = {
            name: {
                "model": regression_report(pred[m, i], ref[m, i], base[m, i], device[m]),
                "constant": regression_report(base[m, i], ref[m, i], base[m, i], device[m]),
            }
            for name, m in groups.items()
        }
    return out


def score_lines(result: dict, total: int, column: str) -> list[str]:
    n = result["n_scored"]
    lines = [
        f"{n} of {total} estimates scored (ok, with a reference: {column}) from {result['n_devices']} device(s); "
        f"constant: the mean reference, SBP {result['constant']['sbp']:.1f} / DBP {result['constant']['dbp']:.1f} mmHg"
    ]
    for t in TARGETS:
        width = max(len(name) for name in result[t])
        lines += [
            "",
            f"{t.upper():<{width}}  {'n':>5}  {'MAE':>6}  {'ME ± SD':>15}  BHS ≤5/≤10/≤15 %  BHS  IEEE 1708  "
            "constant: MAE  ME ± SD",
        ]
        for name, r in result[t].items():
            m, c = r["model"], r["constant"]
            b = m["bhs"]
            lines.append(
                f"{name:<{width}}  {m['n_windows']:>5}  {m['mae']:>6.2f}  {m['me']:>+7.2f} ± {m['sd']:<5.2f}  "
                f"{b['le5']:>4.0f}/{b['le10']:>3.0f}/{b['le15']:>3.0f}       {m['bhs_grade']:<3}  "
                f"{m['ieee1708_grade']:<9}  {c['mae']:>13.2f}  {c['me']:+.2f} ± {c['sd']:.2f}"
            )
        m = result[t]["all"]["model"]
        lines.append(
            f"AAMI / ISO 81060-2 (|ME| ≤ 5, SD ≤ 8 mmHg, ≥ 85 subjects): {'pass' if m['aami_pass'] else 'fail'} "
            f"(|ME| {abs(m['me']):.2f}, SD {m['sd']:.2f}, {m['n_subjects']} device(s))"
        )
    return lines


def write_predictions(path: Path, pairs: dict[str, np.ndarray], result: dict) -> None:
    """The pairs as `p2p eval --predictions` reads them (a device is a subject; the constant is the mean predictor)."""
    n = len(pairs["device"])
    table = predictions.new_table()
    predictions.extend(
        table,
        fold=[0] * n,
        subject=pairs["device"],
        group=pairs["device"],
        record=pairs["device"],
        sbp_ref=pairs["ref"][:, 0],
        dbp_ref=pairs["ref"][:, 1],
        sbp_pred=pairs["pred"][:, 0],
        dbp_pred=pairs["pred"][:, 1],
        sbp_base=[result["constant"]["sbp"]] * n,
        dbp_base=[result["constant"]["dbp"]] * n,
    )
    predictions.write_predictions(path, table)


def score_main(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, parents=[parent_parser()])
    p.add_argument("db", type=Path, help="the recording (p2p record --db)")
    p.add_argument("--window", action="store_true",
                   help="score each window's own estimate (sbp_window) instead of the smoothed sbp")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="write every number as JSON")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="write the pairs as a predictions table, for `p2p eval --predictions FILE --out DIR`'s "
                   "report with plots")  # fmt: skip
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    conn = connect(args.db, readonly=True)
    try:
        pairs, total = scored_pairs(conn, args.window)
    finally:
        conn.close()
    if len(pairs["device"]) == 0:
        raise ConfigError(
            f"{args.db}: none of its {total} estimates is ok and carries a reference (ref_sbp, ref_dbp); record a "
            "stream whose ingest carries `ref`, e.g. p2p replay of a replay CSV with sbp_ref,dbp_ref"
        )
    result = score(pairs)
    column = "sbp_window/dbp_window" if args.window else "sbp/dbp"
    print("\n".join(score_lines(result, total, column)), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"n_estimates": total, "values": column, **result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.predictions is not None:
        write_predictions(args.predictions, pairs, result)
        print(f"wrote {args.predictions}; p2p eval --predictions {args.predictions} --out DIR gives the full report")
    return 0


ACTIONS: dict[str, Callable[[list[str], str], int]] = {"export": export, "score": score_main}
