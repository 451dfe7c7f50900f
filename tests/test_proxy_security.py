"""The proxy as safe as the daemon: CURVE on the wearables' side with the daemon's keys and allow-list (and each
key's device patterns), and no plaintext side beyond loopback unless accepted. Real proxy and daemon processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import simulated_ppg
from zmq_helpers import ROOT, Subscriber, daemon_process, logged_process, request, wait_ready

from p2p_stream.stream.security.curve import curve_client
from p2p_stream.tools.cli.keys import main as keys_main
from p2p_stream.wire.protocol import encode_ingest

FS = 125.0
T0 = 1_700_000_000.0
PROXY = [sys.executable, "-m", "p2p_stream.tools.cluster.proxy"]


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    """keys/ by `p2p keys`: ward-a is allowed in for the devices 'a-*'; intruder has a key pair, but was revoked."""
    folder = tmp_path / "keys"
    assert keys_main(["init", str(folder)]) == 0
    assert keys_main(["client", "ward-a", "--dir", str(folder), "--devices", "a-*"]) == 0
    assert keys_main(["client", "intruder", "--dir", str(folder)]) == 0
    assert keys_main(["revoke", "intruder", "--dir", str(folder)]) == 0
    return folder


def curve_flags(keys: Path) -> list[str]:
    """CURVE on the proxy's wearables' side: the daemon's key pair and allow-list, as `p2p keys init` lays them out."""
    return ["--curve-secret-key", str(keys / "server.key_secret"), "--authorized-keys", str(keys / "authorized")]


def wait_started(proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    """The proxy's output once it has printed its start line; fails if it exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = proc.output()
        if "p2p-proxy: wearables" in out:
            return out
        assert proc.poll() is None, f"the proxy exited with {proc.returncode}: {out}"
        time.sleep(0.05)
    raise AssertionError(f"the proxy did not start within {timeout_s} s: {proc.output()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wearable(ctx: zmq.Context, address: str, keys: Path, name: str | None) -> zmq.Socket:
    """A wearable's socket: an XPUB, so that the test sees the subscription arrive once its handshake is done.
    `name`: its client key in keys/clients (CURVE), or None for plaintext."""
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)  # the test's burst is never dropped by its own socket
    if name is not None:
        curve_client(sock, keys / "server.key", keys / "clients" / f"{name}.key_secret")
    sock.connect(address)
    return sock


def test_a_curve_proxy_forwards_only_allowed_keys_for_their_devices(keys):
    folder = tempfile.mkdtemp(prefix="p2ps")  # ipc paths stay short
    a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers", "control")}
    sides = [f"--{k}={a[k]}" for k in ("wearables", "shards", "estimates", "subscribers")]
    cmd = [*PROXY, "--log-level", "INFO", *sides, *curve_flags(keys)]
    x = simulated_ppg(72, 6.0, FS).astype(np.float32)  # 30 messages of 25 samples: 3 windows of 4 s, 1 s hop
    ctx = zmq.Context()
    sub = Subscriber(a["subscribers"])
    try:
        with (
            logged_process(cmd) as proxy,
            daemon_process({"ingest": a["shards"], "publish": a["estimates"], "control": a["control"]},
                           "--set", "sockets.connect=true") as daemon,
        ):  # fmt: skip
            assert "(CURVE)" in wait_started(proxy)
            wait_ready(a["control"])
            good = wearable(ctx, a["wearables"], keys, "ward-a")
            refused = [wearable(ctx, a["wearables"], keys, "intruder"), wearable(ctx, a["wearables"], keys, None)]
            # The daemon's subscription reaches the allowed wearable through the proxy: its handshake succeeded.
            assert good.poll(30_000), f"no subscription reached the allowed wearable: {proxy.output()}"
            assert good.recv()[:5] in (b"\x01ppg.", b"\x01ecg.")  # the two channels the proxy takes
            for i in range(0, len(x), 25):
                chunk, seq, t0 = x[i : i + 25], i // 25, T0 + i / FS
                good.send_multipart(encode_ingest("a-1", seq, t0, FS, chunk))  # one of ward-a's devices
                good.send_multipart(encode_ingest("b-1", seq, t0, FS, chunk))  # not one of them
                for k, sock in enumerate(refused):
                    sock.send_multipart(encode_ingest(f"a-{k + 2}", seq, t0, FS, chunk))
            sub.collect(lambda got: sum(e["device"] == "a-1" and e["ok"] for _, e in got) >= 3, 60)
            time.sleep(1.0)  # anything that got through behind a-1's last message has arrived by now
            stats = request(a["control"], {"cmd": "stats"})
            log = proxy.output()
            assert proxy.poll() is None and daemon.poll() is None
        # Only the allowed key's messages for its own device reached the daemon: 30 of the 120 sent.
        assert stats["messages_total"] == len(x) // 25, stats
        assert stats["devices"] == 1, stats
        assert {e["device"] for _, e in sub.got} == {"a-1"}
        assert all(sock.poll(0) == 0 for sock in refused)  # neither refused wearable ever completed a handshake
        assert "refused a wearable" in log and "CURVE handshake failed" in log, log
        assert "dropped a message for b'ppg.b-1' from key ward-a: not one of its devices" in log, log
    finally:
        sub.close()
        ctx.destroy(linger=0)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("side", "curve", "remedy"),
    [
        ("wearables", False, "enable CURVE (p2p-keys init; --curve-secret-key and --authorized-keys), or "),
        ("subscribers", False, ""),
        ("subscribers", True, ""),  # the subscribers' side is plaintext with CURVE too: CURVE is no remedy there
        ("shards", True, ""),
    ],
)
def test_a_plaintext_side_beyond_loopback_exits_2_with_one_line(keys, side, curve, remedy):
    address = f"tcp://0.0.0.0:{free_port()}"
    cmd = [*PROXY, f"--{side}", address, *(curve_flags(keys) if curve else [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert done.stderr == (
        f"error: --{side} {address} would accept unauthenticated plaintext from other machines. Use a loopback or "
        f"ipc:// address, or {remedy}give --allow-remote-plaintext to accept the risk\n"
    )


def test_with_allow_remote_plaintext_or_curve_a_proxy_beyond_loopback_starts(keys):
    folder = tempfile.mkdtemp(prefix="p2ps")
    others = [f"--{k}=ipc://{folder}/{k}" for k in ("shards", "estimates", "subscribers")]
    address = f"tcp://0.0.0.0:{free_port()}"
    try:
        with logged_process([*PROXY, "--wearables", address, *others, "--allow-remote-plaintext"]) as proxy:
            out = wait_started(proxy)
            assert f"exposed without authentication: --wearables {address}; anyone who can reach them can send PPG " \
                   "for any device" in out  # fmt: skip
            port = int(address.rsplit(":", 1)[1])
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # really bound there, on every interface
            assert proxy.poll() is None
        with logged_process([*PROXY, "--wearables", address, *others, *curve_flags(keys)]) as proxy:
            out = wait_started(proxy)
            assert "(CURVE)" in out and "exposed" not in out, out  # CURVE is the remedy: no warning either
    finally:
        shutil.rmtree(folder, ignore_errors=True)
