"""What every tool shares: the parent parser (`--log-level`, `--config`, `--set`), flag aliases, one error handler.

A user's mistake — a bad flag value or address, a missing file, a port in use, any `P2PError` — ends a tool with
one line on stderr, `error: <what is wrong>; <what would be right>`, and exit status 2, never a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import inspect
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from p2p_stream.config.addresses import FORMS
from p2p_stream.config.settings import DeprecatedFlag
from p2p_stream.errors import P2PError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
USAGE_ERROR = 2  # argparse's own exit status for a bad command line; every user's mistake gets it
# ZeroMQ errors a bad or unusable address causes (bind or connect), and what would be right.
ADDRESS_ERRNOS = {
    errno.EINVAL: f"give an address ZeroMQ can use: {FORMS}",
    errno.EPROTONOSUPPORT: f"give one of {FORMS}",
    errno.ENOENT: "give an ipc:// path in a folder that exists",
    errno.EADDRNOTAVAIL: "give a host this machine has (127.0.0.1, 0.0.0.0 or one of its own addresses)",
    errno.ENODEV: "give a host this machine has (127.0.0.1, 0.0.0.0 or one of its own addresses)",
    errno.EADDRINUSE: "stop the process that uses it, or choose another address",
    errno.EACCES: "choose a port above 1023, or an ipc:// path you may write",
}


def parent_parser(log_level: str = "WARNING", config: bool = False) -> argparse.ArgumentParser:
    """The flags every verb shares, for `argparse.ArgumentParser(parents=[...])`.

    `log_level`: the verb's default; `config`: add `--config FILE` and `--set KEY=VALUE` (verbs with a TOML config).
    """
    p = argparse.ArgumentParser(add_help=False)
    group = p.add_argument_group("common options")
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=log_level,
        help=f"log verbosity (default {log_level})",
    )
    if config:
        group.add_argument("--config", type=Path, help="TOML file (default: the built-in defaults)")
        group.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override any key, e.g. section.key=value"
        )
    return p


def alias(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, dest: str, new: str = "", **kwargs
) -> None:
    """A deprecated flag name that still works, kept out of `--help`: `old` sets `dest` as the new flag does; with
    `new` (the new flag's name), each use logs '<old> is deprecated; use <new>'."""
    if new:
        kwargs.update(action=DeprecatedFlag, new=new)
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def setup_logging(level: str, console=None) -> None:
    """The one logging set-up of every verb: through rich's handler onto `console` where one is given (the daemon,
    training, evaluation), plain lines otherwise."""
    handlers = None
    if console is not None:
        from rich.logging import RichHandler

        handlers = [RichHandler(console=console, show_path=False)]
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=handlers)


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def user_error(exc: BaseException) -> str | None:
    """The one-line message for a user's mistake (`what is wrong; what would be right`), None for a bug."""
    if isinstance(exc, P2PError):
        return one_line(str(exc))
    zmq = sys.modules.get("zmq")
    if zmq is not None and isinstance(exc, zmq.ZMQError) and exc.errno in ADDRESS_ERRNOS:
        return f"{exc.strerror} (a ZeroMQ address); {ADDRESS_ERRNOS[exc.errno]}"
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or exc}: no such file or folder; give the path of one that exists"
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename or exc} is a folder; give a file"
    if isinstance(exc, NotADirectoryError):
        return f"{exc.filename or exc} is not a folder; give a folder"
    if isinstance(exc, PermissionError):
        return f"{exc.filename or exc}: permission denied; give a path you may read (or write)"
    return None


def report(message: str) -> int:
    """Print `error: message` on one line to stderr; the exit status of a user's mistake."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's `main(argv)` in the one error handler: a user's mistake → one line on stderr, exit status 2."""

    @functools.wraps(main)
    def handled(argv: list[str] | None = None, **kwargs) -> int:
        try:
            return main(argv, **kwargs)
        except Exception as exc:  # noqa: BLE001 — sorted just below: a user's mistake or a bug that keeps its traceback
            message = user_error(exc)
            if message is None:
                raise
            return report(message)

    return handled


def call(main: Callable[..., int], argv: list[str], prog: str) -> int:
    """Run a tool's `main` under the error handler, naming itself `prog` in usage lines where it takes one."""
    kwargs = {"prog": prog} if "prog" in inspect.signature(main).parameters else {}
    return command(main)(argv, **kwargs)
