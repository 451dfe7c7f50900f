"""Recording database: the SQLite file `p2p record` writes — its schema, one row per message, idempotent batches.

    runs        one row per recorder run: addresses, counts so far, `stopped` NULL while running (or after a crash)
    estimates   every estimate, a column per contract key, unknown keys as JSON in `extra`; natural key
                (device, model, epoch, seq, t), an absent epoch one value: a row is written once, whatever arrives
                twice, and two daemon starts that repeat (device, model, seq, t) are both kept. One row per
                (device, epoch, seq) and stream: a later estimate that contradicts the one kept is a *conflict*,
                counted and not written (`RecordingDB._estimates`)
    heartbeats  the daemon's `status` map (with --heartbeat), `rejected` and unknown keys as JSON
    ppg         raw ingest messages (with --ingest), samples as little-endian float32 bytes; UNIQUE(device, seq, t0)

Every table has `received` (the recorder's Unix time at receipt, s) and `run` (the `runs` row that wrote it).
Rows are validated before they are written: a message that is not what the contract says raises `ProtocolError`,
whose `reason` the recorder counts. A file of an older schema is upgraded when opened for writing (`upgrade`).

Rows wait in memory (`RecordingDB.pending`, at most `backlog` of them: beyond, the oldest are dropped and counted)
until a commit writes them; a commit that finds the disk full raises `DiskFull` and keeps them, in order, for the
next try. Any other SQLite error is a `P2PError` that says what is wrong with the file (`failure`).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sqlite3
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from p2p_stream.disk import disk_full
from p2p_stream.errors import ConfigError, P2PError, ProtocolError
from p2p_stream.wire.protocol import DEVICE_RE, decode_ingest

log = logging.getLogger(__name__)

# PRAGMA user_version; 2: `epoch` a column of estimates and part of their natural key; 3: runs.conflicts and
# runs.dropped, and the index (device, epoch, seq) that finds conflicts
SCHEMA_VERSION = 4
APPLICATION_ID = 0x50325052  # PRAGMA application_id: "P2PR", so another program's SQLite file is refused
INT64 = 2**63

# Estimate key → (kind, SQLite column type), in the schema's order: every key wire/estimate.py declares, of its type,
# but `daemon`, which `extra` keeps (tests/test_record.py checks the two agree). The natural key is
# (device, model, epoch, seq, t): all but `epoch` NOT NULL; `epoch` is nil when the daemon runs without a state store.
ESTIMATE_KEYS: dict[str, tuple[str, str]] = {
    "v": ("int", "INTEGER"),
    "device": ("text", "TEXT NOT NULL"),
    "seq": ("int", "INTEGER NOT NULL"),
    "t": ("num", "REAL NOT NULL"),  # Unix time of the window's last sample, s
    "window_s": ("num", "REAL"),
    "sbp": ("num", "REAL"),  # mmHg, smoothed
    "dbp": ("num", "REAL"),
    "ok": ("bool", "INTEGER"),  # 0/1
    "reason": ("text", "TEXT"),
    "sqi": ("num", "REAL"),
    "hr": ("num", "REAL"),  # bpm
    "calibrated": ("bool", "INTEGER"),
    "model": ("text", "TEXT NOT NULL"),
    "latency_ms": ("num", "REAL"),
    "ref_sbp": ("num", "REAL"),
    "ref_dbp": ("num", "REAL"),
    "epoch": ("int", "INTEGER"),  # the daemon start (its state store's boot number, 1, 2, …); nil without a store
    "sbp_window": ("num", "REAL"),
    "dbp_window": ("num", "REAL"),
    "sbp_lo": ("num", "REAL"),
    "sbp_hi": ("num", "REAL"),
    "dbp_lo": ("num", "REAL"),
    "dbp_hi": ("num", "REAL"),
    "interval": ("num", "REAL"),
    "session": ("int", "INTEGER"),  # the wearer session (issue 24); nil from a daemon before it
    "carried": ("list", "TEXT"),  # JSON array: what was kept from an earlier stream of the session
    "basis": ("text", "TEXT"),  # what the number rests on (issue 25); nil from a daemon before it
    "pat_ms": ("num", "REAL"),  # pulse arrival time, ms, with an ECG
}
HEARTBEAT_KEYS: dict[str, tuple[str, str]] = {
    "uptime_s": ("num", "REAL"),
    "devices": ("int", "INTEGER"),
    "windows_total": ("int", "INTEGER"),
    "windows_per_s": ("num", "REAL"),
    "batch_mean": ("num", "REAL"),
    "latency_p50_ms": ("num", "REAL"),
    "latency_p99_ms": ("num", "REAL"),
    "messages_total": ("int", "INTEGER"),
    "batches_total": ("int", "INTEGER"),
    "model": ("text", "TEXT"),
    "queue": ("int", "INTEGER"),
    "backend_device": ("text", "TEXT"),
}
MAX_TEXT = 1024  # characters in a text column; longer is not what the contract sends
BACKLOG = 100_000  # rows held in memory while the file cannot be written (~1 KB each); beyond, the oldest dropped
CHUNK = 1000  # rows written per transaction at most: a backlog is written in several, so a little space is progress
# What two estimates of one (device, model, epoch, seq, t) must agree on to be the same one delivered twice; numbers
# within MMHG_SAME of each other (a daemon restarted without a state store and fed the same data computes them again,
# perhaps in another batch: float noise, not a contradiction).
READINGS = ("ok", "reason", "calibrated", "sbp", "dbp", "sbp_window", "dbp_window")
MMHG_SAME = 0.01
LOW_SPACE = 1 << 20  # bytes: an I/O error while the file's disk has less than this free is taken as a full disk

ESTIMATE_COLUMNS = ("run", "received", *ESTIMATE_KEYS, "extra")
HEARTBEAT_COLUMNS = ("run", "received", *HEARTBEAT_KEYS, "rejected", "extra")
PPG_COLUMNS = ("run", "received", "device", "seq", "t0", "fs", "n", "samples", "ref_sbp", "ref_dbp", "meta")
TABLES = {"estimates": ESTIMATE_COLUMNS, "heartbeats": HEARTBEAT_COLUMNS, "ppg": PPG_COLUMNS}


def _columns(keys: dict[str, tuple[str, str]]) -> str:
    return ",\n    ".join(f'"{k}" {sql}' for k, (_, sql) in keys.items())


def _estimates_table(name: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    {_columns(ESTIMATE_KEYS)},
    extra TEXT                      -- JSON map of keys this schema does not know; NULL when none
);"""


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,          -- Unix time, s
    stopped REAL,                   -- NULL: still running, or it crashed
    estimates_address TEXT NOT NULL,
    ingest_address TEXT,
    heartbeat INTEGER NOT NULL,     -- 1: heartbeats stored
    estimates_written INTEGER NOT NULL DEFAULT 0,
    heartbeats_written INTEGER NOT NULL DEFAULT 0,
    ppg_written INTEGER NOT NULL DEFAULT 0,
    already_there INTEGER NOT NULL DEFAULT 0,  -- rows the natural key refused: seen before
    missed INTEGER NOT NULL DEFAULT 0,         -- estimates not seen: gaps in a device's seq
    malformed TEXT NOT NULL DEFAULT '{{}}',     -- JSON: reason → messages dropped
    conflicts INTEGER NOT NULL DEFAULT 0,      -- estimates refused: another one holds their (device, epoch, seq)
    dropped TEXT NOT NULL DEFAULT '{{}}'        -- JSON: table → rows dropped from the memory backlog (disk full)
);
{_estimates_table("estimates")}
-- The natural key. SQLite's UNIQUE holds NULLs distinct, so a plain UNIQUE(…, epoch, …) would write an estimate
-- without epoch (a daemon without a state store) again each time it arrives: the key takes an absent epoch as -1,
-- which no daemon sends (a negative epoch is refused as malformed), while the column keeps NULL, as every other
-- absent key does, so `epoch IS NULL`, export and score read it as the daemon sent it.
CREATE UNIQUE INDEX IF NOT EXISTS estimates_key ON estimates (device, model, coalesce(epoch, -1), seq, t);
CREATE INDEX IF NOT EXISTS estimates_device_t ON estimates (device, t);
-- (device, epoch, seq): one estimate each, per stream of the device (RecordingDB._estimates); absent epoch as above.
CREATE INDEX IF NOT EXISTS estimates_seq ON estimates (device, coalesce(epoch, -1), seq, t);
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    {_columns(HEARTBEAT_KEYS)},
    rejected TEXT,                  -- JSON map: reason → count
    extra TEXT
);
CREATE TABLE IF NOT EXISTS ppg (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    received REAL NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t0 REAL NOT NULL,               -- Unix time of the first sample, s
    fs REAL NOT NULL,               -- Hz
    n INTEGER NOT NULL,             -- samples
    samples BLOB NOT NULL,          -- n little-endian float32
    ref_sbp REAL,
    ref_dbp REAL,
    meta TEXT,                      -- JSON: the subject's age/sex as the daemon keeps them
    UNIQUE (device, seq, t0)
);
CREATE INDEX IF NOT EXISTS ppg_device_t0 ON ppg (device, t0);
"""


def to_json(value: object) -> str:
    """JSON of any msgpack value: bytes as hex, map keys as strings."""

    def plain(v: object) -> object:
        if isinstance(v, dict):
            return {k if isinstance(k, str) else repr(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (bytes, bytearray)):
            return bytes(v).hex()
        return v

    return json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"))


def _value(kind: str, key: str, v: object) -> object:
    """`v` checked against its column's kind; nil stays None. Raises ProtocolError('bad_type')."""
    if v is None:
        return None
    t = type(v)
    if kind == "num" and (t is int or t is float):
        return float(v)
    if kind == "int" and t is int and -INT64 <= v < INT64:
        return v
    if kind == "bool" and (t is bool or (t is int and v in (0, 1))):
        return int(v)
    if kind == "text" and t is str and len(v) <= MAX_TEXT:
        return v
    if kind == "list" and t is list and len(v) <= 16 and all(type(x) is str and len(x) <= 64 for x in v):
        return to_json(v)
    return _bad(key, v)


