"""Checkpoints: safetensors weights beside JSON metadata that rebuilds the model and vouches for the weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from p2p_stream.errors import CheckpointError, ConfigError
from p2p_stream.model.networks import build_model, count_parameters, model_params

FORMAT = 1
WEIGHTS = "model.safetensors"
METADATA = "model.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(directory: str | Path, model: nn.Module, name: str, metadata: dict) -> Path:
    """Write `model.safetensors` and `model.json` (with `metadata` merged in) under `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    meta = {
        "format": FORMAT,
        "model": {"name": name, "params": model_params(model), "parameters": count_parameters(model)},
        **metadata,
        "weights": {"file": WEIGHTS, "sha256": sha256_file(weights)},
    }
    (directory / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return directory


def read_metadata(directory: str | Path) -> dict:
    path = Path(directory) / METADATA
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {METADATA} (a checkpoint is a folder with {WEIGHTS} and {METADATA})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this version reads {FORMAT}")
    for key in ("model", "weights", "preprocess", "label_stats"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from metadata and load its weights, refusing a tampered or mismatched checkpoint."""
    directory = Path(directory)
    meta = read_metadata(directory)
    weights = directory / meta["weights"]["file"]
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    actual = sha256_file(weights)
    if actual != meta["weights"]["sha256"]:
        raise CheckpointError(
            f"{weights}: SHA-256 {actual[:16]}… does not match the metadata's {meta['weights']['sha256'][:16]}…; "
            "the weights were changed after the checkpoint was written"
        )
    try:
        model = build_model(meta["model"]["name"], meta["model"]["params"])
    except ConfigError as exc:
        raise CheckpointError(f"{directory}: {exc}") from exc
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights}: weights do not fit model {meta['model']['name']!r} ({exc})") from exc
    return model.to(device).eval(), meta
