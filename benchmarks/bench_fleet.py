"""Benchmark: can one process simulate N wearables in real time? Seconds of work per second of simulated data.

    python benchmarks/bench_fleet.py [--devices 1000,2000,5000] [--seconds 5]

Generates and encodes every message (msgpack, float32 payload) and sends it on a PUB socket with no peer, so
the figure is the fleet's own cost. Below 1.0 the fleet keeps up with real time.
"""

from __future__ import annotations

import argparse
import time

import zmq

from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig
from p2p_stream.wire.protocol import encode_ingest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="1000,2000,5000")
    p.add_argument("--seconds", type=float, default=5.0, help="simulated seconds per point")
    args = p.parse_args()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.bind("inproc://fleet-bench")
    print("| devices | messages/s | work s per simulated s |\n|---|---|---|")
    for n in (int(v) for v in args.devices.split(",")):
        fleet = Fleet(FleetConfig(devices=n, motion_per_min=1, dropout_per_min=0.5))
        ticks = int(args.seconds / fleet.config.chunk_s)
        sent, start = 0, time.perf_counter()
        for _ in range(ticks):
            for m in fleet.tick():
                sock.send_multipart(encode_ingest(m.device, m.seq, m.t0, m.fs, m.ppg, ref=m.ref))
                sent += 1
        work = time.perf_counter() - start
        print(f"| {n} | {sent / args.seconds:,.0f} | {work / args.seconds:.2f} |", flush=True)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
