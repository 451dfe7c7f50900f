"""Configuration: the training recipe as dataclasses with commented defaults; TOML files hold only what differs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from p2p_stream.config.layers import apply_layers, parse_override
from p2p_stream.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "ppg_bp"  # ppg_bp | four_wavelength | aist_wrist | pulsedb | replay_csv | pool (all three sets)
    path: str = "../shared/data"  # a folder holding the dataset (or the file, for pulsedb/replay_csv)
    fs: float = 125.0  # model sampling rate, Hz
    window_s: float = 2.1  # window length, s (PPG-BP segments are 2.1 s)
    hop_s: float = 0.0  # hop between windows, s; 0 = no overlap
    channel: str = "red_channel"  # four_wavelength only
    limit: int = 0  # pulsedb only: first N segments, 0 = all
    quality_gate: bool = True  # drop windows the quality check rejects, from training and from scoring
    max_windows_per_subject: int = 40  # pool only: at most this many windows of a subject, evenly spread
    exclude_subjects: list[str] = field(default_factory=list)  # pool only: "dataset:subject" kept out of it all


@dataclass
class ModelConfig:
    name: str = "conv-lstm"  # a key of p2p_stream.model.networks.MODELS
    params: dict = field(default_factory=dict)  # overrides of that model's config dataclass


@dataclass
class OptimConfig:
    epochs: int = 150  # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 1e-3  # Adam; the notebook used 3e-4 (configs/train/seed-lstm.toml), slower for the small default
    weight_decay: float = 1e-4
    step_size: int = 40  # StepLR period, epochs
    gamma: float = 0.7  # StepLR factor
    patience: int = 20  # early stopping on validation MAE, epochs
    clip_grad: float = 1.0  # gradient-norm clipping
    loss: str = "huber"  # mse (the notebook's) | huber (smooth L1: outlier subjects pull less) | l1
    augment: bool = True  # random crop (80–100 % of the window) and light noise; off when crop_s > 0
    crop_s: float = 0.0  # > 0: the network sees crops of this length (s), and longer windows as crops averaged
    sensor_augment: bool = False  # with crop_s: a random sensor per window (p2p_stream/augment.py)
    balance: bool = False  # draw each epoch with every dataset (and subject within it) equally likely
    epoch_windows: int = 0  # windows drawn per epoch when balancing; 0 = as many as there are training rows
    demographics_dropout: float = 0.1  # share of training windows shown without age/sex, so both modes work
    threads: int = 2  # torch intra-op threads (this machine has 2 cores)


@dataclass
class SplitConfig:
    protocol: str = "subject"  # subject: groups never straddle a split | seed: the notebook's random-window split
    # | lodo: leave-one-dataset-out over data.dataset = "pool", then the shipped generalist (p2p_stream/lodo.py)
    folds: int = 5  # K for cross-validation
    val_fraction: float = 0.15  # share of training groups held out for early stopping
    test_fraction: float = 0.2  # share of groups in the test set of a single (non-CV) run
    seed: int = 0


@dataclass
class HeadConfig:
    level: float = 0.8  # prediction-interval level (split-conformal on out-of-dataset predictions)
    calibration_span_s: float = 60.0  # tracking score: the calibration reference is the first this-many s
    # (the daemon's calibration.span_s should match it)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    head: HeadConfig = field(default_factory=HeadConfig)  # protocol "lodo" only

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOLS = ("subject", "seed", "lodo")
LOSSES = ("mse", "huber", "l1")


def _validate(c: TrainConfig) -> None:
    checks = [
        (c.split.protocol in PROTOCOLS, f"split.protocol must be one of {PROTOCOLS}, got {c.split.protocol!r}"),
        (c.split.folds >= 2, f"split.folds must be ≥ 2, got {c.split.folds}"),
        (0 < c.split.val_fraction < 0.5, f"split.val_fraction must be in (0, 0.5), got {c.split.val_fraction}"),
        (0 < c.split.test_fraction < 0.5, f"split.test_fraction must be in (0, 0.5), got {c.split.test_fraction}"),
        (c.optim.epochs >= 1, f"optim.epochs must be ≥ 1, got {c.optim.epochs}"),
        (c.optim.batch_size >= 1, f"optim.batch_size must be ≥ 1, got {c.optim.batch_size}"),
        (c.optim.loss in LOSSES, f"optim.loss must be one of {LOSSES}, got {c.optim.loss!r}"),
        (c.optim.lr > 0, f"optim.lr must be > 0, got {c.optim.lr}"),
        (0 <= c.optim.demographics_dropout <= 1, "optim.demographics_dropout must be in [0, 1]"),
        (c.data.fs > 0 and c.data.window_s > 0, "data.fs and data.window_s must be > 0"),
        (c.data.hop_s >= 0, f"data.hop_s must be ≥ 0, got {c.data.hop_s}"),
        (c.optim.crop_s >= 0, f"optim.crop_s must be ≥ 0, got {c.optim.crop_s}"),
        (0.5 <= c.head.level < 1, f"head.level must be in [0.5, 1), got {c.head.level}"),
        (
            c.split.protocol != "lodo" or c.data.dataset == "pool",
            f"split.protocol = 'lodo' needs data.dataset = 'pool', got {c.data.dataset!r}",
        ),
        (c.optim.epoch_windows >= 0, f"optim.epoch_windows must be ≥ 0, got {c.optim.epoch_windows}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load_train_config(path: str | Path | None = None, overrides: list[dict] | None = None) -> TrainConfig:
    """Defaults, then the TOML file (if any), then each override dict, in order; validated at the end."""
    config = TrainConfig()
    apply_layers(config, path, overrides)
    _validate(config)
    return config


__all__ = ["TrainConfig", "load_train_config", "parse_override"]
