"""Training: prepare a WindowSet and fit one model on one split (Adam, StepLR, early stopping, clipping)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from p2p_stream.config.train import OptimConfig, TrainConfig
from p2p_stream.model.demographics import meta_features
from p2p_stream.model.estimator import TARGETS, run_model
from p2p_stream.model.networks import build_model
from p2p_stream.offline.augment import random_crop, sensor_augment
from p2p_stream.offline.datasets import WindowSet
from p2p_stream.ppg.preprocess import PreprocessConfig, window_samples
from p2p_stream.ppg.quality import QualityConfig, ppg_assess

log = logging.getLogger(__name__)

LOSSES = {"mse": nn.functional.mse_loss, "huber": nn.functional.smooth_l1_loss, "l1": nn.functional.l1_loss}


@dataclass
class Prepared:
    """A WindowSet ready for the model: inputs, features, labels and the quality verdicts."""

    windows: WindowSet
    x: np.ndarray  # (N, T) band-passed, z-scored at the model rate
    meta: np.ndarray  # (N, 4) demographics features
    y: np.ndarray  # (N, 2) SBP, DBP mmHg
    ok: np.ndarray  # (N,) bool, passed the quality gate
    reason: np.ndarray  # (N,) str, rejection reason or ""
    hr: np.ndarray  # (N,) pulse rate from the gate, bpm; NaN where it found none

    def rejected(self) -> dict[str, int]:
        """Quality-gate rejections by reason."""
        return {str(r): int((self.reason == r).sum()) for r in np.unique(self.reason) if r}


def prepare(ws: WindowSet, pre: PreprocessConfig, quality: QualityConfig = QualityConfig()) -> Prepared:
    checks, x = ppg_assess(ws.x, ws.fs, quality, pre)  # the daemon's path: one filtering for gate and model
    return Prepared(
        windows=ws,
        x=x,
        meta=meta_features(ws.age, ws.sex),
        y=np.stack([ws.sbp, ws.dbp], axis=1).astype(np.float32),
        ok=np.array([q.ok for q in checks]),
        reason=np.array([q.reason or "" for q in checks]),
        hr=np.array([q.hr_bpm if q.hr_bpm is not None else np.nan for q in checks]),
    )


def label_stats(y: np.ndarray) -> dict:
    """Mean and SD of the training labels: targets are standardised with them; the mean is the mean predictor."""
    return {
        f"{t}_{k}": float(f(y[:, i])) for i, t in enumerate(TARGETS) for k, f in (("mean", np.mean), ("std", np.std))
    }


def _augment(
    x: torch.Tensor, meta: torch.Tensor, cfg: OptimConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.augment:
        length = x.shape[1]
        crop = int(length * (0.8 + 0.2 * torch.rand(1, generator=gen).item()))
        start = int(torch.randint(0, length - crop + 1, (1,), generator=gen).item())
        x = x[:, start : start + crop]
        x = x + 0.05 * torch.randn(x.shape, generator=gen)
    if cfg.demographics_dropout > 0:
        keep = (torch.rand(meta.shape[0], 1, generator=gen) >= cfg.demographics_dropout).float()
        meta = meta * keep
    return x, meta


def fit(
    config: TrainConfig,
    data: Prepared,
    train: np.ndarray,
    val: np.ndarray,
    on_epoch: Callable[[int, dict], None] | None = None,
    offset: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[nn.Module, dict, list[dict]]:
    """Train on rows `train`, early-stop on rows `val`; returns the best model, label stats and per-epoch history.

    `offset` (N, 2) mmHg is subtracted from the labels, so the network learns the deviation from it (the
    population prior); the returned label stats and every prediction are of that deviation. `weights` (N,) say
    how much each row counts: drawn with those odds when `optim.balance`, and weighting the validation MAE.
    """
    cfg = config.optim
    torch.manual_seed(config.split.seed)
    gen = torch.Generator().manual_seed(config.split.seed)
    rng = np.random.default_rng(config.split.seed)
    model = build_model(config.model.name, config.model.params)
    outputs = model.config.outputs
    target = data.y - offset if offset is not None else data.y  # (N, 2) what the network predicts, mmHg
    stats = label_stats(target[train])
    mean = np.array([stats["sbp_mean"], stats["dbp_mean"]], dtype=np.float32)[:outputs]
    std = np.array([stats["sbp_std"], stats["dbp_std"]], dtype=np.float32)[:outputs]
    x_train, meta = data.x[train], torch.from_numpy(data.meta[train])
    y = torch.from_numpy((target[train][:, :outputs] - mean) / std)  # (N, outputs), standardised
    crop = window_samples(cfg.crop_s, data.windows.fs) if cfg.crop_s > 0 else 0
    odds = None
    if cfg.balance:
        w = np.ones(len(data.y)) if weights is None else weights
        odds = w[train] / w[train].sum()
    val_weight = None if weights is None else weights[val]

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    best, best_mae, since_best, history = copy.deepcopy(model.state_dict()), float("inf"), 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if odds is not None:
            order = torch.from_numpy(rng.choice(len(train), cfg.epoch_windows or len(train), p=odds))
        else:
            order = torch.randperm(len(train), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if crop:
                picked = x_train[idx.numpy()]
                xb = sensor_augment(picked, crop, data.windows.fs, rng) if cfg.sensor_augment else None
                xb = torch.from_numpy(xb if xb is not None else random_crop(picked, crop, rng))
                mb = meta[idx]
            else:
                xb, mb = _augment(torch.from_numpy(x_train[idx.numpy()]), meta[idx], cfg, gen)
            if cfg.demographics_dropout > 0 and crop:
                keep = (torch.rand(mb.shape[0], 1, generator=gen) >= cfg.demographics_dropout).float()
                mb = mb * keep
            opt.zero_grad()
            loss = LOSSES[cfg.loss](model(xb, mb), y[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        sched.step()
        pred = run_model(model, data.x[val], data.meta[val], stats, crop=crop)
        err = np.abs(pred[:, :outputs] - target[val][:, :outputs]).mean(axis=1)
        val_mae = float(np.average(err, weights=val_weight)) if val_weight is not None else float(np.nanmean(err))
        row = {"epoch": epoch, "train_mse": total / seen, "val_mae": val_mae, "lr": sched.get_last_lr()[0]}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
        if val_mae < best_mae - 1e-4:
            best, best_mae, since_best = copy.deepcopy(model.state_dict()), val_mae, 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                log.info("early stop at epoch %d (best val MAE %.2f mmHg)", epoch, best_mae)
                break
    model.load_state_dict(best)
    return model.eval(), stats, history
