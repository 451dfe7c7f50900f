"""The control protocol without sockets: every command and every error reply of `control.handle(request, state)`.

tests/test_daemon.py checks the same on a real daemon over REQ/REP; here a fake state records what was asked of it,
so each test can also say that a refused request touched nothing.
"""

from __future__ import annotations

import msgpack
import pytest

from p2p_stream.stream.state.control import COMMANDS, handle
from p2p_stream.stream.state.store import StoreError
from p2p_stream.wire.protocol import pack


class FakeState:
    """A daemon as the control protocol sees it: one known wearable, "watch"; every call recorded."""

    def __init__(self, applied: bool = True, store_fails: bool = False, quota: int = 1000) -> None:
        self.devices = {"watch"}
        self.applied = applied
        self.store_fails = store_fails  # the daemon's state store cannot save: calibrate and forget raise
        self.quota = quota  # state changes admitted before `admit` refuses
        self.calls: list[tuple] = []
        self.session = 7  # watch's wearer session

    def status(self) -> dict:
        self.calls.append(("status",))
        return {"devices": len(self.devices), "backend_device": "cpu", "device": "cpu"}

    def known(self, device: str) -> bool:
        self.calls.append(("known", device))
        return device in self.devices

    def forget(self, device: str) -> bool:
        self.calls.append(("forget", device))
        if self.store_fails:
            raise StoreError("state store s.db could not save it (disk full); nothing was changed")
        known = device in self.devices
        self.devices.discard(device)
        return known

    def calibrate(self, device: str, sbp: float, dbp: float, wearer: str | None = None) -> dict:
        self.calls.append(("calibrate", device, sbp, dbp))
        if self.store_fails:
            raise StoreError("state store s.db could not save it (disk full); nothing was changed")
        return {"applied": self.applied, "session": self.session}

    def end_session(self, device: str) -> int | None:
        self.calls.append(("end_session", device))
        ended, self.session = self.session, self.session + 1
        return ended if device in self.devices else None

    def admit(self, device: str) -> str | None:
        self.calls.append(("admit", device))
        if self.quota <= 0:
            return "over_quota: this client key made 60 state changes in the last minute"
        self.quota -= 1
        return None

    def history(self, device: str, limit: int) -> list[dict]:
        self.calls.append(("history", device, limit))
        return [{"cmd": "calibrate", "device": device}][:limit]


def test_ping():
    state = FakeState()
    assert handle({"cmd": "ping"}, state) == {"ok": True}
    assert state.calls == []


def test_stats_is_the_heartbeat_map():
    assert handle({"cmd": "stats"}, FakeState()) == {"ok": True, "devices": 1, "backend_device": "cpu", "device": "cpu"}


@pytest.mark.parametrize("applied", [True, False])
def test_calibrate_a_known_device(applied):
    state = FakeState(applied)
    reply = handle({"cmd": "calibrate", "device": "watch", "sbp": 128, "dbp": 81.5}, state)
    assert reply == {"ok": True, "applied": applied, "session": 7}
    assert state.calls == [("known", "watch"), ("admit", "watch"), ("calibrate", "watch", 128.0, 81.5)]
    assert all(isinstance(v, float) for v in state.calls[-1][2:])  # ints from msgpack arrive as mmHg floats


def test_forget_known_and_unknown():
    state = FakeState()
    assert handle({"cmd": "forget", "device": "watch"}, state) == {"ok": True, "known": True}
    assert handle({"cmd": "forget", "device": "watch"}, state) == {"ok": True, "known": False}


def test_requests_arrive_as_frames_bytes_or_a_map():
    for request in ([pack({"cmd": "ping"})], pack({"cmd": "ping"}), {"cmd": "ping"}):
        assert handle(request, FakeState()) == {"ok": True}


