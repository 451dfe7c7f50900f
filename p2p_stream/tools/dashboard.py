"""Dashboard: `p2p-monitor`, a live terminal view of every device's estimates and the daemon's heartbeat.

The view is a pure function, `render(state, now)`, fed to rich's `Live`; the state is updated from the
estimates socket. Devices needing attention sort first, so the top rows matter even with 1,000 devices.
Each estimate is shown with its prediction interval when the daemon sends one (the level once, in the column's
title). When the table is wider than the terminal, it leaves out the columns that would be squeezed to nothing
(SQI, age) and shortens the trend, so an 80-column terminal still reads.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import zmq
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from p2p_stream.config.addresses import FORMS, check_address
from p2p_stream.errors import ConfigError, ProtocolError
from p2p_stream.stream.protocol import STATUS_TOPIC, decode_estimate, decode_map
from p2p_stream.tools.bp_category import CATEGORIES, bp_category
from p2p_stream.tools.common import alias, command, parent_parser, setup_logging

SPARK = "▁▂▃▄▅▆▇█"
STALE_S = 10.0  # an estimate older than this is shown as stale
HEARTBEAT_LOST_S = 3.0  # no heartbeat for this long: the daemon is unreachable
INTERVAL_KEYS = ("sbp_lo", "sbp_hi", "dbp_lo", "dbp_hi")  # an estimate's prediction interval, mmHg
SCORED_KEYS = ("ok", "sbp", "dbp", "ref_sbp", "ref_dbp", *INTERVAL_KEYS, "interval")  # kept to score against references


@dataclass
class DeviceRow:
    latest: dict
    received: float  # time.monotonic() of the latest estimate
    history: deque = field(default_factory=lambda: deque(maxlen=24))  # recent SBP estimates
    last_ok: dict | None = None


@dataclass
class DashboardState:
    address: str
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    heartbeat: dict | None = None
    heartbeat_at: float | None = None
    started: float = field(default_factory=time.monotonic)
    estimates: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason → estimates published with ok: false
    # recent ok estimates that carried a reference, only SCORED_KEYS: what `p2p-demo` scores against the cuff
    scored: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def update(self, frames: list[bytes], now: float) -> None:
        """Apply one message from the estimates socket; anything unreadable is ignored."""
        try:
            if frames[0] == STATUS_TOPIC:
                self.heartbeat, self.heartbeat_at = decode_map(frames[1]), now
                return
            e = decode_estimate(frames)
        except (ProtocolError, IndexError):
            return
        self.estimates += 1
        row = self.devices.get(e["device"])
        if row is None:
            row = self.devices[e["device"]] = DeviceRow(e, now)
        row.latest, row.received = e, now
        if e.get("ok") and e.get("sbp") is not None:
            row.history.append(e["sbp"])
            row.last_ok = e
            if e.get("ref_sbp") is not None:
                self.scored.append({k: e[k] for k in SCORED_KEYS if k in e})
        else:
            self.rejected[e.get("reason", "?")] += 1


def sparkline(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1.0)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def interval_of(e: dict | None) -> tuple[float, float, float, float] | None:
    """The estimate's prediction interval (SBP lo, hi, DBP lo, hi) in mmHg; None when it has none (older daemons)."""
    if e is None:
        return None
    values = [e.get(k) for k in INTERVAL_KEYS]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return tuple(float(v) for v in values)  # type: ignore[return-value]
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


def _attention(row: DeviceRow, now: float) -> tuple[int, str]:
    e = row.latest
    if now - row.received > STALE_S:
        return 2, e["device"]
    if not e.get("ok"):
        return 2, e["device"]
    return CATEGORIES[bp_category(e["sbp"], e["dbp"])][1], e["device"]


def _header(state: DashboardState, now: float) -> Panel:
    hb = state.heartbeat
    if hb is None or state.heartbeat_at is None or now - state.heartbeat_at > HEARTBEAT_LOST_S:
        waited = now - (state.heartbeat_at or state.started)
        text = Text(
            f"No daemon reachable at {state.address} (no heartbeat for {waited:.0f} s). "
            "Is p2p daemon running, and is this its estimates address (--estimates)?",
            style="bold red",
        )
        return Panel(text, title="Pulse2Pressure")
    rejected = hb.get("rejected") or {}
    top = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])[:4]) or "none"
    p50, p99 = hb.get("latency_p50_ms"), hb.get("latency_p99_ms")
    lat = f"{p50:.0f} / {p99:.0f} ms" if p50 is not None and p99 is not None else "—"
    text = Text.assemble(
        ("devices ", "dim"),
        (f"{hb.get('devices', 0)}", "bold"),
        ("   windows/s ", "dim"),
        (f"{hb.get('windows_per_s', 0):.1f}", "bold"),
        ("   batch ", "dim"),
        (f"{hb.get('batch_mean', 0):.1f}", "bold"),
        ("   latency p50/p99 ", "dim"),
        (lat, "bold"),
        ("   rejected ", "dim"),
        (f"{sum(rejected.values())}", "bold"),
        (f" ({top})", "dim"),
        ("   model ", "dim"),
        (str(hb.get("model", "?")), ""),
    )
    return Panel(text, title="Pulse2Pressure — live cuff-less blood pressure", subtitle=f"{state.address}")


