"""What every inference backend is: the `Backend` protocol the inference worker calls, and `BackendUnavailable`.

The daemon keeps ingest, buffering, the quality gate and calibration; a backend only runs the network on windows
that passed the gate. A backend that cannot answer raises `BackendUnavailable`: the daemon publishes those
windows as rejected (`reason: "backend_unavailable"`, counted) and carries on.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

import numpy as np

from p2p_stream.errors import P2PError


class BackendUnavailable(P2PError):
    """The backend did not answer for this batch (after its retries)."""

    reason = "backend_unavailable"


class Backend(Protocol):
    runs_on: str  # where the network runs, for the heartbeat's `backend_device`: "cpu", "cuda:0", "ray:p2p-inference"
    max_in_flight: int  # batches the daemon may have sent and not yet published

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Prepared windows (N, T) of one length, or a crop model's crops prepared alone (N, k, width: one shape),
        and (N, 4) meta features → (N, 6) mmHg: `estimator.OUTPUTS`, the
        estimate and its interval."""
        ...

    def submit(self, x: np.ndarray, features: np.ndarray) -> Future:
        """`predict` as a future: the daemon gates the next batch while this one is on its way."""
        ...

    def close(self) -> None: ...
