"""`p2p cluster`: one file runs N daemons + p2p-proxy + Redis (tools/cluster/up.py, configs/cluster.toml).

`check` prints the plan of a good file and starts nothing; a broken one is refused in one line, exit 2, naming the
key. `up` starts redis-server, the proxy and two daemons that estimate a fleet between them; a daemon killed with -9
is restarted (logged) and estimates again; SIGTERM stops every process it started, none left behind. Real processes:
redis-server on a unix socket, the proxy and the daemons on ipc:// addresses, the fleet simulator.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from zmq_helpers import Subscriber, logged_process, wait_ready

from p2p_stream.tools.cli.main import main as p2p
from p2p_stream.tools.cluster.plan import Child, Supervisor
from p2p_stream.tools.cluster.supervisor import Process

ROOT = Path(__file__).resolve().parents[1]
P2P = str(Path(sys.executable).parent / "p2p")

# A good file, table by table; "{d}" is the test's folder. Redis is one that runs already, so `check` needs none.
TABLES = {
    "supervisor": 'logs = "{d}/logs"\nrestart_delay_s = 0.5\nstop_timeout_s = 5.0',
    "proxy": 'wearables = "ipc://{d}/w"\nshards = "ipc://{d}/s"\nestimates = "ipc://{d}/e"\nsubscribers = "ipc://{d}/sub"',
    "redis": 'start = false\nurl = "unix://{d}/redis.sock"',
    "daemons": 'ids = ["a", "b"]\ncontrol = "ipc://{d}/{id}.ctl"',
    "daemon": 'windowing.window_s = 4.0\nwindowing.hop_s = 1.0\nmodel.torch_device = "cpu"\nmodel.threads = 1\n'
    'cluster.lease_s = 2.0\nstate.path = "{d}/state.db"',
}


def cluster_file(folder: str, **tables: str) -> Path:
    """The good file with some tables replaced (or extended: pass the good table's text plus a line)."""
    text = "\n".join(f"[{name}]\n{body}\n" for name, body in {**TABLES, **tables}.items())
    path = Path(folder) / "cluster.toml"
    path.write_text(text.replace("{d}", folder))
    return path


@pytest.fixture()
def folder() -> str:
    path = tempfile.mkdtemp(prefix="p2pu")  # ipc:// and unix socket paths must stay short (about 100 bytes)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_check_on_the_shipped_example_prints_the_plan_and_starts_nothing():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (the example starts one): apt-get install redis-server")
    out = subprocess.run([P2P, "cluster", "check", "configs/cluster.toml"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for text in ("valid", "redis-server", "proxy", "daemon a", "daemon b", "sockets.connect=true", 'cluster.id="b"'):
        assert text in out.stdout, text


def test_check_prints_each_daemon_s_command_and_creates_nothing(folder, capsys):
    assert p2p(["cluster", "check", str(cluster_file(folder))]) == 0
    out = capsys.readouterr().out
    assert "Redis at unix://" in out and "running already" in out
    assert f'sockets.control="ipc://{folder}/b.ctl"' in out and "windowing.window_s=4.0" in out
    assert not Path(folder, "logs").exists()


BROKEN = {
    "unknown key": ({"proxy": 'wearable = "tcp://127.0.0.1:5555"'}, "unknown key proxy.wearable", "did you mean"),
    "bad address": ({"proxy": 'shards = "tcp://127.0.0.1:70000"'}, "proxy.shards", "port"),
    "control without a scheme": ({"daemons": 'ids = ["a"]\ncontrol = "/tmp/{id}.ctl"'}, "daemons.control", "ipc://"),
    "one control for all": ({"daemons": 'count = 2\ncontrol = "ipc:///tmp/x.ctl"'}, "daemons.control", "{id}"),
    "duplicate ids": ({"daemons": 'ids = ["a", "b", "a"]\ncontrol = "ipc:///tmp/{id}"'}, "duplicate ids ['a']"),
    "count and ids": ({"daemons": 'count = 2\nids = ["a"]'}, "[daemons]", "one of them"),
    "duplicate ports": (
        {
            "proxy": 'subscribers = "tcp://127.0.0.1:5571"',
            "daemons": 'count = 2\ncontrol = "tcp://127.0.0.1:{port}"\ncontrol_port = 5570',
        },
        "proxy.subscribers and daemon d2's control both use port 5571",
    ),  # fmt: skip
    "a daemon setting out of range": ({"daemon": "windowing.window_s = 1.0"}, "daemon a: windowing.window_s must be"),
    "an unknown daemon setting": ({"daemon": "windowing.windw_s = 4.0"}, "daemon a: unknown key windowing.windw_s"),
    "a setting the cluster sets": ({"daemon": 'cluster.id = "x"'}, "daemon.cluster.id is set by the cluster"),
    "redis both ways": ({"redis": 'unixsocket = "/tmp/r.sock"\nurl = "redis://127.0.0.1:6379"'}, "not both"),
    "redis neither way": ({"redis": "start = false"}, "redis: give url"),
    "not TOML": ({"daemons": "ids = ["}, "invalid TOML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_a_broken_file_in_one_line_naming_the_key(case, folder, capsys):
    tables, *expected = BROKEN[case]
    assert p2p(["cluster", "check", str(cluster_file(folder, **tables))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for text in expected:
        assert text in err, (text, err)


# ------------------------------------------------------------------------------------------------ up, for real


def test_a_process_that_keeps_dying_is_restarted_with_backoff_then_left_down(folder, caplog):
    """Real processes that exit at once: restarted, each death logged with its exit status and a growing delay, until
    `max_deaths` within `death_window_s`; then not restarted again, said as an error."""
    child = Child(
        "daemon z", [sys.executable, "-c", "import sys; print('no model'); sys.exit(3)"], Path(folder, "z.log"), ""
    )
    p = Process(child, Supervisor(restart_delay_s=0.1, max_deaths=3, death_window_s=60.0))
    p.start()
    deadline = time.monotonic() + 20
    while not p.given_up:
        assert time.monotonic() < deadline, caplog.text
        p.check(time.monotonic())
        time.sleep(0.02)
    assert p.restarts == 2 and p.proc is None
    deaths = [r.getMessage() for r in caplog.records if "exited with status 3" in r.getMessage()]
    assert len(deaths) == 3 and all("its log ends 'no model'" in d for d in deaths), deaths
    assert "restart 1 in 0.1 s" in deaths[0] and "restart 2 in 0.2 s" in deaths[1]  # doubled
    assert "died 3 times within 60 s: NOT RESTARTING IT" in deaths[2]
    assert Path(folder, "z.log").read_text().count("--- p2p cluster:") == 3  # one log, every start


STATUS = re.compile(r"^\s+(redis|proxy|daemon \S+)\s+pid (\d+)", re.MULTILINE)
RESTARTED = re.compile(r"daemon b restarted \(restart 1\): pid (\d+)")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(what, timeout_s: float, message) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.1)


def test_up_runs_the_cluster_restarts_a_killed_daemon_and_sigterm_stops_every_process(folder):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: apt-get install redis-server (make test does, as root)")
    redis = 'start = true\nunixsocket = "{d}/redis.sock"\ndir = "{d}/redis"'
    path = cluster_file(folder, redis=redis)
    devices = {f"sim{n:05d}" for n in range(10)}
    with logged_process([P2P, "cluster", "up", str(path)], split=True) as up:
        report = lambda: f"stdout:\n{up.output()}\nstderr:\n{up.log()}"  # noqa: E731
        wait_for(lambda: len(STATUS.findall(up.output())) == 4, 30, report)
        pids = {name: int(pid) for name, pid in STATUS.findall(up.output())}
        assert set(pids) == {"redis", "proxy", "daemon a", "daemon b"}
        for name in ("a", "b"):
            wait_ready(f"ipc://{folder}/{name}.ctl", 60)
        sub = Subscriber(f"ipc://{folder}/sub")
        cmd = [sys.executable, "simulators/fleet.py", "--devices", "10", "--ingest", f"ipc://{folder}/w",
               "--rates", "125", "--chunk-s", "0.2", "--wait-s", "60"]  # fmt: skip
        fleet = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Every device estimated, each by one of the two daemons, both at work.
            sub.collect(lambda g: {e["device"] for _, e in g} == devices and len({e["daemon"] for _, e in g}) == 2, 45)
            assert {e["daemon"] for _, e in sub.got} == {"a", "b"}

            b_epoch = max(e["epoch"] for _, e in sub.got if e["daemon"] == "b")  # b's start, kept in the state store
            os.kill(pids["daemon b"], signal.SIGKILL)
            wait_for(lambda: RESTARTED.search(up.log()), 15, report)
            assert f"daemon b (pid {pids['daemon b']}) exited with signal SIGKILL" in up.log()
            new_b = int(RESTARTED.search(up.log()).group(1))
            assert new_b != pids["daemon b"] and alive(new_b)
            # It rejoins under its id: estimates from b again, from its new start.
            sub.collect(lambda g: any(e["daemon"] == "b" and e["epoch"] > b_epoch for _, e in g), 45)
        finally:
            fleet.kill()
            fleet.wait(10)
            sub.close()

        stopping = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(15) == 0, report()
        assert time.monotonic() - stopping < 10, report()
        stopped = re.findall(r"^(redis|proxy|daemon \S+) \(pid \d+\) stopped", up.log(), re.MULTILINE)
        assert stopped in (["daemon a", "daemon b", "proxy", "redis"], ["daemon b", "daemon a", "proxy", "redis"])
    for name, pid in {**pids, "daemon b again": new_b}.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived p2p cluster up"
    logs = Path(folder, "logs")
    assert sorted(p.name for p in logs.iterdir()) == ["daemon-a.log", "daemon-b.log", "proxy.log", "redis.log"]
    assert "start 1:" in (logs / "daemon-b.log").read_text()  # one log per process, across its restarts
