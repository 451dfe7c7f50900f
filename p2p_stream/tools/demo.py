"""Demo: `p2p-demo` starts the daemon, replays the bundled real recordings as live wearables and shows the dashboard.

    p2p-demo                      # until Ctrl-C
    p2p-demo --duration 30        # ends by itself and prints a summary (for scripts and CI)

The bundled recordings are PPG-BP subjects the shipped model never trained on (2.1 s segments, so the
demo's windows are 2.1 s with a 2.1 s hop: each window is one real segment). The summary scores the estimates
received against the recordings' cuff readings: beside their error, the error of always answering the model's
population mean, and how often the prediction intervals held the cuff reading.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import zmq
from rich.console import Console

from p2p_stream.errors import CheckpointError
from p2p_stream.offline.datasets.replay_csv import read_replay_csv
from p2p_stream.stream.protocol import decode_map, pack
from p2p_stream.tools.dashboard import DashboardState, interval_level, interval_of, pump, run_live, subscribe
from p2p_stream.tools.replay import Replayer, fan_out, wait_for_subscriber

DEMO_WINDOW_S = 2.1  # one PPG-BP segment


def demo_recording() -> Path:
    return Path(str(resources.files("p2p_stream") / "assets" / "demo" / "ppg_bp_demo.csv"))


def start_daemon(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "p2p_stream.tools.cli_daemon",
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
        *(["--model", args.model] if args.model else []),
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


@dataclass
class Score:
    """Estimates scored against the cuff references they carried; pairs are (SBP, DBP)."""

    n: int  # ok estimates with a reference
    mae: tuple[float, float]  # mmHg
    constant_mae: tuple[float, float] | None  # mmHg, of always answering the constant (None: no constant given)
    n_interval: int  # of those, the ones with a prediction interval
    coverage: tuple[float, float] | None  # share of those whose interval holds the reference (None: no intervals)
    level: str  # the intervals' stated level, e.g. "80 %" ("" if none stated)


def score_estimates(estimates: Iterable[dict], constant: tuple[float, float] | None = None) -> Score | None:
    """Score the ok estimates that carry a reference (`ref_sbp`, `ref_dbp`); None when there are none.

    `constant` (SBP, DBP) mmHg: the answer to compare with, e.g. the model's population mean. Coverage counts an
    interval `[lo, hi]` as holding the reference when lo ≤ reference ≤ hi.
    """
    scored = [
        e
        for e in estimates
        if e.get("ok") and None not in (e.get("sbp"), e.get("dbp"), e.get("ref_sbp"), e.get("ref_dbp"))
    ]
    if not scored:
        return None
    est = np.array([(e["sbp"], e["dbp"]) for e in scored], dtype=np.float64)  # (N, 2)
    ref = np.array([(e["ref_sbp"], e["ref_dbp"]) for e in scored], dtype=np.float64)  # (N, 2)
    mae = np.abs(est - ref).mean(axis=0)
    constant_mae = None
    if constant is not None:
        c = np.abs(np.asarray(constant, dtype=np.float64) - ref).mean(axis=0)
        constant_mae = (float(c[0]), float(c[1]))
    with_interval = [(e, interval_of(e)) for e in scored if interval_of(e) is not None]
    coverage = None
    if with_interval:
        ref_held = [(e["ref_sbp"], e["ref_dbp"], *bounds) for e, bounds in with_interval]
        held = np.array([(lo_s <= r_s <= hi_s, lo_d <= r_d <= hi_d) for r_s, r_d, lo_s, hi_s, lo_d, hi_d in ref_held])
        coverage = (float(held[:, 0].mean()), float(held[:, 1].mean()))
    return Score(
        n=len(scored),
        mae=(float(mae[0]), float(mae[1])),
        constant_mae=constant_mae,
        n_interval=len(with_interval),
        coverage=coverage,
        level=interval_level([e for e, _ in with_interval]),
    )


def population_mean(metadata: dict) -> tuple[tuple[float, float], str] | None:
    """The constant to beat, from a checkpoint's metadata: the head's population mean, else the training labels' mean.

    Returns ((SBP, DBP) mmHg, what it is), or None when the metadata holds neither.
    """
    mean = ((metadata.get("head") or {}).get("prior") or {}).get("mean")
    if mean is not None and len(mean) == 2:
        return (float(mean[0]), float(mean[1])), "the model's population mean"
    stats = metadata.get("label_stats") or {}
    if "sbp_mean" in stats and "dbp_mean" in stats:
        return (float(stats["sbp_mean"]), float(stats["dbp_mean"])), "the training labels' mean"
    return None


def summary(state: DashboardState, constant: tuple[tuple[float, float], str] | None = None) -> str:
    """The end-of-demo report; `constant` as `population_mean` gives it."""
    lines = [
        f"devices: {len(state.devices)}",
        f"estimates: {state.estimates} "
        f"({state.estimates - sum(state.rejected.values())} ok, rejected: {dict(state.rejected) or 'none'})",
    ]
    score = score_estimates(state.scored, constant[0] if constant else None)
    if score is None:
        return "\n".join(lines)
    lines.append(
        f"mean absolute error against the cuff references: SBP {score.mae[0]:.1f} mmHg, "
        f"DBP {score.mae[1]:.1f} mmHg over {score.n} estimates"
    )
    if constant is not None and score.constant_mae is not None:
        (c_sbp, c_dbp), what = constant
        lines.append(
            f"  always answering {c_sbp:.0f}/{c_dbp:.0f} ({what}): "
            f"SBP {score.constant_mae[0]:.1f}, DBP {score.constant_mae[1]:.1f} mmHg"
        )
    if score.coverage is not None:
        lines.append(
            f"  {score.level or 'the'} intervals held the cuff reading: SBP {100 * score.coverage[0]:.0f} %, "
            f"DBP {100 * score.coverage[1]:.0f} % ({score.n_interval} estimates)"
        )
    else:
        lines.append("  no prediction intervals in the estimates (the model gives none)")
    return "\n".join(lines)


def model_constant(model: str | None) -> tuple[tuple[float, float], str] | None:
    """`population_mean` of the checkpoint the daemon runs (the shipped one by default); None if unreadable."""
    from p2p_stream.model.checkpoint import read_metadata  # torch comes with these: imported only for the summary
    from p2p_stream.model.estimator import default_model_path

    try:
        return population_mean(read_metadata(model or default_model_path()))
    except CheckpointError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="p2p-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, help="seconds of streaming, then stop and print a summary")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto, for the daemon's model")
    p.add_argument("--model", help="checkpoint folder for the daemon (default: the shipped model)")
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
        console.print(summary(state, model_constant(args.model)))
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
