"""Real-socket helpers for daemon tests: short ipc:// addresses, a daemon in a thread, receives that time out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zmq

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.model.estimator import Estimator
from p2p_stream.stream.daemon import Daemon
from p2p_stream.wire import probe
from p2p_stream.wire.protocol import decode_estimate, decode_map, encode_ingest, pack


@contextmanager
def ipc_addresses() -> Iterator[dict[str, str]]:
    folder = tempfile.mkdtemp(prefix="p2p")  # ipc paths must stay short (about 100 bytes)
    try:
        yield {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Most tests stream recordings stamped from a fixed T0 (1.7e9, November 2023), years from the daemon's clock: their
# daemons accept any t0 within this. Tests of the clock-skew check set `limits.max_clock_skew_s` back themselves.
FIXED_T0_SKEW_S = 1e9


def fresh_store(folder: str) -> dict:
    """A daemon's own state store in `folder` (the default one would be shared by every daemon of the run)."""
    return {"path": os.path.join(folder, "state.sqlite")}


@contextmanager
def running_daemon(estimator: Estimator, **sections) -> Iterator[tuple[Daemon, dict[str, str]]]:
    """A real Daemon on ipc:// sockets, its loop in a thread; `sections` override config tables (key by key)."""
    with ipc_addresses() as addresses, tempfile.TemporaryDirectory(prefix="p2p-state-") as state:
        base = {"sockets": addresses, "windowing": {"window_s": 4.0, "hop_s": 1.0}, "state": fresh_store(state)}
        overrides = [{**base, "limits": {"max_clock_skew_s": FIXED_T0_SKEW_S}}, sections]
        daemon = Daemon(load_daemon_config(None, overrides), estimator)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            yield daemon, addresses
        finally:
            daemon.stop()
            thread.join(timeout=5)


