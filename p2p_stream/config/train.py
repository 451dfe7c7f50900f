"""Training configuration: every setting of the recipe declared once (default, range, unit, help, flag);
configs/train-defaults.toml and the p2p-train flags are derived from it; recipes hold only what differs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from p2p_stream.config.layers import apply_layers, parse_override
from p2p_stream.config.settings import Range, check_settings, defaults_toml, setting
from p2p_stream.errors import ConfigError

OPEN_LO = Range(0, None, lo_open=True)  # > 0


@dataclass
class DataConfig:
    """Which recordings, and how they are cut into windows."""

    dataset: str = setting(
        "ppg_bp", "ppg_bp | four_wavelength | aist_wrist | pulsedb | replay_csv | pool (all three sets)",
        flag="--dataset", metavar="NAME",
    )  # fmt: skip
    path: str = setting(
        "../shared/data", "a folder holding the dataset (or the file, for pulsedb/replay_csv)",
        flag="--data", metavar="PATH",
    )  # fmt: skip
    fs: float = setting(125.0, "model sampling rate", unit="Hz", range=OPEN_LO)
    window_s: float = setting(2.1, "window length; PPG-BP segments are 2.1 s", unit="s", range=OPEN_LO)
    hop_s: float = setting(0.0, "hop between windows; 0 = no overlap", unit="s", range=(0, None))
    channel: str = setting("red_channel", "four_wavelength only: which wavelength")
    limit: int = setting(0, "pulsedb only: first N segments, 0 = all", range=(0, None))
    quality_gate: bool = setting(True, "drop windows the quality check rejects, from training and from scoring")
    max_windows_per_subject: int = setting(
        40, "pool only: at most this many windows of a subject, evenly spread", range=(1, None)
    )
    exclude_subjects: list[str] = setting([], "pool only: 'dataset:subject' kept out of it all")


@dataclass
class ModelConfig:
    """The network: a name and the overrides of its own config dataclass."""

    name: str = setting("conv-lstm", "a key of p2p_stream.model.networks.MODELS")
    params: dict = setting({}, "overrides of that model's config dataclass, e.g. model.params.hidden=96")


@dataclass
class OptimConfig:
    """The optimiser and the epochs: Adam, StepLR, early stopping on validation MAE."""

    epochs: int = setting(
        150, "training epochs at most; early stopping usually ends sooner", range=(1, None), flag="--epochs"
    )
    batch_size: int = setting(32, "windows per step", range=(1, None))
    lr: float = setting(1e-3, "Adam learning rate (the notebook's 3e-4: configs/train/seed-lstm.toml)", range=OPEN_LO)
    weight_decay: float = setting(1e-4, "Adam weight decay", range=(0, None))
    step_size: int = setting(40, "StepLR period", unit="epochs", range=(1, None))
    gamma: float = setting(0.7, "StepLR factor", range=Range(0, 1, lo_open=True))
    patience: int = setting(20, "early stopping on validation MAE", unit="epochs", range=(1, None))
    clip_grad: float = setting(1.0, "gradient-norm clipping", range=OPEN_LO)
    loss: str = setting(
        "huber", "mse (the notebook's) | huber (smooth L1: outlier subjects pull less) | l1",
        choices=("mse", "huber", "l1"),
    )  # fmt: skip
    augment: bool = setting(True, "random crop (80–100 % of the window) and light noise; off when crop_s > 0")
    crop_s: float = setting(
        0.0, "> 0: the network sees crops of this length, and longer windows as crops averaged", unit="s",
        range=(0, None),
    )  # fmt: skip
    sensor_augment: bool = setting(False, "with crop_s: a random sensor per window (offline/augment.py)")
    balance: bool = setting(False, "draw each epoch with every dataset (and subject within it) equally likely")
    epoch_windows: int = setting(
        0, "windows drawn per epoch when balancing; 0 = as many as there are training rows", range=(0, None)
    )
    demographics_dropout: float = setting(
        0.1, "share of training windows shown without age/sex, so both modes work", range=(0, 1)
    )
    threads: int = setting(2, "torch intra-op threads", range=(1, 256))


@dataclass
class SplitConfig:
    """How subjects are split into train, validation and test."""

    protocol: str = setting(
        "subject", "subject: groups never straddle a split | seed: the notebook's random-window split | "
        "lodo: leave-one-dataset-out over data.dataset = 'pool', then the shipped generalist (offline/lodo.py)",
        choices=("subject", "seed", "lodo"), flag="--protocol",
    )  # fmt: skip
    folds: int = setting(5, "K for cross-validation", range=(2, None))
    val_fraction: float = setting(
        0.15, "share of training groups held out for early stopping", range=Range(0, 0.5, True, True)
    )
    test_fraction: float = setting(
        0.2, "share of groups in the test set of a single (non-CV) run", range=Range(0, 0.5, True, True)
    )
    seed: int = setting(0, "seed of the split and the training", flag="--seed")


@dataclass
class HeadConfig:
    """Protocol "lodo" only: the prediction interval and the tracking score."""

    level: float = setting(
        0.8, "prediction-interval level (split-conformal on out-of-dataset predictions)",
        range=Range(0.5, 1, hi_open=True),
    )  # fmt: skip
    calibration_span_s: float = setting(
        60.0, "tracking score: the calibration reference is the first this-many s; match the daemon's "
        "calibration.span_s", unit="s", range=(0, None),
    )  # fmt: skip


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    head: HeadConfig = field(default_factory=HeadConfig)  # protocol "lodo" only

    def to_dict(self) -> dict:
        return asdict(self)


def _validate(c: TrainConfig) -> None:
    """Each setting against its declaration, then the rules that tie settings together."""
    check_settings(c)
    if c.split.protocol == "lodo" and c.data.dataset != "pool":
        raise ConfigError(f"split.protocol = 'lodo' needs data.dataset = 'pool', got {c.data.dataset!r}")


def load_train_config(path: str | Path | None = None, overrides: list[dict] | None = None) -> TrainConfig:
    """Defaults, then the TOML file (if any), then each override dict, in order; validated at the end."""
    config = TrainConfig()
    apply_layers(config, path, overrides)
    _validate(config)
    return config


DEFAULTS_HEADER = """\
p2p-train defaults: every setting at the value it has when no file sets it. A recipe in configs/train/ holds only
what differs from these. Generated from the declarations in p2p_stream/config/train.py by
`python -m p2p_stream.config`; do not edit (a test fails when it differs). Each comment: help (unit), accepted
values, and the setting's flag if it has one; any setting is also `p2p-train --set section.key=value`."""


def defaults_text() -> str:
    """configs/train-defaults.toml as the declarations make it."""
    return defaults_toml(TrainConfig, DEFAULTS_HEADER)


__all__ = ["TrainConfig", "load_train_config", "parse_override"]
