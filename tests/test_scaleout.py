"""Scale-out: a p2p-proxy, two daemon processes each taking half of the devices by topic prefix, the fleet
simulator publishing into the proxy, and one subscriber on the proxy that sees every device estimated once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

import zmq
from zmq_helpers import ROOT, Subscriber, daemon_process, fleet, request, wait_ready

from p2p_stream.tools.proxy import Proxy


def test_two_sharded_daemons_behind_a_proxy_estimate_every_device_once():
    folder = tempfile.mkdtemp(prefix="p2px")
    a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers", "c0", "c1")}
    proxy = Proxy(a["wearables"], a["shards"], a["estimates"], a["subscribers"])
    proxy.start()
    shards = ["ppg.sim0000", "ppg.sim0001"]  # sim00000–sim00009 and sim00010–sim00019
    sub = Subscriber(a["subscribers"])
    with (
        daemon_process({"ingest": a["shards"], "publish": a["estimates"], "control": a["c0"]},
                       "--set", "sockets.connect=true", "--set", f"sockets.prefixes={shards[0]}") as d0,
        daemon_process({"ingest": a["shards"], "publish": a["estimates"], "control": a["c1"]},
                       "--set", "sockets.connect=true", "--set", f"sockets.prefixes={shards[1]}") as d1,
    ):  # fmt: skip
        wait_ready(a["c0"])
        wait_ready(a["c1"])
        time.sleep(1.0)  # both shards' subscriptions have reached the proxy
        pub = fleet(a["wearables"], devices=20)
        try:
            sub.collect(lambda g: len({e["device"] for _, e in g if e["ok"]}) == 20 and len(g) >= 80, 60)
            per_shard = [request(a[c], {"cmd": "stats"}) for c in ("c0", "c1")]
        finally:
            pub.kill()
            pub.wait(10)
            sub.close()
        assert d0.poll() is None and d1.poll() is None
    shutil.rmtree(folder, ignore_errors=True)
    seen = [(e["device"], e["seq"]) for _, e in sub.got]
    assert len(seen) == len(set(seen))  # no estimate twice: each device went to exactly one daemon
    per_device: dict[str, list[int]] = {}
    for device, seq in seen:
        per_device.setdefault(device, []).append(seq)
    assert len(per_device) == 20 and all(s == list(range(len(s))) for s in per_device.values())
    assert [s["devices"] for s in per_shard] == [10, 10]  # each daemon holds its half of the fleet


def test_p2p_proxy_command_refuses_an_address_in_use():
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    try:
        cmd = [sys.executable, "-m", "p2p_stream.tools.proxy", "--wearables", f"tcp://127.0.0.1:{port}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    finally:
        squatter.close(0)
        ctx.term()
    assert done.returncode == 2
    assert "cannot bind" in done.stderr