def _bad(key: str, v: object) -> None:
    raise ProtocolError("bad_type", f"{key!r} has an unexpected value {str(v)[:80]!r} ({type(v).__name__})")


def _row(msg: dict, keys: dict[str, tuple[str, str]]) -> tuple[list, dict]:
    values = [_value(kind, k, msg.get(k)) for k, (kind, _) in keys.items()]
    return values, {k: v for k, v in msg.items() if k not in keys}


def estimate_row(msg: dict, topic: bytes, run: int, received: float) -> tuple:
    """The `estimates` row of a decoded estimate (`protocol.decode_estimate`), in ESTIMATE_COLUMNS order."""
    device = msg.get("device")
    if type(device) is not str or not DEVICE_RE.fullmatch(device) or topic[4:] != device.encode():
        raise ProtocolError("bad_device", f"device {str(device)[:80]!r} is not an id or does not match the topic")
    for key in ("seq", "t", "model"):
        if msg.get(key) is None:
            raise ProtocolError("missing_key", f"estimate lacks {key!r}")
    values, extra = _row(msg, ESTIMATE_KEYS)
    row = dict(zip(ESTIMATE_KEYS, values))
    for key in ("seq", "epoch"):  # counts from 0 (seq) or 1 (epoch); a negative epoch would be the key's -1
        if row[key] is not None and row[key] < 0:
            raise ProtocolError("bad_type", f"{key!r} must be ≥ 0, got {row[key]}")
    if not math.isfinite(row["t"]):
        raise ProtocolError("bad_time", f"'t' must be finite, got {row['t']}")
    return (run, received, *values, to_json(extra) if extra else None)


