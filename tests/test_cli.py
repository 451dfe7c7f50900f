"""The way in: one `p2p` command whose verbs are the tools, the old names as aliases, and one way to fail.

Each user's mistake runs the real console script (or `python -m`, or the script shim) as a user would, and must
end with exit status 2 and exactly one line on stderr, `error: ...`, never a traceback. Mistakes are chosen to
fail before torch is imported, so these stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq

from p2p_stream.config.addresses import check_address
from p2p_stream.errors import ConfigError
from p2p_stream.tools.cli.main import VERBS
from p2p_stream.tools.common import call

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_CSV = str(ROOT / "p2p_stream" / "assets" / "demo" / "ppg_bp_demo.csv")


def script(name: str) -> str:
    """A console script of this environment (`pip install -e .` makes them)."""
    path = BIN / name
    assert path.exists(), f"{path} is missing: reinstall the package (pip install -e .) to make its console scripts"
    return str(path)


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(out: subprocess.CompletedProcess, *expected: str) -> None:
    err = out.stderr.strip()
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), out.stderr
    for text in expected:
        assert text in err, (text, err)


def free_tcp_port() -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)
    ctx.term()
    return port


# ------------------------------------------------------------------------------------------------- one command


def test_p2p_help_lists_every_verb_with_its_line():
    out = run(script("p2p"), "--help")
    assert out.returncode == 0, out.stderr
    for verb, (_, text) in VERBS.items():
        assert verb in out.stdout and text.split()[0] in out.stdout
    verbs = "daemon monitor record ctl lsl demo train eval keys proxy cluster replay fleet convert"
    assert set(VERBS) == set(verbs.split())


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_its_help(verb, capsys):
    """In this process, as `p2p <verb> --help` runs it (`call` under the error handler, named `p2p <verb>`): the
    script itself is started by the tests around this one; fourteen interpreters loading torch would add ~35 s."""
    module = importlib.import_module(VERBS[verb][0])
    with pytest.raises(SystemExit) as exc:
        call(module.main, ["--help"], prog=f"p2p {verb}")
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert out.startswith("usage: p2p")
    assert "--log-level" in out  # the parent parser every verb shares


def test_an_unknown_or_missing_verb_is_argparse_s_error():
    for argv in (["bogus"], []):
        out = run(script("p2p"), *argv)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "daemon" in out.stderr and "monitor" in out.stderr  # what would be right: the verbs


@pytest.mark.parametrize(
    "cmd",
    [
        ["p2p-daemon"],
        ["p2p-monitor"],
        ["p2p-demo"],
        ["p2p-keys"],
        ["p2p-proxy"],
        ["p2p-eval"],
        ["p2p-train"],
        ["python", "daemon.py"],
        ["python", "simulators/replay.py"],
        ["python", "simulators/fleet.py"],
        ["python", "simulators/make_replay.py"],
    ],
)
def test_the_old_names_still_start(cmd):
    exe = sys.executable if cmd[0] == "python" else script(cmd[0])
    out = run(exe, *cmd[1:], "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_monitor_help_describes_the_dashboard_not_its_code():
    out = run(script("p2p"), "monitor", "--help")
    assert "dashboard" in out.stdout and "--estimates" in out.stdout and "--wait-s" in out.stdout
    assert "render(" not in out.stdout and "`Live`" not in out.stdout and "rich" not in out.stdout


def test_deprecated_flag_names_still_work():
    # --connect and --wait are the old names of the monitor's --estimates and --wait-s
    out = run(script("p2p-monitor"), "--connect", "ipc:///tmp/p2p-cli-nobody", "--once", "--wait", "0.2")
    assert out.returncode == 1 and "No daemon reachable at ipc:///tmp/p2p-cli-nobody" in out.stdout, out.stderr


# ------------------------------------------------------------------------------------------- one way to fail

NO_SCHEME = "has no scheme; give tcp://HOST:PORT, ipc://PATH or inproc://NAME"


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (["p2p", "monitor", "--estimates", "127.0.0.1:5556"], ["--estimates '127.0.0.1:5556'", NO_SCHEME]),
        (["p2p-monitor", "--connect", "127.0.0.1:5556"], ["--estimates '127.0.0.1:5556'", NO_SCHEME]),
        (["python", "simulators/replay.py", DEMO_CSV, "--connect", "127.0.0.1:5555"], ["--ingest", NO_SCHEME]),
        (["p2p", "replay", DEMO_CSV, "--ingest", "tcp://127.0.0.1:70000"], ["port '70000'", "1 to 65535"]),
        (["p2p", "fleet", "--ingest", "127.0.0.1:5555"], ["--ingest '127.0.0.1:5555'", NO_SCHEME]),
        (["python", "simulators/fleet.py", "--connect", "tcp://127.0.0.1"], ["needs a host and a port"]),
        (["p2p", "demo", "--ingest", "5555"], ["--ingest '5555'", NO_SCHEME]),
        (["p2p", "demo", "--control", "tcp://127.0.0.1:5555"], ["must differ"]),
        (["p2p-proxy", "--shards", "udp://127.0.0.1:5565"], ["--shards", "unknown scheme 'udp'"]),
        (["p2p", "replay", "no-such-recording.csv"], ["no-such-recording.csv"]),
        (["p2p", "fleet", "--curve-server-key", "keys/server.key"], ["go together", "give both"]),
        (["p2p", "fleet", "--duration-s", "-1"], ["--duration-s must be ≥ 0"]),
        (["p2p", "keys", "client", "../evil", "--dir", "/nonexistent"], ["must be 1-64 characters"]),
        (["p2p", "convert", "--dataset", "ppg_bp", "--data", "/nonexistent", "--out", "/tmp/x.csv"], ["/nonexistent"]),
        (["p2p", "daemon", "--ingest", "127.0.0.1:5555"], ["127.0.0.1:5555"]),
        (["p2p-daemon", "--ingest", "127.0.0.1:5555"], ["127.0.0.1:5555"]),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(cmd, expected):
    exe = [sys.executable] if cmd[0] == "python" else [script(cmd[0])]
    assert_one_line_error(run(*exe, *cmd[1:]), *expected)


def test_a_port_in_use_is_one_line_and_exit_2():
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    try:
        out = run(script("p2p"), "proxy", "--wearables", f"tcp://127.0.0.1:{port}")
    finally:
        squatter.close(0)
        ctx.term()
    assert_one_line_error(out, "--wearables: cannot bind", "give a free address")


def test_fleet_without_keys_against_a_curve_daemon_says_what_is_known():
    """A CURVE server drops our plaintext handshake: no subscription arrives; the error names the keys to give."""
    public, secret = zmq.curve_keypair()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)  # the daemon's ingest, CURVE on
    sub.curve_server = True
    sub.curve_secretkey = secret
    sub.curve_publickey = public
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        out = run(script("p2p"), "fleet", "--devices", "1", "--ingest", f"tcp://127.0.0.1:{port}", "--wait-s", "1")
    finally:
        sub.close(0)
        ctx.term()
    assert_one_line_error(out, "no subscription arrived", "within 1 s", "CURVE", "--curve-server-key")
    assert "no daemon subscribed" not in out.stderr


class Squatter:
    """Another daemon's sockets on the demo's addresses: ingest and estimates bound, control answering pings."""

    def __init__(self) -> None:
        from p2p_stream.wire.protocol import pack

        self.ctx = zmq.Context()
        self.stop = threading.Event()
        self.addresses = {}
        for name, kind in (("ingest", zmq.SUB), ("estimates", zmq.PUB), ("control", zmq.REP)):
            sock = self.ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            self.addresses[name] = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
            setattr(self, name, sock)
        self.pings = 0

        def answer() -> None:
            while not self.stop.is_set():
                if self.control.poll(50):
                    self.control.recv()
                    self.control.send(pack({"ok": True}))
                    self.pings += 1

        self.thread = threading.Thread(target=answer, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.ctx.destroy(linger=0)


def test_demo_with_its_ports_taken_fails_with_the_daemon_s_bind_error():
    squatter = Squatter()
    try:
        a = squatter.addresses
        flags = ["--ingest", a["ingest"], "--estimates", a["estimates"], "--control", a["control"]]
        out = run(script("p2p"), "demo", "--duration-s", "1", "--torch-device", "cpu", *flags, timeout=180)
    finally:
        squatter.close()
    assert_one_line_error(out, "the daemon did not start", "cannot bind", a["ingest"], "--ingest, --estimates")
    assert "devices: 0" not in out.stdout  # it no longer talks to the other daemon as if it were its own


def test_daemon_error_is_the_daemon_s_own_last_error_line():
    from p2p_stream.tools.demo import daemon_error

    log = "some warning\nerror: sockets.ingest: cannot bind tcp://127.0.0.1:5555 (in use)\n"
    assert daemon_error(log) == "sockets.ingest: cannot bind tcp://127.0.0.1:5555 (in use)"
    assert daemon_error("Traceback ...\nRuntimeError: boom\n") == "RuntimeError: boom"
    assert daemon_error("") == "it exited without a word"


# ---------------------------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:5555", "tcp://*:1", "tcp://[::1]:65535", "tcp://eth0:5555", "ipc:///tmp/x", "inproc://a"],
)
def test_addresses_zeromq_can_use_pass(address):
    assert check_address(address, "--ingest") == address


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1:5555", "has no scheme"),
        ("udp://127.0.0.1:5555", "unknown scheme 'udp'"),
        ("tcp://127.0.0.1", "needs a host and a port"),
        ("tcp://:5555", "needs a host and a port"),
        ("tcp://127.0.0.1:0", "port '0'"),
        ("tcp://127.0.0.1:65536", "port '65536'"),
        ("tcp://127.0.0.1:http", "port 'http'"),
        ("ipc://", "has no path"),
        ("inproc://", "has no name"),
    ],
)
def test_bad_addresses_name_the_flag_and_a_right_value(address, problem):
    with pytest.raises(ConfigError, match="^--estimates ") as caught:
        check_address(address, "--estimates", example="tcp://127.0.0.1:5556")
    assert problem in str(caught.value) and ("tcp://127.0.0.1:5556" in str(caught.value) or "give" in str(caught.value))


def test_keys_stay_out_of_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = run("git", "check-ignore", "-q", "keys/server.key_secret")
    assert out.returncode == 0, "keys/ must be in .gitignore: secret keys would show up as untracked files"


def test_a_deprecated_name_sets_the_same_setting():
    """The aliases are the new flags under another name, not a second setting."""
    from p2p_stream.tools.bridges.replay import add_publisher_args

    p = argparse.ArgumentParser()
    add_publisher_args(p)
    old = p.parse_args(["--connect", "ipc:///tmp/a", "--duration", "3"])
    new = p.parse_args(["--ingest", "ipc:///tmp/a", "--duration-s", "3"])
    assert vars(old) == vars(new)
    assert p.parse_args([]).ingest == "tcp://127.0.0.1:5555" and "--connect" not in p.format_usage()
