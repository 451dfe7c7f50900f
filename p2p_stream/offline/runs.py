"""Training runs: a subject-disjoint holdout that writes a checkpoint, K-fold CV, or leave-one-dataset-out and the
shipped generalist; each writes its predictions and report. `p2p train` (tools/cli/train.py) is their command line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from p2p_stream.config.train import TrainConfig
from p2p_stream.model.checkpoint import save_checkpoint
from p2p_stream.model.estimator import run_model
from p2p_stream.offline import predictions
from p2p_stream.offline.datasets import WindowSet, load_dataset
from p2p_stream.offline.report import summary_lines, write_report
from p2p_stream.offline.splits import Split, cross_validation, holdout
from p2p_stream.offline.training import Prepared, fit, prepare
from p2p_stream.ppg.preprocess import PreprocessConfig
from p2p_stream.ppg.quality import QualityConfig

log = logging.getLogger("p2p_stream.train")


def train_lodo(config: TrainConfig, out: Path, report_dir: Path, console: Console) -> int:
    """Leave-one-dataset-out over the pooled datasets, then the generalist on all of them (p2p_stream/generalist.py)."""
    from p2p_stream.offline.generalist import train_generalist
    from p2p_stream.offline.lodo_report import markdown as lodo_markdown
    from p2p_stream.offline.tracking import markdown as tracking_markdown

    started = time.perf_counter()

    def on_member(m) -> None:
        console.log(f"trained on {' + '.join(m.datasets)}: {m.epochs} epochs, {time.perf_counter() - started:.0f} s")

    summary = train_generalist(config, out, report_dir, on_member)
    console.print(lodo_markdown(summary["folds"], config.head.level), soft_wrap=True, highlight=False)
    console.print(tracking_markdown(summary["tracking"]), soft_wrap=True, highlight=False)
    console.print(f"wrote {out} and {report_dir} in {summary['train_seconds']:.0f} s")
    return 0


def load_windows(config: TrainConfig) -> WindowSet:
    d = config.data
    options: dict = {"fs": d.fs, "window_s": d.window_s, "hop_s": d.hop_s or None}
    if d.dataset == "four_wavelength":
        options["channel"] = d.channel
    if d.dataset == "pulsedb" and d.limit:
        options["limit"] = d.limit
    return load_dataset(d.dataset, d.path, **options)


def _fold_rows(data: Prepared, split: Split, gate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = data.ok if gate else np.ones(len(data.ok), bool)
    labelled = np.isfinite(data.y).all(axis=1)
    return tuple(rows[keep[rows] & labelled[rows]] for rows in (split.train, split.val, split.test))


def run_split(config: TrainConfig, data: Prepared, split: Split, progress: Progress, console: Console, table: dict):
    """Fit on one split, append its test predictions (and the mean predictor's) to `table`."""
    train, val, test = _fold_rows(data, split, config.data.quality_gate)
    task = progress.add_task(f"fold {split.fold}", total=config.optim.epochs)

    def on_epoch(epoch: int, row: dict) -> None:
        progress.update(task, completed=epoch)
        if epoch == 1 or epoch % 10 == 0:
            console.log(
                f"fold {split.fold} epoch {epoch:3d} train MSE {row['train_mse']:.3f} val MAE {row['val_mae']:.2f} mmHg"
            )

    model, stats, history = fit(config, data, train, val, on_epoch)
    progress.update(task, completed=config.optim.epochs)
    pred = run_model(model, data.x[test], data.meta[test], stats)
    predictions.add_scored(table, data, test, pred, stats, split.fold)
    return model, stats, history, (train, val, test)


def train(config: TrainConfig, out: Path, report_dir: Path, folds: int, console: Console) -> int:
    torch.set_num_threads(config.optim.threads)
    if config.split.protocol == "lodo":
        return train_lodo(config, out, report_dir, console)
    started = time.perf_counter()
    ws = load_windows(config)
    log.info("%s", ws.summary())
    pre = PreprocessConfig(fs=config.data.fs)
    data = prepare(ws, pre)
    rejected = data.rejected()
    log.info("quality gate: %d of %d windows pass; rejected %s", int(data.ok.sum()), len(ws), rejected)
    out.mkdir(parents=True, exist_ok=True)
    table = predictions.new_table()
    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
    ]
    protocol = config.split.protocol
    extra = {
        "config": config.to_dict(),
        "data": {"summary": ws.summary(), "fingerprint": ws.fingerprint(), "quality_rejected": rejected},
    }
    with Progress(*cols, console=console) as progress:
        if folds:
            for split in cross_validation(ws.group, folds, config.split.val_fraction, config.split.seed, protocol):
                run_split(config, data, split, progress, console, table)
            title = f"{config.model.name} · {config.data.dataset} · {folds}-fold CV · {protocol} protocol"
        else:
            split = holdout(
                ws.group, config.split.test_fraction, config.split.val_fraction, config.split.seed, protocol
            )
            model, stats, history, (train_rows, val_rows, test_rows) = run_split(
                config, data, split, progress, console, table
            )
            title = f"{config.model.name} · {config.data.dataset} · holdout test · {protocol} protocol"
    extra["train_seconds"] = round(time.perf_counter() - started, 1)
    report_dir.mkdir(parents=True, exist_ok=True)
    predictions.write_predictions(report_dir / "predictions.csv", table)
    result = write_report(table, report_dir, title, extra)
    if not folds:
        metrics = {
            t: {k: result[t]["model"][k] for k in ("mae", "me", "sd", "r", "mase")}
            for t in ("sbp", "dbp")
            if t in result
        }
        save_checkpoint(
            out,
            model,
            config.model.name,
            {
                "preprocess": pre.to_dict(),
                "quality": QualityConfig().to_dict(),
                "window_s": config.data.window_s,
                "label_stats": stats,
                "outputs": ["sbp", "dbp"][: model.config.outputs],
                "data": {
                    "dataset": config.data.dataset,
                    "fingerprint": ws.fingerprint(),
                    "windows": len(ws),
                    "subjects": ws.n_subjects,
                    "quality_rejected": rejected,
                },
                "split": {
                    "protocol": protocol,
                    "seed": config.split.seed,
                    "test_groups": sorted(set(ws.group[test_rows].tolist())),
                    "counts": {"train": len(train_rows), "val": len(val_rows), "test": len(test_rows)},
                },
                "test_metrics": metrics,
                "epochs_run": len(history),
                "train_seconds": extra["train_seconds"],
                "training": config.to_dict(),
                "torch": torch.__version__,
            },
        )
    for line in summary_lines(result):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"wrote {out if not folds else report_dir} in {extra['train_seconds']:.0f} s")
    return 0