def _format_interval(estimate: dict, interval: tuple[float, float, float, float], plus_minus: bool) -> str:
    """`112–145/71–89`; with `plus_minus`, `±17/9` when the interval is symmetric about the estimate."""
    slo, shi, dlo, dhi = interval
    if plus_minus:
        s_half, d_half = (shi - slo) / 2, (dhi - dlo) / 2
        if abs(slo + s_half - estimate["sbp"]) < 0.5 and abs(dlo + d_half - estimate["dbp"]) < 0.5:
            return f"±{s_half:.0f}/{d_half:.0f}"
    return f"{slo:.0f}–{shi:.0f}/{dlo:.0f}–{dhi:.0f}"


@dataclass
class _Layout:
    narrow: bool  # SQI and age left out, lighter borders
    plus_minus: bool  # the interval as ±half-width inside the SBP/DBP cell instead of its own column
    trend_points: int  # the last this many SBP estimates in the trend


class _DeviceTable:
    """One row per device, laid out for the width rich gives it: the first layout that fits, the trend taking the rest.

    Layouts, in order: every column with the interval in its own column; without SQI and age (which an even
    squeeze would shrink to nothing) and lighter borders; then with the interval as `±` inside the estimate's cell.
    """

    MIN_TREND = len("trend (SBP)")

    def __init__(self, rows: list[DeviceRow], now: float) -> None:
        self.rows, self.now = rows, now
        self.shown = [row.latest if row.latest.get("ok") else row.last_ok for row in rows]
        self.with_interval = [e for e in self.shown if interval_of(e) is not None]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        layouts = [_Layout(False, False, self.MIN_TREND), _Layout(True, False, self.MIN_TREND)]
        if self.with_interval:
            layouts.append(_Layout(True, True, self.MIN_TREND))
        unbounded = options.update_width(10_000)
        for layout in layouts:
            spare = options.max_width - console.measure(self.table(layout), options=unbounded).maximum
            if spare >= 0:
                break
        layout.trend_points = self.MIN_TREND + max(spare, 0)
        yield self.table(layout)

    def table(self, layout: _Layout) -> Table:
        now, narrow = self.now, layout.narrow
        interval_column = bool(self.with_interval) and not layout.plus_minus
        level = interval_level(self.with_interval)
        bp_title = f"SBP/DBP ± {level}".strip() if self.with_interval and layout.plus_minus else "SBP/DBP mmHg"
        columns = [
            ("device", "left"),
            (bp_title, "right"),
            *([(f"{level} interval".strip(), "right")] if interval_column else []),
            ("trend (SBP)", "left"),
            ("pulse", "right"),
            *([] if narrow else [("SQI", "right")]),
            ("status", "left"),
            ("reference", "right"),
            ("error", "right"),
            *([] if narrow else [("age", "right")]),
        ]
        lighter = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}
        table = Table(expand=True, header_style="bold", **(lighter if narrow else {}))  # type: ignore[arg-type]
        for name, justify in columns:
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for row, shown in zip(self.rows, self.shown):
            e = row.latest
            age = now - row.received
            interval = interval_of(shown)
            if shown is not None:
                category = bp_category(shown["sbp"], shown["dbp"])
                bp = Text(f"{shown['sbp']:.0f}/{shown['dbp']:.0f}", style=CATEGORIES[category][0])
                if interval and layout.plus_minus:
                    bp.append(" " + _format_interval(shown, interval, plus_minus=True))
            else:
                category, bp = None, Text("—", style="dim")
            if age > STALE_S:
                status = Text("stale", style="magenta")
            elif e.get("ok"):
                status = Text(category + (" (cal)" if e.get("calibrated") else ""), style=CATEGORIES[category][0])
            else:
                status = Text(f"rejected: {e.get('reason', '?')}", style="bold magenta")
            ref = error = ""
            if e.get("ref_sbp") is not None:
                ref = f"{e['ref_sbp']:.0f}/{e['ref_dbp']:.0f}"
                if shown is not None:
                    error = f"{shown['sbp'] - e['ref_sbp']:+.0f}/{shown['dbp'] - e['ref_dbp']:+.0f}"
            in_column = _format_interval(shown, interval, plus_minus=False) if shown and interval else ""
            table.add_row(
                e["device"],
                bp,
                *([in_column] if interval_column else []),
                sparkline(list(row.history)[-layout.trend_points :]),
                f"{e['hr']:.0f} bpm" if e.get("hr") else "—",
                *([] if narrow else [f"{e.get('sqi', 0):.2f}"]),
                status,
                ref,
                error,
                *([] if narrow else [f"{age:.0f} s"]),
            )
        return table


