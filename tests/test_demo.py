"""The one-command demo, non-interactive: daemon + bundled real recordings + subscriber, then a summary."""

import subprocess
import sys

from zmq_helpers import ipc_addresses


def run_demo(*args: str) -> subprocess.CompletedProcess:
    """`p2p-demo` on private ipc:// addresses, non-interactive."""
    with ipc_addresses() as a:
        cmd = [sys.executable, "-m", "p2p_stream.demo", *args,
               "--ingest", a["ingest"], "--publish", a["publish"], "--control", a["control"]]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={"COLUMNS": "200", "PATH": ""})


def test_demo_runs_by_itself_and_summarises():
    out = run_demo("--duration", "12", "--speed", "2", "--device", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "devices: 8" in out.stdout
    assert "mean absolute error against the cuff references: SBP" in out.stdout
    estimates = int(out.stdout.split("estimates: ")[1].split()[0])
    assert estimates >= 8 * 3  # at 2x for 12 s: about 11 windows per device


def test_demo_reports_a_daemon_that_cannot_start():
    out = run_demo("--duration", "1", "--device", "tpu")
    assert out.returncode == 2
    assert "the daemon did not start" in out.stdout and "model.device must be" in out.stdout
