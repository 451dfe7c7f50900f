"""A wearer is a thing the daemon knows (issue 24): calibration and facts belong to a wearer session and never follow
the device to the next person; the state is on disk by default; two daemons on one store never write each other's
rows and see each other's forgets; state changes are quota'd. Real daemons on real sockets and real SQLite files
(docs/reliability.md, "State and trust")."""

from __future__ import annotations

import signal
import sqlite3
import time

import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import Client, client, daemon_process, ipc_addresses, running_daemon

from p2p_stream.tools.cli import ctl

FS = 125.0
T0 = 1_700_000_000.0
X = simulated_ppg(75, 12, FS, seed=3)  # 12 s: 9 windows of 4 s every 1 s, in 60 messages of 25 samples
WINDOWS, MESSAGES = 9, 60
OLD = {"age": 78, "sex": "M"}  # the first wearer's facts, far from a population prior
CUFF = (170.0, 100.0)  # and a cuff reading far from what the model says


def of(device: str, n: int = WINDOWS, after: float = 0.0):
    """Until `n` ok estimates of `device` of windows ending after `after` came."""
    return lambda got: len(mine(got, device, after)) >= n


def mine(got: list[dict], device: str, after: float) -> list[dict]:
    return [e for e in got if e["device"] == device and e["ok"] and e["t"] > after]


def stream(c: Client, device: str, t0: float, seq0: int, **extra) -> list[dict]:
    """X as `device` from (`seq0`, `t0`): its ok estimates of this stream (those after `t0`)."""
    c.stream(device, X, FS, t0=t0, seq0=seq0, **extra)
    return mine(c.estimates(of(device, after=t0)), device, t0)


def own(estimates: list[dict]) -> np.ndarray:
    return np.array([[e["sbp_window"], e["dbp_window"]] for e in estimates])  # (n, 2)


