"""`p2p-eval`: a report from a predictions table, or from a checkpoint run on a dataset (test groups or all)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.model.estimator import Estimator
from p2p_stream.offline import predictions
from p2p_stream.offline.datasets import load_dataset
from p2p_stream.offline.report import summary_lines, write_report
from p2p_stream.offline.training import prepare
from p2p_stream.tools.common import alias, command, parent_parser, setup_logging


def evaluate_checkpoint(
    est: Estimator, dataset: str, path: str, split: str, window_s: float | None, channel: str | None, gate: bool
) -> tuple[dict, dict]:
    """Predictions of `est` on a dataset; the mean predictor is the checkpoint's training mean."""
    meta = est.metadata
    options: dict = {"fs": est.fs, "window_s": window_s or meta.get("window_s", 10.0)}
    if channel:
        options["channel"] = channel
    ws = load_dataset(dataset, path, **options)
    if split == "test":
        if "test_groups" not in meta.get("split", {}):
            raise P2PError(
                f"{est.name} was trained on every subject of {meta['data'].get('datasets', meta['data']['dataset'])} "
                f"(protocol {meta.get('split', {}).get('protocol')!r}): it has no held-out test subjects; use --split "
                "all on a dataset, and see docs/results/lodo/ for its leave-one-dataset-out scores"
            )
        if dataset != meta["data"]["dataset"]:
            raise P2PError(
                f"--split test needs the checkpoint's own dataset ({meta['data']['dataset']!r}); "
                f"use --split all for {dataset!r}"
            )
        ws = ws.subset(np.isin(ws.group, meta["split"]["test_groups"]))
    data = prepare(ws, est.preprocess, est.quality_config)
    keep = np.isfinite(data.y).all(axis=1) & (data.ok if gate else True)
    pred = est.predict_prepared(
        data.x[keep], data.meta[keep] if est.uses_demographics else np.zeros_like(data.meta[keep])
    )
    table = predictions.new_table()
    # The constant: the training data's mean — the head's prior mean where there is one (the network's label
    # stats are then of its deviation from the prior, not of blood pressure).
    constant = est.label_stats
    if est.head is not None:
        constant = {"sbp_mean": est.head.prior.mean[0], "dbp_mean": est.head.prior.mean[1]}
    predictions.add_scored(table, data, np.flatnonzero(keep), pred, constant, fold=0)
    rejected = data.rejected()
    return table, {"model": est.name, "dataset": ws.summary(), "split": split, "quality_rejected": rejected}


@command
def main(argv: list[str] | None = None, prog: str = "p2p-eval") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, parents=[parent_parser()])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", type=Path, help="a predictions.csv written by p2p-train (e.g. cross-validation)")
    src.add_argument("--model", help="a checkpoint folder, or 'default' for the shipped model")
    p.add_argument("--data", help="dataset path, with --model")
    p.add_argument("--dataset", default=None, help="dataset name (default: the checkpoint's own)")
    p.add_argument(
        "--split", choices=["test", "all"], default="test", help="the checkpoint's held-out groups, or every window"
    )
    p.add_argument("--window-s", type=float, help="window length, s (default: the checkpoint's)")
    p.add_argument("--channel", help="four_wavelength channel")
    p.add_argument("--no-gate", action="store_true", help="score windows the quality gate rejects too")
    p.add_argument(
        "--torch-device", default="cpu", help="where the model runs: cpu | cuda | cuda:N | auto (default cpu)"
    )
    alias(p, "--device", "torch_device", new="--torch-device")
    p.add_argument("--title", help="report title")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    setup_logging(args.log_level, console)
    if args.predictions:
        table, extra = predictions.read_predictions(args.predictions), {"source": str(args.predictions)}
        title = args.title or f"Evaluation of {args.predictions}"
    else:
        if not args.data:
            raise ConfigError("--model needs --data, the dataset path (e.g. ../shared/data)")
        est = Estimator.load(None if args.model == "default" else args.model, torch_device=args.torch_device)
        dataset = args.dataset or est.metadata["data"]["dataset"]
        if dataset == "pool":
            raise ConfigError(f"{est.name} was trained on several datasets; name one with --dataset")
        table, extra = evaluate_checkpoint(
            est, dataset, args.data, args.split, args.window_s, args.channel, not args.no_gate
        )
        title = args.title or f"{est.name} on {dataset} ({args.split})"
    result = write_report(table, args.out, title, extra)
    for line in summary_lines(result):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"wrote {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
