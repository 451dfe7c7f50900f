"""Recording database: the SQLite file `p2p record` writes — its schema, one row per message, idempotent batches.

    runs        one row per recorder run: addresses, counts so far, `stopped` NULL while running (or after a crash)
    estimates   every estimate, a column per contract key, unknown keys as JSON in `extra`; natural key
                (device, model, epoch, seq, t), an absent epoch one value: a row is written once, whatever arrives
                twice, and two daemon starts that repeat (device, model, seq, t) are both kept
    heartbeats  the daemon's `status` map (with --heartbeat), `rejected` and unknown keys as JSON
    ppg         raw ingest messages (with --ingest), samples as little-endian float32 bytes; UNIQUE(device, seq, t0)

Every table has `received` (the recorder's Unix time at receipt, s) and `run` (the `runs` row that wrote it).
Rows are validated before they are written: a message that is not what the contract says raises `ProtocolError`,
whose `reason` the recorder counts. A file of an older schema is upgraded when opened for writing (`upgrade`).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from p2p_stream.errors import ConfigError, ProtocolError
from p2p_stream.wire.protocol import DEVICE_RE, decode_ingest

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # PRAGMA user_version; 2: `epoch` a column of estimates and part of their natural key
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
    malformed TEXT NOT NULL DEFAULT '{{}}'      -- JSON: reason → messages dropped
);
{_estimates_table("estimates")}
-- The natural key. SQLite's UNIQUE holds NULLs distinct, so a plain UNIQUE(…, epoch, …) would write an estimate
-- without epoch (a daemon without a state store) again each time it arrives: the key takes an absent epoch as -1,
-- which no daemon sends (a negative epoch is refused as malformed), while the column keeps NULL, as every other
-- absent key does, so `epoch IS NULL`, export and score read it as the daemon sent it.
CREATE UNIQUE INDEX IF NOT EXISTS estimates_key ON estimates (device, model, coalesce(epoch, -1), seq, t);
CREATE INDEX IF NOT EXISTS estimates_device_t ON estimates (device, t);
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

    @property
    def rows(self) -> int:
        return self.estimates + self.heartbeats + self.ppg


def _insert(table: str) -> str:
    columns = TABLES[table]
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a recording (creating it unless `readonly`); a file that is not one is a ConfigError."""
    path = Path(path)
    if readonly and not path.is_file():
        raise ConfigError(f"{path}: no such recording; give the --db file p2p record wrote")
    if path.is_dir() or not path.parent.is_dir():
        raise ConfigError(f"{path}: not a file in a folder that exists; give a path such as session.sqlite")
    try:
        # check_same_thread off: a recording may be opened in one thread and written in another, never in two at once
        conn = sqlite3.connect(
            f"file:{path}?mode=ro" if readonly else path, uri=readonly, isolation_level=None, check_same_thread=False
        )
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a SQLite database ({exc}); give a recording, or a new path") from exc
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
    """
    if version != 1:
        raise ConfigError(f"recording schema {version} has no upgrade to {SCHEMA_VERSION}; record into a new file")
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


class RecordingDB:
    """A recording open for writing: rows are queued by `add`, written by `commit` in one transaction.

    WAL mode, `synchronous = NORMAL`: a committed batch survives the recorder being killed (a power cut can lose
    the last ones); readers (sqlite3, export, score) never block the writer.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA busy_timeout = 5000")
        # One transaction, the version read inside it: two recorders opening an old file upgrade it once.
        # (Not executescript: on Python ≤ 3.11 it commits an open transaction first.)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] and version < SCHEMA_VERSION:
                upgrade(self.conn, version)
                log.info("%s: recording schema %d upgraded to %d", self.path, version, SCHEMA_VERSION)
            for statement in _statements(SCHEMA):
                self.conn.execute(statement)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            raise
        self.pending: dict[str, list[tuple]] = {table: [] for table in TABLES}
        self.counts = Counts()
        self.run = 0

    def start_run(self, estimates_address: str, ingest_address: str | None, heartbeat: bool, now: float) -> int:
        cur = self.conn.execute(
            "INSERT INTO runs (started, estimates_address, ingest_address, heartbeat) VALUES (?, ?, ?, ?)",
            (now, estimates_address, ingest_address, int(heartbeat)),
        )
        self.run = int(cur.lastrowid)
        return self.run

    def last_seqs(self) -> dict[tuple[str, str], tuple[int | None, int]]:
        """(device, model) → (epoch, seq) of its latest recorded estimate: where a restarted recorder picks up."""
        rows = self.conn.execute(
            "SELECT device, model, epoch, seq FROM estimates "
            "WHERE id IN (SELECT max(id) FROM estimates GROUP BY device, model)"
        )
        return {(d, m): (e, s) for d, m, e, s in rows}

    def add(self, table: str, row: tuple) -> None:
        self.pending[table].append(row)

    @property
    def queued(self) -> int:
        return sum(len(rows) for rows in self.pending.values())

    def commit(self, stopped: float | None = None) -> None:
        """Write every queued row and the run's counts in one transaction; `stopped`: the run ends now."""
        c = self.counts
        written = {table: 0 for table in TABLES}
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for table, rows in self.pending.items():
                if rows:
                    written[table] = self.conn.executemany(_insert(table), rows).rowcount
            total = {table: getattr(c, table) + n for table, n in written.items()}
            already_there = c.already_there + self.queued - sum(written.values())
            self.conn.execute(
                "UPDATE runs SET estimates_written = ?, heartbeats_written = ?, ppg_written = ?, already_there = ?, "
                "missed = ?, malformed = ?, stopped = ? WHERE id = ?",
                (*total.values(), already_there, c.missed, to_json(c.malformed), stopped, self.run),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        for table, n in total.items():
            setattr(c, table, n)
        c.already_there = already_there
        for rows in self.pending.values():
            rows.clear()

    def close(self) -> None:
        self.conn.close()