class Client:
    """PUB to ingest, SUB to estimates, REQ to control; every socket closed on exit, linger 0."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.ctx = zmq.Context()
        self.pub = self._socket(zmq.PUB, addresses["ingest"])
        self.sub = self._socket(zmq.SUB, addresses["publish"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.req = self._socket(zmq.REQ, addresses["control"])
        self.req.setsockopt(zmq.RCVTIMEO, 30_000)

    def _socket(self, kind: int, address: str) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)  # a test's burst must never be dropped by the test's own sockets
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(address)
        return s

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def control(self, request: dict | bytes) -> dict:
        self.req.send(request if isinstance(request, bytes) else pack(request))
        return decode_map(self.req.recv())

    def join(self, timeout_s: float = 30.0) -> None:
        """Beat the PUB/SUB slow joiner: send probes until the daemon has counted one, then forget the probe."""
        deadline = time.monotonic() + timeout_s
        seq = 0
        while time.monotonic() < deadline:
            self.pub.send_multipart(encode_ingest("probe", seq, time.time(), 125.0, [0.0]))
            seq += 1
            if self.control({"cmd": "stats"})["messages_total"] > 0:
                self.control({"cmd": "forget", "device": "probe"})
                self._wait_subscribed(deadline)
                return
            time.sleep(0.02)
        raise TimeoutError("daemon never received a probe")

    def _wait_subscribed(self, deadline: float) -> None:
        # The SUB side joins too: a heartbeat arriving proves estimates will reach us.
        while time.monotonic() < deadline:
            if self.sub.poll(100) and self.sub.recv_multipart()[0] == b"status":
                return
        raise TimeoutError("no heartbeat on the estimates socket")

    def stream(
        self, device: str, x, fs: float, chunk: int = 25, t0: float = 1_700_000_000.0, seq0: int = 0, **extra
    ) -> int:
        """Publish `x` in chunks; returns the next seq."""
        seq = seq0
        for i in range(0, len(x), chunk):
            self.pub.send_multipart(encode_ingest(device, seq, t0 + i / fs, fs, x[i : i + chunk], **extra))
            seq += 1
        return seq

    def estimates(self, until: Callable[[list[dict]], bool], timeout_s: float = 30.0) -> list[dict]:
        """Collect estimates (not heartbeats) until `until(collected)` is true; fail on timeout, never hang."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while not until(got):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(got)} estimates after {timeout_s} s: {got[-3:]}")
            if self.sub.poll(min(100, int(remaining * 1000) + 1)):
                frames = self.sub.recv_multipart()
                if frames[0] != b"status":
                    got.append(decode_estimate(frames))
        return got

    def heartbeat(self, timeout_s: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sub.poll(100):
                frames = self.sub.recv_multipart()
                if frames[0] == b"status":
                    return decode_map(frames[1])
        raise TimeoutError("no heartbeat")


@contextmanager
def client(addresses: dict[str, str]) -> Iterator[Client]:
    c = Client(addresses)
    try:
        c.join()
        yield c
    finally:
        c.close()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def daemon_process(addresses: dict[str, str], *flags: str, own_store: bool = True) -> Iterator[subprocess.Popen]:
    """`daemon.py` as a real process on `addresses` (4 s windows, 1 s hop, CPU); killed if still running at exit.

    Its log goes to a temporary file, read back with `proc.output()`. Its clock-skew limit is FIXED_T0_SKEW_S, and it
    has a state store of its own, unless `flags` set others (`--set limits.max_clock_skew_s=…`, `--set state.path=…`:
    a later --set wins); `own_store=False`: the default store, as a user gets it ($XDG_STATE_HOME).
    """
    with tempfile.TemporaryDirectory(prefix="p2p-state-") as state:
        cmd = [sys.executable, "daemon.py", "--torch-device", "cpu", "--window-s", "4", "--hop-s", "1",
               "--ingest", addresses["ingest"], "--publish", addresses["publish"], "--control", addresses["control"],
               "--set", f"limits.max_clock_skew_s={FIXED_T0_SKEW_S:.0f}",
               *(("--set", f"state.path={fresh_store(state)['path']}") if own_store else ()), *flags]  # fmt: skip
        with logged_process(cmd) as proc:
            yield proc


@contextmanager
def logged_process(cmd: list[str], split: bool = False) -> Iterator[subprocess.Popen]:
    """`cmd` run in the repository, its output in temporary files — not pipes: a chatty process must never block on
    them. `proc.output()` reads its stdout (and stderr, unless `split`: then `proc.log()` reads stderr). Killed at
    exit if still running."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err if split else subprocess.STDOUT, text=True)
        proc.output = lambda: (out.seek(0), out.read())[1]  # type: ignore[attr-defined]
        proc.log = lambda: (err.seek(0), err.read())[1]  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def fleet(address: str, devices: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "simulators/fleet.py", "--devices", str(devices), "--connect", address, "--rates", "125",
           "--chunk-s", "0.2", "--wait-s", "60"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def request(address: str, msg: dict, timeout_s: float = 10.0) -> dict:
    """One control request on a fresh REQ socket; fails if no reply comes within `timeout_s`."""
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(address)
    try:
        req.send(pack(msg))
        assert req.poll(int(timeout_s * 1000)), f"no reply to {msg} from {address}"
        return decode_map(req.recv())
    finally:
        ctx.destroy(linger=0)


def wait_ready(address: str, timeout_s: float = 60.0) -> None:
    """Fail unless a daemon answers `ping` at `address` within `timeout_s`."""
    assert probe.wait_ready(address, timeout_s), f"no daemon answered ping at {address} within {timeout_s} s"


class Subscriber:
    """A SUB on the estimates, collecting (receipt time, estimate)."""

    def __init__(self, address: str, hwm: int = 0, rcvbuf: int = 0) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"sbp.")
        if rcvbuf:
            self.sock.setsockopt(zmq.RCVBUF, rcvbuf)
        self.sock.connect(address)
        self.got: list[tuple[float, dict]] = []

    def collect(self, until, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not until(self.got):
            assert time.monotonic() < deadline, f"timed out with {len(self.got)} estimates: {self.got[-2:]}"
            if self.sock.poll(100):
                self.got.append((time.time(), decode_estimate(self.sock.recv_multipart())))

    def close(self) -> None:
        self.ctx.destroy(linger=0)
