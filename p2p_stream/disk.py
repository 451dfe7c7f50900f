"""Disk: whether a SQLite error means the disk is full, and how much room is left — one answer for the state store
(stream/state/) and the recorder (tools/recording/), which both wait out a full disk rather than die of it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the disk of `path`'s folder; None if it cannot be asked."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def io_error(exc: BaseException) -> bool:
    """Whether a SQLite error is an I/O error (SQLITE_IOERR and its extended codes)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF == sqlite3.SQLITE_IOERR if code is not None else "disk I/O error" in str(exc)


def disk_full(exc: BaseException, path: Path, low_bytes: int) -> bool:
    """SQLITE_FULL; or an I/O error on the file, its -wal or its -shm while its disk has less than `low_bytes` free
    (a full tmpfs fails WAL's shared memory as SQLITE_IOERR_SHMSIZE, even for a file closed cleanly); where the free
    space cannot be asked, SQLITE_IOERR_SHMSIZE alone."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # not from SQLite's C side (a misuse), or not SQLite's at all
        return "disk is full" in str(exc)
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    if code & 0xFF == sqlite3.SQLITE_IOERR:
        free = free_bytes(path)
        return code == sqlite3.SQLITE_IOERR_SHMSIZE if free is None else free < low_bytes
    return False


def free_text(path: Path) -> str:
    """The free space of the disk holding `path`, for a message ("12.0 KiB free")."""
    free = free_bytes(path / "_" if path.is_dir() else path)
    if free is None:
        return "free space unknown"
    return f"{free / 1024:.1f} KiB free" if free < 1024**2 else f"{free / 1024**2:.1f} MiB free"
