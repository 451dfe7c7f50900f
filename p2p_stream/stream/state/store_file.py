"""The state store's file: opened, checked and migrated, its schema, and the witness that tells when it was swapped.

A store cannot be replaced underneath the daemons that use it. Beside it lies a *witness*, ``<store>.witness``
(JSON: the store's random id and the highest start number, `epoch`, begun on it), rewritten at every start. At the
next start:

- the store missing while its witness is there → refused: it was deleted or moved;
- a store with another id → refused: it was replaced by another store;
- a store whose latest start is older than the witness's → refused: an older copy (restored from a backup), which
  would bring back forgotten calibrations and repeat epochs.

Each case names what to do; none advises deleting anything. `state.adopt = true` takes such a store on purpose for
one start: its epochs then go on after the witness's, so an epoch is never used twice. While a daemon runs, every
write it waits for first checks that the path still leads to the file it opened (not unlinked, not replaced) and
that the file still holds this daemon's own start (not overwritten by a copy): if not, it refuses the write, and
every later one, naming why.

A full disk is told apart from a damaged file: at start-up the first write (the start's row) failing for lack of
space says so, with the free space, and that the file is intact.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
from pathlib import Path

from p2p_stream.disk import disk_full, free_text
from p2p_stream.errors import ConfigError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 2000  # how long a write waits for another daemon's on a shared file
SESSION_BLOCK = 1 << 20  # session ids each daemon start reserves at once (stream/state/sessions.py)
SCHEMA = """
CREATE TABLE IF NOT EXISTS boots (
    epoch INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, model TEXT NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, wearer TEXT, started REAL NOT NULL, seen REAL NOT NULL,
    last_seq INTEGER NOT NULL, last_t REAL NOT NULL, owner INTEGER NOT NULL,
    closed REAL);  -- when another session began on the device: no longer resumed by position, only by its wearer key
CREATE INDEX IF NOT EXISTS sessions_device ON sessions (device, wearer);
CREATE TABLE IF NOT EXISTS calibrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, sbp REAL NOT NULL, dbp REAL NOT NULL,
    t_cal REAL NOT NULL, ref_sbp REAL, ref_dbp REAL, model TEXT NOT NULL, created REAL NOT NULL, session INTEGER);
CREATE INDEX IF NOT EXISTS calibrations_device ON calibrations (device);
CREATE TABLE IF NOT EXISTS facts (session INTEGER PRIMARY KEY, age REAL, sex TEXT, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, cmd TEXT NOT NULL, device TEXT NOT NULL, "values" TEXT NOT NULL,
    outcome TEXT NOT NULL, client TEXT, epoch INTEGER, session INTEGER);
CREATE INDEX IF NOT EXISTS audit_device ON audit (device, id);
"""
# Schema 1 (before wearer sessions): calibrations and facts per device, an audit without epoch or session. Its
# calibrations cannot be tied to a wearer: they stay for the record (session NULL) and never apply again.
MIGRATE_1 = (
    "ALTER TABLE calibrations ADD COLUMN session INTEGER",
    "ALTER TABLE audit ADD COLUMN epoch INTEGER",
    "ALTER TABLE audit ADD COLUMN session INTEGER",
)
# `sessions.closed` came after the first schema-2 files were written (CREATE … IF NOT EXISTS leaves an existing
# table as it was, so such a file lacked it and every session save failed): added where missing, at every open. Not
# a new schema version: a daemon of the first schema-2 build still opens the file, and ignores the column.
ADDED_COLUMNS = {"sessions": (("closed", "REAL"),)}


def add_missing_columns(db: sqlite3.Connection) -> None:
    """The columns a store of an earlier schema may lack (`ADDED_COLUMNS`), added; in the caller's transaction."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


FULL_BELOW_BYTES = 64 * 1024  # an I/O error on a filesystem with less free than this is taken for a full disk


class Witness:
    """``<store>.witness``: the store's id and the highest epoch begun on it, outside the store."""

    def __init__(self, store: Path) -> None:
        self.path = store.with_name(store.name + ".witness")

    def read(self) -> tuple[str, int] | None:
        try:
            data = json.loads(self.path.read_text())
            return str(data["store"]), int(data["epoch"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"state.path: the witness {self.path} cannot be read ({exc}); it tells whether the store was "
                "swapped: restore it, or move it aside to trust the store as it is"
            ) from exc

    def write(self, store_id: str, epoch: int) -> None:
        """Atomically and never backwards: under a lock, the highest epoch of this store it or another daemon
        starting at the same moment saw; fsynced before it replaces the old one, so a crash leaves one or the other."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                seen = self.read()
            except ConfigError:
                seen = None
            if seen is not None and seen[0] == store_id:
                epoch = max(epoch, seen[1])
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps({"store": store_id, "epoch": epoch}))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


def check_missing(path: Path, witness: Witness, adopt: bool) -> None:
    """Refuse to create a store where one existed (its witness is there, the file is not)."""
    seen = witness.read()
    if seen is not None and not path.exists() and not adopt:
        raise ConfigError(
            f"state.path: {path} is missing, but a store was kept there (its witness {witness.path.name} says store "
            f"{seen[0][:8]}…, epoch {seen[1]}): it was deleted or moved while no daemon watched. Put it back, or "
            "restore your latest backup there and start once with state.adopt = true; to begin an empty store on "
            f"purpose, start once with state.adopt = true"
        )


def check_identity(path: Path, store_id: str, last_epoch: int, witness: tuple[str, int] | None) -> None:
    """Refuse a store that is not the one the witness saw, or an older copy of it."""
    if witness is None:
        return
    seen_id, seen_epoch = witness
    how = "start once with state.adopt = true to take it as it is (its epochs go on after the witness's)"
    if seen_id != store_id:
        raise ConfigError(
            f"state.path: {path} is not the store that was there (store {store_id[:8]}…, the witness saw "
            f"{seen_id[:8]}…): it was replaced. Put the right file back, or {how}"
        )
    if last_epoch < seen_epoch:
        raise ConfigError(
            f"state.path: {path} is an older copy of this store: its latest start is epoch {last_epoch}, but epoch "
            f"{seen_epoch} was started on it (restored from a backup?). Starting on it would bring back what was "
            f"forgotten since and repeat epochs. Put the current file back, or {how}"
        )


def explain(path: Path, exc: sqlite3.Error, quick_check: str | None) -> str:
    """Why a store could not be opened, and what to do: never to delete it."""
    text = str(exc)
    if disk_full(exc, path, FULL_BELOW_BYTES):
        intact = "the store itself is intact (quick_check ok)" if quick_check == "ok" else "nothing was written"
        return f"the disk holding it is full ({free_text(path)}); {intact}: free space there and start again"
    if "locked" in text or "busy" in text:
        return "it stayed locked by another process; is something other than p2p-daemons holding it?"
    if "readonly" in text or "read-only" in text:
        return "it is read-only; fix its (or its folder's) permissions or point state.path elsewhere"
    return (
        f"it is damaged ({text}). It still holds calibrations and the audit: keep the file; restore your latest "
        f"backup to that path (then start once with state.adopt = true), or recover it with "
        f"`sqlite3 {path} .recover`; or point state.path at another file to run without them"
    )


def new_store_id() -> str:
    return secrets.token_hex(16)


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None when there is none. OSError when it cannot be told (a
    folder this user may no longer search): the caller decides."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
