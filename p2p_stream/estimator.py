"""Estimator: the public API — a checkpoint as ``predict(windows, fs, meta) -> (N, 2)`` SBP/DBP in mmHg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .demographics import parse_meta
from .errors import CheckpointError
from .preprocess import PreprocessConfig, ppg_prepare
from .quality import Quality, QualityConfig, ppg_assess, ppg_quality

TARGETS = ("sbp", "dbp")


def default_model_path() -> Path:
    """The trained default model shipped inside the package."""
    return Path(str(resources.files("p2p_stream") / "assets" / "default"))


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def run_model(
    model: nn.Module, x: np.ndarray, meta: np.ndarray, label_stats: dict, batch_size: int = 256
) -> np.ndarray:
    """Prepared windows (N, T) and meta features (N, 4) → (N, 2) mmHg; an output the model lacks is NaN."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    mean = np.array([label_stats[f"{t}_mean"] for t in TARGETS], dtype=np.float32)
    std = np.array([label_stats[f"{t}_std"] for t in TARGETS], dtype=np.float32)
    out = np.full((len(x), 2), np.nan, dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            mb = torch.from_numpy(np.ascontiguousarray(meta[start : start + batch_size]))
            if cuda:  # pinned host memory lets the copy overlap with the previous batch's kernels
                xb, mb = xb.pin_memory().to(device, non_blocking=True), mb.pin_memory().to(device, non_blocking=True)
            y = model(xb, mb).float().cpu().numpy()  # (B, outputs), standardised
            k = y.shape[1]
            out[start : start + len(y), :k] = y * std[:k] + mean[:k]
    model.train(was_training)
    return out


class Estimator:
    """A trained model with the preprocessing it was trained with.

    >>> est = Estimator.load()                       # the shipped default
    >>> est.predict(windows, fs=125.0)               # (N, 2): SBP, DBP in mmHg
    """

    def __init__(self, model: nn.Module, metadata: dict) -> None:
        self.model = model
        self.metadata = metadata
        self.preprocess = PreprocessConfig(**metadata["preprocess"])
        self.quality_config = QualityConfig(**metadata.get("quality", {}))
        self.label_stats = metadata["label_stats"]

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> Estimator:
        """Load a checkpoint folder (default: the shipped model) onto `device` ('cpu', 'cuda', 'auto')."""
        model, metadata = load_checkpoint(path or default_model_path(), resolve_device(device))
        return cls(model, metadata)

    @property
    def name(self) -> str:
        """Model name and version as published on the wire, e.g. ``conv-lstm@3f2a9c1e``."""
        return f"{self.metadata['model']['name']}@{self.metadata['weights']['sha256'][:8]}"

    @property
    def device(self) -> str:
        """Where the network runs: 'cpu', 'cuda:0', …"""
        return str(next(self.model.parameters()).device)

    @property
    def fs(self) -> float:
        return self.preprocess.fs

    @property
    def uses_demographics(self) -> bool:
        return bool(getattr(self.model, "uses_demographics", False))

    def prepare(self, windows: np.ndarray, fs: float) -> np.ndarray:
        """Raw windows (N, T) at `fs` Hz → model input at the model's rate."""
        return ppg_prepare(windows, fs, self.preprocess)

    def quality(self, window: np.ndarray, fs: float) -> Quality:
        """The shared quality check on one raw window at `fs` Hz."""
        return ppg_quality(window, fs, self.quality_config, self.preprocess)

    def assess(self, window: np.ndarray, fs: float) -> tuple[Quality, np.ndarray | None]:
        """One raw window → (quality at the model rate, model input or None when rejected)."""
        (q,), x = self.assess_batch(np.asarray(window)[None], fs)
        return q, (x[0] if q.ok else None)

    def assess_batch(self, windows: np.ndarray, fs: float) -> tuple[list[Quality], np.ndarray]:
        """Raw windows (N, T) at `fs` Hz → (quality of each, model inputs): `ppg_assess` with this model's settings."""
        return ppg_assess(windows, fs, self.quality_config, self.preprocess)

    def predict_prepared(self, x: np.ndarray, meta_features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Already-prepared windows (N, T) and (N, 4) meta features → (N, 2) mmHg."""
        return run_model(self.model, x, meta_features, self.label_stats, batch_size)

    def predict(
        self,
        windows: np.ndarray | Sequence[np.ndarray],
        fs: float,
        meta: Mapping | Sequence[Mapping | None] | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """SBP and DBP (N, 2) in mmHg for raw windows at `fs` Hz (resampled inside).

        `windows` is one window (T,), an array (N, T), or a list of windows of different lengths.
        `meta` is None, one ``{"age": .., "sex": "M"|"F"}`` for all windows, or one per window.
        """
        if isinstance(windows, np.ndarray) and windows.ndim <= 2:
            batch = np.atleast_2d(windows)
            return self.predict_prepared(self.prepare(batch, fs), parse_meta(meta, len(batch)), batch_size)
        items = [np.asarray(w, dtype=np.float32) for w in windows]
        features = parse_meta(meta, len(items))
        out = np.empty((len(items), 2), dtype=np.float32)
        for length in {len(w) for w in items}:  # one forward pass per distinct length
            idx = [i for i, w in enumerate(items) if len(w) == length]
            out[idx] = self.predict_prepared(
                self.prepare(np.stack([items[i] for i in idx]), fs), features[idx], batch_size
            )
        return out
