"""Dashboard: `p2p monitor`, a live terminal view of every device's estimates and the daemon's heartbeat.

The command: its flags, the SUB to the daemon's estimates, and the loop that feeds `render` to rich's `Live`.
What it shows lives beside it, one concept a file: `state.py` (what was heard, per device), `daemons.py` (each
daemon's latest heartbeat, which went silent, and their total behind a proxy), `columns.py` (each column's cell
and fixed width, and which columns fit a width), `category.py` (the BP category of a reading) and `view.py` (the
screen: header, table, legend, the research-use line).

Column priorities, most important first; a narrower terminal leaves out columns from the end and never shortens
one: device id (never truncated), SBP ± interval, DBP ± interval, updated, status, SQI, pulse, cuff, est−cuff,
trend. At 80 columns the id, both estimates with their intervals, updated, status, SQI and pulse fit for ids up
to 26 characters; the cuff columns, the trend and written-out status labels come as the terminal widens.
Rows keep the order the user picked (`--sort`, by id by default), so the screen does not jump between frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import zmq
from rich.console import Console
from rich.live import Live

from p2p_stream.config.addresses import FORMS, check_address
from p2p_stream.config.daemon import Sockets
from p2p_stream.errors import ConfigError
from p2p_stream.tools.common import alias, command, parent_parser, setup_logging
from p2p_stream.tools.dashboard.state import DashboardState, interval_level, interval_of
from p2p_stream.tools.dashboard.view import SORTS, View, render
from p2p_stream.wire.protocol import STATUS_TOPIC

__all__ = ["DashboardState", "View", "interval_level", "interval_of", "main", "pump", "render", "run_live", "subscribe"]
PIPED_WIDTH = 100  # --once into a pipe or file, without --width or COLUMNS: wide enough for the cuff columns
DEFAULT_ESTIMATES = Sockets().publish  # the daemon's own default (config/daemon.py), not a copy of it


def subscribe(address: str) -> tuple[zmq.Context, zmq.Socket]:
    """A SUB to the daemon's estimates and heartbeat at `address` (checked first: a bad one is a `ConfigError`)."""
    check_address(address, "--estimates", example=DEFAULT_ESTIMATES)
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


def rows_that_fit(console: Console, state: DashboardState, view: View, now: float | None = None) -> int:
    """Device rows that fit the terminal's height beside the header, the daemons, the table's head, the legend and
    the last line, at `now` (monotonic; default: now).

    Measured by rendering: the legend's length depends on the width and on what the rows show, the header's on
    which daemons still beat.
    """
    now = time.monotonic() if now is None else now
    k = min(len(state.devices), console.size.height)
    others = len(console.render_lines(render(state, now, max_rows=k, view=view), pad=False)) - k
    return max(3, console.size.height - others - 2)  # 2: the "… more" line, and the line the cursor rests on


def run_live(
    state: DashboardState,
    sub: zmq.Socket,
    console: Console,
    duration_s: float | None = None,
    refresh_hz: float = 4.0,
    view: View = View(),
) -> None:
    start = time.monotonic()
    frame = render(state, max_rows=rows_that_fit(console, state, view), view=view)
    with Live(frame, console=console, auto_refresh=False, screen=False) as live:
        while duration_s is None or time.monotonic() - start < duration_s:
            pump(sub, state, int(1000 / refresh_hz))
            live.update(render(state, max_rows=rows_that_fit(console, state, view), view=view), refresh=True)


DESCRIPTION = """Live terminal dashboard of a running daemon: one row per wearable with its latest blood pressure
and prediction interval, time since its update, status, signal quality, pulse, cuff reading and trend, in the
order --sort picks; a header with the daemon's heartbeat (devices, windows/s, batch size, latency, rejections)
and a legend. Behind p2p proxy the header adds up every daemon still beating and a table gives each daemon a line
(a daemon whose heartbeat stopped is shown silent). Research use, not a medical device. Ctrl-C quits; --once
prints one frame and exits (0 when a heartbeat arrived, 1 when no daemon answered)."""


@command
def main(argv: list[str] | None = None, prog: str = "p2p-monitor") -> int:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, parents=[parent_parser()])
    p.add_argument(
        "--estimates",
        default=DEFAULT_ESTIMATES,
        metavar="ADDRESS",
        help="the daemon's estimates address, to read from (default %(default)s, the daemon's own; old name: "
        "--connect)",
    )
    alias(p, "--connect", "estimates")
    p.add_argument(
        "--sort",
        choices=list(SORTS),
        default="id",
        help="row order: " + "; ".join(f"{k}: {v}" for k, v in SORTS.items()) + " (default %(default)s)",
    )
    default = View()
    p.add_argument(
        "--trend-mmhg",
        type=float,
        nargs=2,
        default=default.trend_mmhg,
        metavar=("LOW", "HIGH"),
        help="the SBP trend's fixed scale, the same for every row, mmHg (default {:g} {:g})".format(
            *default.trend_mmhg
        ),
    )
    p.add_argument(
        "--width",
        type=int,
        metavar="COLUMNS",
        help=f"characters per line (default: the terminal's; when printing into a pipe or file, $COLUMNS or "
        f"{PIPED_WIDTH})",
    )
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
    low, high = args.trend_mmhg
    if not 0 <= low < high:
        raise ConfigError(f"--trend-mmhg must be LOW < HIGH, both ≥ 0, got {low:g} {high:g}; e.g. --trend-mmhg 80 200")
    if args.width is not None and args.width < 40:
        raise ConfigError(f"--width must be ≥ 40 characters, got {args.width}")
    view = View(sort=args.sort, trend_mmhg=(low, high))
    console = Console(width=args.width)
    if args.width is None and not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPED_WIDTH  # rich's fallback is 80, which leaves out the cuff columns
    ctx, sub = subscribe(args.estimates)
    state = DashboardState(args.estimates)
    try:
        if args.once:
            deadline = time.monotonic() + args.wait_s
            while time.monotonic() < deadline:
                pump(sub, state, 100)
            console.print(render(state, max_rows=args.rows, view=view))
            return 0 if state.heartbeat is not None else 1
        run_live(state, sub, console, view=view)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
