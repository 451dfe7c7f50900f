"""Benchmark: messages/s through the p2p-proxy's forwarder, against the same PUB → SUB path without it.

    python benchmarks/bench_proxy.py [--messages 200000] [--repeat 3]

Pre-encoded ingest messages (25 samples at 125 Hz) from one PUB, received by one SUB in another thread that only
counts them (`bench_ingest.bare_rate`); once directly, once through `Proxy` (its ingest forwarder: an XSUB/XPUB
loop in Python that drops messages over the daemon's limit).
Rounds interleave the two paths; the median is reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import bare_rate, messages  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    frames = messages(args.messages, 1000)
    rounds: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(args.repeat):
        rounds["direct"].append(bare_rate(frames))
        rounds["proxy"].append(bare_rate(frames, via_proxy=True))
    print(f"| path | messages/s (median of {args.repeat}) | rounds |\n|---|---|---|")
    for key, name in (("direct", "PUB → SUB"), ("proxy", "PUB → p2p-proxy → SUB")):
        print(f"| {name} | {np.median(rounds[key]):,.0f} | {', '.join(f'{v:,.0f}' for v in rounds[key])} |")


if __name__ == "__main__":
    main()
