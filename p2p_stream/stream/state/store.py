"""State store: what an operator tells the daemon (calibrations, device facts) kept on disk, so a restart, a crash
or an idle eviction does not lose it. One embedded SQLite file (`state.path`) in WAL mode, which the daemons of a
cluster on one machine share: a device taken over from a dead daemon gets its calibration from the same file, and
each daemon start gets its own boot number from it (the estimates' `epoch` on the wire). (SQLite's locks need one
machine's filesystem: not NFS.)

Tables:

- ``calibrations``: one row per cuff reading: device, sbp, dbp, t_cal (device clock), the reference (median of the
  device's own estimates, NULL until formed), the model it was made for, created (wall time). At most two per
  device stay: the one that applies (reference set) and a newer one waiting for its reference.
- ``device_facts``: device, age, sex, updated: the subject facts (`meta`) last sent, for a device that comes back
  without them.
- ``audit``: append-only, one row per `calibrate` and `forget` that changed state: time, cmd, device, values (JSON),
  outcome, client (its CURVE public key, z85; NULL without CURVE). Refused requests change nothing and are not kept.
- ``boots``: one row per daemon start; its number is the estimates' ``epoch``.

Writes made before a control reply (`calibrate`, `forget`) are one transaction with their audit row, committed with
synchronous=FULL, so they are on disk before the client hears ok (or the client hears why not, and nothing
changed); the others (a reference refined, facts changed) commit with synchronous=NORMAL, which survives a crash of
the daemon (not of the machine) and costs no fsync on the worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.ingest.ring_buffer import DeviceStream, PushResult
from p2p_stream.wire.protocol import Ingest

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 2000  # how long a write waits for another daemon's on a shared file
SCHEMA = """
CREATE TABLE IF NOT EXISTS boots (
    epoch INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, model TEXT NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calibrations (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, sbp REAL NOT NULL, dbp REAL NOT NULL, t_cal REAL NOT NULL,
    ref_sbp REAL, ref_dbp REAL, model TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS calibrations_device ON calibrations (device);
CREATE TABLE IF NOT EXISTS device_facts (
    device TEXT PRIMARY KEY, age REAL, sex TEXT, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, cmd TEXT NOT NULL, device TEXT NOT NULL, "values" TEXT NOT NULL,
    outcome TEXT NOT NULL, client TEXT);
"""


class StoreError(P2PError):
    """A write the client waits for (calibrate, forget) did not reach the disk; nothing of it was applied."""


class Saved(NamedTuple):
    """One stored cuff reading: `reference` is None while it waits for the estimates that form it."""

    key: int
    cuff: tuple[float, float]
    t: float
    reference: tuple[float, float] | None


class StateStore:
    """The daemon's SQLite file; thread-safe (the control thread and the inference worker both write)."""

    def __init__(self, path: str | Path, model: str) -> None:
        """Open (or create) the store at `path` for a daemon running `model`, take its lock and record this start
        (`boot`, the estimates' `epoch`). ConfigError, naming the file and what to do, if it cannot be used."""
        self.path, self.model = Path(path), model
        self._lock = threading.RLock()
        self.warn = RateLimitedLog(log, period_s=10.0)
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise ConfigError(f"state.path: {self.path} is not readable and writable here (its permissions, or a "
                              "read-only filesystem); fix that or point state.path at another file")  # fmt: skip
        try:
            self.db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"state.path: cannot open {self.path} ({exc}); does its folder exist?") from exc
        try:
            # WAL: the daemons of a cluster on one machine share the file (each writes the devices it owns); a
            # writer waits up to busy_timeout for another's commit, which is one small transaction.
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL mode")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check found damage")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"state.path: {self.path} was written by a newer p2p-daemon (schema {version}, this one reads "
                    f"{SCHEMA_VERSION}); upgrade, or point state.path elsewhere"
                )
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            cur = self.db.execute(
                "INSERT INTO boots (started, model, pid) VALUES (?, ?, ?)", (time.time(), model, os.getpid())
            )
            self.boot = int(cur.lastrowid)
            self.db.execute("COMMIT")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except ConfigError:
            self.db.close()
            raise
        except sqlite3.Error as exc:
            self.db.close()
            text = str(exc)
            if "locked" in text or "busy" in text:
                why = "it stayed locked by another process; is something other than p2p-daemons holding it?"
            elif "readonly" in text or "read-only" in text:
                why = "it is read-only; fix its (or its folder's) permissions or point state.path elsewhere"
            else:
                why = f"it is not a usable state store ({text}); move it aside or point state.path elsewhere"
            raise ConfigError(f"state.path: cannot use {self.path}: {why}") from exc
        self._log_other_models()

    def _log_other_models(self) -> None:
        """Once per start and device: a calibration made for another model is not applied."""
        rows = self.db.execute(
            "SELECT device, model FROM calibrations WHERE model != ? GROUP BY device ORDER BY device", (self.model,)
        ).fetchall()
        for device, other in rows:
            log.warning(
                "calibration for %s was made for model %s, not %s: device uncalibrated until recalibrated",
                device, other, self.model,
            )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ---------------------------------------------------------------- calibrations

    def add_calibration(self, device: str, cuff: tuple[float, float], t_cal: float, client: str | None) -> int:
        """A new cuff reading (reference not yet known) → its key, saved with its audit row in one synchronous
        commit: on disk before the client hears ok. Older readings of the device that wait for a reference, or were
        made for another model, are superseded. StoreError (nothing written) if the disk refuses."""
        values = {"sbp": cuff[0], "dbp": cuff[1], "t_cal": t_cal}
        with self._transaction("calibrate"):
            self.db.execute(
                "DELETE FROM calibrations WHERE device = ? AND (ref_sbp IS NULL OR model != ?)", (device, self.model)
            )
            cur = self.db.execute(
                "INSERT INTO calibrations (device, sbp, dbp, t_cal, model, created) VALUES (?, ?, ?, ?, ?, ?)",
                (device, cuff[0], cuff[1], t_cal, self.model, time.time()),
            )
            self._audit("calibrate", device, values, client)
            return int(cur.lastrowid)

    def set_reference(self, device: str, key: int, reference: tuple[float, float]) -> None:
        """Reading `key` formed (or refined) its reference; the device's older readings no longer apply. Called by
        `Calibrations` under its lock: a failure is logged (by `_transaction`), never raised into the worker."""
        with suppress(StoreError), self._transaction("reference", durable=False):
            self.db.execute(
                "UPDATE calibrations SET ref_sbp = ?, ref_dbp = ? WHERE id = ?", (reference[0], reference[1], key)
            )
            self.db.execute("DELETE FROM calibrations WHERE device = ? AND id < ?", (device, key))

    def recall(self, device: str) -> tuple[Saved | None, Saved | None]:
        """The device's stored (active, pending) readings for this model: the latest with a reference, and a newer
        one still waiting for its reference."""
        try:
            with self._lock:
                rows = self.db.execute(
                    "SELECT id, sbp, dbp, t_cal, ref_sbp, ref_dbp FROM calibrations WHERE device = ? AND model = ? "
                    "ORDER BY id",
                    (device, self.model),
                ).fetchall()
        except sqlite3.Error as exc:
            self._failed("recall", exc)
            return None, None
        active = pending = None
        for key, sbp, dbp, t, ref_sbp, ref_dbp in rows:
            if ref_sbp is not None:
                active, pending = Saved(key, (sbp, dbp), t, (ref_sbp, ref_dbp)), None
            else:
                pending = Saved(key, (sbp, dbp), t, None)
        return active, pending

    # ---------------------------------------------------------------- device facts

    def save_facts(self, device: str, meta: dict) -> None:
        try:
            with self._lock:
                self.db.execute(
                    "INSERT OR REPLACE INTO device_facts (device, age, sex, updated) VALUES (?, ?, ?, ?)",
                    (device, meta.get("age"), meta.get("sex"), time.time()),
                )
        except sqlite3.Error as exc:
            self._failed("facts", exc)

    def facts(self, device: str) -> dict | None:
        try:
            with self._lock:
                row = self.db.execute("SELECT age, sex FROM device_facts WHERE device = ?", (device,)).fetchone()
        except sqlite3.Error as exc:
            self._failed("facts", exc)
            return None
        if row is None:
            return None
        kept = {k: v for k, v in zip(("age", "sex"), row) if v is not None}
        return kept or None

    # ---------------------------------------------------------------- forget, audit

    def forget(self, device: str, client: str | None) -> None:
        """The device's calibrations and facts gone for good, with its audit row, in one synchronous commit.
        StoreError (nothing deleted) if the disk refuses."""
        with self._transaction("forget"):
            self.db.execute("DELETE FROM calibrations WHERE device = ?", (device,))
            self.db.execute("DELETE FROM device_facts WHERE device = ?", (device,))
            self._audit("forget", device, {}, client)

    def _audit(self, cmd: str, device: str, values: dict, client: str | None) -> None:
        """One audit row, inside the caller's transaction: the table is only ever appended to."""
        self.db.execute(
            'INSERT INTO audit (time, cmd, device, "values", outcome, client) VALUES (?, ?, ?, ?, ?, ?)',
            (time.time(), cmd, device, json.dumps(values, sort_keys=True), "ok", client),
        )

    def history(self, device: str, limit: int) -> list[dict]:
        """The device's latest `limit` audit rows, oldest first. StoreError if the store cannot be read."""
        try:
            with self._lock:
                rows = self.db.execute(
                    'SELECT time, cmd, "values", outcome, client FROM audit WHERE device = ? ORDER BY id DESC LIMIT ?',
                    (device, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: cannot read the audit ({exc})") from exc
        return [
            {"time": t, "cmd": cmd, "values": json.loads(values), "outcome": outcome, "client": client}
            for t, cmd, values, outcome, client in reversed(rows)
        ]

    @contextmanager
    def _transaction(self, what: str, durable: bool = True) -> Iterator[None]:
        """One write, committed or rolled back whole (a failure raised as StoreError, and logged). `durable`: a
        write the client waits for, committed with synchronous=FULL (it and every write before it are on disk
        after); else with NORMAL, which survives a crash of the daemon and costs the worker no fsync."""
        with self._lock:
            try:
                if durable:
                    self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._failed(what, exc)
                raise StoreError(f"state store {self.path} could not save it ({exc}); nothing was changed") from exc
            finally:
                with suppress(sqlite3.Error):
                    self.db.execute("PRAGMA synchronous=NORMAL")

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        self.warn.log(logging.ERROR, f"state_{what}", "state store %s: could not use %s: %s", self.path, what, exc)


class RememberingDeviceTable(DeviceTable):
    """A `DeviceTable` that keeps each device's facts (`meta`) in a `StateStore`: saved when they change, given back
    to a stream that starts without them (after a restart, or an eviction)."""

    def __init__(self, store: StateStore, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self._saved: dict[str, dict | None] = {}  # facts as stored, for the devices in the table

    def _create(self, msg: Ingest, arrival: float) -> DeviceStream:
        stream = super()._create(msg, arrival)
        stream.meta = self._saved[msg.device] = self.store.facts(msg.device)  # a message's own meta replaces them
        return stream

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        result = super().push(msg, arrival)
        if msg.meta is not None and result.dropped is None and self._saved.get(msg.device) != msg.meta:
            self.store.save_facts(msg.device, msg.meta)
            self._saved[msg.device] = msg.meta
        return result

    def forget(self, device: str) -> bool:
        self._saved.pop(device, None)  # out of the table only: the store keeps them (Daemon.forget deletes them)
        return super().forget(device)
