"""Ray Serve backend: one model deployment that every daemon shares, merging their batches with `@serve.batch`.

Each daemon sends one request per batch that passed its quality gate (windows of one length, already prepared);
a replica merges up to `ray.max_batch` such requests, from any daemon, waiting at most `ray.max_wait_ms` for
them, and runs one forward pass per window length. Ray's autoscaler adds replicas between `min_replicas` and
`max_replicas` as requests queue up, and places each on `num_gpus` GPUs when asked. Sending whole batches, not
single windows, is deliberate: one Serve request per window tops out near 250 windows/s on a 2-core machine
(measured, docs/scaling.md), one per batch carries thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve

from p2p_stream.backends.base import BackendUnavailable
from p2p_stream.errors import ConfigError
from p2p_stream.model.checkpoint import METADATA, read_metadata
from p2p_stream.model.estimator import OUTPUTS, Estimator
from p2p_stream.stream.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a daemon's own Ray instance moves batches of ~300 kB, not datasets


@serve.deployment(name="PressureModel")
class PressureModel:
    """A replica: the checkpoint, shipped to it as bytes so that any node can host it, on a CPU or its GPU."""

    def __init__(self, files: dict[str, bytes], max_batch: int, max_wait_s: float, threads: int) -> None:
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                (Path(d) / name).write_bytes(data)
            # The same SHA-256 and architecture checks as in the daemon; Ray sets CUDA_VISIBLE_DEVICES to our GPUs.
            self.est = Estimator.load(d, device="cuda" if ray.get_gpu_ids() else "cpu")
        self.requests = self.forwards = 0  # in info(): how far @serve.batch merged the daemons' batches
        self.predict.set_max_batch_size(max_batch)
        self.predict.set_batch_wait_timeout_s(max_wait_s)

    def info(self) -> dict:
        return {
            "model": self.est.name,
            "torch_device": self.est.torch_device,
            "requests": self.requests,
            "forwards": self.forwards,
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # replaced in __init__ by the configured knobs
    async def predict(self, xs: list[np.ndarray], features: list[np.ndarray]) -> list[np.ndarray]:
        """Requests from any daemon, merged: one forward pass per window length across all of them."""
        out: list[np.ndarray] = [np.empty((0, len(OUTPUTS)), np.float32)] * len(xs)
        self.requests += len(xs)
        for length in {x.shape[1] for x in xs}:
            idx = [i for i, x in enumerate(xs) if x.shape[1] == length]
            merged = np.concatenate([xs[i] for i in idx])
            meta = np.concatenate([features[i] for i in idx])
            # Off the replica's event loop, which must keep answering Serve's queue-length probes meanwhile (blocked
            # by a forward pass, the callers' routers logged "Failed to get queue length … within 0.1s").
            pred = await asyncio.to_thread(self.est.infer_prepared, merged, meta, len(merged))
            self.forwards += 1
            bounds = np.cumsum([0] + [len(xs[i]) for i in idx])
            for i, start, stop in zip(idx, bounds[:-1], bounds[1:]):
                out[i] = pred[start:stop]
        return out

    async def __call__(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        return await self.predict(x, features)


def checkpoint_files(checkpoint: Path) -> dict[str, bytes]:
    meta = read_metadata(checkpoint)
    return {
        METADATA: (checkpoint / METADATA).read_bytes(),
        meta["weights"]["file"]: (checkpoint / meta["weights"]["file"]).read_bytes(),
    }


class RayBackend:
    """The daemon's side: joins (or starts) Ray, joins the Serve app serving this model or deploys it, and sends
    each batch with a timeout and retries. A batch that still gets no answer raises `BackendUnavailable`."""

    def __init__(self, estimator: Estimator, checkpoint: Path, config) -> None:
        self.config = config
        self.warn = RateLimitedLog(log, period_s=10.0)  # a dead backend must not log every try of every batch
        self.started_ray = False
        for name in ("ray", "ray.serve"):  # Ray's INFO chatter would drown the daemon's own log
            logging.getLogger(name).setLevel(logging.WARNING)
        if not ray.is_initialized():
            local = not config.address
            ray.init(
                address="local" if local else config.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **({"object_store_memory": LOCAL_OBJECT_STORE_BYTES} if local else {}),
            )
            self.started_ray = local
        serve.start(proxy_location="Disabled")  # no HTTP ingress: daemons reach the model through handles
        self.handle = self._join_or_deploy(estimator, checkpoint)
        self.runs_on = f"ray:{config.app}"
        self.max_in_flight = config.max_in_flight
        self.pool = ThreadPoolExecutor(max_workers=config.max_in_flight, thread_name_prefix="p2p-ray")

    def _join_or_deploy(self, estimator: Estimator, checkpoint: Path) -> serve.handle.DeploymentHandle:
        c = self.config
        app = serve.status().applications.get(c.app)
        if app is not None and str(app.status).endswith("RUNNING"):
            handle = serve.get_app_handle(c.app)
            self._check_serves(handle, estimator)
            log.info("joined Ray Serve app %s serving %s", c.app, estimator.name)
            return handle
        deployment = PressureModel.options(
            autoscaling_config={
                "min_replicas": c.min_replicas,
                "max_replicas": c.max_replicas,
                "target_ongoing_requests": c.target_ongoing_requests,
            },
            ray_actor_options={"num_cpus": c.num_cpus, "num_gpus": c.num_gpus},
            # Serve's default (5) is below ray.max_batch (8): a replica would never hold enough requests to merge.
            max_ongoing_requests=2 * c.max_batch,
        )
        files = checkpoint_files(checkpoint)
        threads = max(1, int(c.num_cpus))
        handle = serve.run(
            deployment.bind(files, c.max_batch, c.max_wait_ms / 1000.0, threads), name=c.app, route_prefix=None
        )
        self._check_serves(handle, estimator)
        log.info(
            "deployed Ray Serve app %s: %s, %d–%d replicas of %s CPU / %s GPU",
            c.app, estimator.name, c.min_replicas, c.max_replicas, c.num_cpus, c.num_gpus,
        )  # fmt: skip
        return handle

    def _check_serves(self, handle: serve.handle.DeploymentHandle, estimator: Estimator) -> None:
        """The replicas must run the very checkpoint whose preprocessing and quality gate this daemon applies."""
        serving = handle.info.remote().result(timeout_s=self.config.timeout_s)["model"]
        if serving != estimator.name:
            raise ConfigError(
                f"Ray Serve app {self.config.app!r} serves {serving}, but this daemon loaded {estimator.name}; "
                "point model.path at the same checkpoint or give this model its own ray.app"
            )

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        c, last = self.config, None
        for attempt in range(1 + c.retries):
            if attempt:
                time.sleep(min(1.0, 0.25 * attempt))  # a moment for Serve to replace a replica
            response = None
            try:
                response = self.handle.remote(x, features)  # raises at once when the app has no deployment
                return np.asarray(response.result(timeout_s=c.timeout_s), dtype=np.float32)
            except Exception as exc:  # a dead or restarting replica, a timeout, back-pressure: try again
                if response is not None:
                    with contextlib.suppress(Exception):  # cancelling a failed request raises its error again
                        response.cancel()
                last = exc
                self.warn.warning("retry", "Ray Serve app %s, try %d of %d: %s", c.app, attempt + 1, 1 + c.retries, exc)
        raise BackendUnavailable(
            f"Ray Serve app {c.app!r} gave no answer in {1 + c.retries} tries: {type(last).__name__}: {last}"
        )

    def submit(self, x: np.ndarray, features: np.ndarray) -> Future:
        return self.pool.submit(self.predict, x, features)

    def close(self) -> None:
        """A Ray this daemon started goes with it; an app on a shared cluster stays for the other daemons."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.started_ray:
            serve.shutdown()
            ray.shutdown()
