"""`p2p train`: defaults → TOML → flags, then a training run (p2p_stream/offline/runs.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from p2p_stream.config.settings import FlagParser, add_flags, flag_values
from p2p_stream.config.train import TrainConfig, load_train_config, parse_override
from p2p_stream.errors import P2PError
from p2p_stream.offline.runs import train
from p2p_stream.tools.common import parent_parser, report, setup_logging


def build_parser(prog: str = "p2p-train") -> argparse.ArgumentParser:
    """--config, the run's own options, a flag for each setting that declares one (config/train.py), --set."""
    # --log-level, --config and --set: the parent every verb shares (tools/common.py).
    p = FlagParser(prog=prog, description=__doc__, parents=[parent_parser("INFO", config=True)])
    p.add_argument("--out", type=Path, required=True, help="output folder: the checkpoint (holdout runs)")
    p.add_argument("--report-dir", type=Path, help="predictions.csv and the report (default: OUT/report)")
    p.add_argument(
        "--cv", type=int, default=0, metavar="K", help="K-fold cross-validation by group instead of one holdout run"
    )
    add_flags(p, TrainConfig)  # every setting, also through --set (configs/train-defaults.toml lists them)
    return p


def main(argv: list[str] | None = None, prog: str = "p2p-train") -> int:
    console = Console(stderr=True)
    try:
        args = build_parser(prog).parse_args(argv)
        setup_logging(args.log_level, console)
        overrides = [flag_values(args, TrainConfig)] + [parse_override(s) for s in args.set]
        config = load_train_config(args.config, overrides)
        if args.cv == 1 or args.cv < 0:
            raise P2PError(f"--cv must be 0 (one holdout run) or ≥ 2 folds, got {args.cv}")
        return train(config, args.out, args.report_dir or args.out / "report", args.cv, console)
    except P2PError as exc:  # the one error handler's line and status
        return report(str(exc))


if __name__ == "__main__":
    sys.exit(main())
