"""Inference backends: where prepared windows become SBP/DBP — in the daemon's process or on Ray Serve.

    base.py   the `Backend` protocol and `BackendUnavailable`, which every backend and the worker import
    local.py  `LocalBackend`: the network in the daemon's inference thread (the default)
    ray.py    `RayBackend`: a shared Ray Serve pool (the optional `[cluster]` extra, imported only when asked for)

Neither backend imports the other, and this module imports `ray.py` only inside `make_backend`.
"""

from __future__ import annotations

from pathlib import Path

from p2p_stream.backends.base import Backend, BackendUnavailable
from p2p_stream.backends.local import LocalBackend
from p2p_stream.errors import ConfigError
from p2p_stream.model.estimator import Estimator

__all__ = ["Backend", "BackendUnavailable", "LocalBackend", "make_backend"]


def make_backend(kind: str, estimator: Estimator, checkpoint: Path, ray_config) -> Backend:
    """The backend the config names; Ray is imported only when asked for (it is the optional `[cluster]` extra)."""
    if kind == "local":
        return LocalBackend(estimator)
    try:
        from p2p_stream.backends.ray import RayBackend
    except ImportError as exc:
        raise ConfigError(
            f"model.backend = 'ray' needs Ray Serve, which is not installed ({exc}); "
            "install it with: pip install -e '.[cluster]' (or use model.backend = 'local')"
        ) from exc
    return RayBackend(estimator, checkpoint, ray_config)
