"""`p2p record` on a full disk — a real one: a small tmpfs mounted for the test and filled by a filler file, the
recorder a real process fed estimates by a real PUB socket. It must say why it cannot write (SQLite's own cause, and
the file), stay up, hold what arrives in memory (up to --backlog rows, the oldest dropped and counted beyond), and
once the filler is deleted write what it held, in order, none twice. A recorder started on a disk that is already
full waits the same way.

Mounting needs root (or CAP_SYS_ADMIN): elsewhere these tests are skipped, and say why.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import zmq
from helpers import fill, small_filesystem
from zmq_helpers import ipc_addresses, logged_process

from p2p_stream.wire.estimate import example_estimate
from p2p_stream.wire.protocol import encode_estimate, encode_status

T0 = 1_700_000_000.0
DISK = "1m"  # the tmpfs: room for the recording, which the filler then takes


@contextmanager
def on_a_small_disk(tmp_path: Path) -> Iterator[tuple[Path, Path, Publisher, str]]:
    """A DISK-sized real filesystem, the recording's path on it, and a Publisher bound where the recorder will
    subscribe: (disk, db, publisher, its address); the publisher closed and the disk unmounted at exit."""
    with small_filesystem(tmp_path / "disk", DISK) as disk, ipc_addresses() as addresses:
        pub = Publisher(addresses["publish"])
        try:
            yield disk, disk / "session.sqlite", pub, addresses["publish"]
        finally:
            pub.close()


def estimate(seq: int, **values) -> list[bytes]:
    return encode_estimate(example_estimate(device="w1", seq=seq, t=T0 + seq, model="m@00000000", epoch=1, **values))


class Publisher:
    """A bound PUB as the daemon's estimates socket (what the recorder subscribes to), never dropping a message."""

    def __init__(self, address: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.bind(address)

    def join(self, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
        """Beat the slow joiner without writing to the file: heartbeats until the recorder logs one."""
        deadline = time.monotonic() + timeout_s
        uptime = 0.0
        while "subscribed: heartbeat" not in proc.log():  # type: ignore[attr-defined]
            assert proc.poll() is None, f"the recorder exited: {proc.log()}"  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"the recorder never got a heartbeat: {proc.log()}"  # type: ignore[attr-defined]
            self.sock.send_multipart(encode_status({"uptime_s": uptime, "devices": 1}))
            uptime += 0.1
            time.sleep(0.1)

    def stream(self, seqs: range, proc: subprocess.Popen, per_s: float = 100.0) -> None:
        """Publish these estimates at `per_s`, the recorder alive throughout."""
        for seq in seqs:
            self.sock.send_multipart(estimate(seq))
            assert proc.poll() is None, f"the recorder exited: {proc.log()}"  # type: ignore[attr-defined]
            time.sleep(1 / per_s)

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@contextmanager
def recorder(address: str, db: Path, *flags: str) -> Iterator[subprocess.Popen]:
    cmd = [sys.executable, "-m", "p2p_stream.tools.recording.recorder", "--estimates", address, "--db", str(db),
           "--flush-s", "0.1", *flags]  # fmt: skip
    with logged_process(cmd, split=True) as proc:
        yield proc


def seqs(db: Path) -> list[int]:
    """The `seq` of every estimate in the file, in the order written (read-only)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:  # closed: the recorder closes last
        return [s for (s,) in conn.execute("SELECT seq FROM estimates ORDER BY id")]


def wait_for(what, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert proc.poll() is None, f"the recorder exited: {proc.log()}"  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"timed out; the recorder's log: {proc.log()}"  # type: ignore[attr-defined]
        time.sleep(0.1)


def stopped(proc: subprocess.Popen) -> str:
    """SIGTERM: exit 0, and its final line."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.log()  # type: ignore[attr-defined]
    return proc.output()  # type: ignore[attr-defined]


def runs(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT estimates_written, conflicts, dropped, stopped IS NOT NULL FROM runs").fetchall()


def test_a_full_disk_is_waited_out_and_nothing_is_lost(tmp_path):
    """50 estimates written; the disk filled; 300 more streamed over 3 s (the red team's witness saw 200 lost): the
    recorder logs SQLITE_FULL and the file, stays up, and once the filler is gone all 350 are in the file, in order,
    none twice."""
    with on_a_small_disk(tmp_path) as (disk, db, pub, address):
        with recorder(address, db) as proc:
            pub.join(proc)
            pub.stream(range(50), proc)
            wait_for(lambda: seqs(db) == list(range(50)), 10, proc)
            filler = fill(disk)
            pub.stream(range(50, 350), proc)
            wait_for(lambda: "disk full (SQLITE_FULL" in proc.log(), 10, proc)
            time.sleep(2.0)  # a few retries, all failing
            assert proc.poll() is None and seqs(db) == list(range(50)), proc.log()
            log = proc.log()
            line = next(x for x in log.splitlines() if "disk full (SQLITE_FULL" in x)
            assert str(db) in line and "estimates held in memory" in line and "retrying" in line, line
            assert "cannot rollback" not in log
            filler.unlink()
            wait_for(lambda: len(seqs(db)) >= 350, 20, proc)
            assert "written again after" in proc.log()
            final = stopped(proc)
        assert seqs(db) == list(range(350))  # every one, in order, none twice
        assert "recorded 350 estimates" in final and "0 dropped" in final, final
        assert runs(db) == [(350, 0, "{}", 1)]


def test_beyond_the_backlog_the_oldest_are_dropped_and_counted(tmp_path):
    """--backlog 100: of the 300 estimates streamed while the disk is full, the newest 100 are written once there is
    room; the oldest 200 are dropped, counted (log, final line, runs.dropped)."""
    with on_a_small_disk(tmp_path) as (disk, db, pub, address):
        with recorder(address, db, "--backlog", "100", "--flush-rows", "50") as proc:
            pub.join(proc)
            pub.stream(range(50), proc)
            wait_for(lambda: seqs(db) == list(range(50)), 10, proc)
            filler = fill(disk)
            pub.stream(range(50, 350), proc)
            wait_for(lambda: "disk full (SQLITE_FULL" in proc.log(), 10, proc)
            wait_for(lambda: "the oldest dropped" in proc.log(), 10, proc)
            filler.unlink()
            wait_for(lambda: len(seqs(db)) >= 150, 20, proc)
            final = stopped(proc)
        assert seqs(db) == list(range(50)) + list(range(250, 350))
        assert "recorded 150 estimates" in final and "200 dropped" in final, final
        assert runs(db) == [(150, 0, '{"estimates":200}', 1)]


@pytest.mark.slow  # ~14 s; the same wait and retry as a disk that fills mid-run, which CI runs
def test_a_recorder_started_on_a_full_disk_waits_for_room(tmp_path):
    """The red team's restart: a recording closed cleanly, the disk filled, the recorder started again. SQLite cannot
    even open the file (its -shm needs room): the recorder says so, subscribes anyway, holds what arrives, and is
    still up 8 s later; once there is room it writes its run and the 300 estimates."""
    with on_a_small_disk(tmp_path) as (disk, db, pub, address):
        with recorder(address, db) as proc:
            pub.join(proc)
            pub.stream(range(50), proc)
            wait_for(lambda: seqs(db) == list(range(50)), 10, proc)
            stopped(proc)
        assert sorted(os.listdir(disk)) == ["session.sqlite"]  # closed cleanly: no -wal, no -shm
        filler = fill(disk)
        with recorder(address, db) as proc:
            started = time.monotonic()
            pub.join(proc)
            line = next(x for x in proc.log().splitlines() if "disk full (" in x)
            assert str(db) in line and "held in memory" in line, line
            assert "SQLITE_IOERR_SHMSIZE" in line, line  # SQLite's cause: no room for the -shm file
            pub.stream(range(50, 350), proc)
            while time.monotonic() < started + 8.0:  # the red team's recorder was dead by now
                assert proc.poll() is None, proc.log()
                time.sleep(0.2)
            assert "Traceback" not in proc.log() and "error:" not in proc.log()
            filler.unlink()
            wait_for(lambda: len(seqs(db)) >= 350, 20, proc)
            final = stopped(proc)
        assert seqs(db) == list(range(350))
        assert "recorded 300 estimates" in final, final
        assert runs(db) == [(50, 0, "{}", 1), (300, 0, "{}", 1)]


def test_stopped_while_the_disk_is_full_it_says_what_it_could_not_write(tmp_path):
    """SIGTERM while the disk is still full: exit 2, and how many held estimates are lost — not a silent 0."""
    with on_a_small_disk(tmp_path) as (disk, db, pub, address):
        with recorder(address, db) as proc:
            pub.join(proc)
            pub.stream(range(10), proc)
            wait_for(lambda: seqs(db) == list(range(10)), 10, proc)
            fill(disk)
            pub.stream(range(10, 30), proc)
            wait_for(lambda: "disk full (SQLITE_FULL" in proc.log(), 10, proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 2
            err = proc.log().splitlines()[-1]
        assert err.startswith(f"error: recording {db}: disk full (SQLITE_FULL"), err
        assert "at stop: 20 estimates (20 rows) held in memory could not be written" in err, err
