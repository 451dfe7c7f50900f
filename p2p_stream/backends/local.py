"""Inference backends: where the daemon's prepared windows become SBP/DBP — in this process, or on a Ray Serve pool.

The daemon keeps ingest, buffering, the quality gate and calibration; a backend only runs the network on windows
that passed the gate. A backend that cannot answer raises `BackendUnavailable`: the daemon publishes those
windows as rejected (`reason: "backend_unavailable"`, counted) and carries on.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

import numpy as np

from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.model.estimator import Estimator


class BackendUnavailable(P2PError):
    """The backend did not answer for this batch (after its retries)."""

    reason = "backend_unavailable"


class Backend(Protocol):
    device: str  # where the network runs, for the heartbeat: "cpu", "cuda:0", "ray:p2p-inference"
    max_in_flight: int  # batches the daemon may have sent and not yet published

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Prepared windows (N, T) of one length and (N, 4) meta features → (N, 6) mmHg: `estimator.OUTPUTS`, the
        estimate and its interval."""
        ...

    def submit(self, x: np.ndarray, features: np.ndarray) -> Future:
        """`predict` as a future: the daemon gates the next batch while this one is on its way."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """The network in the daemon's own inference thread: the default, and the reference the others must equal."""

    max_in_flight = 1  # answers at once: submit() returns a finished future

    def __init__(self, estimator: Estimator) -> None:
        self.est = estimator
        self.device = estimator.device

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        return self.est.infer_prepared(x, features, batch_size=len(x))

    def submit(self, x: np.ndarray, features: np.ndarray) -> Future:
        done: Future = Future()
        done.set_result(self.predict(x, features))
        return done

    def close(self) -> None:
        pass


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
