"""Models: the registry that builds a network by name from a dict of its config, refusing unknown keys."""

from __future__ import annotations

from dataclasses import asdict, fields

from torch import nn

from p2p_stream.errors import ConfigError
from p2p_stream.model.networks.conv_lstm import ConvLSTM, ConvLSTMConfig
from p2p_stream.model.networks.seed_lstm import SeedLSTM, SeedLSTMConfig

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "seed-lstm": (SeedLSTM, SeedLSTMConfig),  # the research notebook's network, unchanged
    "conv-lstm": (ConvLSTM, ConvLSTMConfig),  # the shipped default
}


def model_config(name: str, params: dict | None = None):
    """The config dataclass of model `name` with `params` applied; unknown names or keys are errors."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name][1]
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(params or {}) - valid)
    if unknown:
        raise ConfigError(f"model {name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}")
    return cls(**(params or {}))


def build_model(name: str, params: dict | None = None) -> nn.Module:
    """Instantiate model `name`; its full config is on `model.config`."""
    config = model_config(name, params)
    return MODELS[name][0](config)


def model_params(model: nn.Module) -> dict:
    """The model's full config as a plain dict (for checkpoints)."""
    return asdict(model.config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "build_model", "count_parameters", "model_config", "model_params"]
