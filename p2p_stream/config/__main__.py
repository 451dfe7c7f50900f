"""`python -m p2p_stream.config [--check]`: write (or check) the defaults files the declarations generate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from p2p_stream.config import daemon, train

ROOT = Path(__file__).resolve().parents[2]
# file (relative to the repository root) → the function that makes its text
DEFAULT_FILES: dict[str, Callable[[], str]] = {
    "configs/default.toml": daemon.defaults_text,
    "configs/train-defaults.toml": train.defaults_text,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2p_stream.config", description=__doc__)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root [%(default)s]")
    args = p.parse_args(argv)
    stale = []
    for name, make in DEFAULT_FILES.items():
        path, text = args.root / name, make()
        if path.is_file() and path.read_text() == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m p2p_stream.config", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
