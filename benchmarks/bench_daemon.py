"""Benchmark: the whole path under load — N synthetic wearables → a real p2p-daemon → a subscriber.

    python benchmarks/bench_daemon.py [--devices 100,250,500,1000] [--seconds 20] [--modes batched,naive,ray]

For each N the fleet publishes N devices at 125 Hz (`--fs`) in chunks of 25 samples (real-time paced; staggered
like independent wearables, or `--aligned`: all switched on at once, every window due in the same instant) into a daemon
started as its own process (10 s windows, 2 s hop); a subscriber thread collects every estimate. Reported:
windows/s, latency p50/p99/max from the window's last sample to the estimate's arrival (sample time stamps are
the wall-clock times at which the fleet sends them), windows lost, the daemon's CPU (% of one core) and peak
RSS, and the whole machine's CPU (which counts Ray's processes too). "Sustained" means p99 ≤ 250 ms, nothing
lost and a fleet that kept up. Modes, run one after the other in one invocation: `batched` (the local backend),
`naive` (the same with `--max-batch 1`: one window per inference call), `recompute` (batched, but every crop of
every window through the network: `model.reuse_crops=false`, what the crop cache saves), `process` (batched, the
gate and the network in a child process: `model.inference_process=true`), `ray` (`--backend ray`:
the daemon starts a local Ray and one Serve replica of 1 CPU; needs the [cluster] extra).
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

from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig
from p2p_stream.wire.probe import wait_for_subscriber, wait_ready
from p2p_stream.wire.protocol import decode_estimate, encode_ingest

WINDOW_S, HOP_S, FS, CHUNK = 10.0, 2.0, 125.0, 25
P99_LIMIT_MS = 250.0


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def machine_busy_s() -> float:
    """CPU seconds all cores of this machine have been busy, from /proc/stat (every process, Ray's included)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def start_daemon(addresses: dict, max_batch: int, threads: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    flags = {"--torch-device": "cpu", "--threads": threads, "--window-s": WINDOW_S, "--hop-s": HOP_S,
             "--max-batch": max_batch, "--log-level": "WARNING", "--ingest": addresses["ingest"],
             "--publish": addresses["publish"], "--control": addresses["control"]}  # fmt: skip
    cmd = [sys.executable, "-m", "p2p_stream.tools.cli.daemon", *(str(v) for kv in flags.items() for v in kv), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not wait_ready(addresses["control"], timeout_s=120, proc=proc):
        proc.kill()
        raise RuntimeError(f"daemon did not start: {proc.stderr.read()}")
    return proc


def join_daemon(addresses: dict) -> tuple[zmq.Context, zmq.Socket, zmq.Socket]:
    """(context, SUB on the estimates, XPUB into ingest), both joined: nothing sent from now on is lost."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"sbp.")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(addresses["publish"])
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(addresses["ingest"])
    wait_for_subscriber(pub, addresses["ingest"], timeout_s=60)
    time.sleep(0.5)  # and our SUB has joined the daemon's PUB
    return ctx, sub, pub


class PacedFleet:
    """N synthetic devices at `fs` Hz in 25-sample chunks, published in real time with spread arrivals.

    Devices switch on at random times over one hop, so their windows do not all fall due in the same instant.
    Each device's clock is offset by a random fraction of a chunk, so chunks arrive spread over time as from
    independent wearables, not in one burst per tick. A device sends a chunk once its last sample is measured.
    `aligned`: the worst case instead — every device switched on at once, in phase, so all their windows fall due
    in the same instant (devices powered up together, a network partition healing).
    """

    def __init__(self, n: int, pub: zmq.Socket, fs: float = FS, aligned: bool = False) -> None:
        self.fs = fs
        stagger = 0.0 if aligned else HOP_S
        self.fleet = Fleet(FleetConfig(devices=n, rates_hz=(fs,), chunk_s=CHUNK / fs, stagger_s=stagger))
        self.pub, self.dt = pub, self.fleet.config.chunk_s
        offsets = np.zeros(n) if aligned else np.random.default_rng(1).uniform(0, self.dt, n)
        self.offset = dict(zip(self.fleet.ids, offsets))
        self.t_wall0, self.start = time.time(), time.monotonic()
        self.worst_lag = 0.0  # how far behind real time the sender fell, s

    def send_tick(self, k: int) -> None:
        """Send tick k's chunks, each when it is due."""
        for m in sorted(self.fleet.tick(), key=lambda m: self.offset[m.device]):
            wait = self.start + (k + 1) * self.dt + self.offset[m.device] - time.monotonic()
            if wait > 0.002:
                time.sleep(wait)
            self.worst_lag = max(self.worst_lag, -wait)
            t0 = self.t_wall0 + self.offset[m.device] + m.t0
            self.pub.send_multipart(encode_ingest(m.device, m.seq, t0, m.fs, m.ppg))

    def expected_windows(self, ticks: int) -> int:
        """Windows the daemon owes for `ticks` ticks of this fleet."""
        chunks = np.maximum(0, ticks - np.ceil(self.fleet.joins_at / self.dt)).astype(int)  # chunks each device sent
        window, hop = int(round(WINDOW_S * self.fs)), int(round(HOP_S * self.fs))
        return int(np.maximum(0, (chunks * CHUNK - window) // hop + 1).sum())


def shut_down(daemon: subprocess.Popen, ctx: zmq.Context, folder: str) -> None:
    """SIGTERM the daemon, close our sockets, remove the ipc folder."""
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)  # with the Ray backend, its Ray instance shuts down too
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)


def run_point(
    n: int,
    seconds: float,
    max_batch: int,
    threads: int,
    extra: tuple[str, ...] = (),
    fs: float = FS,
    aligned: bool = False,
) -> dict:
    folder = tempfile.mkdtemp(prefix="p2pb")
    addresses = {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    daemon = start_daemon(addresses, max_batch, threads, extra)
    ctx, sub, pub = join_daemon(addresses)
    received: list[tuple[str, float, float, float]] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set() or sub.poll(0):
            if sub.poll(100):
                e = decode_estimate(sub.recv_multipart())
                received.append((e["device"], e["t"], time.time(), e["latency_ms"]))

    collector = threading.Thread(target=collect)
    collector.start()
    paced = PacedFleet(n, pub, fs, aligned)
    cpu0, _ = proc_stats(daemon.pid)
    busy0 = machine_busy_s()
    peak_rss = 0
    ticks = int(seconds / paced.dt)
    for k in range(ticks):
        paced.send_tick(k)
        if k % 25 == 0:
            peak_rss = max(peak_rss, proc_stats(daemon.pid)[1])
    elapsed = time.monotonic() - paced.start
    time.sleep(1.5)  # the last windows' estimates
    cpu1, rss = proc_stats(daemon.pid)
    busy1 = machine_busy_s()
    stop.set()
    collector.join()
    shut_down(daemon, ctx, folder)
    expected = paced.expected_windows(ticks)
    worst_lag, dt = paced.worst_lag, paced.dt
    latencies = np.array([(recv - t) * 1000 for _, t, recv, _ in received]) if received else np.array([np.nan])
    daemon_ms = np.array([d for *_, d in received]) if received else np.array([np.nan])
    result = {
        "devices": n,
        "threads": threads,
        "max_batch": max_batch,
        "seconds": round(elapsed, 1),
        "windows": len(received),
        "expected": expected,
        "lost": max(0, expected - len(received)),
        "windows_per_s": round(len(received) / (elapsed - WINDOW_S), 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(np.max(latencies)), 1),
        "daemon_p99_ms": round(float(np.percentile(daemon_ms, 99)), 1),
        "daemon_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "daemon_rss_mb": round(max(peak_rss, rss) / 2**20, 1),
        "machine_cpu_pct": round(100 * (busy1 - busy0) / elapsed / (os.cpu_count() or 1), 1),
        "fleet_lag_s": round(worst_lag, 3),
    }
    if received:  # when in the run the slow ones came: a steady tail, or stalls
        second = np.array([int(recv - received[0][2]) for _, _, recv, _ in received])
        result["p99_ms_by_second"] = [
            round(float(np.percentile(latencies[second == k], 99)), 1)
            for k in range(second.max() + 1)
            if (second == k).any()
        ]
    result["sustained"] = bool(result["lost"] == 0 and result["p99_ms"] <= P99_LIMIT_MS and worst_lag < dt)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="100,250,500,1000,1500")
    p.add_argument("--naive-devices", default="10,25,50,100,200")
    p.add_argument("--seconds", type=float, default=24.0, help="fleet run per point (the first 10 s fill windows)")
    p.add_argument("--ray-devices", default="100,250,500,1000,1250")
    p.add_argument("--ray-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a [ray] setting for the ray mode's daemon, e.g. max_in_flight=1")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--modes", "--only", default="batched,naive",
                   help="comma-separated: batched, naive, recompute, process, ray")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="the daemon's torch threads (0 = its default)")
    p.add_argument("--torch-device", default="cpu", help="where the daemon's network runs: cpu, cuda, cuda:N")
    p.add_argument("--fs", type=float, default=FS, help=f"the devices' sampling rate, Hz (default {FS:g})")
    p.add_argument("--aligned", action="store_true", help="every device switched on at once, in phase")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="daemon_set",
                   help="a daemon setting for every mode, e.g. model.burst_threads=1")  # fmt: skip
    p.add_argument("--out", help="JSON results here")
    args = p.parse_args()
    device = ("--torch-device", args.torch_device)  # after start_daemon's own cpu: the last one wins
    device += tuple(f for kv in args.daemon_set for f in ("--set", kv))
    wanted = args.modes.split(",")
    ray_flags = (
        "--backend",
        "ray",
        "--set",
        "ray.max_replicas=1",
        *(f for kv in args.ray_set for f in ("--set", f"ray.{kv}")),
    )
    modes = [
        ("batched", args.max_batch, args.devices, device),
        ("naive", 1, args.naive_devices, device),
        ("recompute", args.max_batch, args.devices, (*device, "--set", "model.reuse_crops=false")),
        ("process", args.max_batch, args.devices, (*device, "--set", "model.inference_process=true")),
        ("ray", args.max_batch, args.ray_devices, ray_flags),
    ]
    unknown = set(wanted) - {m[0] for m in modes}
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)}; choose from batched, naive, recompute, process, ray")
    rows, best = [], {}
    print("| mode | devices | windows/s | p50 ms | p99 ms | max ms | lost | daemon CPU % | machine CPU % | RSS MB "
          "| sustained |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, max_batch, devices, extra in modes:
        if mode not in wanted:
            continue
        for n in (int(v) for v in devices.split(",")):
            r = run_point(n, args.seconds, max_batch, args.threads, extra, args.fs, args.aligned)
            r["mode"], r["fs"], r["aligned"] = mode, args.fs, args.aligned
            rows.append(r)
            print(
                f"| {mode} | {n} | {r['windows_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                f"{r['lost']} | {r['daemon_cpu_pct']} | {r['machine_cpu_pct']} | {r['daemon_rss_mb']} | "
                f"{'yes' if r['sustained'] else 'no'} |",
                flush=True,
            )
            if r["sustained"]:
                best[mode] = n
            else:
                break
    print(f"\nlargest N sustained: {best}")
    if "batched" in best and "naive" in best:
        print(f"dynamic batching sustains {best['batched'] / best['naive']:.1f}x the naive path's devices")
    if "batched" in best and "recompute" in best:
        print(f"reusing crops sustains {best['batched'] / best['recompute']:.2f}x the devices of recomputing them")
    if "batched" in best and "process" in best:
        print(f"the inference process sustains {best['process'] / best['batched']:.2f}x the devices in one process")
    if "batched" in best and "ray" in best:
        print(f"the Ray backend sustains {best['ray'] / best['batched']:.2f}x the local backend's devices")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"rows": rows, "sustained": best, "machine": os.uname().machine, "cpus": os.cpu_count()}, f, indent=2
            )


if __name__ == "__main__":
    main()
