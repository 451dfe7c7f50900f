"""The Ray Serve backend on a local Ray instance: the same numbers as the local backend, batches merged across
daemons by @serve.batch, and a replica that dies or an app that vanishes never takes the daemon down."""

import threading
import time

import numpy as np
import pytest
from helpers import SAMPLE, read_segment, simulated_ppg
from zmq_helpers import client, running_daemon

ray = pytest.importorskip("ray", reason="the optional [cluster] extra (Ray Serve) is not installed")
serve = pytest.importorskip("ray.serve")

from p2p_stream import Estimator  # noqa: E402
from p2p_stream.backends import BackendUnavailable, LocalBackend  # noqa: E402
from p2p_stream.backends.ray import RayBackend  # noqa: E402
from p2p_stream.config.daemon import Ray  # noqa: E402
from p2p_stream.errors import ConfigError  # noqa: E402
from p2p_stream.model.estimator import default_model_path  # noqa: E402
from p2p_stream.ppg.preprocess import cut_windows  # noqa: E402

FS = 125.0


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds): 2 CPUs, no GPU (on any machine), a small object
    store, no dashboard."""
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 2**20)  # fmt: skip
    yield
    serve.shutdown()
    ray.shutdown()


def one_replica(**overrides) -> Ray:
    knobs = {"min_replicas": 1, "max_replicas": 1, "max_batch": 16, "max_wait_ms": 50.0, "timeout_s": 20.0}
    return Ray(**{**knobs, **overrides})


def real_and_simulated_windows(est: Estimator) -> list[np.ndarray]:
    """Prepared model inputs: real PPG-BP segments (2.1 s, 1 kHz) and simulated 10 s windows, two lengths."""
    names = sorted(p.stem for p in (SAMPLE / "0_subject").glob("*.txt"))
    real = np.stack([read_segment(n)[:2000] for n in names])
    _, x_real = est.assess_batch(real, 1000.0)
    sims = np.stack([simulated_ppg(hr, 10, FS, seed=i) for i, hr in enumerate(range(55, 125, 5))])
    _, x_sim = est.assess_batch(sims, FS)
    return [x_real, x_sim]


def test_ray_backend_gives_the_local_backends_numbers_and_merges_batches(local_ray, est):
    local = LocalBackend(est)
    backend = RayBackend(est, default_model_path(), one_replica(app="p2p-same"))
    try:
        groups = real_and_simulated_windows(est)
        requests = []  # batches of 1…n windows of both lengths, sent at once from 4 threads like 4 daemons
        for x in groups:
            requests += [x[i : i + k] for i, k in zip(range(0, len(x), 3), (1, 2, 3, 4, 5, 6))]
        features = [np.zeros((len(x), 4), np.float32) for x in requests]
        got: dict[int, np.ndarray] = {}

        def send(k: int) -> None:
            got[k] = backend.predict(requests[k], features[k])

        threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        diffs = [np.abs(got[k] - local.predict(requests[k], features[k])).max() for k in range(len(requests))]
        print(f"{len(requests)} requests; max |ray - local| = {max(diffs):.2e} mmHg")
        assert max(diffs) < 1e-3  # float32 rounding of a differently sized batch, far below the wire's 0.01
        info = backend.handle.info.remote().result(timeout_s=20)
        assert info["model"] == est.name and info["requests"] == len(requests)
        assert info["forwards"] < len(requests), info  # @serve.batch merged requests into shared forward passes
    finally:
        backend.close()
        serve.delete("p2p-same")


# 40 s of one device sent at once: more than its burst of samples (limits.burst_s) a real wearable may send.
FAST_REPLAY = {"burst_s": 600.0}


def test_daemon_with_ray_backend_streams_the_offline_estimates(local_ray, est):
    x = simulated_ppg(72, 12, FS, seed=1)
    windows = cut_windows(x.astype(np.float32), int(4 * FS), int(FS))
    expected = est.predict(windows, FS)
    ray_knobs = {"app": "p2p-daemon", "min_replicas": 1, "max_replicas": 1, "max_wait_ms": 5.0}
    with running_daemon(est, model={"backend": "ray"}, ray=ray_knobs) as (daemon, a), client(a) as c:
        c.join()
        c.stream("watch-1", x, FS, chunk=25)
        got = c.estimates(lambda g: len(g) >= len(windows), timeout_s=60)
        stats = c.control({"cmd": "stats"})
        assert stats["backend_device"] == stats["device"] == "ray:p2p-daemon"  # `device`: the deprecated name
    assert [e["seq"] for e in got] == list(range(len(windows))) and all(e["ok"] for e in got)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], expected[:, :2], atol=0.02)
    serve.delete("p2p-daemon")


def replica_actors(app: str) -> list:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [ray.get_actor(n["name"], namespace=n["namespace"]) for n in names
            if "SERVE_REPLICA" in n["name"] and app in n["name"]]  # fmt: skip


def test_a_killed_replica_is_retried_and_no_window_is_lost(local_ray, est):
    x = simulated_ppg(70, 40, FS, seed=3)
    n_windows = len(cut_windows(x.astype(np.float32), int(4 * FS), int(FS)))
    knobs = {"app": "p2p-kill", "min_replicas": 1, "max_replicas": 1, "timeout_s": 15.0, "retries": 3}
    with running_daemon(est, model={"backend": "ray"}, ray=knobs, limits=FAST_REPLAY) as (daemon, a), client(a) as c:
        c.join()
        (replica,) = replica_actors("p2p-kill")
        half = len(x) // 2  # a multiple of the 25-sample chunk: the second half continues the run
        seq = c.stream("w", x[:half], FS)
        c.estimates(lambda g: len(g) >= 3, timeout_s=60)
        ray.kill(replica, no_restart=True)  # the replica process dies; Serve's controller starts a new one
        c.stream("w", x[half:], FS, t0=1_700_000_000.0 + half / FS, seq0=seq)
        got = c.estimates(lambda g: len(g) >= n_windows - 3, timeout_s=120)
        stats = c.control({"cmd": "stats"})
    assert all(e["ok"] for e in got), [e.get("reason") for e in got if not e["ok"]]
    assert "backend_unavailable" not in stats["rejected"]
    assert replica_actors("p2p-kill") != [replica]
    serve.delete("p2p-kill")


def test_windows_without_a_backend_are_published_rejected_and_counted(local_ray, est):
    knobs = {"app": "p2p-gone", "min_replicas": 1, "max_replicas": 1, "timeout_s": 1.0, "retries": 1}
    x = simulated_ppg(70, 8, FS, seed=4)
    with running_daemon(est, model={"backend": "ray"}, ray=knobs) as (daemon, a), client(a) as c:
        c.join()
        serve.delete("p2p-gone")  # every replica gone: each batch times out, is tried again, then given up
        c.stream("w", x, FS)
        got = c.estimates(lambda g: len(g) >= 5, timeout_s=60)
        stats = c.control({"cmd": "stats"})
        assert not daemon.stop_event.is_set() and daemon.worker.is_alive()
    assert all(not e["ok"] and e["reason"] == "backend_unavailable" and e["sbp"] is None for e in got)
    assert stats["rejected"]["backend_unavailable"] >= len(got)


def test_backend_unavailable_names_the_app_and_the_cause(local_ray, est):
    backend = RayBackend(est, default_model_path(), one_replica(app="p2p-msg", timeout_s=1.0, retries=0))
    try:
        serve.delete("p2p-msg")
        with pytest.raises(BackendUnavailable, match="'p2p-msg' gave no answer in 1 tries"):
            backend.predict(np.zeros((1, 500), np.float32), np.zeros((1, 4), np.float32))
    finally:
        backend.close()  # else its probe would deploy p2p-msg again, on and on
    serve.delete("p2p-msg")


# ~20 s; CI keeps the down-backend tests above; test_ray_outage.py (slow too) redeploys on a real cluster
@pytest.mark.slow
def test_a_backend_found_down_fails_batches_at_once_then_redeploys_its_app(local_ray, est):
    """After a batch found the app gone, the next fail at once (not after timeout_s × tries each); the probe
    deploys the app again and batches are answered, with no new backend."""
    knobs = {"app": "p2p-back", "timeout_s": 2.0, "retries": 1}
    backend = RayBackend(est, default_model_path(), one_replica(**knobs))
    x, features = real_and_simulated_windows(est)[1][:2], np.zeros((2, 4), np.float32)
    try:
        serve.delete("p2p-back")
        with pytest.raises(BackendUnavailable):
            backend.predict(x, features)  # finds it gone (at once, or after its tries) and marks it down
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="'p2p-back' unavailable for"):
            backend.predict(x, features)
        # No wait: within one try's timeout (not a number of seconds, which a busy machine can exceed), versus
        # timeout_s × tries (2 × 2 s) when every batch waited out its tries.
        assert time.monotonic() - start < knobs["timeout_s"]
        deadline = time.monotonic() + 120
        while not backend.up.is_set():  # the probe: 1 s, then 2, 4, 5 s apart, each deploying the app again
            assert time.monotonic() < deadline, "the app was never deployed again"
            time.sleep(0.2)
        assert len(backend.predict(x, features)) == 2
    finally:
        backend.close()
        serve.delete("p2p-back")


@pytest.mark.slow  # 3.5 s, and then ~20 s for Serve to remove the replica it never placed (at the module's teardown)
def test_a_deploy_asking_for_a_gpu_the_cluster_lacks_fails_within_deploy_timeout_naming_the_cause(local_ray, est):
    start = time.monotonic()
    with pytest.raises(ConfigError, match="asked for 1 GPU per replica, this Ray cluster has 0") as failed:
        RayBackend(est, default_model_path(), one_replica(app="p2p-gpu", num_gpus=1.0, deploy_timeout_s=3.0))
    took = time.monotonic() - start
    print(f"{took:.1f} s: {failed.value}")
    assert took < 3.0 + 15.0  # the timeout, plus a status poll and the app's deletion on a busy machine
    deadline = time.monotonic() + 30  # being deleted, not left DEPLOYING for the next daemon (Serve takes ~20 s to
    while (app := serve.status().applications.get("p2p-gpu")) and not str(app.status).endswith("DELETING"):  # end it)
        assert time.monotonic() < deadline, app
        time.sleep(0.2)
