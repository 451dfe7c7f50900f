"""Soak: the fleet at N devices into a real p2p-daemon for a long time; memory and latency over time.

    python benchmarks/soak.py [--devices 500] [--minutes 10] [--interval-s 30] [--out soak.json]

Same set-up as bench_daemon.py (125 Hz, 25-sample chunks, real-time paced, spread arrivals, 10 s windows,
2 s hop), run for `--minutes`. Every interval it records the daemon's RSS and the latency p50/p99 of the
estimates received in that interval. The verdict compares the end with the state after warm-up (the first
`--warmup-min` minutes): RSS growth must stay under 5 % and the p99 of the last third must not exceed the
p99 of the first third after warm-up by more than 50 % (and 25 ms), and no window may be lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_daemon import PacedFleet, join_daemon, proc_stats, shut_down, start_daemon  # noqa: E402

from p2p_stream.wire.protocol import decode_estimate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval-s", type=float, default=30.0)
    p.add_argument("--warmup-min", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="write the series and the verdict as JSON here")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="p2ps")
    addresses = {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    daemon = start_daemon(addresses, 64, args.threads)
    ctx, sub, pub = join_daemon(addresses)
    latencies: list[tuple[float, float]] = []  # (arrival, ms)
    lock, stop = threading.Lock(), threading.Event()

    def collect() -> None:
        while not stop.is_set() or sub.poll(0):
            if sub.poll(100):
                e = decode_estimate(sub.recv_multipart())
                now = time.time()
                with lock:
                    latencies.append((now, (now - e["t"]) * 1000))

    collector = threading.Thread(target=collect)
    collector.start()
    paced = PacedFleet(args.devices, pub)
    start = paced.start
    ticks = int(args.minutes * 60 / paced.dt)
    series, next_report = [], start + args.interval_s
    cpu_prev, t_prev = proc_stats(daemon.pid)[0], start
    for k in range(ticks):
        paced.send_tick(k)
        now = time.monotonic()
        if now >= next_report:
            cpu, rss = proc_stats(daemon.pid)
            with lock:
                received = len(latencies)
                ms = np.array([lat for _, lat in latencies]) if latencies else np.array([np.nan])
                latencies.clear()
            p50, p99 = (round(float(np.nanpercentile(ms, q)), 1) for q in (50, 99))
            row = {
                "t_min": round((now - start) / 60, 2),
                "rss_mb": round(rss / 2**20, 1),
                "windows": received,
                "p50_ms": p50,
                "p99_ms": p99,
                "cpu_pct": round(100 * (cpu - cpu_prev) / (now - t_prev), 1),
            }
            series.append(row)
            cpu_prev, t_prev = cpu, now
            print(json.dumps(row), flush=True)
            next_report += args.interval_s
    time.sleep(1.5)
    stop.set()
    collector.join()
    shut_down(daemon, ctx, folder)
    expected = paced.expected_windows(ticks)
    received = sum(r["windows"] for r in series)  # the last partial interval is not in the series: a lower bound
    after = [r for r in series if r["t_min"] > args.warmup_min and r["windows"] > 0]
    third = max(1, len(after) // 3)
    first, last = after[:third], after[-third:]
    rss0, rss1 = first[0]["rss_mb"], max(r["rss_mb"] for r in last)
    p99_0, p99_1 = max(r["p99_ms"] for r in first), max(r["p99_ms"] for r in last)
    verdict = {
        "rss_after_warmup_mb": rss0,
        "rss_end_mb": rss1,
        "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
        "p99_first_third_ms": p99_0,
        "p99_last_third_ms": p99_1,
        "windows_expected": expected,
        "windows_received_in_series": received,
        "fleet_lag_s": round(paced.worst_lag, 3),
    }
    verdict["memory_ok"] = verdict["rss_growth_pct"] < 5.0
    verdict["latency_ok"] = p99_1 <= max(1.5 * p99_0, p99_0 + 25.0)
    print(json.dumps(verdict, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"devices": args.devices, "minutes": args.minutes, "series": series, "verdict": verdict}, f)


if __name__ == "__main__":
    main()
