"""Local backend: the network in the daemon's own inference thread — the default, and the reference for the others."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from p2p_stream.model.estimator import Estimator


class LocalBackend:
    """The network in the daemon's own inference thread: the default, and the reference the others must equal."""

    max_in_flight = 1  # answers at once: submit() returns a finished future

    def __init__(self, estimator: Estimator) -> None:
        self.est = estimator
        self.runs_on = estimator.torch_device  # the torch device the estimator's network sits on

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        return self.est.infer_prepared(x, features, batch_size=len(x))

    def submit(self, x: np.ndarray, features: np.ndarray) -> Future:
        done: Future = Future()
        done.set_result(self.predict(x, features))
        return done

    def close(self) -> None:
        pass