def heartbeat_row(msg: dict, run: int, received: float) -> tuple:
    """The `heartbeats` row of a decoded heartbeat map, in HEARTBEAT_COLUMNS order."""
    values, extra = _row(msg, HEARTBEAT_KEYS)
    rejected = extra.pop("rejected", None)
    if rejected is not None and type(rejected) is not dict:
        _bad("rejected", rejected)
    rejected_json = to_json(rejected) if rejected is not None else None
    return (run, received, *values, rejected_json, to_json(extra) if extra else None)


def ppg_row(frames: list[bytes], run: int, received: float) -> tuple:
    """The `ppg` row of an ingest message, validated as the daemon validates it (but not against our clock)."""
    m = decode_ingest(frames)
    ref_sbp, ref_dbp = m.ref if m.ref is not None else (None, None)
    samples = m.ppg.astype("<f4", copy=False).tobytes()
    meta = to_json(m.meta) if m.meta else None
    return (run, received, m.device, m.seq, m.t0, m.fs, int(m.ppg.size), samples, ref_sbp, ref_dbp, meta)


@dataclass
class Counts:
    """What a run has written (committed) and what it refused."""

    estimates: int = 0
    heartbeats: int = 0
    ppg: int = 0
    already_there: int = 0  # rows the natural key refused
    missed: int = 0  # estimates never received: gaps in a device's seq
    malformed: dict[str, int] = field(default_factory=dict)  # reason → messages dropped
    conflicts: int = 0  # estimates refused: the file holds another for their (device, epoch, seq)
    dropped: dict[str, int] = field(default_factory=dict)  # table → rows dropped from a full memory backlog

    @property
    def rows(self) -> int:
        return self.estimates + self.heartbeats + self.ppg


