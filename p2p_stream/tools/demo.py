"""Demo: `p2p demo` starts the daemon, replays the bundled real recordings as live wearables and shows the dashboard.

    p2p demo                      # until Ctrl-C
    p2p demo --duration-s 30      # ends by itself and prints a summary (for scripts and CI)

The bundled recordings are PPG-BP subjects the shipped model never trained on (2.1 s segments, so the
demo's windows are 2.1 s with a 2.1 s hop: each window is one real segment). The summary scores the estimates
received against the recordings' cuff readings: beside their error, the error of always answering the model's
population mean, and how often the prediction intervals held the cuff reading.

Beside them, one *simulated* wearer (`SIMULATED`, the fleet simulator's) sends an ECG with its PPG and is calibrated
with a (simulated) cuff reading a few seconds in; 30 s later its pressure rises 30 mmHg, as in a cold pressor test,
holds a minute and comes back. Its arrival time is built to follow its pressure, so it shows what tracking does
with such a signal, not how well it tracks people: docs/results.md has that.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import zmq
from rich.console import Console

from p2p_stream.config.addresses import check_address
from p2p_stream.config.daemon import Model, Sockets
from p2p_stream.errors import CheckpointError, ConfigError, P2PError
from p2p_stream.offline.datasets.replay_csv import read_replay_csv
from p2p_stream.tools.bridges.replay import Replayer, fan_out, wait_for_subscriber
from p2p_stream.tools.common import alias, command, parent_parser, setup_logging
from p2p_stream.tools.dashboard.app import DashboardState, interval_level, interval_of, pump, run_live, subscribe
from p2p_stream.wire import probe
from p2p_stream.wire.estimate import CALIBRATED_BASES

DEMO_WINDOW_S = 2.1  # one PPG-BP segment
SIMULATED = "simulated-ecg-cold-pressor"  # the simulated wearer's device id: says what it is on every screen
CALIBRATE_AT_S = 8.0  # its (simulated) cuff reading, this far into its stream
READY_TIMEOUT_S = 120.0  # the daemon's start-up (torch, the model) on a slow machine


def demo_recording() -> Path:
    return Path(str(resources.files("p2p_stream") / "assets" / "demo" / "ppg_bp_demo.csv"))


def start_daemon(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    """`p2p daemon` in a child process on the demo's addresses, its output (and any error) in `log_path`."""
    cmd = [
        sys.executable,
        "-m",
        "p2p_stream.tools.cli.daemon",
        "--ingest",
        args.ingest,
        "--estimates",
        args.estimates,
        "--control",
        args.control,
        "--torch-device",
        args.torch_device,
        "--window-s",
        str(DEMO_WINDOW_S),
        "--hop-s",
        str(DEMO_WINDOW_S),
        "--log-level",
        "WARNING",
        *(["--model", args.model] if args.model else []),
    ]
    return subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def daemon_error(log_text: str) -> str:
    """The daemon's own one-line reason for stopping, from its log: its last `error:` line, else its last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or " error: " in line]
    reason = (errors or lines or ["it exited without a word"])[-1]
    return reason.split("error:", 1)[-1].strip()


def wait_ready(proc: subprocess.Popen, control: str, timeout_s: float, taken: bool = False) -> bool:
    """Whether our daemon came up: it answers `ping` at `control` within `timeout_s` while still running.

    `taken`: something already answered there before ours started. Then a reply proves nothing (it may be the
    other daemon's), and ours, which cannot bind, is waited for to exit (False); should it keep running that
    long (an ipc:// path taken over), it still counts as not started.
    """
    if not taken:
        return probe.wait_ready(control, timeout_s, proc) and proc.poll() is None
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    return False


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
    prior = (metadata.get("head") or {}).get("prior") or {}
    survey = prior.get("survey")
    if survey is not None and len(survey) == 2:
        return (float(survey[0]), float(survey[1])), "the adult population's mean, NHANES"
    mean = prior.get("mean")
    if mean is not None and len(mean) == 2:
        return (float(mean[0]), float(mean[1])), "the model's population mean"
    stats = metadata.get("label_stats") or {}
    if "sbp_mean" in stats and "dbp_mean" in stats:
        return (float(stats["sbp_mean"]), float(stats["dbp_mean"])), "the training labels' mean"
    return None


def summary(
    state: DashboardState, constant: tuple[tuple[float, float], str] | None = None, cuff: dict | None = None
) -> str:
    """The end-of-demo report; `constant` as `population_mean` gives it; `cuff`: the simulated wearer's reading."""
    # A `gap` estimate marks a break (here: a join between two of a subject's segments), not a window.
    rejected = {reason: n for reason, n in state.rejected.items() if reason != "gap"}
    gaps = state.rejected.get("gap", 0)
    windows = state.estimates - gaps
    lines = [
        f"devices: {len(state.devices)}",
        f"windows estimated: {windows} ({windows - sum(rejected.values())} ok, rejected: {rejected or 'none'}); "
        f"{gaps} breaks (joins between recorded segments)",
    ]
    real = [e for e in state.scored if e.get("device") != SIMULATED]
    score = score_estimates(real, constant[0] if constant else None)
    if score is None:
        return "\n".join(lines + simulated_summary(state.scored, cuff))
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
    lines += worth(real)
    return "\n".join(lines + simulated_summary(state.scored, cuff))


def simulated_summary(scored: Iterable[dict], cuff: dict | None) -> list[str]:
    """The simulated wearer's lines: its tracked SBP against its true pressure, beside the cuff carried forward."""
    after = [e for e in scored if e.get("device") == SIMULATED and e.get("ok") and e.get("basis") in CALIBRATED_BASES]
    if not cuff or not after:
        return []
    truth = np.array([e["ref_sbp"] for e in after])
    tracked = np.mean(np.abs(np.array([e["sbp"] for e in after]) - truth))
    carried = np.mean(np.abs(cuff["sbp"] - truth))
    return [
        f"simulated wearer {SIMULATED} (ECG + PPG, its arrival time built to follow its pressure; not a person): "
        f"after its cuff reading of {cuff['sbp']:.0f}/{cuff['dbp']:.0f}, its pressure moved up to "
        f"{np.max(np.abs(truth - cuff['sbp'])):.0f} mmHg; SBP error {tracked:.1f} mmHg tracked "
        f"({Counter(e['basis'] for e in after).most_common(1)[0][0]}), {carried:.1f} carrying the cuff forward, "
        f"over {len(after)} estimates"
    ]


# What an estimate of each basis is worth, in the words a demo's viewer needs (wire/estimate.py: BASES).
WORTH = {
    "population": "the adult population's blood pressure, the same for everyone: not the wearer's",
    "age_sex": "the population's blood pressure at the wearer's age and sex: not the wearer's own",
    "ppg": "the network's reading of the PPG, uncalibrated",
    "cuff": "a cuff reading carried forward",
    "cuff+tracking": "a cuff reading moved by the pulse's change since",
}


def worth(estimates: Iterable[dict]) -> list[str]:
    """One line per basis the scored estimates rest on: how many, and what such a number is worth."""
    counts = Counter(e.get("basis") for e in estimates if e.get("ok") and e.get("basis"))
    lines = [f"what the numbers rest on: {', '.join(f'{b} {n}' for b, n in counts.most_common())}"] if counts else []
    lines += [f"  {b}: {WORTH.get(b, b)}" for b, _ in counts.most_common()]
    if counts and not any(b in CALIBRATED_BASES for b in counts):
        lines.append(
            "  none is calibrated: `p2p ctl calibrate DEVICE SBP DBP` with a cuff reading makes it the wearer's"
        )
    return lines


def simulate_wearer(ctx: zmq.Context, args: argparse.Namespace, stop: threading.Event, cuff: dict) -> None:
    """The simulated wearer: the fleet simulator's PPG and ECG, a cold-pressor-like course, a cuff reading (its true
    pressure then) sent as `calibrate` once `CALIBRATE_AT_S` of it have streamed, and kept in `cuff` once taken.
    Its own sockets (this thread's)."""
    from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig
    from p2p_stream.wire.protocol import decode_map, encode_ingest, pack

    fleet = Fleet(FleetConfig(devices=1, ids=(SIMULATED,), rates_hz=(125.0,), ecg=True, scenario="cold-pressor"))
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(args.ingest)
    try:
        wait_for_subscriber(pub, args.ingest, timeout_s=30)
    except P2PError:
        pub.close()
        return  # the replay's own wait says what is wrong
    start, t_wall0, calibrated = time.monotonic(), time.time(), False
    try:
        while not stop.is_set():
            for m in fleet.tick():
                pub.send_multipart(encode_ingest(m.device, m.seq, t_wall0 + m.t0, m.fs, m.ppg, ref=m.ref))
                pub.send_multipart(encode_ingest(m.device, m.seq, t_wall0 + m.t0, fleet.config.ecg_hz, m.ecg,
                                                 channel="ecg"))  # fmt: skip
            if not calibrated and fleet.t >= CALIBRATE_AT_S:
                sbp, dbp = (round(float(v[0]), 1) for v in fleet.bp(fleet.t))
                req = ctx.socket(zmq.REQ)
                req.setsockopt(zmq.LINGER, 0)
                req.connect(args.control)
                req.send(pack({"cmd": "calibrate", "device": SIMULATED, "sbp": sbp, "dbp": dbp}))
                calibrated = bool(req.poll(10_000)) and decode_map(req.recv()).get("ok", False)
                req.close()
                if calibrated:
                    cuff.update(sbp=sbp, dbp=dbp)
            stop.wait(max(0.0, start + fleet.t - time.monotonic()))
    finally:
        pub.close()


def model_constant(model: str | None) -> tuple[tuple[float, float], str] | None:
    """`population_mean` of the checkpoint the daemon runs (the shipped one by default); None if unreadable."""
    from p2p_stream.model.checkpoint import read_metadata  # torch comes with these: imported only for the summary
    from p2p_stream.model.estimator import default_model_path

    try:
        return population_mean(read_metadata(model or default_model_path()))
    except CheckpointError:
        return None


@command
def main(argv: list[str] | None = None, prog: str = "p2p-demo") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent_parser()],
    )
    p.add_argument(
        "--duration-s", type=float, metavar="SECONDS", help="stream this long, then stop and print a summary"
    )
    alias(p, "--duration", "duration_s", type=float)
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument(
        "--torch-device",
        default=Model().torch_device,
        help="where the daemon's model runs: cpu | cuda | cuda:N | auto (default %(default)s, the daemon's own)",
    )
    alias(p, "--device", "torch_device", new="--torch-device")
    p.add_argument("--model", help="checkpoint folder for the daemon (default: the shipped model)")
    daemon = Sockets()  # the daemon's own defaults (config/daemon.py), not a copy of them
    p.add_argument(
        "--ingest", default=daemon.ingest, metavar="ADDRESS", help="the daemon's ingest address (default %(default)s)"
    )
    p.add_argument(
        "--estimates",
        default=daemon.publish,
        metavar="ADDRESS",
        help="the daemon's estimates address (default %(default)s; old name: --publish)",
    )
    alias(p, "--publish", "estimates")
    p.add_argument(
        "--control",
        default=daemon.control,
        metavar="ADDRESS",
        help="the daemon's control address (default %(default)s)",
    )
    p.add_argument("--no-dashboard", action="store_true", help="no live view (the default when not on a terminal)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    for flag in ("ingest", "estimates", "control"):
        check_address(getattr(args, flag), f"--{flag}", p.get_default(flag))
    if len({args.ingest, args.estimates, args.control}) < 3:
        raise ConfigError(
            f"--ingest, --estimates and --control must differ, got {args.ingest}, {args.estimates} and {args.control}"
        )
    if args.speed <= 0 or (args.duration_s is not None and args.duration_s < 0):
        raise ConfigError(f"--speed must be > 0 and --duration-s ≥ 0, got {args.speed} and {args.duration_s}")
    console = Console()
    taken = probe.ping(args.control)  # another daemon there: ours cannot bind, and its answers are not ours
    log_path = Path(tempfile.mkstemp(prefix="p2p-demo-daemon-", suffix=".log")[1])
    console.print(f"starting p2p daemon (log: {log_path}) ...")
    daemon = start_daemon(args, log_path)
    stop = threading.Event()
    ctx = zmq.Context()
    try:
        if not wait_ready(daemon, args.control, READY_TIMEOUT_S, taken):
            if daemon.poll() is not None:
                reason = daemon_error(log_path.read_text())
            elif taken:
                reason = f"another daemon answers at {args.control}"
            else:
                reason = f"it did not answer at {args.control} within {READY_TIMEOUT_S:g} s"
            if "bind" in reason or "answers at" in reason:  # the demo's addresses are taken
                advice = (
                    "stop whatever uses the demo's addresses, or give it free ones (--ingest, --estimates, --control)"
                )
                reason += (" " + advice[0].upper() + advice[1:]) if reason.endswith("?") else f"; {advice}"
            raise P2PError(f"the daemon did not start: {reason} (its log: {log_path})")
        sub_ctx, sub = subscribe(args.estimates)
        state = DashboardState(args.estimates)
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(args.ingest)
        wait_for_subscriber(pub, args.ingest, timeout_s=30)
        cuff: dict = {}
        simulated = threading.Thread(target=simulate_wearer, args=(ctx, args, stop, cuff), daemon=True)
        simulated.start()
        feeds = fan_out(read_replay_csv(demo_recording()), 0)
        replay = threading.Thread(
            target=Replayer(feeds, pub, chunk=25, speed=args.speed, loop=True).run, kwargs={"stop": stop}, daemon=True
        )
        replay.start()
        console.print(
            f"replaying {len(feeds)} real PPG-BP subjects from {demo_recording().name}, and one simulated wearer "
            f"with ECG ({SIMULATED}: cuff-calibrated at {CALIBRATE_AT_S:g} s, its pressure rising 30 mmHg from "
            "30 s); Ctrl-C to stop"
        )
        try:
            if console.is_terminal and not args.no_dashboard:
                run_live(state, sub, console, args.duration_s)
            else:
                start = time.monotonic()
                while args.duration_s is None or time.monotonic() - start < args.duration_s:
                    pump(sub, state, 200)
        except KeyboardInterrupt:
            pass
        stop.set()
        replay.join(timeout=2)
        simulated.join(timeout=2)
        sub_ctx.destroy(linger=0)
        console.print(summary(state, model_constant(args.model), cuff))
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
