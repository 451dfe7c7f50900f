"""When the Ray cluster dies under a stream (issue 16): the daemon keeps its heartbeat, publishes every batch at once
as `backend_unavailable`, probes the cluster, and when it is back joins it again, redeploys the app and estimates
resume without a restart; SIGTERM meanwhile exits in seconds; a deploy that cannot be placed fails, saying why.

The cluster is a real one, `ray start --head --block` in its own session on a free port. "Stopping" it kills that
session's processes with SIGKILL: what `ray stop --force` does, but to this cluster only (`ray stop` would kill
every Ray of this user on the machine, another test's included). Its GCS port closes and the replicas die with it;
the restart runs `ray start` again on the same port, a new cluster the daemon must join afresh.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import zmq
from helpers import simulated_ppg
from zmq_helpers import ROOT, daemon_process, ipc_addresses, wait_ready

pytest.importorskip("ray.serve", reason="the optional [cluster] extra (Ray Serve) is not installed")

from p2p_stream.wire.protocol import decode_estimate, decode_map, encode_ingest  # noqa: E402

FS = 125.0
CHUNK = 25  # samples per message: 0.2 s, sent in real time
HEARTBEAT_S = 1.0
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class RayCluster:
    """A one-node Ray cluster of this test's own: 2 CPUs, no GPU, no dashboard, its own temp folder and port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        cmd = [RAY, "start", "--head", "--block", f"--port={self.port}", "--num-cpus=2", "--num-gpus=0",
               f"--temp-dir={self.temp}", "--include-dashboard=false", "--disable-usage-stats",
               f"--object-store-memory={128 * 2**20}"]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not answers(self.port):
            assert self.proc.poll() is None, f"ray start exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, f"no Ray GCS on port {self.port} after {timeout_s} s"
            time.sleep(0.2)

    def stop(self) -> None:
        """`ray stop --force`, for this cluster's processes only."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def cluster(monkeypatch):
    # One auth mode for the cluster and the daemons this test starts: without it a ~/.ray/auth_token turns token auth
    # on for `ray start` but not for a daemon's ray.init, and a ray.init earlier in this process (another module's
    # fixture) leaves RAY_AUTH_MODE=token behind in our environment.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    c = RayCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.temp, ignore_errors=True)


class Stream:
    """Two simulated wearables sent in real time from one thread, and what comes back received in another, each
    with its own socket: (receipt time, "status" or "estimate", the map). Receiving in a thread of its own stamps
    each message when it arrives, even while the test waits on `ray start`."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.ctx = zmq.Context()
        self.addresses = addresses
        self.got: list[tuple[float, str, dict]] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._receive)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        pub = self.ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(self.addresses["ingest"])
        x = {d: simulated_ppg(66 + 8 * k, 400, FS, seed=k) for k, d in enumerate(("w0", "w1"))}
        start, i = time.monotonic(), 0
        try:
            while not self.done.is_set() and (i + 1) * CHUNK <= 400 * FS:
                for d, signal_ in x.items():
                    chunk = signal_[i * CHUNK : (i + 1) * CHUNK]
                    pub.send_multipart(encode_ingest(d, i, 1_700_000_000.0 + i * CHUNK / FS, FS, chunk))
                i += 1
                self.done.wait(max(0.0, start + i * CHUNK / FS - time.monotonic()))
        finally:
            pub.close(linger=0)

    def _receive(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.addresses["publish"])
        try:
            while not self.done.is_set():
                if sub.poll(50):
                    frames = sub.recv_multipart()
                    if frames[0] == b"status":
                        self.got.append((time.monotonic(), "status", decode_map(frames[1])))
                    else:
                        self.got.append((time.monotonic(), "estimate", decode_estimate(frames)))
        finally:
            sub.close(linger=0)

    def collect(self, until, timeout_s: float) -> None:
        """Wait until `until()` is true; fail after `timeout_s`, never hang."""
        deadline = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < deadline, f"timed out; last received: {self.got[-3:]}"
            time.sleep(0.05)

    def for_s(self, seconds: float) -> None:
        time.sleep(seconds)

    def since(self, t: float, kind: str) -> list[tuple[float, dict]]:
        return [(at, m) for at, k, m in list(self.got) if k == kind and at >= t]

    def close(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(5)
        self.ctx.destroy(linger=0)


def ray_daemon(addresses: dict[str, str], cluster: RayCluster, app: str):
    return daemon_process(
        addresses, "--set", "model.backend=ray", "--set", f"ray.address={cluster.address}", "--set", f"ray.app={app}",
        "--set", "ray.min_replicas=1", "--set", "ray.max_replicas=1", "--set", f"operation.heartbeat_s={HEARTBEAT_S}",
    )  # fmt: skip


def largest_gap_s(times: list[float]) -> float:
    return float(np.max(np.diff(times))) if len(times) > 1 else float("inf")


def outage(stream: Stream, cluster: RayCluster, watch_s: float) -> float:
    """Stop the cluster under the stream, watch `watch_s`; check the heartbeat and the fast rejections. → stop time."""
    t_stop = time.monotonic()
    cluster.stop()
    stream.for_s(watch_s)
    beats = [at for at, _ in stream.since(t_stop, "status")]
    gap = largest_gap_s([t_stop, *beats])
    late = [(at, e) for at, e in stream.since(t_stop + 5.0, "estimate")]  # the backend is known down by then
    first = next(at for at, e in stream.since(t_stop, "estimate") if e.get("reason") == "backend_unavailable")
    worst = max(e["latency_ms"] for _, e in late)
    print(f"outage: first backend_unavailable {first - t_stop:.1f} s after the stop; largest heartbeat gap "
          f"{gap:.2f} s; {len(late)} estimates after 5 s, worst latency {worst:.0f} ms")  # fmt: skip
    assert gap <= 2 * HEARTBEAT_S, f"the heartbeat stopped for {gap:.1f} s while Ray was down"
    assert late and all(not e["ok"] and e["reason"] == "backend_unavailable" for _, e in late), late[:3]
    assert worst < 5000, f"a batch waited {worst:.0f} ms on a backend known to be down"
    return t_stop


@pytest.mark.slow  # ~35 s; in CI, test_ray_backend.py's backend-found-down test covers fail-fast and redeploy
def test_ray_stopped_then_started_again_under_a_stream_and_sigterm_during_an_outage(cluster):
    """The whole cycle on one daemon: estimates; `ray stop` (heartbeat on, batches rejected at once); `ray start`
    (estimates back, no restart); `ray stop` again and SIGTERM (a clean exit in seconds)."""
    with ipc_addresses() as a, ray_daemon(a, cluster, "p2p-outage") as proc:
        wait_ready(a["control"], timeout_s=120)
        stream = Stream(a)
        try:
            stream.collect(lambda: len([1 for _, e in stream.since(0, "estimate") if e["ok"]]) >= 4, timeout_s=60)
            t_stop = outage(stream, cluster, watch_s=8.0)
            cluster.start()  # a new cluster on the same port: the daemon must ray.init again and redeploy
            t_back = time.monotonic()
            stream.collect(lambda: any(e["ok"] for _, e in stream.since(t_back, "estimate")), timeout_s=120)
            resumed = next(at for at, e in stream.since(t_back, "estimate") if e["ok"])
            stream.for_s(3.0)
            beats = [at for at, _ in stream.since(t_stop, "status")]
            after = [e for _, e in stream.since(resumed, "estimate")]
            print(f"Ray back: estimates resumed {resumed - t_back:.1f} s after `ray start`; "
                  f"largest heartbeat gap from the stop on {largest_gap_s(beats):.2f} s")  # fmt: skip
            assert largest_gap_s(beats) <= 2 * HEARTBEAT_S
            assert after and all(e["ok"] for e in after), [e.get("reason") for e in after]
            assert proc.poll() is None, "the daemon exited: " + proc.output()[-2000:]

            t_stop = time.monotonic()
            cluster.stop()
            stream.collect(lambda: any(not e["ok"] for _, e in stream.since(t_stop, "estimate")), timeout_s=30)
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            took = time.monotonic() - t_term
        finally:
            stream.close()
        print(f"SIGTERM during the outage: exited {proc.returncode} in {took:.1f} s")
        assert proc.returncode == 0 and took < 8.0, proc.output()[-2000:]
        assert "did not stop" not in proc.output()


@pytest.mark.slow
def test_a_deploy_asking_for_a_gpu_the_cluster_lacks_fails_within_its_timeout_saying_why():
    """On a Ray without GPUs (CUDA_VISIBLE_DEVICES empty: the daemon's own Ray sees none), num_gpus = 1 must not
    leave the daemon hanging with its app DEPLOYING: one line, exit 2, naming the cause."""
    with ipc_addresses() as a:
        cmd = [sys.executable, "daemon.py", "--torch-device", "cpu", "--ingest", a["ingest"], "--publish", a["publish"],
               "--control", a["control"], "--set", "model.backend=ray", "--set", "ray.app=p2p-gpu",
               "--set", "ray.num_gpus=1", "--set", "ray.deploy_timeout_s=5"]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
    err = proc.stderr
    print(f"num_gpus=1 without GPUs: exit {proc.returncode} after {took:.1f} s: {err.strip().splitlines()[-1]}")
    assert proc.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "asked for 1 GPU per replica, this Ray cluster has 0" in last, last
    assert "ray.deploy_timeout_s" in last
