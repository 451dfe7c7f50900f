"""The shared daemon probes on real loopback sockets: `ping`/`wait_ready` and `wait_for_subscriber`."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import zmq
from zmq_helpers import ipc_addresses

from p2p_stream.errors import P2PError
from p2p_stream.wire import probe
from p2p_stream.wire.protocol import decode_map, pack


def answer_pings(ctx: zmq.Context, address: str, reply: dict, stop: threading.Event) -> threading.Thread:
    """A REP on `address` that answers every request with `reply` until `stop`."""
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(address)

    def serve() -> None:
        while not stop.is_set():
            if rep.poll(50):
                assert decode_map(rep.recv()) == {"cmd": "ping"}
                rep.send(pack(reply))
        rep.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("reply,ready", [({"ok": True}, True), ({"ok": False, "error": "x"}, False)])
def test_ready_only_when_ping_says_ok(reply, ready):
    ctx, stop = zmq.Context(), threading.Event()
    with ipc_addresses() as a:
        thread = answer_pings(ctx, a["control"], reply, stop)
        try:
            assert probe.ping(a["control"]) is ready
            assert probe.wait_ready(a["control"], timeout_s=1.0) is ready
        finally:
            stop.set()
            thread.join(5)
            ctx.term()


def test_nobody_there_is_not_ready_and_a_dead_process_ends_the_wait():
    with ipc_addresses() as a:
        assert probe.wait_ready(a["control"], timeout_s=0.3) is False
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        assert probe.wait_ready(a["control"], timeout_s=600, proc=proc) is False  # returns at once, not in 10 min


def test_wait_for_subscriber_returns_on_a_subscription_and_gives_up_clearly():
    ctx = zmq.Context()
    with ipc_addresses() as a:
        try:
            pub = ctx.socket(zmq.XPUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.bind(a["ingest"])
            with pytest.raises(P2PError, match=f"no daemon subscribed at {a['ingest']} within 0.3 s"):
                probe.wait_for_subscriber(pub, a["ingest"], timeout_s=0.3)
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(a["ingest"])
            sub.setsockopt(zmq.SUBSCRIBE, b"ppg.")
            probe.wait_for_subscriber(pub, a["ingest"], timeout_s=30)
        finally:
            ctx.destroy(linger=0)
