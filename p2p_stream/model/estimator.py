"""Estimator: the public API — a checkpoint as ``predict(windows, fs, meta) -> (N, 2)`` SBP/DBP in mmHg."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from p2p_stream.errors import CheckpointError
from p2p_stream.model.checkpoint import load_checkpoint
from p2p_stream.model.demographics import AGE_CENTER_Y, AGE_SCALE_Y, parse_meta
from p2p_stream.model.generalisation import Head
from p2p_stream.model.prior import TARGETS
from p2p_stream.ppg.crops import crop_starts, prepare_rows, window_crops
from p2p_stream.ppg.preprocess import PreprocessConfig, ppg_prepare, window_samples
from p2p_stream.ppg.quality import Quality, QualityConfig, ppg_assess, ppg_assess_windows, ppg_quality


def default_model_path() -> Path:
    """The trained default model shipped inside the package."""
    return Path(str(resources.files("p2p_stream") / "assets" / "default"))


def resolve_torch_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def run_network(
    model: nn.Module, x: np.ndarray, meta: np.ndarray, label_stats: dict, crop: int = 0, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prepared windows (N, T), or crops prepared each on their own (N, k, width), and meta features (N, 4) →
    ((N, 2) mmHg, (N, D) features or None).

    With `crop` > 0 a 2-D window is cut into crops of that many samples (`crops.crop_starts`); a 3-D input is its
    crops already. Outputs and features are averaged over a window's crops: the answer does not depend on the
    window's length beyond which beats it holds. An output the model lacks is NaN.
    """
    if len(x) == 0:
        return np.full((0, 2), np.nan, dtype=np.float32), None
    if x.ndim == 3:
        k, width = x.shape[1], x.shape[2]
    else:
        starts = crop_starts(x.shape[1], crop)
        k, width = len(starts), (min(crop, x.shape[1]) if crop > 0 else x.shape[1])
    embed = getattr(model, "embed", None)
    out = np.full((len(x), 2), np.nan, dtype=np.float32)
    features: np.ndarray | None = None
    step = max(1, batch_size // k)  # windows at a time, so a pass holds about batch_size crops and memory stays flat
    for first in range(0, len(x), step):
        xs, meta_k = x[first : first + step], np.repeat(meta[first : first + step], k, axis=0)
        crops = xs.reshape(-1, width) if x.ndim == 3 else xs[:, starts[:, None] + np.arange(width)].reshape(-1, width)
        if embed is not None:
            h = embed_crops(model, crops, batch_size)
            y = crop_outputs(model, h, meta_k, label_stats)
            if features is None:
                features = np.empty((len(x), h.shape[1]), dtype=np.float32)
            features[first : first + len(xs)] = h.reshape(len(xs), k, -1).mean(axis=1)
        else:
            y = destandardise(_forward(model, crops, meta_k, batch_size, lambda m, xb, mt: m(xb, mt)), label_stats)
        y = y.reshape(len(xs), k, -1).mean(axis=1)
        out[first : first + len(xs), : y.shape[1]] = y
    return out, features


def _forward(model: nn.Module, x: np.ndarray, meta: np.ndarray, batch_size: int, step) -> np.ndarray:
    """`step(model, x, meta)` over (M, width) crops in passes of `batch_size`, eval mode, no autograd → (M, ·)."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    parts = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, max(len(x), 1), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            mt = torch.from_numpy(np.ascontiguousarray(meta[start : start + batch_size], dtype=np.float32))
            if cuda:  # pinned host memory lets the copy overlap with the previous batch's kernels
                xb, mt = xb.pin_memory().to(device, non_blocking=True), mt.pin_memory().to(device, non_blocking=True)
            parts.append(step(model, xb, mt).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def embed_crops(model: nn.Module, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Prepared crops (M, width) → the network's features of each (M, D): what a crop gives every window it is in."""
    return _forward(model, crops, np.zeros((len(crops), 0), np.float32), batch_size, lambda m, xb, _: m.embed(xb))


def crop_outputs(model: nn.Module, h: np.ndarray, meta: np.ndarray, label_stats: dict) -> np.ndarray:
    """Crop features (M, D) and each crop's window's meta features (M, 4) → the network's answer per crop (M, out)
    in mmHg: the head on top of `embed_crops` (cheap next to it)."""
    y = _forward(model, h, meta, max(len(h), 1), lambda m, hb, mt: m.head_from(hb, mt))
    return destandardise(y, label_stats)


def destandardise(y: np.ndarray, label_stats: dict) -> np.ndarray:
    """The network's standardised outputs (M, out) → mmHg."""
    n = y.shape[1]
    mean = np.array([label_stats[f"{t}_mean"] for t in TARGETS], dtype=np.float32)[:n]
    std = np.array([label_stats[f"{t}_std"] for t in TARGETS], dtype=np.float32)[:n]
    return (y * std + mean).astype(np.float32)


def run_model(
    model: nn.Module, x: np.ndarray, meta: np.ndarray, label_stats: dict, batch_size: int = 256, crop: int = 0
) -> np.ndarray:
    """Prepared windows (N, T) and meta features (N, 4) → (N, 2) mmHg; an output the model lacks is NaN."""
    return run_network(model, x, meta, label_stats, crop, batch_size)[0]


OUTPUTS = ("sbp", "dbp", "sbp_lo", "sbp_hi", "dbp_lo", "dbp_hi")  # columns of `Estimator.infer_prepared`


def meta_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) meta features → (ages with NaN unknown, sexes "M"/"F"/""): the inverse of `meta_features`."""
    f = np.asarray(features, dtype=np.float64)
    age = np.where(f[:, 3] > 0, f[:, 0] * AGE_SCALE_Y + AGE_CENTER_Y, np.nan)
    sex = np.where(f[:, 1] > 0, "M", np.where(f[:, 2] > 0, "F", ""))
    return age, sex


@dataclass
class Estimates:
    """What `Estimator.estimate` answers per window; rejected windows hold NaN and their reason."""

    bp: np.ndarray  # (N, 2) SBP, DBP mmHg
    lo: np.ndarray  # (N, 2) lower ends of the prediction interval (NaN without a head)
    hi: np.ndarray  # (N, 2) upper ends
    level: float | None  # the interval's level, e.g. 0.8
    reason: list[str | None]  # None where the window passed the quality gate
    quality: list[Quality]


class Estimator:
    """A trained model with the preprocessing it was trained with.

    >>> est = Estimator.load()                       # the shipped default
    >>> est.predict(windows, fs=125.0)               # (N, 2): SBP, DBP in mmHg; NaN where the gate rejects
    >>> est.estimate(windows, fs=125.0).lo           # the interval's lower ends, and `.reason` per window
    """

    def __init__(self, model: nn.Module, metadata: dict) -> None:
        self.model = model
        self.metadata = metadata
        self.preprocess = PreprocessConfig(**metadata["preprocess"])
        self.quality_config = QualityConfig(**metadata.get("quality", {}))
        self.label_stats = metadata["label_stats"]
        self.head = Head.from_dict(metadata["head"]) if "head" in metadata else None
        self.crop_s = float(metadata.get("crop_s", 0.0))  # > 0: a crop-averaging model, windows prepared per crop
        self.crop = window_samples(self.crop_s, self.preprocess.fs) if self.crop_s > 0 else 0

    @classmethod
    def load(cls, path: str | Path | None = None, torch_device: str = "cpu", *, device: str | None = None) -> Estimator:
        """Load a checkpoint folder (default: the shipped model) onto `torch_device` ('cpu', 'cuda', 'cuda:N',
        'auto'). `device` is its old name (a "device" is a wearable everywhere else): accepted, with a warning."""
        if device is not None:
            warnings.warn("Estimator.load(device=...) is deprecated; use torch_device=", DeprecationWarning, 2)
            torch_device = device
        model, metadata = load_checkpoint(path or default_model_path(), resolve_torch_device(torch_device))
        return cls(model, metadata)

    @property
    def name(self) -> str:
        """Model name and version as published on the wire, e.g. ``conv-lstm@3f2a9c1e``."""
        return f"{self.metadata['model']['name']}@{self.metadata['weights']['sha256'][:8]}"

    @property
    def torch_device(self) -> str:
        """The torch device the network runs on: 'cpu', 'cuda:0', … (a wearable is a "device" everywhere else)."""
        return str(next(self.model.parameters()).device)

    @property
    def device(self) -> str:
        """Deprecated name of `torch_device`, kept for code written against the first API."""
        return self.torch_device

    @property
    def fs(self) -> float:
        return self.preprocess.fs

    @property
    def uses_demographics(self) -> bool:
        """Whether age and sex change the answer: through the network, or through the head's prior."""
        return self.head is not None or bool(getattr(self.model, "uses_demographics", False))

    def basis(self, meta: dict | None) -> str:
        """What an uncalibrated answer rests on (the estimate's `basis`): `population` or `age_sex` when the head
        publishes the prior alone (its gain is 0), `ppg` when the network's reading of the waveform counts."""
        if self.head is None or any(g > 0 for g in self.head.gain):
            return "ppg"
        if not self.uses_demographics or not meta:
            return "population"
        # As parse_meta reads them (the ingest has checked the age): a known age, or a sex of M or F.
        sex = str(meta.get("sex", "")).strip().upper()[:1]
        return "age_sex" if meta.get("age") is not None or sex in ("M", "F") else "population"

    @property
    def interval_level(self) -> float | None:
        """The level of the prediction intervals (e.g. 0.8), None for a checkpoint without a head."""
        return self.head.level if self.head is not None else None

    @property
    def window_range_s(self) -> tuple[float, float]:
        """The window lengths (s) this checkpoint answers for: a crop-averaging model takes any length from
        its crop up; an older one the length it was trained on (or any, if it said nothing)."""
        windows = self.metadata.get("windows")
        if windows:
            return float(windows["min_s"]), float(windows["max_s"])
        if getattr(self.model, "fixed_length", False):
            trained = float(self.metadata.get("window_s", 0.0))
            return trained, trained
        return self.quality_config.min_s, float("inf")

    def prepare(self, windows: np.ndarray, fs: float) -> np.ndarray:
        """Raw windows (N, T) at `fs` Hz → model input at the model's rate."""
        return ppg_prepare(windows, fs, self.preprocess)

    def quality(self, window: np.ndarray, fs: float) -> Quality:
        """The shared quality check on one raw window at `fs` Hz."""
        return ppg_quality(window, fs, self.quality_config, self.preprocess)

    def assess_batch(self, windows: np.ndarray, fs: float) -> tuple[list[Quality], np.ndarray]:
        """Raw windows (N, T) at `fs` Hz → (quality of each, model inputs): `ppg_assess` with this model's settings."""
        return ppg_assess(windows, fs, self.quality_config, self.preprocess)

    def assess_windows(
        self, windows: Sequence[np.ndarray], fs: Sequence[float]
    ) -> tuple[list[Quality], list[np.ndarray]]:
        """Raw 1-D windows, each at its own rate `fs[i]` Hz → (quality of each, model input of each):
        `ppg_assess_windows` with this model's settings — one gate pass per model-input length, whatever the rates."""
        return ppg_assess_windows(windows, fs, self.quality_config, self.preprocess)

    @property
    def caches_crops(self) -> bool:
        """Whether a crop's features can be computed once and reused by every window that holds it (`embed_crops`,
        `infer_embedded`): a crop-averaging model whose network exposes its features."""
        return self.crop > 0 and getattr(self.model, "embed", None) is not None

    def prepare_crops(self, rows: Sequence[np.ndarray], fs: Sequence[float]) -> list[np.ndarray]:
        """Raw crops, each at its own rate → each one's model input, prepared alone (`crops.prepare_rows`)."""
        return prepare_rows(rows, fs, self.preprocess)

    def crop_inputs(self, windows: Sequence[np.ndarray], fs: Sequence[float]) -> list[np.ndarray]:
        """Raw windows, each at its own rate → each one's crops prepared alone (k, width): what `infer_prepared`
        takes for a crop-averaging model, stacked over windows of one shape (`crops.window_crops`)."""
        return window_crops(windows, fs, self.crop_s, self.preprocess)

    def embed_crops(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Prepared crops (M, width) → their features (M, D), each crop's own whatever window holds it."""
        return embed_crops(self.model, crops, batch_size)

    def infer_embedded(self, h: np.ndarray, counts: Sequence[int], meta_features: np.ndarray) -> np.ndarray:
        """Crop features (sum(counts), D), window after window (`counts[i]` crops for window i), and the windows'
        (N, 4) meta features → (N, 6) mmHg, columns `OUTPUTS`: the network's head per crop, averaged per window,
        then the generalisation head — what `infer_prepared` gives on the same crops."""
        counts = np.asarray(counts, dtype=int)
        y = crop_outputs(self.model, h, np.repeat(meta_features, counts, axis=0), self.label_stats)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        deviation = np.add.reduceat(y, starts, axis=0) / counts[:, None]
        features = np.add.reduceat(h, starts, axis=0) / counts[:, None]
        out = np.full((len(counts), len(OUTPUTS)), np.nan, dtype=np.float32)
        out[:, : deviation.shape[1]] = deviation
        return self._with_head(out, features, meta_features)

    def infer_prepared(self, x: np.ndarray, meta_features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Prepared windows (N, T) of one length, or crops prepared alone (N, k, width: `crop_inputs`), and (N, 4)
        meta features → (N, 6) mmHg, columns `OUTPUTS`.

        With a head: the network's deviation, shrunk toward the prior, and the interval. Without one (an older
        or a research checkpoint): the network's answer, and NaN for the interval.
        """
        out = np.full((len(x), len(OUTPUTS)), np.nan, dtype=np.float32)
        deviation, features = run_network(self.model, x, meta_features, self.label_stats, self.crop, batch_size)
        out[:, :2] = deviation
        return self._with_head(out, features, meta_features)

    def _with_head(self, out: np.ndarray, features: np.ndarray | None, meta_features: np.ndarray) -> np.ndarray:
        """`out` (N, 6) holding the network's answer in its first two columns → the published estimate and its
        interval, when the checkpoint has a head (else `out` as it is)."""
        if self.head is None or features is None or len(out) == 0:
            return out
        deviation = out[:, :2].copy()
        age, sex = meta_from_features(meta_features)
        bp, half, _ = self.head.estimate(deviation, features, age, sex)
        out[:, :2] = bp
        out[:, 2], out[:, 3] = bp[:, 0] - half[:, 0], bp[:, 0] + half[:, 0]
        out[:, 4], out[:, 5] = bp[:, 1] - half[:, 1], bp[:, 1] + half[:, 1]
        return out

    def predict_prepared(self, x: np.ndarray, meta_features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Already-prepared windows (N, T) and (N, 4) meta features → (N, 2) mmHg (no quality gate)."""
        return self.infer_prepared(x, meta_features, batch_size)[:, :2]

    def estimate(
        self,
        windows: np.ndarray | Sequence[np.ndarray],
        fs: float,
        meta: Mapping | Sequence[Mapping | None] | None = None,
        batch_size: int = 256,
    ) -> Estimates:
        """Quality gate, then SBP/DBP with their interval, for raw windows at `fs` Hz (resampled inside).

        `windows` is one window (T,), an array (N, T), or a list of windows of different lengths.
        `meta` is None, one ``{"age": .., "sex": "M"|"F"}`` for all windows, or one per window.
        """
        if isinstance(windows, np.ndarray) and windows.ndim <= 2:
            items = list(np.atleast_2d(np.asarray(windows, dtype=np.float32)))
        else:
            items = [np.asarray(w, dtype=np.float32).ravel() for w in windows]
        features = parse_meta(meta, len(items))
        out = np.full((len(items), len(OUTPUTS)), np.nan, dtype=np.float32)
        quality: list[Quality | None] = [None] * len(items)
        longest = self.window_range_s[1] * fs
        for length in sorted({len(w) for w in items}):  # one gate and one forward pass per distinct length
            idx = [i for i, w in enumerate(items) if len(w) == length]
            if length > longest + 1e-6:  # beyond what the checkpoint was made for: no number, a reason
                for i in idx:
                    quality[i] = Quality(False, "too_long", 0.0, None)
                continue
            checks, x = self.assess_batch(np.stack([items[i] for i in idx]), fs)
            passed = [k for k, q in enumerate(checks) if q.ok]
            for k, i in enumerate(idx):
                quality[i] = checks[k]
            if passed:
                rows = [idx[k] for k in passed]
                if self.crop_s > 0:  # each crop prepared alone: what the daemon computes once per crop
                    inputs = np.stack(self.crop_inputs([items[i] for i in rows], [fs] * len(rows)))
                else:
                    inputs = x[passed]
                out[rows] = self.infer_prepared(inputs, features[rows], batch_size)
        return Estimates(
            bp=out[:, :2],
            lo=out[:, [2, 4]],
            hi=out[:, [3, 5]],
            level=self.interval_level,
            reason=[q.reason for q in quality],
            quality=quality,
        )

    def predict(
        self,
        windows: np.ndarray | Sequence[np.ndarray],
        fs: float,
        meta: Mapping | Sequence[Mapping | None] | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """SBP and DBP (N, 2) in mmHg for raw windows at `fs` Hz; a window the quality gate rejects is NaN
        (`estimate` says why, and gives the intervals)."""
        return self.estimate(windows, fs, meta, batch_size).bp
