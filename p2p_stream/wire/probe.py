"""Probe: is a daemon up (it answers `ping` on its control socket), and has it subscribed to our ingest publisher?

The one copy of these checks, for whatever starts or feeds a daemon from outside: the tools (demo, replay, fleet),
the tests and the benchmarks.
"""

from __future__ import annotations

import logging
import subprocess
import time

import zmq

from p2p_stream.errors import P2PError, ProtocolError
from p2p_stream.wire.protocol import decode_map, pack

log = logging.getLogger(__name__)
PING_WAIT_S = 0.5  # how long one ping waits for its reply before a fresh one is sent


def ping(control: str, timeout_s: float = PING_WAIT_S, ctx: zmq.Context | None = None) -> bool:
    """One `ping` on a fresh REQ socket to the control address: whether `{"ok": true}` came back within `timeout_s`."""
    own = ctx is None
    ctx = ctx or zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    try:
        req.connect(control)
        req.send(pack({"cmd": "ping"}))
        if not req.poll(int(timeout_s * 1000)):
            return False
        try:
            return decode_map(req.recv()).get("ok") is True
        except ProtocolError:
            return False
    finally:
        req.close()
        if own:
            ctx.term()


def wait_ready(control: str, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """Ping the control address until the daemon answers (True), or time runs out or `proc` exits (False)."""
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (proc is None or proc.poll() is None):
            if ping(control, min(PING_WAIT_S, max(0.01, deadline - time.monotonic())), ctx):
                return True
        return False
    finally:
        ctx.term()


def wait_for_subscriber(sock: zmq.Socket, address: str, timeout_s: float | None) -> None:
    """Block until the daemon's SUB has subscribed through our XPUB `sock` (its subscription message arrives).

    Until then whatever we publish is dropped (ZeroMQ's slow joiner). Logs a note every 5 s while waiting; raises
    P2PError after `timeout_s` (None: wait for ever).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    next_note = time.monotonic() + 2.0
    while True:
        if sock.poll(200):
            if sock.recv()[:1] == b"\x01":
                return
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise P2PError(f"no daemon subscribed at {address} within {timeout_s} s")
        if now >= next_note:
            log.warning("waiting for a daemon at %s ...", address)
            next_note = now + 5.0
