"""Control protocol: one request and the daemon's state → one reply map; no sockets, so every reply is testable.

Requests and replies are one-frame msgpack maps (docs/protocol.md, "Control"):

    {"cmd": "ping"}                                       → {"ok": true}
    {"cmd": "stats"}                                      → {"ok": true, ...heartbeat...}
    {"cmd": "calibrate", "device": id, "sbp": mmHg, "dbp": mmHg, "wearer"?: key} → {"ok": true, "applied": bool,
                                                              "session": n}
    {"cmd": "forget", "device": id}                       → {"ok": true, "known": bool}
    {"cmd": "end_session", "device": id}                  → {"ok": true, "session": n}  (the session that ended)
    {"cmd": "history", "device": id, "limit": n}          → {"ok": true, "history": [{time, cmd, values, outcome,
                                                              client}, ...]}  (oldest first; needs a state store)

Every failure is `{"ok": false, "error": "<what is wrong and what would be right>"}`; `handle` never raises for a
bad request. The request is validated in full before `state` is touched; a state change (calibrate, forget,
end_session) must then fit the requester's and the device's quota (`admit`), and one the state store could not save
(`P2PError` from `state`) is refused whole: `ok: false`, nothing changed. A `calibrate` naming a `wearer` is refused
unless that wearer's session is the device's now, so a reading never lands on the next person. With CURVE, a command
naming a device the client's key may not act for is refused (`unauthorized_device: …`) before anything else is said
about the device;
`ping` and `stats` are open to every admitted key; `history` needs the device, as its changes do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from p2p_stream.errors import P2PError, ProtocolError
from p2p_stream.wire.protocol import DEVICE_RE, decode_map

COMMANDS = ("ping", "stats", "calibrate", "forget", "end_session", "history")
CHANGES = ("calibrate", "forget", "end_session")  # the commands that change state: quota'd and audited
HISTORY_DEFAULT, HISTORY_MAX = 20, 1000  # audit rows in one history reply
SBP_RANGE_MMHG = (50.0, 260.0)  # a plausible cuff reading; outside it the request is refused
DBP_RANGE_MMHG = (25.0, 160.0)


class ControlState(Protocol):
    """What the control protocol needs from the daemon; `Daemon` is one, a test can hand in a fake."""

    def status(self) -> dict:
        """The heartbeat map."""
        ...

    def known(self, device: str) -> bool:
        """Whether the device's current stream has sent data (a calibration needs its clock)."""
        ...

    def forget(self, device: str) -> bool:
        """Drop the device's buffer, calibration and smoothing; whether it was known."""
        ...

    def calibrate(self, device: str, sbp: float, dbp: float, wearer: str | None = None) -> dict:
        """Apply a cuff reading (mmHg) to a known device (whose session must be `wearer`'s, when given): the reply's
        `applied` (its reference could be formed at once) and `session`."""
        ...

    def end_session(self, device: str) -> int | None:
        """End the device's wearer session: the id of the one that ended; None for a device not streaming."""
        ...

    def admit(self, device: str) -> str | None:
        """Spend one state change of the requester's and the device's quota; or why not."""
        ...

    def history(self, device: str, limit: int) -> list[dict] | None:
        """The device's latest `limit` audit rows, oldest first; None when the daemon keeps no state store."""
        ...


def handle(
    request: dict | bytes | list[bytes], state: ControlState, allowed: Callable[[str], bool] | None = None
) -> dict:
    """A control request → its reply map.

    `request` is the received frames (a list: exactly one is allowed), one frame's bytes, or an already decoded map.
    `allowed(device)` says whether the requester may act for a device (with CURVE: its key's device patterns);
    None: it may act for any.
    """
    if isinstance(request, list):
        if len(request) != 1:
            return _error(f"a request is one frame holding a msgpack map, got {len(request)} frames")
        request = request[0]
    if isinstance(request, bytes):
        try:
            request = decode_map(request)
        except ProtocolError as exc:
            return _error(f"malformed request: {exc}")
    cmd = request.get("cmd")
    if cmd == "ping":
        return {"ok": True}
    if cmd == "stats":
        return {"ok": True, **state.status()}
    if cmd not in (*CHANGES, "history"):
        return _error(f"unknown cmd {repr(cmd)[:64]}; valid: {', '.join(COMMANDS)}")
    device = request.get("device")
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        return _error(f"{cmd} needs 'device', 1–64 characters of [A-Za-z0-9_.:-]")
    if allowed is not None and not allowed(device):
        return _error(
            f"unauthorized_device: {device!r} is not among the devices this client's key may act for (the devices "
            f"patterns of its key file); {cmd} refused"
        )
    try:
        return _for_device(cmd, device, request, state)
    except P2PError as exc:  # the state store could not save (or read) it: nothing changed
        return _error(f"{cmd} not done: {exc}")


def _for_device(cmd: str, device: str, request: dict, state: ControlState) -> dict:
    """A validated device's `calibrate`, `forget`, `end_session` or `history` → its reply."""
    if cmd == "forget":
        return _refused(state.admit(device)) or {"ok": True, "known": state.forget(device)}
    if cmd == "end_session":
        if not state.known(device):
            return _error(f"unknown device {device!r}: it is not streaming here, so it has no session to end")
        refused = _refused(state.admit(device))
        if refused:
            return refused
        ended = state.end_session(device)
        if ended is None:
            return _error(f"unknown device {device!r}: it left while the request waited")
        return {"ok": True, "session": ended}
    if cmd == "history":
        limit = request.get("limit", HISTORY_DEFAULT)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= HISTORY_MAX:
            return _error(f"history 'limit' is a whole number of rows, 1–{HISTORY_MAX} (default {HISTORY_DEFAULT})")
        rows = state.history(device, limit)
        if rows is None:
            return _error("history needs the daemon's state store: start it with --set state.path=FILE")
        return {"ok": True, "history": rows}
    values = [request.get(k) for k in ("sbp", "dbp")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return _error("calibrate needs numeric 'sbp' and 'dbp' in mmHg")
    sbp, dbp = float(values[0]), float(values[1])
    (sbp_lo, sbp_hi), (dbp_lo, dbp_hi) = SBP_RANGE_MMHG, DBP_RANGE_MMHG
    if not (sbp_lo <= sbp <= sbp_hi and dbp_lo <= dbp <= dbp_hi and dbp < sbp):
        return _error(
            f"implausible cuff reading {sbp}/{dbp} mmHg: need SBP {sbp_lo:g}–{sbp_hi:g}, "
            f"DBP {dbp_lo:g}–{dbp_hi:g}, DBP < SBP"
        )
    wearer = request.get("wearer")
    if wearer is not None and (not isinstance(wearer, str) or not DEVICE_RE.fullmatch(wearer)):
        return _error("calibrate 'wearer', when given, is the key the device's ingest names: 1–64 of [A-Za-z0-9_.:-]")
    if not state.known(device):
        return _error(f"unknown device {device!r}: it has sent no data (or was forgotten)")
    return _refused(state.admit(device)) or {"ok": True, **state.calibrate(device, sbp, dbp, wearer)}


def _refused(why: str | None) -> dict | None:
    return _error(why) if why is not None else None


def _error(message: str) -> dict:
    return {"ok": False, "error": message}