def _insert(table: str) -> str:
    columns = TABLES[table]
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


class DiskFull(P2PError):
    """The recording's disk has no room: SQLITE_FULL, or an I/O error while it is (nearly) full. Retry later."""

    def __init__(self, path: Path, exc: sqlite3.Error) -> None:
        self.path, self.cause = path, f"{getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {exc}"
        super().__init__(f"{path}: disk full ({self.cause}); free space on its disk")


def failure(path: Path, exc: sqlite3.Error) -> P2PError:
    """What a SQLite error on the recording `path` means: DiskFull (worth retrying), or a message that names the
    cause for what is not (the file is not a database, it is damaged, it may not be written)."""
    if disk_full(exc, path, LOW_SPACE):
        return DiskFull(path, exc)
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    what = f"{getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {exc}"
    if code == sqlite3.SQLITE_NOTADB:
        return ConfigError(f"{path} is not a SQLite database ({exc}); give a recording, or a new path")
    if code == sqlite3.SQLITE_CORRUPT:
        return P2PError(f"{path} is damaged ({what}); record into a new file (`sqlite3 {path} .recover` saves what "
                        "it can)")  # fmt: skip
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return P2PError(f"{path}: cannot open or write it ({what}); check the permissions of the file, of its "
                        "-wal and -shm files and of its folder")  # fmt: skip
    return P2PError(f"{path}: cannot write the recording ({what}); check the disk and the file")


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a recording (creating it unless `readonly`); a file that is not one is a ConfigError."""
    path = Path(path)
    if readonly and not path.is_file():
        raise ConfigError(f"{path}: no such recording; give the --db file p2p record wrote")
    if path.is_dir() or not path.parent.is_dir():
        raise ConfigError(f"{path}: not a file in a folder that exists; give a path such as session.sqlite")
    conn = None
    try:
        # check_same_thread off: a recording may be opened in one thread and written in another, never in two at once
        conn = sqlite3.connect(
            f"file:{path}?mode=ro" if readonly else path, uri=readonly, isolation_level=None, check_same_thread=False
        )
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise failure(path, exc) from exc
    if app_id != APPLICATION_ID and (tables or readonly):
        conn.close()
        raise ConfigError(f"{path} is a SQLite database but not a p2p recording; give a recording, or a new path")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if tables and version > SCHEMA_VERSION:
        conn.close()
        raise ConfigError(f"{path} has recording schema {version}; this p2p reads up to {SCHEMA_VERSION}: upgrade p2p")
    return conn


def _statements(script: str) -> list[str]:
    """`script` cut into its statements (each ends a line), to run them one by one inside a transaction."""
    out, statement = [], ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            out.append(statement)
            statement = ""
    return out


def upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Bring a recording of schema `version` to the one before SCHEMA_VERSION's statements run, inside the caller's
    transaction; their `CREATE … IF NOT EXISTS` then add what is new.

    1 → 2: `epoch` becomes a column of `estimates` and part of its natural key. A table's UNIQUE constraint cannot
    be altered, so the table is rebuilt as SQLite documents it (new table, copy, drop the old, rename); its ids
    and rows stay as they were, and an `epoch` a v1 file kept in `extra` moves into the column.
    2 → 3: `runs` gains `conflicts` and `dropped` (0 and {} for the runs before); `estimates` gains `session` and
    `carried` (nil for the rows before); the schema adds `estimates_seq`.
    3 → 4: `estimates` gains `basis` and `pat_ms` (nil for the rows before).
    """
    if version not in (1, 2, 3):
        raise ConfigError(f"recording schema {version} has no upgrade to {SCHEMA_VERSION}; record into a new file")
    if version == 1:
        _upgrade_1(conn)
    runs = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    if "conflicts" not in runs:
        conn.execute("ALTER TABLE runs ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0")
    if "dropped" not in runs:
        conn.execute("ALTER TABLE runs ADD COLUMN dropped TEXT NOT NULL DEFAULT '{}'")
    estimates = {r[1] for r in conn.execute("PRAGMA table_info(estimates)")}
    for column in ("session", "carried", "basis", "pat_ms"):
        if column not in estimates:
            conn.execute(f'ALTER TABLE estimates ADD COLUMN "{column}" {ESTIMATE_KEYS[column][1]}')


