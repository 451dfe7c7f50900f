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
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_daemon import FS, HOP_S, WINDOW_S, join_daemon, proc_stats, start_daemon  # noqa: E402

from p2p_stream.fleet import Fleet, FleetConfig  # noqa: E402
from p2p_stream.protocol import decode_estimate, encode_ingest  # noqa: E402


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
    fleet = Fleet(FleetConfig(devices=args.devices, rates_hz=(FS,), chunk_s=25 / FS, stagger_s=HOP_S))
    dt = fleet.config.chunk_s
    offset = dict(zip(fleet.ids, np.random.default_rng(1).uniform(0, dt, args.devices)))
    t_wall0, start = time.time(), time.monotonic()
    ticks = int(args.minutes * 60 / dt)
    series, next_report, worst_lag = [], start + args.interval_s, 0.0
    cpu_prev, t_prev = proc_stats(daemon.pid)[0], start
    for k in range(ticks):
        for m in sorted(fleet.tick(), key=lambda m: offset[m.device]):
            wait = start + (k + 1) * dt + offset[m.device] - time.monotonic()
            if wait > 0.002:
                time.sleep(wait)
            worst_lag = max(worst_lag, -wait)
            pub.send_multipart(encode_ingest(m.device, m.seq, t_wall0 + offset[m.device] + m.t0, m.fs, m.ppg))
        now = time.monotonic()
        if now >= next_report:
            cpu, rss = proc_stats(daemon.pid)
            with lock:
                ms = np.array([lat for _, lat in latencies]) if latencies else np.array([np.nan])
                latencies.clear()
            p50, p99 = (round(float(np.nanpercentile(ms, q)), 1) for q in (50, 99))
            row = {
                "t_min": round((now - start) / 60, 2),
                "rss_mb": round(rss / 2**20, 1),
                "windows": int(ms.size),
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
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=10)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)

    chunks = np.maximum(0, ticks - np.ceil(fleet.joins_at / dt)).astype(int)
    expected = int(np.maximum(0, (chunks * 25 - int(WINDOW_S * FS)) // int(HOP_S * FS) + 1).sum())
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
        "fleet_lag_s": round(worst_lag, 3),
    }
    verdict["memory_ok"] = verdict["rss_growth_pct"] < 5.0
    verdict["latency_ok"] = p99_1 <= max(1.5 * p99_0, p99_0 + 25.0)
    print(json.dumps(verdict, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"devices": args.devices, "minutes": args.minutes, "series": series, "verdict": verdict}, f)


if __name__ == "__main__":
    main()