def render(state: DashboardState, now: float | None = None, max_rows: int = 40) -> Group:
    """The whole screen for `state` at time `now` (monotonic): header and one row per device, worst first."""
    now = time.monotonic() if now is None else now
    rows = sorted(state.devices.values(), key=lambda r: _attention(r, now))
    parts = [_header(state, now), _DeviceTable(rows[:max_rows], now)]
    if len(rows) > max_rows:
        parts.append(Text(f"… and {len(rows) - max_rows} more devices, needing less attention", style="dim"))
    if not rows:
        parts.append(Text("No estimates yet.", style="dim"))
    return Group(*parts)


def subscribe(address: str) -> tuple[zmq.Context, zmq.Socket]:
    """A SUB to the daemon's estimates and heartbeat at `address` (checked first: a bad one is a `ConfigError`)."""
    check_address(address, "--estimates", example="tcp://127.0.0.1:5556")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"sbp.")
    sub.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
    try:
        sub.connect(address)
    except zmq.ZMQError as exc:
        ctx.destroy(linger=0)
        raise ConfigError(f"--estimates: cannot connect to {address} ({exc}); give {FORMS}") from exc
    return ctx, sub


def pump(sub: zmq.Socket, state: DashboardState, timeout_ms: int, limit: int = 10_000) -> None:
    """Read what has arrived (waiting up to `timeout_ms` for the first message) into `state`."""
    if not sub.poll(timeout_ms):
        return
    for _ in range(limit):
        try:
            frames = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        state.update(frames, time.monotonic())


def run_live(
    state: DashboardState, sub: zmq.Socket, console: Console, duration_s: float | None = None, refresh_hz: float = 4.0
) -> None:
    start = time.monotonic()
    rows = max(5, console.size.height - 8)
    with Live(render(state, max_rows=rows), console=console, auto_refresh=False, screen=False) as live:
        while duration_s is None or time.monotonic() - start < duration_s:
            pump(sub, state, int(1000 / refresh_hz))
            live.update(render(state, max_rows=max(5, console.size.height - 8)), refresh=True)


DESCRIPTION = """Live terminal dashboard of a running daemon: one row per wearable with its latest blood pressure
(and prediction interval), trend, pulse, signal quality and status, worst first; a header with the daemon's
heartbeat (devices, windows/s, batch size, latency, rejections). Ctrl-C quits; --once prints one frame and exits
(0 when a heartbeat arrived, 1 when no daemon answered)."""


@command
def main(argv: list[str] | None = None, prog: str = "p2p-monitor") -> int:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, parents=[parent_parser()])
    p.add_argument(
        "--estimates",
        default="tcp://127.0.0.1:5556",
        metavar="ADDRESS",
        help="the daemon's estimates address, to read from (default %(default)s; old name: --connect)",
    )
    alias(p, "--connect", "estimates")
    p.add_argument("--once", action="store_true", help="collect for --wait-s seconds, print one frame, exit")
    p.add_argument(
        "--wait-s",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="with --once: seconds to listen before printing (default 3)",
    )
    alias(p, "--wait", "wait_s", type=float)
    p.add_argument("--rows", type=int, default=40, help="with --once: device rows to print")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.wait_s < 0 or args.rows < 1:
        raise ConfigError(f"--wait-s must be ≥ 0 and --rows ≥ 1, got {args.wait_s} and {args.rows}")
    console = Console()
    ctx, sub = subscribe(args.estimates)
    state = DashboardState(args.estimates)
    try:
        if args.once:
            deadline = time.monotonic() + args.wait_s
            while time.monotonic() < deadline:
                pump(sub, state, 100)
            console.print(render(state, max_rows=args.rows))
            return 0 if state.heartbeat is not None else 1
        run_live(state, sub, console)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
