"""State store: what an operator tells the daemon (calibrations) and what a wearer's device said of them (facts), kept
on disk per wearer session, so a restart, a crash or an idle eviction does not lose it and a new wearer never gets
it. One embedded SQLite file (`state.path`, on by default) in WAL mode, which the daemons of a cluster on one machine
share; each daemon start gets its own number from it (the estimates' `epoch`). (SQLite's locks need one machine's
filesystem: not NFS.) Opening, the schema and the swap checks: store_file.py.

Tables:

- ``sessions``: one row per wearer session that has something to keep (stream/state/sessions.py): device, wearer
  key, where its stream was last seen (seq, device-clock time; refreshed every few seconds), and its *owner*: the
  epoch of the daemon streaming it. Only the owner writes a session's rows; a daemon that opens the session later
  becomes its owner.
- ``calibrations``: one row per cuff reading of a session: sbp, dbp, t_cal (device clock), the reference (NULL until
  formed), the model it was made for. At most two per session: the one that applies and a newer one waiting.
- ``facts``: the subject facts (`meta`: age, sex) a session's device sent, for its stream after a restart.
- ``audit``: one row per `calibrate`, `forget` and `end_session` that changed something: time, cmd, device, values
  (JSON), outcome, client (its CURVE key, z85; NULL without CURVE), epoch, session. Refused requests are not kept.
  Bounded: past `state.audit_rows_per_device` rows, a device's oldest are folded into one `compacted` row that keeps
  their count, time span, commands and clients.
- ``boots``: one row per daemon start; ``info``: the store's id and the session ids handed out.

What is kept is bounded too: a session that holds facts only goes when its device leaves the table (evicted,
replaced) or another wearer takes it; one with no wearer key that has not been seen for `state.resume_gap_s` can
never be resumed and goes at the next sweep; one with a wearer key after `state.keep_days`. Their audit rows stay.

Writes made before a control reply (`calibrate`, `forget`, `end_session`) are one transaction with their audit row,
committed with synchronous=FULL, so they are on disk before the client hears ok (or the client hears why not, and
nothing changed); the others (a reference refined, facts, positions) commit with synchronous=NORMAL, which survives
a crash of the daemon (not of the machine) and costs no fsync on the worker thread. A full disk refuses writes with
that cause; the daemon goes on streaming.
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

from p2p_stream.disk import disk_full, free_text, io_error
from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.state.sessions import Position, Session, continues
from p2p_stream.stream.state.store_file import (
    BUSY_TIMEOUT_MS,
    FULL_BELOW_BYTES,
    MIGRATE_1,
    SCHEMA,
    SCHEMA_VERSION,
    SESSION_BLOCK,
    Witness,
    add_missing_columns,
    check_identity,
    check_missing,
    explain,
    file_identity,
    new_store_id,
)

log = logging.getLogger(__name__)
DAY_S = 86_400.0


class StoreError(P2PError):
    """A write the client waits for (calibrate, forget, end_session) did not reach the disk; nothing of it applied."""


class Saved(NamedTuple):
    """One stored cuff reading: `reference` is None while it waits for the estimates that form it."""

    key: int
    cuff: tuple[float, float]
    t: float
    reference: tuple[float, float] | None


class StateStore:
    """The daemon's SQLite file; thread-safe (the ingest loop, the control requests and the worker all write)."""

    def __init__(
        self,
        path: str | Path,
        model: str,
        *,
        resume_gap_s: float = 1800.0,
        keep_days: float = 90.0,
        audit_rows_per_device: int = 1000,
        adopt: bool = False,
    ) -> None:
        """Open (or create) the store at `path` for a daemon running `model` and record this start (`boot`, the
        estimates' `epoch`). ConfigError, naming the file and what to do, if it cannot be used. `adopt`: take a
        store the witness does not recognise (store_file.py)."""
        self.path, self.model = Path(path), model
        self.resume_gap_s, self.keep_s, self.audit_rows_per_device = (
            resume_gap_s,
            keep_days * DAY_S,
            audit_rows_per_device,
        )
        self._lock = threading.RLock()
        self.warn = RateLimitedLog(log, period_s=10.0)
        self.broken: str | None = None  # why every write is refused: the file was swapped underneath
        witness = Witness(self.path)
        check_missing(self.path, witness, adopt)
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise ConfigError(f"state.path: {self.path} is not readable and writable here (its permissions, or a "
                              "read-only filesystem); fix that or point state.path at another file")  # fmt: skip
        try:
            self.db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"state.path: cannot open {self.path} ({exc}); does its folder exist?") from exc
        checked = None
        try:
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            checked = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if checked != "ok":
                raise sqlite3.DatabaseError(f"quick_check found damage: {checked}")
            if self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL mode")
            self._begin(witness, adopt)
        except ConfigError:
            self.db.close()
            raise
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            self.db.close()
            raise ConfigError(f"state.path: cannot use {self.path}: {explain(self.path, exc, checked)}") from exc
        self.identity = file_identity(self.path)
        self._log_other_models()
        self._log_legacy()

    def _begin(self, witness: Witness, adopt: bool) -> None:
        """Schema (migrated), the store's id checked against the witness, this start's row, a block of session ids."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"state.path: {self.path} was written by a newer p2p-daemon (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade, or point state.path elsewhere"
            )
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("BEGIN IMMEDIATE")
        if version == 1:
            for statement in MIGRATE_1:
                self.db.execute(statement)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(statement)
        add_missing_columns(self.db)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.db.execute("INSERT OR IGNORE INTO info (key, value) VALUES ('store', ?)", (new_store_id(),))
        self.db.execute("INSERT OR IGNORE INTO info (key, value) VALUES ('sessions', '1')")
        self.store_id = self.db.execute("SELECT value FROM info WHERE key = 'store'").fetchone()[0]
        last = self.db.execute("SELECT COALESCE(MAX(epoch), 0) FROM boots").fetchone()[0]
        seen = witness.read()
        if adopt and seen is not None:  # epochs go on after every one begun before, on any copy
            if self.db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'boots'").fetchone() is None:
                self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('boots', ?)", (seen[1],))
            self.db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'boots'", (seen[1],))
        else:
            check_identity(self.path, self.store_id, last, seen)
        cur = self.db.execute(
            "INSERT INTO boots (started, model, pid) VALUES (?, ?, ?)", (time.time(), self.model, os.getpid())
        )
        self.boot = int(cur.lastrowid)
        if adopt and seen is not None:
            self._audit("adopt", "-", {"witness_epoch": seen[1], "store": self.store_id}, None)
        self._reserve_sessions()
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # After the commit: a crash between the two leaves the witness one start behind, which it accepts.
        try:
            witness.write(self.store_id, max(self.boot, seen[1] if seen and seen[0] == self.store_id else 0))
        except OSError as exc:  # the store is fine; only a later swap would go unnoticed
            log.warning("state store %s: cannot write its witness %s (%s): a swapped store would not be noticed at "
                        "the next start", self.path, witness.path, exc)  # fmt: skip

    def _reserve_sessions(self) -> None:
        """A block of session ids for this start, inside the caller's transaction: ids never repeat on the store."""
        first = int(self.db.execute("SELECT value FROM info WHERE key = 'sessions'").fetchone()[0])
        self.db.execute("UPDATE info SET value = ? WHERE key = 'sessions'", (str(first + SESSION_BLOCK),))
        self._next_session, self._session_end = first, first + SESSION_BLOCK

    def _log_other_models(self) -> None:
        """Once per start and device: a calibration made for another model is not applied."""
        rows = self.db.execute(
            "SELECT device, model FROM calibrations WHERE model != ? AND session IS NOT NULL GROUP BY device "
            "ORDER BY device",
            (self.model,),
        ).fetchall()
        for device, other in rows:
            log.warning("calibration for %s was made for model %s, not %s: device uncalibrated until recalibrated",
                        device, other, self.model)  # fmt: skip

    def _log_legacy(self) -> None:
        n = self.db.execute("SELECT COUNT(*) FROM calibrations WHERE session IS NULL").fetchone()[0]
        if n:
            log.warning("state store %s: %d calibration(s) from before wearer sessions cannot be tied to a wearer: "
                        "kept for the record, not applied; calibrate again", self.path, n)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ---------------------------------------------------------------- sessions

    def open_session(self, device: str, wearer: str | None, seq: int, t0: float, fresh: bool) -> Session:
        """The session of a device's stream starting at (`seq`, `t0`) (stream/state/sessions.py): its stored session
        resumed — this daemon its owner from now — or a new one, stored only once it has something to keep."""
        if self.broken is not None:
            return Session(self._new_session_id(), wearer)
        try:
            with self._lock:
                row = self._find_session(device, wearer, seq, t0, fresh)
                session = Session(row[0], row[1], True, True) if row else Session(self._new_session_id(), wearer)
                self._close_others(device, session.id, seq, t0)
        except StoreError:  # the write failed, and the transaction logged why
            return Session(self._new_session_id(), wearer)
        except sqlite3.Error as exc:
            self._failed("sessions", exc)
            return Session(self._new_session_id(), wearer)
        return session

    def _close_others(self, device: str, session: int, seq: int, t0: float) -> None:
        """Another wearer's session (or this one resumed) streams the device now: its other stored sessions are no
        longer resumed by where their stream was, only by their wearer key; a resumed one's owner is this daemon."""
        others = self.db.execute(
            "SELECT 1 FROM sessions WHERE device = ? AND closed IS NULL AND id != ? LIMIT 1", (device, session)
        ).fetchone()
        resumed = self.db.execute("SELECT 1 FROM sessions WHERE id = ?", (session,)).fetchone()
        if others is None and resumed is None:
            return  # nothing stored of the device: no write at all (a new id per message writes nothing)
        with self._transaction("sessions", durable=False):
            now = time.time()
            self.db.execute(
                "UPDATE sessions SET closed = ? WHERE device = ? AND closed IS NULL AND id != ?", (now, device, session)
            )
            self.db.execute(
                "UPDATE sessions SET owner = ?, last_seq = ?, last_t = ?, seen = ?, closed = NULL WHERE id = ?",
                (self.boot, seq, t0, now, session),
            )

    def _find_session(self, device: str, wearer: str | None, seq: int, t0: float, fresh: bool) -> tuple | None:
        if wearer is not None:  # the wearer's own session on this device, whenever it was
            return self.db.execute(
                "SELECT id, wearer FROM sessions WHERE device = ? AND wearer = ? ORDER BY seen DESC LIMIT 1",
                (device, wearer),
            ).fetchone()
        if fresh:  # the counter restarted, or the session was ended: only a wearer key brings one back
            return None
        row = self.db.execute(
            "SELECT id, wearer, last_seq, last_t FROM sessions WHERE device = ? AND closed IS NULL "
            "ORDER BY seen DESC LIMIT 1",
            (device,),
        ).fetchone()
        if row is None or not continues(Position(row[2], row[3]), seq, t0, self.resume_gap_s):
            return None
        return row[:2]

    def _new_session_id(self) -> int:
        with self._lock:
            if self._next_session >= self._session_end and self.broken is None:
                with suppress(StoreError), self._transaction("sessions", durable=False):
                    self._reserve_sessions()
            self._next_session += 1  # a broken store: ids go on past the block (only this daemon hands them out)
            return self._next_session - 1

    def _keep(self, session: Session, device: str, at: Position) -> None:
        """Inside a write: the session's row, made if it has none, and this daemon must own it (StoreError if not).
        The caller sets `session.stored` once its transaction committed."""
        row = self.db.execute("SELECT owner FROM sessions WHERE id = ?", (session.id,)).fetchone()
        if row is None:
            if session.stored:
                raise StoreError(f"{device}'s session {session.id} was forgotten or ended by another daemon")
            now = time.time()
            self.db.execute(
                "INSERT INTO sessions (id, device, wearer, started, seen, last_seq, last_t, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session.id, device, session.wearer, now, now, at.seq, at.t, self.boot),
            )
        elif row[0] != self.boot:
            raise StoreError(
                f"{device}'s session {session.id} is held by another daemon on this store (epoch {row[0]}), which "
                "streams it now: ask that daemon"
            )

    def touch(self, seen: dict[int, Position]) -> None:
        """Where the stored sessions' streams are now (session id → position), in one transaction: after a crash,
        a stream that goes on from there resumes its session."""
        if not seen or self.broken is not None:
            return
        now = time.time()
        rows = [(p.seq, p.t, now, sid, self.boot) for sid, p in seen.items()]
        with suppress(StoreError), self._transaction("sessions", durable=False):
            self.db.executemany(
                "UPDATE sessions SET last_seq = ?, last_t = ?, seen = ? WHERE id = ? AND owner = ?", rows
            )

    def end_session(self, device: str, session: Session | None, client: str | None) -> None:
        """The session ended by an operator: its calibrations, facts and row gone, with its audit row, in one
        synchronous commit (StoreError: nothing changed)."""
        with self._transaction("end_session"):
            if session is not None:
                self._drop_sessions([session.id])
            self._audit("end_session", device, {}, client, session.id if session is not None else None)

    def release(self, sessions: list[Session]) -> None:
        """Sessions whose devices left the table (or another wearer took it): those holding facts only go (an id, or a
        wearer key, that sent one message with `meta` must not keep a row for ever)."""
        ids = [s.id for s in sessions if s.stored]
        if not ids or self.broken is not None:
            return
        with suppress(StoreError), self._transaction("sessions", durable=False):
            marks = ",".join("?" * len(ids))
            kept = {r[0] for r in self.db.execute(f"SELECT session FROM calibrations WHERE session IN ({marks})", ids)}
            self._drop_sessions([i for i in ids if i not in kept], owned=True)

    def sweep(self, now: float | None = None) -> int:
        """Sessions that can never apply again go: no wearer key and unseen for `resume_gap_s`, or unseen for
        `keep_days`; then the audit is compacted. The number of sessions dropped."""
        if self.broken is not None:
            return 0
        now = time.time() if now is None else now
        try:
            with self._transaction("sweep", durable=False):
                gone = [r[0] for r in self.db.execute(
                    "SELECT id FROM sessions WHERE (wearer IS NULL AND seen < ?) OR seen < ? LIMIT 1000",
                    (now - self.resume_gap_s, now - self.keep_s),
                )]  # fmt: skip
                self._drop_sessions(gone)
                self._compact_audit()
        except StoreError:
            return 0
        return len(gone)

    def _drop_sessions(self, ids: list[int], owned: bool = False) -> None:
        """Inside a write: sessions' calibrations, facts and rows, by row (`owned`: only those this daemon owns)."""
        if owned:
            ids = [i for i in ids if self.db.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND owner = ?", (i, self.boot)).fetchone()]  # fmt: skip
        for sid in ids:
            self.db.execute("DELETE FROM calibrations WHERE session = ?", (sid,))
            self.db.execute("DELETE FROM facts WHERE session = ?", (sid,))
            self.db.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    # ---------------------------------------------------------------- calibrations

    def add_calibration(
        self, device: str, session: Session, cuff: tuple[float, float], t_cal: float, at: Position, client: str | None
    ) -> int:
        """A new cuff reading of `session` (reference not yet known) → its key, saved with its audit row in one
        synchronous commit: on disk before the client hears ok. The session's older readings that wait for a
        reference, or were made for another model, are superseded. StoreError (nothing written) if the disk
        refuses, or another daemon owns the session."""
        values = {"sbp": cuff[0], "dbp": cuff[1], "t_cal": t_cal}
        with self._transaction("calibrate"):
            self._keep(session, device, at)
            self.db.execute(
                "DELETE FROM calibrations WHERE session = ? AND (ref_sbp IS NULL OR model != ?)",
                (session.id, self.model),
            )
            cur = self.db.execute(
                "INSERT INTO calibrations (device, sbp, dbp, t_cal, model, created, session) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device, cuff[0], cuff[1], t_cal, self.model, time.time(), session.id),
            )
            self._audit("calibrate", device, values, client, session.id)
        session.stored = True
        return int(cur.lastrowid)

    def set_reference(self, device: str, key: int, reference: tuple[float, float]) -> None:
        """Reading `key` formed (or refined) its reference; its session's older readings no longer apply. Only while
        this daemon owns the session. Called by `Calibrations` under its lock: a failure is logged, never raised."""
        if self.broken is not None:
            return
        with suppress(StoreError), self._transaction("reference", durable=False):
            row = self.db.execute(
                "SELECT c.session FROM calibrations c JOIN sessions s ON s.id = c.session "
                "WHERE c.id = ? AND c.device = ? AND s.owner = ?",
                (key, device, self.boot),
            ).fetchone()
            if row is None:  # forgotten, ended, or another daemon streams the session now
                return
            self.db.execute(
                "UPDATE calibrations SET ref_sbp = ?, ref_dbp = ? WHERE id = ?", (reference[0], reference[1], key)
            )
            self.db.execute("DELETE FROM calibrations WHERE session = ? AND id < ?", (row[0], key))

    def recall(self, device: str, session: int) -> tuple[Saved | None, Saved | None]:
        """The session's stored (active, pending) readings for this model: the latest with a reference, and a newer
        one still waiting for its reference."""
        if self.broken is not None:
            return None, None
        try:
            with self._lock:
                rows = self.db.execute(
                    "SELECT id, sbp, dbp, t_cal, ref_sbp, ref_dbp FROM calibrations WHERE session = ? AND device = ? "
                    "AND model = ? ORDER BY id",
                    (session, device, self.model),
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

    # ---------------------------------------------------------------- facts

    def save_facts(self, device: str, session: Session, meta: dict, at: Position) -> None:
        """The session's facts, as its device last sent them; a failure is logged, the stream goes on."""
        if self.broken is not None:
            return
        try:
            with self._transaction("facts", durable=False):
                self._keep(session, device, at)
                self.db.execute(
                    "INSERT OR REPLACE INTO facts (session, age, sex, updated) VALUES (?, ?, ?, ?)",
                    (session.id, meta.get("age"), meta.get("sex"), time.time()),
                )
        except StoreError:  # logged by the transaction; the stream goes on
            return
        session.stored = True  # only once committed

    def facts(self, session: int) -> dict | None:
        if self.broken is not None:
            return None
        try:
            with self._lock:
                row = self.db.execute("SELECT age, sex FROM facts WHERE session = ?", (session,)).fetchone()
        except sqlite3.Error as exc:
            self._failed("facts", exc)
            return None
        if row is None:
            return None
        kept = {k: v for k, v in zip(("age", "sex"), row) if v is not None}
        return kept or None

    # ---------------------------------------------------------------- forget, audit, others' changes

    def forget(self, device: str, client: str | None, known: bool) -> bool:
        """Every session of the device — calibrations, facts — gone for good, with its audit row, in one synchronous
        commit; whether anything was there. A device neither `known` (streaming) nor stored writes no audit row.
        StoreError (nothing deleted) if the disk refuses."""
        with self._transaction("forget"):
            ids = [r[0] for r in self.db.execute("SELECT id FROM sessions WHERE device = ?", (device,))]
            self._drop_sessions(ids)
            legacy = self.db.execute("DELETE FROM calibrations WHERE device = ? AND session IS NULL", (device,))
            held = bool(ids) or legacy.rowcount > 0
            if held or known:
                self._audit("forget", device, {}, client)
            return held

    def _audit(self, cmd: str, device: str, values: dict, client: str | None, session: int | None = None) -> None:
        """One audit row, inside the caller's transaction; then the device's oldest folded if over its bound."""
        self.db.execute(
            'INSERT INTO audit (time, cmd, device, "values", outcome, client, epoch, session) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), cmd, device, json.dumps(values, sort_keys=True), "ok", client, self.boot, session),
        )
        self._compact_audit(device)

    def _compact_audit(self, device: str | None = None) -> None:
        """Fold a device's oldest audit rows past `audit_rows_per_device` into one `compacted` row at the place of
        the oldest: how many, from when to when, which commands and clients. Every device when `device` is None."""
        keep = self.audit_rows_per_device
        if device is None:
            devices = [r[0] for r in self.db.execute(
                "SELECT device FROM audit GROUP BY device HAVING COUNT(*) > ?", (keep,))]  # fmt: skip
        else:
            count = self.db.execute("SELECT COUNT(*) FROM audit WHERE device = ?", (device,)).fetchone()[0]
            devices = [device] if count > keep else []
        for d in devices:
            old = self.db.execute(
                'SELECT id, time, cmd, client, "values" FROM audit WHERE device = ? ORDER BY id DESC LIMIT -1 OFFSET ?',
                (d, keep - 1),
            ).fetchall()  # the newest keep-1 stay, the rest (and the summary in their place) make keep
            if len(old) < 2:
                continue
            rows, cmds, clients = 0, {}, set()
            for _, _, cmd, client, values in old:
                folded = json.loads(values) if cmd == "compacted" else None
                n = folded["rows"] if folded else 1
                rows += n
                for c, k in folded["cmds"].items() if folded else ((cmd, 1),):
                    cmds[c] = cmds.get(c, 0) + k
                clients.update(folded["clients"] if folded else ([client] if client else []))
            first = min(old, key=lambda r: r[0])
            summary = {"rows": rows, "from": min(r[1] for r in old), "to": max(r[1] for r in old),
                       "cmds": cmds, "clients": sorted(clients)}  # fmt: skip
            marks = ",".join("?" * len(old))
            self.db.execute(f"DELETE FROM audit WHERE id IN ({marks})", [r[0] for r in old])
            self.db.execute(
                'INSERT INTO audit (id, time, cmd, device, "values", outcome, client, epoch, session) '
                "VALUES (?, ?, 'compacted', ?, ?, 'ok', NULL, NULL, NULL)",
                (first[0], summary["from"], d, json.dumps(summary, sort_keys=True)),
            )

    def history(self, device: str, limit: int) -> list[dict]:
        """The device's latest `limit` audit rows, oldest first. StoreError if the store cannot be read."""
        try:
            with self._lock:
                rows = self.db.execute(
                    'SELECT time, cmd, "values", outcome, client, session FROM audit WHERE device = ? '
                    "ORDER BY id DESC LIMIT ?",
                    (device, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: cannot read the audit ({exc})") from exc
        return [
            {"time": t, "cmd": cmd, "values": json.loads(values), "outcome": outcome, "client": client,
             **({"session": session} if session is not None else {})}
            for t, cmd, values, outcome, client, session in reversed(rows)
        ]  # fmt: skip

    def last_change(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM audit").fetchone()[0]

    def changes_since(self, after: int) -> tuple[int, list[tuple[str, str, int | None]]]:
        """Forgets and ended sessions other daemons on this store made since audit row `after`: (the latest row id,
        [(cmd, device, session)]), so this daemon drops what it holds of them too."""
        if self.broken is not None:
            return after, []
        try:
            with self._lock:  # one read: a row committed between two would be skipped
                rows = self.db.execute(
                    "SELECT id, cmd, device, session, epoch FROM audit WHERE id > ? ORDER BY id", (after,)
                ).fetchall()
        except sqlite3.Error as exc:
            self._failed("changes", exc)
            return after, []
        latest = max((r[0] for r in rows), default=after)
        theirs = [(cmd, device, sid) for _, cmd, device, sid, epoch in rows
                  if epoch != self.boot and cmd in ("forget", "end_session")]  # fmt: skip
        return latest, theirs

    # ---------------------------------------------------------------- the file under the store

    def check(self) -> str | None:
        """Whether the file is still the one this daemon opened and holds its start: None, or why not (then every
        write is refused from now on, and logged once)."""
        if self.broken is not None:
            return self.broken
        why = None
        try:
            identity = file_identity(self.path)
        except OSError:  # cannot be told now (a folder's permissions): not swapped; the write itself will say
            return None
        if identity is None:
            why = "it was unlinked (deleted or moved)"
        elif identity != self.identity:
            why = "another file was put in its place"
        else:
            why = self._read_afresh()
        if why is not None:
            self.broken = (
                f"state store {self.path}: {why} while the daemon ran; calibrate, forget and end_session are refused "
                "and nothing more is saved, so nothing is lost into a file no one will read. Restart the daemon: it "
                "checks the store at start-up"
            )
            log.error("%s", self.broken)
        return self.broken

    def _read_afresh(self) -> str | None:
        """Why the file, read afresh (not through this connection's cache), is not this store any more, or None: it
        lacks this daemon's start (a copy was put over it), or a new reader meets an I/O error on a disk with room
        (its journal files were swapped away). Busy, or a full disk, is not a swap: the write itself will say."""
        try:
            fresh = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                found = fresh.execute("SELECT 1 FROM boots WHERE epoch = ?", (self.boot,)).fetchone()
            finally:
                fresh.close()
        except sqlite3.Error as exc:
            if io_error(exc) and not self._full(exc):
                return f"it was overwritten (a new reader of it fails: {exc})"
            return None
        if found is None:
            return f"it was overwritten by a copy that lacks this daemon's start (epoch {self.boot})"
        return None

    @contextmanager
    def _transaction(self, what: str, durable: bool = True) -> Iterator[None]:
        """One write, committed or rolled back whole (a failure raised as StoreError, and logged). `durable`: a
        write the client waits for, committed with synchronous=FULL after checking the file is still this store's;
        else with NORMAL, which survives a crash of the daemon and costs the worker no fsync."""
        with self._lock:
            if durable and self.check() is not None:
                raise StoreError(self.broken)
            try:
                if durable:
                    self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                        self.db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._failed(what, exc)
                cause = f"the disk holding it is full ({free_text(self.path)})" if self._full(exc) else str(exc)
                raise StoreError(f"state store {self.path} could not save it: {cause}; nothing was changed") from exc
            finally:
                with suppress(sqlite3.Error):
                    self.db.execute("PRAGMA synchronous=NORMAL")

    def _full(self, exc: sqlite3.Error) -> bool:
        return disk_full(exc, self.path, FULL_BELOW_BYTES)

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        cause = f"disk full ({free_text(self.path)})" if self._full(exc) else str(exc)
        self.warn.log(logging.ERROR, f"state_{what}", "state store %s: could not save %s: %s", self.path, what, cause)
