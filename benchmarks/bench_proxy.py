"""Benchmark: messages/s through the p2p-proxy's forwarder, against the same PUB → SUB path without it.

    python benchmarks/bench_proxy.py [--messages 200000] [--repeat 3]

Pre-encoded ingest messages (25 samples at 125 Hz) from one PUB, received by one SUB in another thread that only
counts them; once directly, once through `Proxy` (pyzmq's XSUB/XPUB ThreadProxy, the forwarder itself in C).
Rounds interleave the two paths; the median is reported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import messages  # noqa: E402

from p2p_stream.proxy import Proxy  # noqa: E402


def rate(frames: list[list[bytes]], via_proxy: bool) -> float:
    folder = tempfile.mkdtemp(prefix="p2pq")
    a = {k: f"ipc://{folder}/{k}" for k in ("wearables", "shards", "estimates", "subscribers")}
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
    for s in (pub, sub):
        s.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"ppg.")
    if via_proxy:
        Proxy(a["wearables"], a["shards"], a["estimates"], a["subscribers"], hwm=0).start()
        pub.connect(a["wearables"])
        sub.connect(a["shards"])
    else:
        pub.bind(a["wearables"])
        sub.connect(a["wearables"])
    while pub.recv()[:1] != b"\x01":  # the subscription has arrived (through the proxy when there is one)
        pass
    count = [0]

    def receive() -> None:
        while count[0] < len(frames) and sub.poll(5000):
            sub.recv_multipart()
            count[0] += 1

    t = threading.Thread(target=receive)
    t.start()
    start = time.perf_counter()
    for f in frames:
        pub.send_multipart(f)
    t.join()
    result = count[0] / (time.perf_counter() - start)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    frames = messages(args.messages, 1000)
    rounds: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(args.repeat):
        rounds["direct"].append(rate(frames, False))
        rounds["proxy"].append(rate(frames, True))
    print(f"| path | messages/s (median of {args.repeat}) | rounds |\n|---|---|---|")
    for key, name in (("direct", "PUB → SUB"), ("proxy", "PUB → p2p-proxy → SUB")):
        print(f"| {name} | {np.median(rounds[key]):,.0f} | {', '.join(f'{v:,.0f}' for v in rounds[key])} |")


if __name__ == "__main__":
    main()