def _upgrade_1(conn: sqlite3.Connection) -> None:
    old = {r[1] for r in conn.execute("PRAGMA table_info(estimates)")}
    names = ", ".join(f'"{c}"' for c in ("id", *ESTIMATE_COLUMNS) if c in old)
    conn.execute(_estimates_table("estimates_v2"))
    conn.execute(f"INSERT INTO estimates_v2 ({names}) SELECT {names} FROM estimates")
    conn.execute("DROP TABLE estimates")  # and its indexes, UNIQUE(device, model, seq, t) among them
    conn.execute("ALTER TABLE estimates_v2 RENAME TO estimates")
    moved = []
    for row_id, extra in conn.execute("SELECT id, extra FROM estimates WHERE extra LIKE '%\"epoch\"%'").fetchall():
        keys = json.loads(extra)
        epoch = keys.get("epoch")
        if type(epoch) is int and 0 <= epoch < INT64:
            del keys["epoch"]
            moved.append((epoch, to_json(keys) if keys else None, row_id))
    conn.executemany("UPDATE estimates SET epoch = ?, extra = ? WHERE id = ?", moved)


ESTIMATE_AT = {c: i for i, c in enumerate(ESTIMATE_COLUMNS)}  # column → its place in an estimates row
_KEY_AT = tuple(ESTIMATE_AT[c] for c in ("device", "epoch", "seq", "model", "t"))
_READINGS_AT = tuple(ESTIMATE_AT[c] for c in READINGS)
_HELD = (
    f"SELECT model, t, {', '.join(READINGS)} FROM estimates WHERE device = ? AND coalesce(epoch, -1) = ? AND seq = ?"
)
_STREAM_START = "SELECT max(t) FROM estimates WHERE device = ? AND coalesce(epoch, -1) = ? AND seq = 0"


def same_readings(a: tuple | list, b: tuple | list) -> bool:
    """Two estimates' READINGS equal, numbers within MMHG_SAME."""
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > MMHG_SAME:
                return False
        elif x != y:
            return False
    return True


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction, if SQLite has not already: on SQLITE_FULL (and on some I/O errors) it rolls back
    by itself, and a ROLLBACK then fails with "cannot rollback - no transaction is active", hiding the cause."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the error being raised says more than this one
            log.debug("rollback failed: %s", exc)


