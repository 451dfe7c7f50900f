"""Benchmark: ingest messages/s of a real p2p-daemon, against a bare pyzmq SUB loop on the same machine.

    python benchmarks/bench_ingest.py [--messages 200000] [--devices 1000] [--profile ingest.txt]
                                      [--baseline /tmp/p2p-before] [--foreign]

Pre-encodes valid 25-sample messages for N devices (125 Hz, consecutive seq and t0, so every message is
buffered and windows are cut and inferred as usual), sends them as fast as one PUB socket can, and times how
long the daemon takes to count them all (`messages_total` from `stats`). The same messages into a SUB socket
that only receives them give the ceiling of this machine's ZeroMQ path. `--profile` attaches py-spy to the
daemon while it ingests and writes its collapsed stacks (one line per stack, sample count last). `--baseline`
runs a second daemon from another source tree (e.g. `git worktree add /tmp/p2p-before <commit>`) on the same
messages in the same run, for before/after figures. `--foreign` adds a daemon of a two-daemon cluster to whom none
of the devices belongs: the rate at which a daemon drops another's messages (`foreign_total`), which bounds a
cluster's total message rate (every daemon hears every wearable).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

from p2p_stream.stream.cluster.ownership import owner
from p2p_stream.tools.cluster.proxy import Proxy
from p2p_stream.wire.probe import wait_for_subscriber, wait_ready
from p2p_stream.wire.protocol import decode_map, encode_ingest, pack

FOREIGN_OWNER = "b"


def messages(n_messages: int, devices: int, foreign: bool = False) -> list[list[bytes]]:
    """`foreign`: devices that daemon "b" of the cluster (a, b) owns."""
    rng = np.random.default_rng(0)
    chunk = (1000 + 200 * np.sin(np.arange(25) / 5) + rng.normal(0, 2, 25)).astype(np.float32)
    ids = [f"dev{i:05d}" for i in range(devices * 3)]
    if foreign:
        ids = [d for d in ids if owner(d, ("a", FOREIGN_OWNER)) == FOREIGN_OWNER]
    ids = ids[:devices]
    return [encode_ingest(ids[i % devices], i // devices, 1.7e9 + (i // devices) * 0.2, 125.0, chunk)
            for i in range(n_messages)]  # fmt: skip


def fleet_messages(n_messages: int, devices: int, ecg: bool) -> list[list[bytes]]:
    """The simulated fleet's PPG (and, with `ecg`, each chunk's ECG after it, at 250 Hz): real pulses, so the beat
    detectors find beats, and arrival times are paired. `n_messages` in all."""
    from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig

    fleet = Fleet(
        FleetConfig(devices=devices, rates_hz=(125.0,), ecg=ecg, ids=tuple(f"dev{i:05d}" for i in range(devices)))
    )
    out: list[list[bytes]] = []
    while len(out) < n_messages:
        for m in fleet.tick():
            out.append(encode_ingest(m.device, m.seq, 1.7e9 + m.t0, m.fs, m.ppg))
            if ecg:
                out.append(encode_ingest(m.device, m.seq, 1.7e9 + m.t0, 250.0, m.ecg, channel="ecg"))
    return out[:n_messages]


def bare_rate(frames: list[list[bytes]], via_proxy: bool = False) -> float:
    """Messages/s from one PUB to a SUB that only counts them; `via_proxy` puts a p2p-proxy between them."""
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.XPUB)
    for s in (sub, pub):
        s.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"ppg.")
    folder = tempfile.mkdtemp(prefix="p2pi")
    if via_proxy:
        a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers")}
        Proxy(a["wearables"], a["shards"], a["estimates"], a["subscribers"], hwm=0).start()
        pub.connect(a["wearables"])
        sub.connect(a["shards"])
    else:
        pub.bind(f"ipc://{folder}/bare")
        sub.connect(f"ipc://{folder}/bare")
    wait_for_subscriber(pub, "the counting SUB", timeout_s=60)  # through the proxy when there is one
    done = threading.Event()
    count = [0]

    def receive() -> None:
        while count[0] < len(frames):
            sub.recv_multipart()
            count[0] += 1
        done.set()

    t = threading.Thread(target=receive)
    t.start()
    start = time.perf_counter()
    for f in frames:
        pub.send_multipart(f)
    done.wait(120)
    rate = count[0] / (time.perf_counter() - start)
    t.join(1)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)
    return rate


def daemon_rate(
    frames: list[list[bytes]],
    profile: str | None = None,
    source: str | None = None,
    foreign: bool = False,
    settings: tuple[str, ...] = (),
) -> float:
    """Messages/s a daemon process counts; `foreign`: as a daemon that owns none of them (its `foreign_total`)."""
    folder = tempfile.mkdtemp(prefix="p2pi")
    a = {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    cmd = [sys.executable, "-m", "p2p_stream.tools.cli.daemon", "--torch-device", "cpu", "--log-level", "WARNING",
           "--ingest", a["ingest"], "--publish", a["publish"], "--control", a["control"],
           # The messages are stamped from a fixed 2023 t0: without this every one is refused `bad_time` unbuffered.
           "--set", "limits.max_clock_skew_s=1000000000",
           # A store of its own (a tree from before issue 24 has no such setting: give it no --baseline).
           "--set", f"state.path={folder}/state.sqlite"]  # fmt: skip
    for setting in settings:
        cmd += ["--set", setting]
    counter = "foreign_total" if foreign else "messages_total"
    if foreign:  # the devices' owner is "b", never started: every message is another daemon's
        cmd += ["--set", "cluster.id=a", "--set", f"cluster.members=a,{FOREIGN_OWNER}"]
    env = {**os.environ, "PYTHONPATH": source} if source else None  # the daemon's code from another tree
    proc = subprocess.Popen(cmd, env=env, cwd=source)
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(a["control"])

    def stats() -> dict:
        req.send(pack({"cmd": "stats"}))
        return decode_map(req.recv())

    if not wait_ready(a["control"], timeout_s=120, proc=proc):
        proc.kill()
        raise RuntimeError("the daemon did not start")
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(a["ingest"])
    wait_for_subscriber(pub, a["ingest"], timeout_s=60)
    spy = None
    if profile:  # py-spy samples every thread of the daemon, idle ones included, for the whole ingest
        spy_cmd = ["py-spy", "record", "--pid", str(proc.pid), "--threads", "--idle", "--format", "raw", "-r", "250",
                   "-o", profile]  # fmt: skip
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        time.sleep(1.0)
    start = time.perf_counter()
    for f in frames:
        pub.send_multipart(f)
    while stats()[counter] < len(frames) and time.perf_counter() - start < 300:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    counted = stats()[counter]
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)
    return counted / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--profile", metavar="FILE", help="write a py-spy profile (collapsed stacks) of the daemon")
    p.add_argument("--baseline", metavar="DIR", help="also measure a daemon run from this source tree")
    p.add_argument("--repeat", type=int, default=1, help="rounds, paths interleaved; the median is reported")
    p.add_argument("--out", help="write every round's figures as JSON here")
    p.add_argument("--foreign", action="store_true", help="also a cluster daemon that owns none of the devices")
    p.add_argument(
        "--ecg",
        action="store_true",
        help="also the simulated fleet's PPG alone and with an ECG beside each device's (half the messages)",
    )
    p.add_argument("--variant", metavar="KEY=VALUE", action="append", default=[],
                   help="also this tree's daemon with this setting (repeatable): calibration.tracking=off")  # fmt: skip
    args = p.parse_args()
    frames = messages(args.messages, args.devices)
    rounds: dict[str, list[float]] = {"bare": [], "daemon": []}
    if args.baseline:
        rounds["before"] = []
    if args.variant:
        rounds["variant"] = []
    if args.ecg:
        rounds["fleet"], rounds["fleet+ecg"] = [], []
        fleet_ppg = fleet_messages(args.messages, args.devices, ecg=False)
        fleet_ecg = fleet_messages(args.messages, args.devices, ecg=True)
    if args.foreign:
        rounds["foreign"] = []
        foreign_frames = messages(args.messages, args.devices, foreign=True)
    for r in range(args.repeat):  # interleaved, so a slow spell of a shared VM hits every path alike
        rounds["bare"].append(bare_rate(frames))
        rounds["daemon"].append(daemon_rate(frames, args.profile if r == 0 else None))
        if args.baseline:
            rounds["before"].append(daemon_rate(frames, source=os.path.abspath(args.baseline)))
        if args.variant:
            rounds["variant"].append(daemon_rate(frames, settings=tuple(args.variant)))
        if args.ecg:
            rounds["fleet"].append(daemon_rate(fleet_ppg))
            rounds["fleet+ecg"].append(daemon_rate(fleet_ecg))
        if args.foreign:
            rounds["foreign"].append(daemon_rate(foreign_frames, foreign=True))
    med = {k: float(np.median(v)) for k, v in rounds.items()}
    print(f"| path | messages/s (median of {args.repeat}) | rounds |\n|---|---|---|")
    names = {"bare": "bare pyzmq SUB loop (receive only)", "before": f"p2p-daemon from {args.baseline} (before)",
             "daemon": "p2p-daemon (validate, buffer, cut windows, infer)",
             "foreign": "p2p-daemon of a cluster, every message another's (read the topic, drop)",
             "variant": f"p2p-daemon with {', '.join(args.variant)}",
             "fleet": "p2p-daemon, the simulated fleet's PPG",
             "fleet+ecg": "p2p-daemon, the simulated fleet's PPG and ECG (arrival times found)"}  # fmt: skip
    for key in ("bare", "before", "daemon", "variant", "fleet", "fleet+ecg", "foreign"):
        if key in med:
            print(f"| {names[key]} | {med[key]:,.0f} | {', '.join(f'{v:,.0f}' for v in rounds[key])} |")
    print(f"\nthe daemon ingests at {med['daemon'] / med['bare']:.0%} of the bare loop's rate")
    if "before" in med:
        print(f"after / before: {med['daemon'] / med['before']:.2f}x")
    if "variant" in med:
        print(f"default / variant: {med['daemon'] / med['variant']:.2f}x")
    if "fleet+ecg" in med:
        print(f"with ECG / PPG only (messages/s, half of them ECG): {med['fleet+ecg'] / med['fleet']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"messages": args.messages, "devices": args.devices, "rounds": rounds, "median": med}, f)


if __name__ == "__main__":
    main()
