"""The one-command demo, non-interactive: daemon + bundled real recordings + subscriber, then a summary."""

import subprocess
import sys

from zmq_helpers import ipc_addresses


def test_demo_runs_by_itself_and_summarises():
    with ipc_addresses() as a:
        cmd = [
            sys.executable,
            "-m",
            "p2p_stream.demo",
            "--duration",
            "12",
            "--speed",
            "2",
            "--device",
            "cpu",
            "--ingest",
            a["ingest"],
            "--publish",
            a["publish"],
            "--control",
            a["control"],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={"COLUMNS": "200", "PATH": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "devices: 8" in out.stdout
    assert "mean absolute error against the cuff references: SBP" in out.stdout
    estimates = int(out.stdout.split("estimates: ")[1].split()[0])
    assert estimates >= 8 * 3  # at 2x for 12 s: about 11 windows per device


def test_demo_reports_a_daemon_that_cannot_start():
    with ipc_addresses() as a:
        cmd = [
            sys.executable,
            "-m",
            "p2p_stream.demo",
            "--duration",
            "1",
            "--device",
            "tpu",
            "--ingest",
            a["ingest"],
            "--publish",
            a["publish"],
            "--control",
            a["control"],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""})
    assert out.returncode == 2
    assert "the daemon did not start" in out.stdout and "model.device must be" in out.stdout
