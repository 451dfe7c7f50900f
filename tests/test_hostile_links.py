"""One sender cannot cut a shard off or keep a daemon from stopping (issue 14, items 1 and 3), on real processes.

A 17 MiB frame through `p2p-proxy` must not reach a shard (ZeroMQ would drop the link carrying every device of
it); a shard whose link is dropped anyway connects again; under a flood, `ping` and the heartbeat keep the pace they
had without it, in the same run, and SIGTERM ends the daemon as fast as it ends one that is not flooded.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import zmq
from hostile import ALLOWANCE_S, SLOWDOWN
from zmq_helpers import ROOT, Subscriber, daemon_process, fleet, ipc_addresses, request, wait_ready

from p2p_stream.tools.cluster.proxy import Proxy
from p2p_stream.wire.protocol import MAX_MESSAGE_BYTES, MAX_SAMPLES, encode_ingest

HUGE = 17 << 20  # over the daemon's MAXMSGSIZE (16 MiB): ZeroMQ drops the connection that carries it
OVER = MAX_MESSAGE_BYTES + 4096  # over the daemon's message limit, under MAXMSGSIZE: the proxy drops and counts it


def evil_sender(address: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(address)
    time.sleep(0.5)  # the proxy has the shard's subscriptions; this PUB gets them on connecting
    return ctx, pub


@pytest.mark.slow
def test_a_17_mib_frame_through_the_proxy_does_not_cut_the_shard_off():
    folder = tempfile.mkdtemp(prefix="p2ph")
    a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers", "control")}
    proxy = Proxy(a["wearables"], a["shards"], a["estimates"], a["subscribers"])
    proxy.start()
    sub = Subscriber(a["subscribers"])
    addresses = {"ingest": a["shards"], "publish": a["estimates"], "control": a["control"]}
    with daemon_process(addresses, "--set", "sockets.connect=true") as daemon:
        wait_ready(a["control"])
        time.sleep(1.0)  # the shard's subscription has reached the proxy
        pub = fleet(a["wearables"], devices=24)
        ctx, evil = evil_sender(a["wearables"])
        try:
            sub.collect(lambda g: len({e["device"] for _, e in g if e["ok"]}) == 24, 60)
            evil.send_multipart([b"ppg.evil", b"\0" * HUGE])
            evil.send_multipart([b"ppg.evil", b"\0" * OVER])
            evil.send_multipart([b"ppg.evil", b"\0" * 1000, b"\0" * (MAX_MESSAGE_BYTES + 1000)])  # too big in all
            time.sleep(0.5)
            after = time.time()
            # Every good device keeps getting estimates: each one gets two more after the attack.
            sub.collect(lambda g: all(sum(1 for r, e in g if r > after and e["device"] == f"sim{d:05d}") >= 2
                                      for d in range(24)), 30)  # fmt: skip
            stats = request(a["control"], {"cmd": "stats"})
        finally:
            pub.kill()
            pub.wait(10)
            ctx.destroy(linger=0)
            sub.close()
            proxy.ingest.stop()
        assert daemon.poll() is None
    shutil.rmtree(folder, ignore_errors=True)
    assert proxy.dropped == 2  # the 17 MiB frame never got in: ZeroMQ dropped that wearable at the proxy
    assert "link_lost" not in stats["rejected"]  # the shard's link itself never dropped
    assert "oversized" not in stats["rejected"]  # nothing over the limit reached the daemon


def test_a_shard_whose_link_is_cut_connects_again_within_seconds():
    """A proxy that forwards a frame over the shard's MAXMSGSIZE: ZeroMQ drops the link and, after such a protocol
    error, does not reconnect; the daemon does, counts it (`link_lost`) and logs it."""
    folder = tempfile.mkdtemp(prefix="p2pl")
    a = {k: f"ipc://{folder}/{k}" for k in ("shards", "estimates", "control")}
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)  # a bare forwarder's shard side, without the limits
    xpub.setsockopt(zmq.LINGER, 0)
    # Every (un)subscription, whatever order the old link's end and the new link's start arrive in: the daemon can
    # be back before the old link's end is processed, and a plain XPUB then reports neither.
    xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
    xpub.bind(a["shards"])
    addresses = {"ingest": a["shards"], "publish": a["estimates"], "control": a["control"]}
    try:
        with daemon_process(addresses, "--set", "sockets.connect=true") as daemon:
            assert xpub.poll(60_000) and xpub.recv() == b"\x01ppg."  # the shard subscribed
            wait_ready(a["control"])
            sent = time.monotonic()
            xpub.send_multipart([b"ppg.evil", b"\0" * HUGE])
            seen: list[bytes] = []
            while not {b"\x00ppg.", b"\x01ppg."} <= set(seen):  # the link dropped, and the shard is back
                assert xpub.poll(10_000), f"after the cut, only {seen} in 10 s"
                seen.append(xpub.recv())
            relinked_s = time.monotonic() - sent
            before = request(a["control"], {"cmd": "stats"})["messages_total"]
            xpub.send_multipart(encode_ingest("dev", 0, time.time(), 125.0, np.ones(25)))
            deadline = time.monotonic() + 5
            while (stats := request(a["control"], {"cmd": "stats"}))["messages_total"] == before:
                assert time.monotonic() < deadline, "no message reached the shard after its link came back"
                time.sleep(0.05)
            assert daemon.poll() is None
            output = daemon.output()
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(folder, ignore_errors=True)
    # Without the daemon's relink the shard never subscribes again: the 10 s wait above fails. How fast it came back
    # is a figure, not a limit (docs/reliability.md: at once).
    print(f"relinked after {relinked_s:.2f} s")
    assert stats["rejected"]["link_lost"] == 1
    assert "lost the ingest link" in output


FLOOD = """
import sys, time
import numpy as np, zmq
from p2p_stream.wire.protocol import encode_ingest
ctx = zmq.Context(); pub = ctx.socket(zmq.PUB); pub.setsockopt(zmq.SNDHWM, 0); pub.connect(sys.argv[1])
n = int(sys.argv[2])
x = np.ones(n, np.float32); x[1::2] = np.nan  # alternating finite/NaN: n / 2 breaks in each message
start, k = time.monotonic(), 0
fs = min(1000.0, n / 10.0)  # the daemon's highest rate (limits.max_fs_hz)
while True:  # 100 messages/s, each the last n / fs s of a new wearable (valid: its clock is the daemon's)
    pub.send_multipart(encode_ingest(f"flood{k}", 0, time.time() - n / fs, fs, x))
    k += 1
    time.sleep(max(0.0, start + k / 100 - time.monotonic()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("samples", [10_000, MAX_SAMPLES])
def test_under_a_flood_sigterm_ping_and_the_heartbeat_keep_the_pace_of_a_daemon_without_one(samples):
    """100 messages/s of `samples` alternating finite/NaN. Before the drain loop was budgeted in time, it read up to
    2,000 of them (seconds to minutes) before looking at control or the stop flag; before holes were handled in
    one vectorised pass with one `gap` marker per message, a 100k-sample message alone cost 0.3–0.9 s.

    The yardstick is a twin daemon on the same machine that is not flooded: the flood's sender and whatever else
    runs there slow both alike, so what the flooded one does slower is the flood's cost to it. Measured: SIGTERM →
    exit 0.06 s, ping 1 ms, heartbeat gaps ≤ 1.02 s (docs/reliability.md), the same as the twin's."""
    with ipc_addresses() as a, ipc_addresses() as b, daemon_process(a) as flooded, daemon_process(b) as twin:
        daemons = {"flooded": (a, flooded), "twin": (b, twin)}
        wait_ready(a["control"])
        wait_ready(b["control"])
        ctx = zmq.Context()
        beats = {}
        for name, (addresses, _) in daemons.items():
            beats[name] = ctx.socket(zmq.SUB)
            beats[name].setsockopt(zmq.LINGER, 0)
            beats[name].setsockopt(zmq.SUBSCRIBE, b"status")
            beats[name].connect(addresses["publish"])
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, a["ingest"], str(samples)], cwd=ROOT)
        try:
            beat_times = {name: [] for name in daemons}
            pings_s = {name: [] for name in daemons}
            end = time.monotonic() + 8.0  # long enough for ZeroMQ's queue to hold seconds of backlog
            next_ping = time.monotonic() + 3.0
            while time.monotonic() < end:
                for name, sock in beats.items():
                    if sock.poll(25):
                        sock.recv_multipart()
                        beat_times[name].append(time.monotonic())
                if time.monotonic() >= next_ping:
                    for name, (addresses, _) in daemons.items():
                        t = time.monotonic()
                        request(addresses["control"], {"cmd": "ping"}, timeout_s=10.0)
                        pings_s[name].append(time.monotonic() - t)
                    next_ping = time.monotonic() + 1.0
            stats = request(a["control"], {"cmd": "stats"}, timeout_s=10.0)
            for _, proc in daemons.values():
                proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            stop_s: dict[str, float] = {}
            while len(stop_s) < 2 and time.monotonic() < sent + 60:  # each one's exit, as it happens
                stop_s.update({name: time.monotonic() - sent for name, (_, proc) in daemons.items()
                               if name not in stop_s and proc.poll() is not None})  # fmt: skip
                time.sleep(0.01)
        finally:
            flood.kill()
            flood.wait(10)
            ctx.destroy(linger=0)
        output = flooded.output()
    assert set(stop_s) == {"flooded", "twin"}, f"still running 60 s after SIGTERM: {stop_s}"
    gaps = {name: np.diff(times) for name, times in beat_times.items()}
    longest = {name: round(float(g.max()), 2) for name, g in gaps.items()}
    print(f"samples {samples}: SIGTERM → exit {stop_s} s; ping {pings_s} s; longest heartbeat gap {longest} s; "
          f"{stats['messages_total']} messages read")  # fmt: skip
    assert stats["messages_total"] > 10  # the flood got in
    assert flooded.returncode == 0 and twin.returncode == 0, output
    # The flooded daemon within SLOWDOWN × its twin, plus a scheduling hiccup of a loaded machine (ALLOWANCE_S).
    assert stop_s["flooded"] <= SLOWDOWN * stop_s["twin"] + ALLOWANCE_S, f"SIGTERM took {stop_s} s"
    assert max(pings_s["flooded"]) <= SLOWDOWN * max(pings_s["twin"]) + ALLOWANCE_S, pings_s
    # heartbeat_s = 1: one a second. Never twice as far apart as the twin's at their farthest.
    assert len(beat_times["flooded"]) >= 6 and gaps["flooded"].max() <= 2 * gaps["twin"].max(), gaps