@pytest.mark.parametrize(
    "request_,error",
    [
        ({"cmd": "reboot"}, "unknown cmd 'reboot'; valid: ping, stats, calibrate, forget, end_session, history"),
        ({"cmd": "end_session", "device": "never-seen"}, "unknown device 'never-seen': it is not streaming here"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80, "wearer": "a b"}, "calibrate 'wearer'"),
        ({"cmd": "history"}, "history needs 'device'"),
        ({"cmd": "history", "device": "watch", "limit": 0}, "history 'limit' is a whole number of rows, 1–1000"),
        ({"cmd": "history", "device": "watch", "limit": 1001}, "history 'limit'"),
        ({"cmd": "history", "device": "watch", "limit": 2.0}, "history 'limit'"),
        ({"cmd": "history", "device": "watch", "limit": True}, "history 'limit'"),
        ({"nocmd": 1}, "unknown cmd None"),
        ({"cmd": "x" * 500}, "unknown cmd 'xxxxx"),
        ({"cmd": "calibrate", "sbp": 120, "dbp": 80}, "calibrate needs 'device', 1–64 characters of [A-Za-z0-9_.:-]"),
        ({"cmd": "forget", "device": "bad id!"}, "forget needs 'device'"),
        ({"cmd": "forget", "device": "d" * 65}, "forget needs 'device'"),
        ({"cmd": "forget", "device": 7}, "forget needs 'device'"),
        ({"cmd": "calibrate", "device": "watch", "sbp": "120", "dbp": 80}, "calibrate needs numeric 'sbp' and 'dbp'"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 120}, "calibrate needs numeric 'sbp' and 'dbp'"),
        ({"cmd": "calibrate", "device": "watch", "sbp": True, "dbp": 80}, "numeric 'sbp' and 'dbp'"),
        ({"cmd": "calibrate", "device": "watch", "sbp": float("nan"), "dbp": 80}, "numeric 'sbp' and 'dbp'"),
        ({"cmd": "calibrate", "device": "watch", "sbp": float("inf"), "dbp": 80}, "numeric 'sbp' and 'dbp'"),
        (
            {"cmd": "calibrate", "device": "watch", "sbp": 80, "dbp": 120},
            "implausible cuff reading 80.0/120.0 mmHg: need SBP 50–260, DBP 25–160, DBP < SBP",
        ),
        ({"cmd": "calibrate", "device": "watch", "sbp": 49.9, "dbp": 30}, "implausible cuff reading"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 261, "dbp": 80}, "implausible cuff reading"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 24.9}, "implausible cuff reading"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 200, "dbp": 161}, "implausible cuff reading"),
        ({"cmd": "calibrate", "device": "watch", "sbp": 90, "dbp": 90}, "implausible cuff reading"),
        (b"\xc1not msgpack", "malformed request"),
        (b"\x93\x01\x02\x03", "malformed request: expected a map"),
        ([pack({"cmd": "ping"}), b"extra"], "a request is one frame holding a msgpack map, got 2 frames"),
        ([], "got 0 frames"),
    ],
)
def test_every_error_is_a_clear_reply_and_touches_nothing(request_, error):
    state = FakeState()
    reply = handle(request_, state)
    assert reply["ok"] is False and error in reply["error"], reply
    assert set(reply) == {"ok", "error"}
    assert [c for c in state.calls if c[0] != "known"] == []  # validated before acting (and before any quota)


def test_calibrating_a_device_that_has_sent_nothing_is_an_error():
    state = FakeState()
    reply = handle({"cmd": "calibrate", "device": "never-seen", "sbp": 120, "dbp": 80}, state)
    assert reply == {"ok": False, "error": "unknown device 'never-seen': it has sent no data (or was forgotten)"}
    assert state.calls == [("known", "never-seen")]


def test_the_edges_of_the_plausible_range_are_accepted():
    for sbp, dbp in ((50, 25), (260, 160), (50, 49.9)):
        assert handle({"cmd": "calibrate", "device": "watch", "sbp": sbp, "dbp": dbp}, FakeState())["ok"]


def test_a_change_the_store_cannot_save_is_refused_whole():
    state = FakeState(store_fails=True)
    for request in (
        {"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80},
        {"cmd": "forget", "device": "watch"},
    ):
        reply = handle(request, state)
        assert reply == {
            "ok": False,
            "error": f"{request['cmd']} not done: state store s.db could not save it (disk full); nothing was changed",
        }
    assert state.devices == {"watch"}


def test_a_state_change_over_quota_is_refused_and_touches_nothing():
    state = FakeState(quota=2)
    for request in (
        {"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80},
        {"cmd": "forget", "device": "watch"},
    ):
        assert handle(request, state)["ok"]
    for request in (
        {"cmd": "calibrate", "device": "watch", "sbp": 120, "dbp": 80},
        {"cmd": "forget", "device": "watch"},
        {"cmd": "end_session", "device": "watch"},
    ):
        state.devices.add("watch")
        state.calls.clear()
        reply = handle(request, state)
        assert reply == {"ok": False, "error": "over_quota: this client key made 60 state changes in the last minute"}
        assert [c[0] for c in state.calls if c[0] not in ("known", "admit")] == []  # nothing changed


def test_end_session_names_the_session_that_ended():
    state = FakeState()
    assert handle({"cmd": "end_session", "device": "watch"}, state) == {"ok": True, "session": 7}
    assert handle({"cmd": "end_session", "device": "watch"}, state) == {"ok": True, "session": 8}
    assert state.calls[:3] == [("known", "watch"), ("admit", "watch"), ("end_session", "watch")]


def test_history_defaults_to_20_rows_and_passes_the_limit():
    state = FakeState()
    assert handle({"cmd": "history", "device": "watch"}, state)["history"] == [{"cmd": "calibrate", "device": "watch"}]
    handle({"cmd": "history", "device": "watch", "limit": 1000}, state)
    assert state.calls == [("history", "watch", 20), ("history", "watch", 1000)]


def test_commands_are_the_documented_ones():
    for cmd in COMMANDS:
        reply = handle(msgpack.packb({"cmd": cmd, "device": "watch", "sbp": 120, "dbp": 80}), FakeState())
        assert reply["ok"], (cmd, reply)


def test_a_mass_eviction_is_one_log_line(caplog):
    import logging
    from types import SimpleNamespace

    from p2p_stream.ratelimit import RateLimitedLog
    from p2p_stream.stream.daemon import Daemon, log

    daemon = SimpleNamespace(warn=RateLimitedLog(log, period_s=10.0))
    with caplog.at_level(logging.INFO, logger="p2p_stream.stream.daemon"):
        Daemon._log_evicted(daemon, [f"squat-{k}" for k in range(10_000)])
        Daemon._log_evicted(daemon, [])
        Daemon._log_evicted(daemon, ["late"])  # within the period: counted, not logged
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["forgot 10000 device(s) that were idle: squat-0, squat-1, squat-2, squat-3, squat-4 and 9995 more"]
