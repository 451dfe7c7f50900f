"""Demo: `p2p-demo` starts the daemon, replays the bundled real recordings as live wearables and shows the dashboard.

    p2p-demo                      # until Ctrl-C
    p2p-demo --duration 30        # ends by itself and prints a summary (for scripts and CI)

The bundled recordings are PPG-BP subjects the shipped model never trained on (2.1 s segments, so the
demo's windows are 2.1 s with a 2.1 s hop: each window is one real segment).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
import zmq
from rich.console import Console

from .dashboard import DashboardState, pump, run_live, subscribe
from .datasets.replay_csv import read_replay_csv
from .protocol import decode_map, pack
from .replay import Replayer, fan_out, wait_for_subscriber

DEMO_WINDOW_S = 2.1  # one PPG-BP segment


def demo_recording() -> Path:
    return Path(str(resources.files("p2p_stream") / "assets" / "demo" / "ppg_bp_demo.csv"))


def start_daemon(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "p2p_stream.cli_daemon",
        "--ingest",
        args.ingest,
        "--publish",
        args.publish,
        "--control",
        args.control,
        "--device",
        args.device,
        "--window-s",
        str(DEMO_WINDOW_S),
        "--hop-s",
        str(DEMO_WINDOW_S),
        "--log-level",
        "WARNING",
    ]
    return subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, control: str, timeout_s: float) -> bool:
    """Ping the control socket until the daemon answers, it exits, or time runs out."""
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(control)
            req.send(pack({"cmd": "ping"}))
            ok = req.poll(500) and decode_map(req.recv()).get("ok")
            req.close()
            if ok:
                return True
        return False
    finally:
        ctx.term()


def summary(state: DashboardState) -> str:
    lines = [
        f"devices: {len(state.devices)}",
        f"estimates: {state.estimates} "
        f"({state.estimates - sum(state.rejected.values())} ok, rejected: {dict(state.rejected) or 'none'})",
    ]
    if state.errors:
        err = np.abs(np.array(state.errors))
        lines.append(
            f"mean absolute error against the cuff references: SBP {err[:, 0].mean():.1f} mmHg, "
            f"DBP {err[:, 1].mean():.1f} mmHg over {len(err)} estimates"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="p2p-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, help="seconds of streaming, then stop and print a summary")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto, for the daemon's model")
    p.add_argument("--ingest", default="tcp://127.0.0.1:5555")
    p.add_argument("--publish", default="tcp://127.0.0.1:5556")
    p.add_argument("--control", default="tcp://127.0.0.1:5557")
    p.add_argument("--no-dashboard", action="store_true", help="no live view (the default when not on a terminal)")
    args = p.parse_args(argv)
    console = Console()
    log_path = Path(tempfile.mkstemp(prefix="p2p-demo-daemon-", suffix=".log")[1])
    console.print(f"starting p2p-daemon (log: {log_path}) ...")
    daemon = start_daemon(args, log_path)
    stop = threading.Event()
    ctx = zmq.Context()
    try:
        if not wait_ready(daemon, args.control, timeout_s=120):
            console.print(f"[red]the daemon did not start[/red]:\n{log_path.read_text()[-2000:]}", highlight=False)
            return 2
        sub_ctx, sub = subscribe(args.publish)
        state = DashboardState(args.publish)
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(args.ingest)
        wait_for_subscriber(pub, args.ingest, timeout_s=30)
        feeds = fan_out(read_replay_csv(demo_recording()), 0)
        replay = threading.Thread(
            target=Replayer(feeds, pub, chunk=25, speed=args.speed, loop=True).run, kwargs={"stop": stop}, daemon=True
        )
        replay.start()
        console.print(f"replaying {len(feeds)} real PPG-BP subjects from {demo_recording().name}; Ctrl-C to stop")
        try:
            if console.is_terminal and not args.no_dashboard:
                run_live(state, sub, console, args.duration)
            else:
                start = time.monotonic()
                while args.duration is None or time.monotonic() - start < args.duration:
                    pump(sub, state, 200)
        except KeyboardInterrupt:
            pass
        stop.set()
        replay.join(timeout=2)
        sub_ctx.destroy(linger=0)
        console.print(summary(state))
        return 0
    finally:
        stop.set()
        ctx.destroy(linger=0)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()


if __name__ == "__main__":
    sys.exit(main())
