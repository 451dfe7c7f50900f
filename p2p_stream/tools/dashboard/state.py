"""Dashboard state: what `p2p monitor` has heard on the estimates socket, per device and per daemon's heartbeat."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from p2p_stream.errors import ProtocolError
from p2p_stream.tools.dashboard.daemons import Daemons
from p2p_stream.wire.estimate import GAP, INTERVAL_KEYS
from p2p_stream.wire.protocol import STATUS_TOPIC, decode_estimate, decode_map

TREND_POINTS = 40  # accepted SBP estimates kept per device for the trend (the widest trend the view draws)
PULSE_WINDOWS = 5  # the pulse shown is the median over the device's last this many accepted windows
MARKER_REASONS = (GAP,)  # an estimate with this reason only reports a break in the stream: no window, no model
SCORED_KEYS = (
    "device",
    "ok",
    "sbp",
    "dbp",
    "ref_sbp",
    "ref_dbp",
    *INTERVAL_KEYS,
    "interval",
    "basis",
)  # kept to score against references


def number(e: dict | None, key: str) -> float | None:
    """`e[key]` as a finite float; None when `e` is None or the value is absent, nil, not a number or not finite."""
    v = None if e is None else e.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def is_marker(e: dict) -> bool:
    """Whether estimate `e` only marks a break in the device's stream (`gap`: docs/protocol.md), with no window."""
    return not e.get("ok") and e.get("reason") in MARKER_REASONS


@dataclass
class DeviceRow:
    latest: dict  # the latest window's estimate, accepted or rejected (a marker only until a window comes)
    received: float  # time.monotonic() when it arrived
    gap_at: float | None = None  # time.monotonic() of the latest break marker
    history: deque = field(default_factory=lambda: deque(maxlen=TREND_POINTS))  # recent accepted SBP, mmHg
    pulses: deque = field(default_factory=lambda: deque(maxlen=PULSE_WINDOWS))  # recent accepted windows' pulse, bpm
    last_ok: dict | None = None  # the latest accepted estimate: what the row shows while windows are rejected

    @property
    def device(self) -> str:
        return self.latest["device"]

    def pulse_bpm(self) -> float | None:
        """The median pulse of the last PULSE_WINDOWS accepted windows, bpm; None before the first.

        Each window's pulse comes from one autocorrelation peak over a few seconds of PPG, so one window with a
        missed or doubled beat makes it jump (64 → 108 bpm between two windows of the same wearer). The median of
        the last five ignores one or two such windows and follows a real change within three windows, which is
        also how steady `sbp`/`dbp` are (the daemon averages them over its last windows, docs/protocol.md).
        """
        return statistics.median(self.pulses) if self.pulses else None


@dataclass
class DashboardState:
    address: str
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    heartbeat: dict | None = None  # the latest heartbeat, of whichever daemon
    heartbeat_at: float | None = None
    daemons: Daemons = field(default_factory=Daemons)  # each daemon's latest heartbeat (behind a proxy, several)
    started: float = field(default_factory=time.monotonic)
    estimates: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason → estimates published with ok: false
    references: bool = False  # some estimate carried a cuff reading: the view keeps its cuff columns from then on
    # recent ok estimates that carried a reference, only SCORED_KEYS: what `p2p-demo` scores against the cuff
    scored: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def update(self, frames: list[bytes], now: float) -> None:
        """Apply one message from the estimates socket; anything unreadable is ignored."""
        try:
            if frames[0] == STATUS_TOPIC:
                self.heartbeat, self.heartbeat_at = decode_map(frames[1]), now
                self.daemons.update(self.heartbeat, now)
                return
            e = decode_estimate(frames)
        except (ProtocolError, IndexError):
            return
        if not isinstance(e.get("device"), str) or not e["device"]:
            return
        self.estimates += 1
        row = self.devices.get(e["device"])
        if is_marker(e):  # counted, remembered, but the row keeps showing the last window
            self.rejected[e["reason"]] += 1
            if row is None:
                row = self.devices[e["device"]] = DeviceRow(e, now)
            row.gap_at = now
            return
        if row is None:
            row = self.devices[e["device"]] = DeviceRow(e, now)
        row.latest, row.received = e, now
        if number(e, "ref_sbp") is not None and number(e, "ref_dbp") is not None:
            self.references = True
        if e.get("ok") and number(e, "sbp") is not None and number(e, "dbp") is not None:
            row.history.append(e["sbp"])
            row.last_ok = e
            if number(e, "hr") is not None:
                row.pulses.append(e["hr"])
            if e.get("ref_sbp") is not None:
                self.scored.append({k: e[k] for k in SCORED_KEYS if k in e})
        else:
            self.rejected[e.get("reason", "?")] += 1


def interval_of(e: dict | None) -> tuple[float, float, float, float] | None:
    """The estimate's prediction interval (SBP lo, hi, DBP lo, hi) in mmHg; None when it has none (older daemons)."""
    values = [number(e, k) for k in INTERVAL_KEYS]
    if all(v is not None for v in values):
        return tuple(values)  # type: ignore[return-value]
    return None


def interval_level(estimates: list[dict]) -> str:
    """The intervals' level, stated once: "80 %" ("80/90 %" when several, "" when no estimate states it)."""
    levels = sorted(
        {
            float(e["interval"])
            for e in estimates
            if isinstance(e.get("interval"), (int, float)) and 0 < e["interval"] < 1 and interval_of(e) is not None
        }
    )
    return ("/".join(f"{100 * level:.0f}" for level in levels) + " %") if levels else ""
