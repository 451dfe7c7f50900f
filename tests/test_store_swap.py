"""The state store cannot be swapped underneath (issue 24): a store unlinked, replaced or overwritten by an older copy
while a daemon runs refuses every write after, naming why; at start-up its witness refuses a missing, replaced or
older store (epochs never repeat); `state.adopt` takes one on purpose. A full disk at start-up is told apart from a
damaged file, and nothing advises deleting the store (stream/state/store_file.py)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3

import pytest
from helpers import fill, small_filesystem
from zmq_helpers import Client, daemon_process, ipc_addresses

from p2p_stream.errors import ConfigError
from p2p_stream.stream.state.sessions import Position
from p2p_stream.stream.state.store import StateStore, StoreError

FS = 125.0


def calibrate(store: StateStore, device: str = "d") -> int:
    session = store.open_session(device, None, 0, 10.0, False)
    return store.add_calibration(device, session, (120.0, 80.0), 10.0, Position(0, 10.0), None)


def epochs(path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT epoch FROM boots ORDER BY epoch")]
    finally:
        db.close()


@pytest.mark.parametrize("swap", ["unlinked", "replaced", "older copy"])
def test_a_store_swapped_while_running_refuses_every_write_after(tmp_path, swap):
    path = tmp_path / "state.db"
    StateStore(path, "m@1").close()
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)  # a copy from before this start
    store = StateStore(path, "m@1")
    try:
        calibrate(store)
        if swap == "unlinked":
            path.unlink()
            why = "it was unlinked"
        elif swap == "replaced":
            other = tmp_path / "other.db"
            StateStore(other, "m@1").close()
            os.replace(other, path)
            why = "another file was put in its place"
        else:  # copied over the same file: the inode stays, this start's row is gone
            with open(backup, "rb") as src, open(path, "r+b") as dst:
                dst.write(src.read())
            for wal in ("-wal", "-shm"):
                (tmp_path / f"state.db{wal}").unlink(missing_ok=True)
            why = "it was overwritten"
        for attempt in range(2):  # refused, and refused again: nothing lands in a file no one will read
            with pytest.raises(StoreError, match=why):
                calibrate(store, f"e{attempt}")
        with pytest.raises(StoreError, match="Restart the daemon"):
            store.forget("d", None, known=True)
    finally:
        store.close()


def test_at_start_up_the_witness_refuses_a_missing_replaced_or_older_store_and_adopt_takes_it(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path, "m@1").close()
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)
    StateStore(path, "m@1").close()  # epoch 2: the backup is one start behind
    shutil.copy(backup, path)
    with pytest.raises(ConfigError, match="is an older copy of this store: its latest start is epoch 1, but epoch 2"):
        StateStore(path, "m@1")
    path.unlink()
    with pytest.raises(ConfigError, match="is missing, but a store was kept there .*Put it back"):
        StateStore(path, "m@1")
    StateStore(tmp_path / "other.db", "m@1").close()
    shutil.copy(tmp_path / "other.db", path)
    with pytest.raises(ConfigError, match="is not the store that was there .*it was replaced"):
        StateStore(path, "m@1")
    shutil.copy(backup, path)
    StateStore(path, "m@1", adopt=True).close()  # on purpose: its epochs go on after the witness's
    StateStore(path, "m@1").close()
    assert epochs(path) == [1, 3, 4]  # 2 was begun on the lost file: never used again


def test_a_store_unlinked_under_a_running_daemon_is_refused_then_and_at_the_restart(tmp_path):
    """The red-team's break: `calibrate` answered ok into an unlinked file, the restart made an empty store and
    reused the epoch."""
    path = tmp_path / "state.db"
    x = [float(v) for v in range(1000)]
    with ipc_addresses() as addresses:
        with daemon_process(addresses, "--set", f"state.path={path}") as proc:
            c = Client(addresses)
            try:
                c.join(timeout_s=60)
                c.stream("watch", x, FS)
                path.unlink()
                reply = c.control({"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80})
                assert proc.poll() is None  # still streaming
            finally:
                c.close()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        with daemon_process(addresses, "--set", f"state.path={path}") as proc:
            assert proc.wait(timeout=60) == 2
            out = " ".join(proc.output().split())
    assert reply["ok"] is False and "it was unlinked (deleted or moved) while the daemon ran" in reply["error"]
    assert f"state.path: {path} is missing, but a store was kept there" in out and "Traceback" not in out
    assert not path.exists()  # nothing made in its place


def test_a_full_disk_at_start_up_says_so_and_that_the_store_is_intact(tmp_path):
    with small_filesystem(tmp_path / "disk", size="1m") as disk:
        path = disk / "state.db"
        StateStore(path, "m@1").close()
        filler = fill(disk)
        with pytest.raises(ConfigError) as refused:
            for _ in range(50):  # until the start's own row finds no room
                StateStore(path, "m@1").close()
        message = str(refused.value)
        filler.unlink()
        StateStore(path, "m@1").close()  # room again: it starts, with all it had
    assert "the disk holding it is full" in message and "free space there and start again" in message
    assert "damaged" not in message and "move it aside" not in message and "delete" not in message


def test_a_damaged_store_is_kept_and_what_to_do_is_said(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, but it is long enough to look like one" * 100)
    with pytest.raises(ConfigError) as refused:
        StateStore(path, "m@1")
    message = str(refused.value)
    assert "it is damaged" in message and "keep the file" in message and ".recover" in message
    assert "move it aside" not in message and "delete" not in message
