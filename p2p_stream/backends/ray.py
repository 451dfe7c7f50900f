"""Ray Serve backend: one model deployment that every daemon shares, merging their batches with `@serve.batch`.

Each daemon gates its batch itself (`analysis.analyse`, in this backend's thread pool), then sends one request per
model-input shape of the windows that passed, already prepared;
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
import socket
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve
from ray._private import auto_init_hook, ray_constants
from ray.serve.api import _run as serve_run  # serve.run without its wait for RUNNING, which has no timeout

from p2p_stream.backends.analysis import analyse
from p2p_stream.backends.base import BackendUnavailable, Request
from p2p_stream.errors import ConfigError
from p2p_stream.model.checkpoint import METADATA, read_metadata
from p2p_stream.model.estimator import OUTPUTS, Estimator
from p2p_stream.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a daemon's own Ray instance moves batches of ~300 kB, not datasets
WATCH_S = 1.0  # while up: how often the GCS is checked for a pulse (a TCP connect)
GCS_CONNECT_S = 1.0  # how long that connect may take
PROBE_FIRST_S, PROBE_MAX_S = 1.0, 5.0  # while down: the first probe after 1 s, then 2, 4, 5, 5, … s apart
WAIT_SLICE_S = 0.2  # a request is waited on in slices: found down or stopping, it is let go within this
DEPLOY_POLL_S = 0.5  # how often a deploy is checked for RUNNING
REJOIN_AFTER_PROBES = 3  # probes failing with the GCS answering: then ray.init afresh (a restart we did not see)
KEEPER_JOIN_S = 2.0  # close() waits this long for a probe under way, then leaves it to the process's exit


@serve.deployment(name="PressureModel")
class PressureModel:
    """A replica: the checkpoint, shipped to it as bytes so that any node can host it, on a CPU or its GPU."""

    def __init__(self, files: dict[str, bytes], max_batch: int, max_wait_s: float, threads: int) -> None:
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                (Path(d) / name).write_bytes(data)
            # The same SHA-256 and architecture checks as in the daemon; Ray sets CUDA_VISIBLE_DEVICES to our GPUs.
            self.est = Estimator.load(d, torch_device="cuda" if ray.get_gpu_ids() else "cpu")
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
        """Requests from any daemon, merged: one forward pass per model-input shape (a window's length, or its
        crops' count and width) across all of them."""
        out: list[np.ndarray] = [np.empty((0, len(OUTPUTS)), np.float32)] * len(xs)
        self.requests += len(xs)
        for shape in {x.shape[1:] for x in xs}:
            idx = [i for i, x in enumerate(xs) if x.shape[1:] == shape]
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
    each batch with a timeout and retries. A batch that still gets no answer raises `BackendUnavailable`.

    It also keeps watch (`_keep`, one thread): while up, it checks every `WATCH_S` that the cluster's GCS still
    accepts connections, so `ray stop` is noticed in about a second rather than after `timeout_s` × tries; once
    down, every batch fails at once (`BackendUnavailable`, nothing waits on Ray), and it probes, backing off from
    `PROBE_FIRST_S` to `PROBE_MAX_S`: it joins the cluster again (`ray.init`, when the cluster was restarted),
    joins or deploys the app again, and lets batches through once the replicas answer.
    """

    def __init__(self, estimator: Estimator, checkpoint: Path, config) -> None:
        self.config, self.estimator, self.checkpoint = config, estimator, checkpoint
        self.warn = RateLimitedLog(log, period_s=10.0)  # a dead backend must not log every try of every batch
        self.started_ray = False
        self.gcs: tuple[str, int] | None = None  # the cluster's GCS, watched while up (None: Ray Client, unwatched)
        self.up = threading.Event()  # set: batches go to the app; clear: they fail at once while `_keep` probes
        self.closing = threading.Event()
        self.lock = threading.Lock()  # `up`, `handle`, `down_since` and `cause` change together
        self.down_since, self.cause = 0.0, ""
        self.rejoin = False  # the cluster went away: the next probe joins it afresh (ray.init) before the app
        for name in ("ray", "ray.serve"):  # Ray's INFO chatter would drown the daemon's own log
            logging.getLogger(name).setLevel(logging.WARNING)
        # Never a Ray of Ray's own choosing: after the cluster went away (ray.shutdown), Serve's threads calling Ray
        # would otherwise start a local one in this process (seen: "Started a local Ray instance" mid-outage).
        auto_init_hook.enable_auto_connect = False
        # Nor Ray's fatal-signal handler: ray.init installs it over SIGTERM, and ray.shutdown (the cluster gone) puts
        # back what was there before ray.init, the default action: SIGTERM would then kill the daemon mid-outage
        # instead of stopping it (measured: exit -15, nothing published). Read when ray.init runs, not from the env.
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        self.runs_on = f"ray:{config.app}"
        self.caches_crops = False  # a replica serves many daemons: crop features stay with the requests
        self.max_in_flight = config.max_in_flight
        try:
            self._connect()
            self.handle = self._join_or_deploy()
        except BaseException:
            self._leave()  # a Ray this daemon started must not outlive a failed start
            raise
        self.up.set()
        self.pool = ThreadPoolExecutor(max_workers=config.max_in_flight, thread_name_prefix="p2p-ray")
        self.keeper = threading.Thread(target=self._keep, name="p2p-ray-keeper", daemon=True)
        self.keeper.start()

    # ---------------------------------------------------------------- joining: the cluster, then the app

    def _connect(self) -> None:
        """Join the configured cluster, or start a Ray of this daemon's own (address ''), unless one is joined."""
        c = self.config
        if not ray.is_initialized():
            local = not c.address
            ray.init(
                address="local" if local else c.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **({"object_store_memory": LOCAL_OBJECT_STORE_BYTES} if local else {}),
            )
            self.started_ray = local
        try:
            host, _, port = (ray.get_runtime_context().gcs_address or "").rpartition(":")
        except Exception:  # Ray Client (ray://): the GCS is the server's, not ours to watch
            host, port = "", ""
        self.gcs = (host, int(port)) if port.isdigit() else None
        serve.start(proxy_location="Disabled")  # no HTTP ingress: daemons reach the model through handles

    def _join_or_deploy(self) -> serve.handle.DeploymentHandle:
        c, estimator = self.config, self.estimator
        app = serve.status().applications.get(c.app)
        if app is not None and str(app.status).endswith("RUNNING"):
            handle = serve.get_app_handle(c.app)
            self._check_serves(handle)
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
        files = checkpoint_files(self.checkpoint)
        threads = max(1, int(c.num_cpus))
        # serve.run waits for RUNNING without end (a replica that cannot be placed leaves the app DEPLOYING for
        # ever); its non-blocking form lets us wait ray.deploy_timeout_s and say why.
        handle = serve_run(
            deployment.bind(files, c.max_batch, c.max_wait_ms / 1000.0, threads), name=c.app, route_prefix=None,
            _blocking=False,
        )  # fmt: skip
        self._wait_running()
        self._check_serves(handle)
        log.info(
            "deployed Ray Serve app %s: %s, %d–%d replicas of %s CPU / %s GPU",
            c.app, estimator.name, c.min_replicas, c.max_replicas, c.num_cpus, c.num_gpus,
        )  # fmt: skip
        return handle

    def _wait_running(self) -> None:
        """Until the app runs; a ConfigError naming the cause when it failed or is still not running after
        ray.deploy_timeout_s (the app is then deleted, not left DEPLOYING)."""
        c = self.config
        deadline = time.monotonic() + c.deploy_timeout_s
        while True:
            app = serve.status().applications.get(c.app)
            status = str(app.status).rpartition(".")[2] if app is not None else "NOT_STARTED"
            if status == "RUNNING":
                return
            if status == "DEPLOY_FAILED" or time.monotonic() >= deadline or self.closing.is_set():
                why = self._why_not_running(app)
                with contextlib.suppress(Exception):
                    serve.delete(c.app, _blocking=False)
                raise ConfigError(
                    f"Ray Serve app {c.app!r} is {status} after {c.deploy_timeout_s:g} s (ray.deploy_timeout_s): {why}"
                )
            time.sleep(DEPLOY_POLL_S)

    def _why_not_running(self, app) -> str:
        """What keeps the replicas from starting: resources the cluster lacks, or Serve's own words."""
        c = self.config
        total = ray.cluster_resources()
        for name, per_replica, setting_name in (("GPU", c.num_gpus, "num_gpus"), ("CPU", c.num_cpus, "num_cpus")):
            has = total.get(name, 0.0)
            if per_replica > has:
                fix = "0 (replicas on CPUs)" if name == "GPU" else f"{has:g} or less"
                return (
                    f"asked for {per_replica:g} {name} per replica, this Ray cluster has {has:g}; "
                    f"set ray.{setting_name} = {fix} or join a cluster with {name}s to spare"
                )
        messages = [] if app is None else [app.message] + [d.message for d in app.deployments.values()]
        said = "; ".join(m for m in messages if m)
        return said or "its replicas did not start; `ray status` shows what the cluster has and what waits"

    def _check_serves(self, handle: serve.handle.DeploymentHandle) -> None:
        """The replicas must run the very checkpoint whose preprocessing and quality gate this daemon applies."""
        serving = handle.info.remote().result(timeout_s=self.config.timeout_s)["model"]
        if serving != self.estimator.name:
            raise ConfigError(
                f"Ray Serve app {self.config.app!r} serves {serving}, but this daemon loaded {self.estimator.name}; "
                "point model.path at the same checkpoint or give this model its own ray.app"
            )

    # ---------------------------------------------------------------- keeping watch: up → down → probing → up

    def _keep(self) -> None:
        delay, failed = PROBE_FIRST_S, 0  # the wait before the next probe; probes failed in a row
        while not self.closing.wait(WATCH_S if self.up.is_set() else delay):
            if self.up.is_set():
                if not self._gcs_answers():
                    self._mark_down(f"the Ray cluster's GCS at {self.gcs[0]}:{self.gcs[1]} stopped answering")
                continue
            try:
                self._probe()
            except Exception as exc:  # still down: anything Ray raises while it is away
                delay = min(PROBE_MAX_S, 2 * delay)
                failed += 1
                if self.config.address and failed % REJOIN_AFTER_PROBES == 0:  # a cluster restarted between two
                    self.rejoin = True  # watches: join it afresh (a Ray of our own cannot come back unseen)
                self.warn.warning(
                    "probe", "Ray Serve app %s still unavailable (%s: %s); trying again every %.0f s at most",
                    self.config.app, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", PROBE_MAX_S,
                )  # fmt: skip
            else:
                delay, failed = PROBE_FIRST_S, 0

    def _gcs_answers(self) -> bool:
        if self.gcs is None:  # Ray Client: no GCS of ours to watch; failed requests mark the backend down
            return True
        try:
            socket.create_connection(self.gcs, timeout=GCS_CONNECT_S).close()
            return True
        except OSError:
            return False

    def _mark_down(self, cause: str) -> None:
        with self.lock:
            if not self.up.is_set():
                return
            self.up.clear()
            self.down_since, self.cause = time.monotonic(), cause
        log.warning(
            "Ray Serve app %s unavailable: %s; its batches are published as backend_unavailable while it is probed "
            "every %.0f s at most", self.config.app, cause, PROBE_MAX_S,
        )  # fmt: skip

    def _probe(self) -> None:
        """One try at coming back: the cluster (joined afresh if it went away), then the app (deployed if gone)."""
        if not self._gcs_answers():
            self.rejoin = True
            if ray.is_initialized():  # let go of the dead cluster now: Ray ends a driver that waits on one for 60 s
                ray.shutdown()
            if self.config.address:  # ray.init to a cluster that is not there hangs for minutes: wait for its port
                raise BackendUnavailable(f"nothing answers at {self.gcs[0]}:{self.gcs[1]}")
            if not self.started_ray:  # a Ray that another part of this process started, and ended: not ours to restart
                raise BackendUnavailable("the Ray this process had joined is gone")
        if self.rejoin:
            if ray.is_initialized():
                ray.shutdown()
            self._connect()  # the cluster came back (a new one: `ray start` again), or, address '', a new own Ray
            self.rejoin = False
        elif not ray.is_initialized():
            self._connect()
        handle = self._join_or_deploy()
        with self.lock:
            self.handle = handle
            self.up.set()
        log.warning(
            "Ray Serve app %s is back after %.1f s; estimates resume",
            self.config.app,
            time.monotonic() - self.down_since,
        )

    # ---------------------------------------------------------------- batches

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        c, last = self.config, None
        for attempt in range(1 + c.retries):
            self._raise_if_down()
            if attempt and self.closing.wait(min(1.0, 0.25 * attempt)):  # a moment for Serve to replace a replica
                self._raise_if_down()
            response = None
            try:
                response = self.handle.remote(x, features)  # raises at once when the app has no deployment
                return np.asarray(self._result(response), dtype=np.float32)
            except Exception as exc:  # a dead or restarting replica, a timeout, back-pressure: try again
                if response is not None:
                    with contextlib.suppress(Exception):  # cancelling a failed request raises its error again
                        response.cancel()
                if isinstance(exc, BackendUnavailable):  # found down, or stopping, meanwhile: no more tries
                    raise
                last = exc
                self.warn.warning("retry", "Ray Serve app %s, try %d of %d: %s", c.app, attempt + 1, 1 + c.retries, exc)
        cause = f"gave no answer in {1 + c.retries} tries: {type(last).__name__}: {last}"
        self._mark_down(cause)
        raise BackendUnavailable(f"Ray Serve app {c.app!r} {cause}")

    def _result(self, response):
        """The answer within ray.timeout_s, waited for in slices: a backend found down, or closing, lets go at once."""
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            self._raise_if_down()
            remaining = deadline - time.monotonic()
            try:
                return response.result(timeout_s=max(0.0, min(WAIT_SLICE_S, remaining)))
            except TimeoutError:
                if remaining <= WAIT_SLICE_S:
                    raise

    def _raise_if_down(self) -> None:
        if self.closing.is_set():
            raise BackendUnavailable(f"Ray Serve app {self.config.app!r}: the daemon is stopping")
        if not self.up.is_set():
            raise BackendUnavailable(
                f"Ray Serve app {self.config.app!r} unavailable for {time.monotonic() - self.down_since:.0f} s "
                f"({self.cause}); probing it"
            )

    def analyse(self, request: Request) -> Future:
        """The gate here, the network on the Serve app; both off the worker's thread. An app that does not answer
        leaves the gate's verdicts standing (`Answer.unavailable`)."""
        return self.pool.submit(analyse, self.estimator, request, self.predict)

    def close(self) -> None:
        """A Ray this daemon started goes with it; an app on a shared cluster stays for the other daemons.

        Never waits on a cluster that is gone: requests in flight let go within `WAIT_SLICE_S`, and a probe busy
        joining is left to the process's exit."""
        self.closing.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.keeper.join(timeout=KEEPER_JOIN_S)
        if self.keeper.is_alive():
            log.warning(
                "Ray Serve app %s: still probing the cluster at exit; leaving Ray to the process's end", self.config.app
            )
            return
        if self.up.is_set() or self._gcs_answers():
            self._leave()

    def _leave(self) -> None:
        if self.started_ray and ray.is_initialized():
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
