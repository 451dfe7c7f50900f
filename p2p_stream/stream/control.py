"""Control protocol: one request and the daemon's state → one reply map; no sockets, so every reply is testable.

Requests and replies are one-frame msgpack maps (docs/protocol.md, "Control"):

    {"cmd": "ping"}                                       → {"ok": true}
    {"cmd": "stats"}                                      → {"ok": true, ...heartbeat...}
    {"cmd": "calibrate", "device": id, "sbp": mmHg, "dbp": mmHg} → {"ok": true, "applied": bool}
    {"cmd": "forget", "device": id}                       → {"ok": true, "known": bool}

Every failure is `{"ok": false, "error": "<what is wrong and what would be right>"}`; `handle` never raises for a
bad request. The request is validated in full before `state` is touched. With CURVE, a command naming a device the
client's key may not act for is refused (`unauthorized_device: …`) before anything else is said about the device;
`ping` and `stats` are open to every admitted key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from p2p_stream.errors import ProtocolError
from p2p_stream.stream.protocol import DEVICE_RE, decode_map

COMMANDS = ("ping", "stats", "calibrate", "forget")
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

    def calibrate(self, device: str, sbp: float, dbp: float) -> bool:
        """Apply a cuff reading (mmHg) to a known device; whether its reference could be formed at once."""
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
    if cmd not in ("calibrate", "forget"):
        return _error(f"unknown cmd {repr(cmd)[:64]}; valid: {', '.join(COMMANDS)}")
    device = request.get("device")
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        return _error(f"{cmd} needs 'device', 1–64 characters of [A-Za-z0-9_.:-]")
    if allowed is not None and not allowed(device):
        return _error(
            f"unauthorized_device: {device!r} is not among the devices this client's key may act for (the devices "
            f"patterns of its key file); {cmd} refused"
        )
    if cmd == "forget":
        return {"ok": True, "known": state.forget(device)}
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
    if not state.known(device):
        return _error(f"unknown device {device!r}: it has sent no data (or was forgotten)")
    return {"ok": True, "applied": state.calibrate(device, sbp, dbp)}


def _error(message: str) -> dict:
    return {"ok": False, "error": message}
