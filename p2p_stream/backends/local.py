"""Local backend: the gate and the network in the inference worker's own thread — the default, and the reference the
others must equal."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import torch

from p2p_stream.backends.analysis import analyse
from p2p_stream.backends.base import Request
from p2p_stream.backends.crop_cache import CropCache
from p2p_stream.model.estimator import Estimator


class LocalBackend:
    """`analyse` answers at once (a finished future), through the crop cache when it has one."""

    max_in_flight = 1  # answered before the worker takes the next batch

    def __init__(
        self, estimator: Estimator, crop_cache: CropCache | None = None, threads: tuple[int, int] | None = None
    ) -> None:
        """`threads`: (steady, burst) torch threads — the burst number while more windows wait than one batch
        holds (`Request.burst`); None leaves torch's setting alone."""
        self.est, self.crop_cache, self.threads = estimator, crop_cache, threads
        self.caches_crops = crop_cache is not None
        self.runs_on = estimator.torch_device  # the torch device the estimator's network sits on

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The network on prepared inputs (N, ...) and (N, 4) meta features → (N, 6) mmHg."""
        return self.est.infer_prepared(x, features, batch_size=len(x))

    def analyse(self, request: Request) -> Future:
        if self.threads is not None:
            steady, burst = self.threads
            torch.set_num_threads(burst if request.burst else steady)
        done: Future = Future()
        done.set_result(analyse(self.est, request, self.predict, self.crop_cache))
        return done

    def close(self) -> None:
        pass
