"""`p2p-daemon`: load the config (defaults → TOML → flags), start the daemon, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from p2p_stream.config.daemon import DaemonConfig, load_daemon_config
from p2p_stream.config.layers import parse_override
from p2p_stream.config.settings import FlagParser, add_flags, flag_values
from p2p_stream.errors import P2PError
from p2p_stream.tools.common import command, setup_logging


def build_parser(prog: str = "p2p-daemon") -> argparse.ArgumentParser:
    """--config, a flag for each setting that declares one (config/daemon.py), --set for every other."""
    p = FlagParser(prog=prog, description="Live PPG → blood-pressure estimates over ZeroMQ.")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file; flags override it (defaults: configs/default.toml)"
    )
    add_flags(p, DaemonConfig)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting (configs/default.toml lists them), e.g. limits.max_devices=500",
    )
    return p


@command  # a mistake at start-up (flag, config, port, checkpoint): one line, exit 2
def main(argv: list[str] | None = None, prog: str = "p2p-daemon") -> int:
    console = Console(stderr=True)
    args = build_parser(prog).parse_args(argv)
    overrides = [flag_values(args, DaemonConfig)] + [parse_override(s) for s in args.set]
    config = load_daemon_config(args.config, overrides)
    setup_logging(config.operation.log_level, console)
    from p2p_stream.stream.daemon import Daemon  # imports torch: after the cheap checks, so a bad flag fails fast

    daemon = Daemon(config)

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("p2p_stream").info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        daemon.run()
    except P2PError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        return 1
    return 0


def entry() -> None:
    """Console-script entry: exit as soon as the daemon has closed its sockets.

    Interpreter teardown with torch loaded can take seconds on a busy machine; everything that matters
    (the batch in flight published, sockets closed, logs flushed) is done by then, so skip it.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