class RecordingDB:
    """A recording open for writing: rows are queued by `add`, written by `commit`, CHUNK rows a transaction.

    WAL mode, `synchronous = NORMAL`: a committed batch survives the recorder being killed (a power cut can lose
    the last ones); readers (sqlite3, export, score) never block the writer.

    A full disk: `commit` raises DiskFull and keeps what it could not write, in order, for its next call; at most
    `backlog` rows wait (beyond, the oldest are dropped and counted in `counts.dropped`). With `wait_for_space`, a
    recording that cannot even be opened or started for want of space (SQLite needs room for its -shm file) is
    opened, and its run started, by the first commit that can: `full` says why until a commit succeeds.
    """

    def __init__(self, path: str | Path, backlog: int = BACKLOG, wait_for_space: bool = False) -> None:
        self.path, self.backlog, self.wait_for_space = Path(path), backlog, wait_for_space
        self.pending: deque[tuple[str, tuple]] = deque()  # (table, row), in the order received
        self.held: Counter[str] = Counter()  # table → its rows in `pending`
        self.counts = Counts()
        self.run = 0  # our `runs` row; 0 until it is written
        self.conn: sqlite3.Connection | None = None
        self.full: DiskFull | None = None  # why the latest write failed for want of space; None once one succeeds
        self.conflict: tuple | None = None  # the (device, epoch or -1, seq) of the latest conflict
        self._run_row: tuple | None = None  # what start_run was given
        try:
            self.open()
        except DiskFull as exc:
            if not wait_for_space:
                raise
            self.full = exc

    def open(self) -> None:
        """Open the file (created, or upgraded, if need be); raises DiskFull, ConfigError, or P2PError."""
        conn = connect(self.path)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 5000")
            # One transaction, the version read inside it: two recorders opening an old file upgrade it once.
            # (Not executescript: on Python ≤ 3.11 it commits an open transaction first.) A file already of this
            # schema is not written to at all: it opens on a full disk too.
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if not tables or version < SCHEMA_VERSION:
                if tables:
                    upgrade(conn, version)
                    log.info("%s: recording schema %d upgraded to %d", self.path, version, SCHEMA_VERSION)
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise failure(self.path, exc) from exc
            raise
        self.conn = conn

    def start_run(self, estimates_address: str, ingest_address: str | None, heartbeat: bool, now: float) -> int:
        """Write this run's `runs` row; its id — or 0 while the disk is full (`wait_for_space`): then the first
        commit that can write writes it."""
        self._run_row = (now, estimates_address, ingest_address, int(heartbeat))
        if self.conn is None:
            return 0
        try:
            self.run = self._insert_run()
        except sqlite3.Error as exc:
            error = failure(self.path, exc)
            if not (isinstance(error, DiskFull) and self.wait_for_space):
                raise error from exc
            self.full = error
        return self.run

    def _insert_run(self) -> int:
        if self._run_row is None:
            raise P2PError("RecordingDB.start_run must be called before commit")
        cur = self._conn().execute(
            "INSERT INTO runs (started, estimates_address, ingest_address, heartbeat) VALUES (?, ?, ?, ?)",
            self._run_row,
        )
        return int(cur.lastrowid)

    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise P2PError(f"{self.path}: not open")
        return self.conn

    def last_seqs(self) -> dict[tuple[str, str], tuple[int | None, int]]:
        """(device, model) → (epoch, seq) of its latest recorded estimate: where a restarted recorder picks up."""
        if self.conn is None:  # not open yet (a full disk): nothing to go by
            return {}
        rows = self.conn.execute(
            "SELECT device, model, epoch, seq FROM estimates "
            "WHERE id IN (SELECT max(id) FROM estimates GROUP BY device, model)"
        )
        return {(d, m): (e, s) for d, m, e, s in rows}

    def add(self, table: str, row: tuple) -> bool:
        """Queue `row` for `table`; True when the backlog was full and its oldest row was dropped (and counted)."""
        dropped = len(self.pending) >= self.backlog
        if dropped:
            old, _ = self.pending.popleft()
            self.held[old] -= 1
            self.counts.dropped[old] = self.counts.dropped.get(old, 0) + 1
        self.pending.append((table, row))
        self.held[table] += 1
        return dropped

    @property
    def queued(self) -> int:
        return len(self.pending)

    def commit(self, stopped: float | None = None, chunk: int = CHUNK) -> None:
        """Write every queued row and the run's counts, `chunk` rows a transaction, oldest first; `stopped`: the run
        ends now (written with the last of them). Raises DiskFull with what was not written still queued."""
        try:
            if self.conn is None:
                self.open()
            while True:
                n = min(chunk, len(self.pending))
                last = n == len(self.pending)
                self._write(n, stopped if last else None)
                if last:
                    break
        except DiskFull as exc:
            self.full = exc
            raise
        self.full = None

    def _write(self, n: int, stopped: float | None) -> None:
        """The first `n` queued rows in one transaction, with the run's counts."""
        conn, c = self._conn(), self.counts
        batch = list(itertools.islice(self.pending, n))
        written = dict.fromkeys(TABLES, 0)
        already = conflicts = 0
        conflict = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            run = self.run or self._insert_run()
            for table in TABLES:
                rows = [(run, *row[1:]) for t, row in batch if t == table]  # a row queued before the run was written
                if not rows:
                    continue
                if table == "estimates":
                    written[table], refused, conflicts, conflict = self._estimates(rows)
                else:
                    written[table] = conn.executemany(_insert(table), rows).rowcount
                    refused = len(rows) - written[table]
                already += refused
            total = {table: getattr(c, table) + k for table, k in written.items()}
            conn.execute(
                "UPDATE runs SET estimates_written = ?, heartbeats_written = ?, ppg_written = ?, already_there = ?, "
                "missed = ?, malformed = ?, conflicts = ?, dropped = ?, stopped = ? WHERE id = ?",
                (*total.values(), c.already_there + already, c.missed, to_json(c.malformed), c.conflicts + conflicts,
                 to_json(c.dropped), stopped, run),
            )  # fmt: skip
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise failure(self.path, exc) from exc
            raise
        self.run = run
        for table, k in total.items():
            setattr(c, table, k)
        c.already_there += already
        c.conflicts += conflicts
        self.conflict = conflict or self.conflict
        for _ in range(n):
            table, _ = self.pending.popleft()
            self.held[table] -= 1

    def _estimates(self, rows: list[tuple]) -> tuple[int, int, int, tuple | None]:
        """Write estimates rows, one by one: (written, already there, conflicts, the latest conflict's key).

        The file keeps one estimate per (device, epoch, seq) and stream, the first that arrived. Another with the
        same natural key is the same one again — `already there` if its READINGS agree, a conflict if not. One that
        differs in `t` or `model` is a conflict unless it belongs to a later stream of the device (`_later_stream`).
        A conflict is counted, not written: two rows that contradict each other about one estimate would leave a
        reader to guess which is true (something other than the daemon publishing on its address, docs/recording.md).
        """
        conn = self._conn()
        insert = _insert("estimates")
        written = already = conflicts = 0
        conflict = None
        for row in rows:
            device, epoch, seq, model, t = (row[i] for i in _KEY_AT)
            key = (device, -1 if epoch is None else epoch, seq)
            held = conn.execute(_HELD, key).fetchall()
            if held:
                same = next((h for h in held if h[0] == model and h[1] == t), None)
                if same is not None and same_readings(same[2:], [row[i] for i in _READINGS_AT]):
                    already += 1
                    continue
                if same is not None or not self._later_stream(key, t, max(h[1] for h in held)):
                    conflicts += 1
                    conflict = key
                    continue
            written += conn.execute(insert, row).rowcount
        return written, already, conflicts, conflict

    def _later_stream(self, key: tuple, t: float, latest: float) -> bool:
        """Whether an estimate at `t` whose (device, epoch, seq) `key` the file holds already, its latest at `latest`,
        is of a later stream of the device. A daemon starts a device's `seq` again from 0 when it hears from it after
        forgetting it (silent `limits.device_idle_s`, evicted, `forget`), and at each start without a state store
        (no epoch): such a stream begins with a seq 0 later than every row holding its seq. This is that seq 0, or
        the file holds it."""
        if key[2] == 0:
            return t > latest
        start = self._conn().execute(_STREAM_START, key[:2]).fetchone()[0]
        return start is not None and start > latest and t >= start

    def checkpoint(self) -> bool:
        """Give the disk back the -wal file's space if the readers allow it now (never waiting for them): on a full
        disk the WAL can hold most of what the file's disk has. True if the WAL was emptied."""
        if self.conn is None:
            return False
        try:
            self.conn.execute("PRAGMA busy_timeout = 0")
            return self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        except sqlite3.Error as exc:
            log.debug("%s: checkpoint failed: %s", self.path, exc)
            return False
        finally:
            try:
                self.conn.execute("PRAGMA busy_timeout = 5000")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
