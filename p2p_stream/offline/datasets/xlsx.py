"""Dataset helper: read a sheet of an .xlsx file as a list of dicts keyed by its header row."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from p2p_stream.errors import DatasetError


def read_sheet(path: Path, header_row: int, required: list[str]) -> list[dict]:
    """Rows below `header_row` (0-based) of the first sheet, keyed by header; checks `required` columns exist."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for a non-xlsx file
        raise DatasetError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    try:
        rows = list(book[book.sheetnames[0]].iter_rows(values_only=True))
    finally:
        book.close()
    if len(rows) <= header_row:
        raise DatasetError(f"{path}: expected a header on row {header_row + 1}, the sheet has {len(rows)} rows")
    header = [str(h).strip() if h is not None else "" for h in rows[header_row]]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {[h for h in header if h]}")
    return [dict(zip(header, r)) for r in rows[header_row + 1 :] if any(v is not None for v in r)]
