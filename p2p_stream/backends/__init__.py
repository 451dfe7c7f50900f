"""Backends: where the quality gate and the network run — in the worker's thread, in a child process, on Ray Serve.

    base.py        the seam: `Request` → `Backend.analyse` → future of `Answer`; `BackendUnavailable`
    analysis.py    the gate, then the network: what every backend does with a request
    crop_cache.py  per device, the features of crops already computed (a local network on a crop model)
    local.py       `LocalBackend`: in the inference worker's thread (the default)
    process.py     `ProcessBackend`: in a child process (`model.inference_process`)
    ray.py         `RayBackend`: a shared Ray Serve pool (the optional `[cluster]` extra, imported only when asked for)
    threads.py     torch threads for a network on this machine's cores

No backend imports another's module but the shared ones, and nothing here imports the streaming path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from p2p_stream.backends.base import Answer, Backend, BackendUnavailable, Item, Request
from p2p_stream.backends.crop_cache import CropCache
from p2p_stream.backends.local import LocalBackend
from p2p_stream.backends.process import ProcessBackend
from p2p_stream.backends.threads import torch_threads
from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.errors import ConfigError
from p2p_stream.model.estimator import Estimator

__all__ = [
    "Answer", "Backend", "BackendUnavailable", "Item", "LocalBackend", "ProcessBackend", "Request", "make_backend",
]  # fmt: skip


def make_backend(config: DaemonConfig, estimator: Estimator, checkpoint: Path) -> Backend:
    """The backend the config names (`model.backend`, `model.inference_process`), with its torch threads and, for a
    local network on a crop-averaging model, its crop cache (`model.reuse_crops`). Ray is imported only when asked
    for (it is the optional `[cluster]` extra)."""
    m = config.model
    steady, burst = torch_threads(config)
    torch.set_num_threads(steady)
    if m.backend == "local":
        capacity, window_s = config.limits.max_devices, config.windowing.window_s
        caches_crops = m.reuse_crops and estimator.caches_crops  # the one crop-cache decision, wherever it runs
        if m.inference_process:
            return ProcessBackend(estimator, capacity, window_s, caches_crops=caches_crops, threads=steady)
        cache = CropCache(estimator, capacity=capacity, window_s=window_s) if caches_crops else None
        return LocalBackend(estimator, cache, threads=(steady, burst))
    try:
        from p2p_stream.backends.ray import RayBackend
    except ImportError as exc:
        raise ConfigError(
            f"model.backend = 'ray' needs Ray Serve, which is not installed ({exc}); "
            "install it with: pip install -e '.[cluster]' (or use model.backend = 'local')"
        ) from exc
    return RayBackend(estimator, checkpoint, config.ray)
