"""What an operator tells the daemon survives: calibrations and device facts across a kill -9, an idle eviction and a
restart of the same wearer's stream (its counter and clock going on); `forget` is for good; a calibration made for
another model is not applied; a store that cannot be used stops the start-up with one clear line (exit 2). Real
daemon processes on a real SQLite file (docs/reliability.md, "What survives what"). Who the wearer is:
tests/test_wearer_sessions.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager

import numpy as np
import pytest
from helpers import fill, simulated_ppg, small_filesystem
from zmq_helpers import Client, daemon_process, ipc_addresses

from p2p_stream.errors import ConfigError
from p2p_stream.stream.state.sessions import Position
from p2p_stream.stream.state.store import Saved, StateStore, StoreError

FS = 125.0
T0 = 1_700_000_000.0
X = simulated_ppg(75, 12, FS, seed=3)  # 12 s: 9 windows of 4 s every 1 s
WINDOWS = 9
MESSAGES = 60  # X in messages of 25 samples: a stream that goes on after it starts at seq 60
CUFF = (121.0, 79.0)
META = {"age": 61, "sex": "F"}


@contextmanager
def daemon(path, *flags: str):
    """A daemon process on the store at `path`, and a client joined to it."""
    with ipc_addresses() as addresses, daemon_process(addresses, "--set", f"state.path={path}", *flags) as proc:
        c = Client(addresses)
        try:
            c.join(timeout_s=60)
            yield proc, c
        finally:
            c.close()


def session(c: Client, t0: float, **extra) -> list[dict]:
    """Stream X as device `watch` from `t0` (its own clock) and collect its estimates."""
    c.stream("watch", X, FS, t0=t0, **extra)
    return c.estimates(lambda g: len([e for e in g if e["device"] == "watch"]) >= WINDOWS)


def reading(store: StateStore, device: str, cuff, t: float, client: str | None = None):
    """A cuff reading of `device`'s session (opened at seq 0, `t`): (the session, the reading's key)."""
    session = store.open_session(device, None, 0, t, False)
    return session, store.add_calibration(device, session, cuff, t, Position(0, t), client)


def values(estimates: list[dict]) -> np.ndarray:
    return np.array([[e["sbp_window"], e["dbp_window"]] for e in estimates])  # (n, 2)


def calibrate_then_kill(path, *flags: str) -> tuple[np.ndarray, int]:
    """Stream, calibrate (ok, applied at once), kill -9 right after the reply: the uncalibrated values and the epoch."""
    with daemon(path, *flags) as (proc, c):
        first = session(c, T0, meta=META)
        assert not any(e["calibrated"] for e in first)
        assert c.control({"cmd": "calibrate", "device": "watch", "sbp": CUFF[0], "dbp": CUFF[1]}) == {
            "ok": True,
            "applied": True,
            "session": first[0]["session"],
        }
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return values(first), first[0]["epoch"]


def rows(path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_calibration_survives_kill_9_and_the_restart_is_a_new_epoch(tmp_path):
    path = tmp_path / "state.db"
    before, epoch = calibrate_then_kill(path)
    offset = np.array(CUFF) - np.median(before, axis=0)  # the reference: the median of the 9 estimates before
    assert rows(path, "SELECT cmd, device, outcome FROM audit WHERE device = 'watch'") == [("calibrate", "watch", "ok")]
    with daemon(path) as (_, c):
        # The same signal, later, its counter going on, without meta: the same wearer, facts from the store.
        again = session(c, T0 + 100, seq0=MESSAGES)
    assert all(e["calibrated"] for e in again)
    assert all(e["carried"] == ["calibration", "facts"] for e in again)  # kept from before the crash, and said so
    np.testing.assert_allclose(values(again), before + offset, atol=0.03)  # the same offset as before the crash
    assert {e["epoch"] for e in again} == {epoch + 1}  # (device, epoch, seq) never repeats: seq restarted at 0
    assert again[0]["seq"] == 0


def test_a_calibration_survives_idle_eviction(tmp_path):
    path = tmp_path / "state.db"
    with daemon(path, "--set", "limits.device_idle_s=1") as (_, c):
        before = values(session(c, T0))
        assert c.control({"cmd": "calibrate", "device": "watch", "sbp": CUFF[0], "dbp": CUFF[1]})["applied"]
        deadline = time.monotonic() + 10
        while c.control({"cmd": "stats"})["devices"] > 0:  # evicted: its stream, and its calibration in memory
            assert time.monotonic() < deadline, "never evicted"
            time.sleep(0.1)
        again = session(c, T0 + 100, seq0=MESSAGES)
    assert all(e["calibrated"] for e in again)
    np.testing.assert_allclose(values(again), before + np.array(CUFF) - np.median(before, axis=0), atol=0.03)


def test_forget_is_for_good_across_a_restart(tmp_path):
    path = tmp_path / "state.db"
    calibrate_then_kill(path)
    facts = "SELECT s.device, f.age, f.sex FROM facts f JOIN sessions s ON s.id = f.session"
    assert rows(path, facts) == [("watch", 61.0, "F")]
    with daemon(path) as (proc, c):
        assert c.control({"cmd": "forget", "device": "watch"}) == {"ok": True, "known": False}  # evicted: on disk only
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert rows(path, "SELECT count(*) FROM calibrations") == [(0,)]
    assert rows(path, "SELECT count(*) FROM facts") == [(0,)]
    assert rows(path, "SELECT count(*) FROM sessions") == [(0,)]
    assert [r[0] for r in rows(path, "SELECT cmd FROM audit WHERE device = 'watch' ORDER BY id")] == [
        "calibrate",
        "forget",
    ]
    with daemon(path) as (_, c):
        assert not any(e["calibrated"] for e in session(c, T0 + 100, seq0=MESSAGES))


def test_a_calibration_for_another_model_is_not_applied(tmp_path):
    path = tmp_path / "state.db"
    calibrate_then_kill(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE calibrations SET model = 'other-net@00000000'")
    db.commit()
    db.close()
    with daemon(path) as (proc, c):
        again = session(c, T0 + 100, seq0=MESSAGES)  # the same wearer: only the model differs
        log = " ".join(proc.output().split())  # the console log wraps long lines
    assert not any(e["calibrated"] for e in again)
    assert "calibration for watch was made for model other-net@00000000, not " in log
    assert "device uncalibrated until recalibrated" in log


def test_a_corrupt_store_stops_the_start_up_with_exit_2(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, but it is long enough to look like one" * 100)
    with ipc_addresses() as addresses, daemon_process(addresses, "--set", f"state.path={path}") as proc:
        assert proc.wait(timeout=60) == 2
        out = " ".join(proc.output().split())
    assert f"state.path: cannot use {path}" in out and "Traceback" not in out


def test_daemons_on_one_machine_share_a_store_safely(tmp_path):
    """The daemons of a cluster share one file: each start its own epoch; what one writes the other reads (a device
    taken over keeps its calibration); writes from both, interleaved, all land."""
    path = tmp_path / "state.db"
    a, b = StateStore(path, "m@1"), StateStore(path, "m@1")
    try:
        assert (a.boot, b.boot) == (1, 2)
        sa, key = reading(a, "watch", (121.0, 79.0), 10.0)
        a.set_reference("watch", key, (110.0, 70.0))
        sb = b.open_session("watch", None, 1, 10.5, False)  # b takes the device over: the stream goes on
        assert sb.id == sa.id and sb.resumed
        assert b.recall("watch", sb.id)[0] == Saved(key, (121.0, 79.0), 10.0, (110.0, 70.0))
        for i in range(50):
            reading(a if i % 2 else b, f"d{i}", (120.0, 80.0), 1.0)
        assert len(rows(path, "SELECT device FROM calibrations")) == 51
        assert len(a.history("d3", 5)) == len(b.history("d4", 5)) == 1
    finally:
        a.close()
        b.close()
    with daemon(path) as (_, c), daemon(path) as (_, c2):  # two daemon processes on one file, at once
        assert {session(c, T0)[0]["epoch"], session(c2, T0)[0]["epoch"]} == {3, 4}


def test_a_store_another_program_keeps_locked_stops_the_start_up(tmp_path):
    """Not a daemon (they share the file): a program holding an exclusive lock past the busy timeout."""
    path = tmp_path / "state.db"
    StateStore(path, "m@1").close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match="it stayed locked by another process"):
            StateStore(path, "m@1")
    finally:
        other.execute("ROLLBACK")
        other.close()
    StateStore(path, "m@1").close()  # free again: usable


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any file: see the read-only filesystem test")
def test_a_read_only_store_file_is_refused(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path, "m@1").close()
    path.chmod(0o444)
    with pytest.raises(ConfigError, match="not readable and writable here"):
        StateStore(path, "m@1")


def test_a_store_on_a_read_only_filesystem_stops_the_start_up(tmp_path):
    with small_filesystem(tmp_path / "disk") as disk:
        path = disk / "state.db"
        StateStore(path, "m@1").close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(ConfigError, match="is not readable and writable here .*read-only filesystem"):
            StateStore(path, "m@1")
        with ipc_addresses() as addresses, daemon_process(addresses, "--set", f"state.path={path}") as proc:
            assert proc.wait(timeout=60) == 2
            out = " ".join(proc.output().split())
        assert f"state.path: {path} is not readable and writable here" in out and "Traceback" not in out


def test_a_full_disk_refuses_calibrate_and_forget_whole_and_the_daemon_goes_on(tmp_path):
    """The disk fills while the daemon runs: calibrate and forget answer ok: false and change nothing (in memory or
    on disk); estimates go on with the calibration that was saved; once there is room, calibrate works again."""
    with small_filesystem(tmp_path / "disk") as disk, daemon(disk / "state.db") as (proc, c):
        before = values(session(c, T0))
        assert c.control({"cmd": "calibrate", "device": "watch", "sbp": CUFF[0], "dbp": CUFF[1]})["applied"]
        filler = fill(disk)
        for request in (
            {"cmd": "calibrate", "device": "watch", "sbp": 180.0, "dbp": 110.0},
            {"cmd": "forget", "device": "watch"},
        ):
            reply = c.control(request)
            assert reply["ok"] is False, reply
            assert f"{request['cmd']} not done: state store {disk / 'state.db'} could not save it" in reply["error"]
            assert "nothing was changed" in reply["error"]
        assert c.control({"cmd": "stats"})["devices"] == 1  # not forgotten
        again = [e for e in session(c, T0 + 100, seq0=MESSAGES) if e["t"] > T0 + 100]  # not the last stream's gap
        assert again and all(e["calibrated"] for e in again)  # with the reading that was saved, not the refused one
        expected = before + np.array(CUFF) - np.median(before, axis=0)
        np.testing.assert_allclose(values(again), expected[: len(again)], atol=0.03)
        filler.unlink()
        assert c.control({"cmd": "calibrate", "device": "watch", "sbp": 130.0, "dbp": 85.0})["ok"] is True
        history = c.control({"cmd": "history", "device": "watch"})["history"]
        assert proc.poll() is None
    assert [(h["cmd"], h["values"].get("sbp")) for h in history] == [("calibrate", CUFF[0]), ("calibrate", 130.0)]
    assert all(h["outcome"] == "ok" and h["client"] is None for h in history)


def test_a_refused_write_leaves_the_store_as_it_was(tmp_path):
    """The same without a mount: SQLite's own page limit refuses the write as a full disk does."""
    store = StateStore(tmp_path / "state.db", "m@1")
    try:
        d, key = reading(store, "d", (120.0, 80.0), 10.0)
        store.set_reference("d", key, (110.0, 70.0))
        store.db.execute(f"PRAGMA max_page_count={store.db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StoreError, match="could not save it: the disk holding it is full.*; nothing was changed"):
            for i in range(1000):  # until the audit table needs a page it may not have
                last, _ = reading(store, f"device-{i}", (120.0 + i % 50, 80.0), 10.0, "k" * 40)
        saved = i
        for j in range(1000):  # devices it never had: nothing to delete, nothing written, not even an audit row
            assert store.forget(f"never-{j}", "k" * 40, known=False) is False
        with pytest.raises(StoreError, match="full"):  # a device it has: the delete and its audit row, refused whole
            store.forget("d", "k" * 40, known=True)
        assert store.recall("d", d.id)[0] == Saved(key, (120.0, 80.0), 10.0, (110.0, 70.0))  # not forgotten
        assert rows(store.path, "SELECT count(*) FROM audit WHERE device LIKE 'never-%'") == [(0,)]
        assert len(store.history(f"device-{saved - 1}", 5)) == 1 and store.history(f"device-{saved}", 5) == []
    finally:
        store.close()


def test_history_is_each_change_in_order_and_needs_the_store(tmp_path):
    path = tmp_path / "state.db"
    calibrate_then_kill(path)
    with daemon(path) as (_, c):
        session(c, T0 + 100, seq0=MESSAGES)
        assert c.control({"cmd": "calibrate", "device": "watch", "sbp": 130, "dbp": 85})["ok"]
        assert c.control({"cmd": "forget", "device": "watch"})["ok"]
        history = c.control({"cmd": "history", "device": "watch", "limit": 2})["history"]
        assert c.control({"cmd": "history", "device": "watch", "limit": 0})["ok"] is False
        assert c.control({"cmd": "history", "device": "nobody"}) == {"ok": True, "history": []}
    assert [h["cmd"] for h in history] == ["calibrate", "forget"]  # the latest two, oldest first
    assert history[0]["values"] == {"sbp": 130.0, "dbp": 85.0, "t_cal": pytest.approx(T0 + 100 + 12 - 1 / FS)}
    assert history[0]["time"] <= history[1]["time"] <= time.time()
    with ipc_addresses() as addresses, daemon_process(addresses, "--set", "state.path=") as proc:  # memory only
        c = Client(addresses)
        try:
            c.join(timeout_s=60)
            reply = c.control({"cmd": "history", "device": "watch"})
        finally:
            c.close()
        assert proc.poll() is None
    assert reply == {
        "ok": False,
        "error": "history needs the daemon's state store: start it with --set state.path=FILE",
    }


def test_the_store_keeps_the_applied_reading_and_a_newer_pending_one(tmp_path):
    store = StateStore(tmp_path / "state.db", "m@1")
    try:
        d, old = reading(store, "d", (120.0, 80.0), 10.0)
        store.set_reference("d", old, (110.0, 70.0))
        new = store.add_calibration("d", d, (130.0, 85.0), 20.0, Position(9, 20.0), None)  # the old one applies
        active, pending = store.recall("d", d.id)
        assert active is not None and active.key == old and active.reference == (110.0, 70.0)
        assert pending is not None and pending.key == new and pending.reference is None
        store.set_reference("d", new, (112.0, 71.0))  # formed: it applies, the old one is gone
        active, pending = store.recall("d", d.id)
        assert active is not None and active.key == new and pending is None
        other = store.open_session("d", None, 0, 30.0, True)  # a new wearer of "d": none of it
        assert other.id != d.id and store.recall("d", other.id) == (None, None)
    finally:
        store.close()


def test_device_facts_come_back_after_a_restart_not_to_a_new_wearer_nor_after_eviction(tmp_path):
    """A restart (a new table on the same store) gives a stream that goes on its session's facts; a counter that
    started again gets none; an evicted device's facts-only session is pruned (an id that sent `meta` once must not
    keep a row for ever)."""
    from p2p_stream.stream.state.remembering import RememberingDeviceTable
    from p2p_stream.wire.protocol import Ingest

    def table(store):
        return RememberingDeviceTable(
            store, window_s=4.0, hop_s=1.0, max_chunk=1024, gap_tolerance_s=0.2, max_devices=10, idle_s=60.0
        )

    x = np.ones(125, dtype=np.float32)
    store = StateStore(tmp_path / "state.db", "m@1")
    try:
        first = table(store)
        first.push(Ingest("d", 0, T0, FS, x, None, {"age": 61.0, "sex": "F"}), 0.0)
        first.flush()
        again = table(store)  # the daemon restarted
        again.push(Ingest("d", 1, T0 + 100, FS, x, None, None), 0.0)  # its counter and clock go on
        assert again.streams["d"].meta == {"age": 61.0, "sex": "F"} and again.streams["d"].facts_carried
        again.push(Ingest("d", 2, T0 + 101, FS, x, None, {"age": 62.0}), 0.0)  # new facts replace them
        assert store.facts(again.streams["d"].session.id) == {"age": 62.0}
        assert not again.streams["d"].facts_carried
        again.push(Ingest("d", 0, T0 + 102, FS, x, None, None), 0.0)  # the counter started again: a new wearer
        assert again.streams["d"].meta is None
        again.push(Ingest("d", 1, T0 + 103, FS, x, None, {"age": 30.0}), 0.0)
        again.evict_idle(now=1000.0)
        again.flush()
        assert rows(store.path, "SELECT count(*) FROM facts") == [(0,)]  # both facts-only sessions pruned
        assert rows(store.path, "SELECT count(*) FROM sessions") == [(0,)]
    finally:
        store.close()


# A store as the first schema-2 daemons wrote it (issue 24, before `sessions.closed`): its tables word for word.
EARLY_SCHEMA_2 = """
CREATE TABLE boots (epoch INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, model TEXT NOT NULL,
    pid INTEGER NOT NULL);
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, device TEXT NOT NULL, wearer TEXT, started REAL NOT NULL,
    seen REAL NOT NULL, last_seq INTEGER NOT NULL, last_t REAL NOT NULL, owner INTEGER NOT NULL);
CREATE TABLE calibrations (id INTEGER PRIMARY KEY, device TEXT NOT NULL, sbp REAL NOT NULL, dbp REAL NOT NULL,
    t_cal REAL NOT NULL, ref_sbp REAL, ref_dbp REAL, model TEXT NOT NULL, created REAL NOT NULL, session INTEGER);
CREATE TABLE facts (session INTEGER PRIMARY KEY, age REAL, sex TEXT, updated REAL NOT NULL);
CREATE TABLE audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, cmd TEXT NOT NULL, device TEXT NOT NULL,
    "values" TEXT NOT NULL, outcome TEXT NOT NULL, client TEXT, epoch INTEGER, session INTEGER);
INSERT INTO sessions VALUES (7, 'watch', 'alice', 1.0, 2.0, 10, 2.0, 1);
PRAGMA user_version = 2;
"""


def test_an_early_schema_2_store_gains_the_closed_column_and_its_sessions_save(tmp_path):
    """Found running the demo on a machine that had run the issue-24 daemon: every session save failed ("no such
    column: closed") because CREATE … IF NOT EXISTS leaves an existing table as it was."""
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(EARLY_SCHEMA_2)
    store = StateStore(path, "m@1")
    try:
        alice = store.open_session("watch", "alice", 11, 3.0, False)
        bob = store.open_session("watch", "bob", 0, 4.0, True)  # another wearer: alice's session is closed
        assert alice.id == 7 and bob.id != 7
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # the same schema, made whole
        closed = dict(conn.execute("SELECT id, closed FROM sessions").fetchall())
    assert list(closed) == [7] and closed[7] is not None  # alice's closed; bob's is stored once it keeps something