def rows(path, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def first_wearer(c: Client, device: str = "watch") -> list[dict]:
    """Wearer 1 streams with their facts and is calibrated (applied at once): their estimates before."""
    before = stream(c, device, T0, 0, meta=OLD)
    reply = c.control({"cmd": "calibrate", "device": device, "sbp": CUFF[0], "dbp": CUFF[1]})
    assert reply["ok"] and reply["applied"], reply
    return before


@pytest.mark.parametrize("kept", ["memory", "store"])
def test_a_second_wearer_on_the_same_id_is_scored_as_a_stranger(est, kept, tmp_path):
    """The red-team's first break: a new person on the device (its counter restarted, no `meta`) after a pause
    shorter than `device_idle_s` (memory), or after an eviction (store). They get neither wearer 1's calibration nor
    their facts: their estimates are exactly those of a device never seen."""
    path = str(tmp_path / "state.sqlite") if kept == "store" else ""
    idle = 1.0 if kept == "store" else 60.0
    with running_daemon(est, state={"path": path}, limits={"device_idle_s": idle}) as (daemon, a), client(a) as c:
        first_wearer(c)
        still = stream(c, "watch", T0 + 12, MESSAGES)  # the same wearer goes on: calibrated
        assert still and all(e["calibrated"] for e in still)
        if kept == "store":  # evicted: the table forgets it; its session stays on disk
            deadline = time.monotonic() + 10
            while "watch" in daemon.parts.devices.streams:
                assert time.monotonic() < deadline, "never evicted"
                time.sleep(0.05)
        second = stream(c, "watch", T0 + 40, 0)  # the counter started again: another wearer, nothing sent of them
        stranger = stream(c, "never-seen", T0 + 40, 0)
    assert not any(e["calibrated"] for e in second) and "carried" not in second[0]
    np.testing.assert_allclose(own(second), own(stranger), atol=0.01)  # no cuff, no age/sex of wearer 1
    assert second[0]["session"] != still[0]["session"] == still[-1]["session"]


def test_wearer_keys_bind_the_calibration_to_the_person(est, tmp_path):
    """With a `wearer` key: another wearer on the device (even with its counter going on) starts clean; a calibrate
    naming a wearer who is not wearing it is refused; the first wearer back gets their calibration and facts again,
    marked `carried`."""
    store = {"path": str(tmp_path / "state.sqlite")}
    with running_daemon(est, state=store) as (_, a), client(a) as c:
        stream(c, "watch", T0, 0, meta=OLD, wearer="p-1")
        reply = c.control({"cmd": "calibrate", "device": "watch", "sbp": CUFF[0], "dbp": CUFF[1], "wearer": "p-1"})
        assert reply["ok"] and reply["applied"]
        other = stream(c, "watch", T0 + 12, MESSAGES, wearer="p-2")  # handed to p-2, its counter going on
        refused = c.control({"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80, "wearer": "p-1"})
        back = stream(c, "watch", T0 + 24, 2 * MESSAGES, wearer="p-1")
        stranger = stream(c, "never-seen", T0, 0)
    assert not any(e["calibrated"] for e in other)
    np.testing.assert_allclose(own(other), own(stranger), atol=0.01)  # p-2 has no facts of p-1's either
    assert refused["ok"] is False and "worn in another session now (wearer 'p-2', not 'p-1')" in refused["error"]
    assert back and all(e["calibrated"] and e["carried"] == ["calibration", "facts"] for e in back)
    assert back[0]["session"] == reply["session"] != other[0]["session"]


def test_ctl_end_session_starts_the_next_wearer_clean(est, tmp_path, capsys):
    store = str(tmp_path / "state.sqlite")
    with running_daemon(est, state={"path": store}) as (_, a), client(a) as c:
        first_wearer(c)
        assert ctl.main(["end-session", "watch", "--control", a["control"]]) == 0
        said = capsys.readouterr().out
        after = stream(c, "watch", T0 + 12, MESSAGES)  # the same counter going on: a new session all the same
        history = c.control({"cmd": "history", "device": "watch"})["history"]
    assert "ended session" in said and "the next wearer starts with nothing known" in said
    assert not any(e["calibrated"] for e in after)
    assert [h["cmd"] for h in history] == ["calibrate", "end_session"]
    assert rows(store, "SELECT count(*) FROM calibrations") == [(0,)]  # gone with its session; the audit stays


def test_kill_9_after_calibrate_loses_nothing_on_the_shipped_defaults(tmp_path, monkeypatch):
    """No state flag at all: the daemon keeps its state in the default store ($XDG_STATE_HOME/p2p/state.sqlite)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with ipc_addresses() as addresses:
        with daemon_process(addresses, own_store=False) as proc:
            c = Client(addresses)
            try:
                c.join(timeout_s=60)
                first_wearer(c)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                c.close()
        with daemon_process(addresses, own_store=False):
            c = Client(addresses)
            try:
                c.join(timeout_s=60)
                again = stream(c, "watch", T0 + 100, MESSAGES)  # the same wearer, its stream going on
            finally:
                c.close()
    assert (tmp_path / "p2p" / "state.sqlite").is_file()
    assert again and all(e["calibrated"] and "calibration" in e["carried"] for e in again)


def test_two_daemons_on_one_store_write_only_what_they_own_and_follow_each_others_forget(est, tmp_path):
    """The device goes from daemon A to daemon B (its stream goes on): B resumes its session and owns it. A can no
    longer write it — its calibrate is refused, naming why — and the reading A acknowledged is still on disk. A
    forget on B reaches A within a few seconds."""
    store = {"path": str(tmp_path / "shared.sqlite")}
    with running_daemon(est, state=store) as (daemon_a, a), running_daemon(est, state=store) as (_, b):
        with client(a) as ca, client(b) as cb:
            first_wearer(ca)
            acknowledged = rows(store["path"], "SELECT id, sbp FROM calibrations")
            moved = stream(cb, "watch", T0 + 12, MESSAGES)  # B takes it over
            late = ca.control({"cmd": "calibrate", "device": "watch", "sbp": 140, "dbp": 90})
            assert rows(store["path"], "SELECT id, sbp FROM calibrations") == acknowledged
            assert cb.control({"cmd": "forget", "device": "watch"}) == {"ok": True, "known": True}
            deadline = time.monotonic() + 10
            while "watch" in daemon_a.parts.devices.streams:
                assert time.monotonic() < deadline, "A never followed B's forget"
                time.sleep(0.05)
    assert moved and all(e["calibrated"] and e["carried"] == ["calibration", "facts"] for e in moved)
    assert late["ok"] is False and "held by another daemon on this store" in late["error"]
    assert rows(store["path"], "SELECT count(*) FROM calibrations") == [(0,)]


def test_state_changes_are_quota_d_and_only_what_was_done_is_audited(est, tmp_path):
    """The red-team's calibrate flood and forgets of ids never seen: refused beyond the quotas, nothing written for
    them; facts of ids that sent `meta` once are pruned when the ids are evicted."""
    store = str(tmp_path / "state.sqlite")
    quota = {"path": store, "control_per_key_per_min": 30, "control_per_device_per_min": 4}
    with running_daemon(est, state=quota, limits={"device_idle_s": 1}) as (daemon, a), client(a) as c:
        c.stream("watch", X[: int(5 * FS)], FS)
        c.estimates(of("watch", 1))
        cuffs = [c.control({"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80}) for _ in range(10)]
        forgets = [c.control({"cmd": "forget", "device": f"never-{i}"}) for i in range(40)]
        for i in range(50):  # one message with meta per new id
            c.stream(f"squat-{i}", X[:25], FS, meta={"age": 40, "sex": "F"})
        deadline = time.monotonic() + 10
        while rows(store, "SELECT count(*) FROM facts") != [(0,)] or len(daemon.parts.devices):
            assert time.monotonic() < deadline, rows(store, "SELECT count(*) FROM facts")
            time.sleep(0.1)
        stats = c.control({"cmd": "stats"})
    assert [r["ok"] for r in cuffs] == [True] * 4 + [False] * 6  # the device's 4 a minute
    assert all("over_quota: 'watch' had 4 state changes" in r["error"] for r in cuffs[4:])
    assert [r["ok"] for r in forgets] == [True] * 25 + [False] * 15  # the key's 30: 4 calibrate, the join's forget
    audited = "SELECT cmd, count(*) FROM audit WHERE device != 'probe' GROUP BY cmd"
    assert rows(store, audited) == [("calibrate", 4)]  # refused ones and forgets of ids never seen: no row
    assert stats["rejected"]["over_quota"] == 6 + 15
