"""The state store stays bounded (issue 24): a device's audit is folded past its bound into one `compacted` row that
keeps what an auditor needs; sessions that can never apply again are swept; rows are deleted by session, never by
device, and only their owner writes them (stream/state/store.py)."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_stream.stream.state.sessions import Position
from p2p_stream.stream.state.store import StateStore, StoreError


def calibrate(store: StateStore, session, device: str = "d", client: str | None = None) -> int:
    return store.add_calibration(device, session, (120.0, 80.0), 10.0, Position(0, 10.0), client)


def test_a_devices_audit_is_folded_past_its_bound_keeping_counts_times_and_clients(tmp_path):
    store = StateStore(tmp_path / "s.db", "m@1", audit_rows_per_device=10)
    try:
        session = store.open_session("d", None, 0, 10.0, False)
        for i in range(30):
            calibrate(store, session, client=f"key-{i % 3}")
        other = store.open_session("e", None, 0, 10.0, False)
        calibrate(store, other, "e")
        rows = store.history("d", 100)
        assert len(rows) == 10 and len(store.history("e", 100)) == 1  # another device's rows untouched
        folded = rows[0]
        assert folded["cmd"] == "compacted" and [r["cmd"] for r in rows[1:]] == ["calibrate"] * 9
        assert folded["values"]["rows"] == 21 and folded["values"]["cmds"] == {"calibrate": 21}
        assert folded["values"]["clients"] == ["key-0", "key-1", "key-2"]
        assert folded["values"]["from"] <= folded["values"]["to"] <= rows[1]["time"]
        for _ in range(15):  # folded again: the summary absorbs the older summary
            calibrate(store, session)
        rows = store.history("d", 100)
        assert len(rows) == 10 and rows[0]["values"]["rows"] == 36
    finally:
        store.close()


def test_the_sweep_drops_sessions_that_can_never_apply_again(tmp_path):
    store = StateStore(tmp_path / "s.db", "m@1", resume_gap_s=60.0, keep_days=1.0)
    try:
        anonymous = store.open_session("a", None, 0, 10.0, False)
        keyed = store.open_session("k", "p-1", 0, 10.0, False)
        calibrate(store, anonymous, "a")
        calibrate(store, keyed, "k")
        now = store.db.execute("SELECT max(seen) FROM sessions").fetchone()[0]
        assert store.sweep(now + 30) == 0
        assert store.sweep(now + 120) == 1  # no wearer key, unseen past the resume gap: it can never resume
        assert store.recall("a", anonymous.id) == (None, None) and store.recall("k", keyed.id)[1] is not None
        assert store.sweep(now + 2 * 86_400) == 1  # a wearer key: kept keep_days
        assert store.db.execute("SELECT count(*) FROM calibrations").fetchone()[0] == 0
        assert [h["cmd"] for h in store.history("a", 5)] == ["calibrate"]  # the audit stays
    finally:
        store.close()


def test_only_the_owner_writes_a_session_and_deletes_are_by_row(tmp_path):
    """The red-team's shared-store break: a daemon erased another's acknowledged calibration."""
    a, b = StateStore(tmp_path / "s.db", "m@1"), StateStore(tmp_path / "s.db", "m@1")
    try:
        sa = a.open_session("d", None, 0, 10.0, False)
        acknowledged = calibrate(a, sa)
        a.set_reference("d", acknowledged, (110.0, 70.0))
        sb = b.open_session("d", None, 5, 11.0, False)  # b streams it now, its counter going on: b owns it
        assert sb.id == sa.id
        with pytest.raises(StoreError, match="held by another daemon on this store"):
            calibrate(a, sa)
        a.set_reference("d", acknowledged, (90.0, 60.0))  # a's worker, late: not written
        fresh = b.open_session("d", None, 0, 12.0, True)  # a new wearer on b: its own session
        calibrate(b, fresh)  # its pending reading deletes nothing of the first session
        assert b.recall("d", sa.id)[0].reference == (110.0, 70.0)
        latest, changes = a.changes_since(0)
        assert changes == []  # b changed nothing a must drop
        assert b.forget("d", None, known=True)
        latest, changes = a.changes_since(latest)
        assert changes == [("forget", "d", None)]
    finally:
        a.close()
        b.close()


def test_a_wearer_who_came_between_closes_the_last_ones_session_to_resumption_by_position(tmp_path):
    """Review of issue 24: Bob streams and is stored; the device reboots and Alice wears it (a new session, nothing
    stored of her); the daemon restarts; her stream goes on from where it was. It must not resume Bob's session —
    the highest stored id, whose position her seq and clock happen to continue."""
    from p2p_stream.stream.state.remembering import RememberingDeviceTable
    from p2p_stream.wire.protocol import Ingest

    def table(store):
        return RememberingDeviceTable(
            store, window_s=4.0, hop_s=1.0, max_chunk=1024, gap_tolerance_s=0.2, max_devices=10, idle_s=60.0
        )

    x = np.ones(125, dtype=np.float32)
    t0 = 1_700_000_000.0
    store = StateStore(tmp_path / "s.db", "m@1")
    try:
        first = table(store)
        first.push(Ingest("d", 199, t0, 125.0, x, None, {"age": 80.0, "sex": "M"}), 0.0)  # Bob, his facts stored
        bob = first.streams["d"].session
        calibrate(store, bob)  # a calibration: his session is kept when his stream ends
        first.push(Ingest("d", 0, t0 + 10, 125.0, x, None, None), 0.0)  # rebooted: Alice, nothing of hers stored
        assert first.streams["d"].session.id != bob.id
        first.flush()
        again = table(store)  # the daemon restarted
        again.push(Ingest("d", 300, t0 + 20, 125.0, x, None, None), 0.0)  # her counter and clock go on
        assert again.streams["d"].session.id != bob.id and again.streams["d"].meta is None
        again.push(Ingest("d", 0, t0 + 30, 125.0, x, None, None, "bob"), 0.0)  # a wearer key still finds its own
    finally:
        store.close()


def test_a_write_that_failed_does_not_mark_the_session_stored(tmp_path):
    """Review of issue 24: the first calibrate of a session refused by a full disk must not make every later one
    refused as 'forgotten by another daemon'."""
    store = StateStore(tmp_path / "s.db", "m@1")
    try:
        session = store.open_session("d", None, 0, 10.0, False)
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(StoreError, match="full"):
            for i in range(1000):  # until its row needs a page it may not have
                calibrate(store, store.open_session(f"e{i}", None, 0, 10.0, False), f"e{i}")
        with pytest.raises(StoreError, match="full"):
            calibrate(store, session)
        assert not session.stored
        store.db.execute("PRAGMA max_page_count=1000000")
        calibrate(store, session)  # room again: saved
        assert session.stored and store.recall("d", session.id)[1] is not None
    finally:
        store.close()


def test_the_witness_never_goes_back(tmp_path):
    from p2p_stream.stream.state.store_file import Witness

    witness = Witness(tmp_path / "s.db")
    witness.write("abc", 6)
    witness.write("abc", 5)  # a daemon that started first and wrote last
    assert witness.read() == ("abc", 6)
