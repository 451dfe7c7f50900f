"""The supervisor of `p2p cluster up`: start a `Plan`'s processes in order (Redis, the proxy, the daemons), restart
one that exits (backing off, giving up on one that keeps dying), stop them all in reverse order."""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from p2p_stream.errors import ConfigError
from p2p_stream.tools.cluster.plan import MAX_RESTART_DELAY_S, Child, Plan, Supervisor

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In each child before it runs (Linux): SIGTERM when the supervisor dies, even by SIGKILL, so none is orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


class Process:
    """One supervised child: started, watched, restarted with backoff, stopped."""

    def __init__(self, child: Child, sup: Supervisor) -> None:
        self.child, self.sup = child, sup
        self.proc: subprocess.Popen | None = None
        self.deaths: deque[float] = deque()  # when it died, within the last death_window_s
        self.restarts = 0
        self.restart_at: float | None = None
        self.given_up = False
        self.log_offset = 0

    def start(self) -> None:
        with open(self.child.log, "ab") as out:
            self.log_offset = out.tell()
            out.write(f"--- p2p cluster: {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.restarts}: "
                      f"{shlex.join(self.child.cmd)}\n".encode())  # fmt: skip
            out.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}  # rich wraps a file's lines at 80
            self.proc = subprocess.Popen(
                self.child.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.restart_at = None

    def output(self) -> str:
        """What it has written to its log since it was last started."""
        with open(self.child.log, "rb") as f:
            f.seek(self.log_offset)
            f.readline()  # our own line, the command
            return f.read().decode(errors="replace")

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        return lines[-1][:200] if lines else "(nothing)"

    def status(self) -> str:
        return f"  {self.child.name:<12} pid {self.proc.pid:<8} {self.child.address:<48} log {self.child.log}"

    def check(self, now: float) -> None:
        """Notice an exit (schedule a restart, or give up); restart when it is due."""
        if self.proc is not None and (code := self.proc.poll()) is not None:
            pid, self.proc = self.proc.pid, None
            self.deaths.append(now)
            while self.deaths and self.deaths[0] < now - self.sup.death_window_s:
                self.deaths.popleft()
            died = f"{self.child.name} (pid {pid}) exited with {exit_text(code)}; its log ends {self.last_line()!r}"
            if len(self.deaths) >= self.sup.max_deaths:
                self.given_up = True
                log.error("%s. It died %d times within %g s: NOT RESTARTING IT; see %s", died, len(self.deaths),
                          self.sup.death_window_s, self.child.log)  # fmt: skip
                return
            delay = min(MAX_RESTART_DELAY_S, self.sup.restart_delay_s * 2 ** (len(self.deaths) - 1))
            self.restart_at = now + delay
            log.warning("%s; restart %d in %.1f s", died, self.restarts + 1, delay)
        if self.proc is None and self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()
            log.warning("%s restarted (restart %d): pid %d", self.child.name, self.restarts, self.proc.pid)


def stop_all(groups: list[list[Process]], timeout_s: float) -> None:
    """SIGTERM each group (daemons, then proxy, then Redis), SIGKILL what is left of it after `timeout_s`."""
    for group in groups:
        running = [p for p in group if p.proc is not None and p.proc.poll() is None]
        for p in running:
            p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in running:
            try:
                code = p.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop within %g s: SIGKILL", p.child.name, p.proc.pid, timeout_s)
                p.proc.kill()
                code = p.proc.wait()
            log.info("%s (pid %d) stopped with %s", p.child.name, p.proc.pid, exit_text(code))


def wait_started(p: Process, ready, what: str, timeout_s: float = 20.0) -> None:
    """Wait until `ready()`; a child that exits first, or never gets there, is a start-up failure."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if p.proc.poll() is not None:
            why = p.last_line().removeprefix("error: ")
            raise ConfigError(
                f"{p.child.name} exited at start with {exit_text(p.proc.returncode)}: {why} (log {p.child.log})"
            )
        if time.monotonic() > deadline:
            raise ConfigError(f"{p.child.name} did not {what} within {timeout_s:g} s; see {p.child.log}")
        time.sleep(0.1)


def redis_answers(url: str) -> bool:
    try:
        import redis
    except ImportError as exc:
        raise ConfigError("cluster.redis needs the redis client: pip install -e '.[cluster]'") from exc
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def up(plan: Plan, source: Path) -> int:
    sup = plan.file.supervisor
    for folder in plan.folders:
        folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    redis = [Process(plan.redis, sup)] if plan.redis else []
    proxy = [Process(plan.proxy, sup)]
    daemons = [Process(c, sup) for c in plan.daemons]
    groups = [daemons, proxy, redis]  # the order they stop in
    try:
        if not redis:
            deadline = time.monotonic() + 10
            while not redis_answers(plan.redis_url):
                if time.monotonic() > deadline:
                    raise ConfigError(f"redis.url {plan.redis_url}: no answer within 10 s; start it, or start = true")
                time.sleep(0.2)
        for p in redis:
            p.start()
            wait_started(p, lambda: redis_answers(plan.redis_url), "answer PING")
        proxy[0].start()
        wait_started(proxy[0], lambda: "p2p-proxy:" in proxy[0].output(), "bind its addresses")
        for p in daemons:
            p.start()
        print(f"p2p cluster: {source}, logs in {sup.logs}; Ctrl-C or SIGTERM stops it", flush=True)
        for p in redis + proxy + daemons:
            print(p.status(), flush=True)
        while not stop.wait(0.2):
            now = time.monotonic()
            for p in redis + proxy + daemons:
                if not p.given_up:
                    p.check(now)
            if any(p.given_up for p in redis + proxy):
                log.error("Redis or the proxy is down for good: stopping the cluster")
                return 1
            if all(p.given_up for p in daemons):
                log.error("every daemon is down for good: stopping the cluster")
                return 1
        log.info("stopping: daemons, then the proxy, then Redis")
        return 0
    finally:
        stop_all(groups, sup.stop_timeout_s)
