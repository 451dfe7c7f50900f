"""The p2p-proxy command on its own (the cluster behind it: tests/test_cluster.py)."""

from __future__ import annotations

import subprocess
import sys

import zmq
from zmq_helpers import ROOT


def test_p2p_proxy_command_refuses_an_address_in_use():
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    try:
        cmd = [sys.executable, "-m", "p2p_stream.tools.cluster.proxy", "--wearables", f"tcp://127.0.0.1:{port}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    finally:
        squatter.close(0)
        ctx.term()
    assert done.returncode == 2
    assert "cannot bind" in done.stderr
