"""`p2p-daemon`: load the config (defaults → TOML → flags), start the daemon, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.config.layers import parse_override
from p2p_stream.errors import P2PError

# flag → config key; each flag overrides the file.
FLAGS = {
    "ingest": "sockets.ingest",
    "publish": "sockets.publish",
    "control": "sockets.control",
    "device": "model.device",
    "backend": "model.backend",
    "model": "model.path",
    "window_s": "windowing.window_s",
    "hop_s": "windowing.hop_s",
    "max_batch": "batching.max_batch",
    "max_wait_ms": "batching.max_wait_ms",
    "threads": "model.threads",
    "log_level": "operation.log_level",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p2p-daemon", description="Live PPG → blood-pressure estimates over ZeroMQ.")
    p.add_argument("--config", type=Path, help="TOML file (default: configs/default.toml values built in)")
    p.add_argument("--ingest", help="SUB address wearables publish to (tcp://127.0.0.1:5555)")
    p.add_argument("--publish", help="PUB address of estimates and heartbeat (tcp://127.0.0.1:5556)")
    p.add_argument("--control", help="REP address of the control socket (tcp://127.0.0.1:5557)")
    p.add_argument("--device", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--backend", help="local | ray (the network on a Ray Serve deployment; [ray] in the config)")
    p.add_argument("--model", help="checkpoint folder (default: the shipped model)")
    p.add_argument("--window-s", type=float, help="window length, s")
    p.add_argument("--hop-s", type=float, help="hop between windows, s")
    p.add_argument("--max-batch", type=int, help="windows per model call at most")
    p.add_argument("--max-wait-ms", type=float, help="longest wait of the oldest window for a batch, ms")
    p.add_argument("--threads", type=int, help="torch intra-op threads (0 = all cores but one)")
    p.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any key, e.g. limits.max_devices=500"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    try:
        flags: dict = {}
        for name, key in FLAGS.items():
            value = getattr(args, name)
            if value is not None:
                section, field = key.split(".")
                flags.setdefault(section, {})[field] = value
        config = load_daemon_config(args.config, [flags] + [parse_override(s) for s in args.set])
        logging.basicConfig(
            level=config.operation.log_level.upper(),
            format="%(message)s",
            handlers=[RichHandler(console=console, show_path=False)],
        )
        from p2p_stream.stream.daemon import Daemon  # imports torch: after the cheap checks, so a bad flag fails fast

        daemon = Daemon(config)
    except P2PError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        return 2

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
