"""p2p proxy: the ingest tier across machines, on pyzmq's own proxy devices.

    wearables ──PUB──▶ [XSUB wearables | XPUB shards] ──SUB──▶ p2p-daemon × N (each subscribes its prefixes)
    subscribers ◀──SUB── [XPUB subscribers | XSUB estimates] ◀──PUB── p2p-daemon × N

Two XSUB/XPUB forwarders: wearables and subscribers keep the addresses they use with a single daemon; each daemon
runs with `sockets.connect = true` and a `sockets.prefixes` shard, and subscriptions flow upstream, so a wearable's
messages reach only the daemon whose prefix matches its topic.

The ingest forwarder enforces the daemon's message limit before forwarding: a message whose frames together exceed
`MAX_FORWARD_BYTES` (what the daemon could accept at most) is dropped, counted and logged (rate-limited), and a
frame over the daemon's own `MAXMSGSIZE` never gets in (ZeroMQ drops that wearable's connection at the proxy). So
nothing one wearable sends can make ZeroMQ drop a shard's link, which carries every device of the shard. The
estimates forwarder is pyzmq's `ThreadProxy` (its loop in C); a subscription longer than any topic drops its
subscriber there, as on a daemon. Every queue is bounded in bytes (docs/reliability.md).

    p2p proxy --wearables tcp://0.0.0.0:5555 --shards tcp://127.0.0.1:5565 \
              --estimates tcp://127.0.0.1:5566 --subscribers tcp://127.0.0.1:5556
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

import zmq
from zmq.devices import ThreadProxy

from p2p_stream.config.addresses import check_address
from p2p_stream.errors import ConfigError
from p2p_stream.stream.bounds import SUBSCRIPTION_MAX_BYTES, hwm_for_mb
from p2p_stream.stream.protocol import DEVICE_MAX_BYTES, INGEST_PREFIX, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from p2p_stream.stream.ratelimit import RateLimitedLog
from p2p_stream.tools.common import command, parent_parser, setup_logging

DEFAULTS = {
    "wearables": "tcp://127.0.0.1:5555",  # wearables connect their PUB here, as to a single daemon
    "shards": "tcp://127.0.0.1:5565",  # daemons connect their ingest SUB here
    "estimates": "tcp://127.0.0.1:5566",  # daemons connect their estimates PUB here
    "subscribers": "tcp://127.0.0.1:5556",  # dashboards and clients connect their SUB here
}
log = logging.getLogger(__name__)
# The largest ingest message a daemon can accept: a topic `ppg.<device>` and a payload of MAX_MESSAGE_BYTES.
# Anything larger the daemon would drop (`oversized`, `bad_device` or `bad_frames`): the proxy drops it first.
MAX_FORWARD_BYTES = MAX_MESSAGE_BYTES + len(INGEST_PREFIX) + DEVICE_MAX_BYTES
FORWARD_PER_POLL = 1000  # messages forwarded per wake-up before subscriptions get a turn
QUEUE_MB = 256  # per connection, as the daemon's limits.ingest_queue_mb: each socket's HWM holds this many MB at most


class IngestForwarder(threading.Thread):
    """XSUB (wearables) → XPUB (shards), dropping every message over `max_bytes`; subscriptions flow back.

    A frame over the daemon's MAXMSGSIZE never gets in (ZeroMQ drops that wearable's connection at the proxy).
    Sockets are made and bound by `bind()` in the caller's thread (a taken address fails there) and used only by
    this thread afterwards. `dropped` counts the messages refused for their size.
    """

    def __init__(self, wearables: str, shards: str, hwm: int, max_bytes: int = MAX_FORWARD_BYTES) -> None:
        super().__init__(name="p2p-proxy-ingest", daemon=True)
        self.addresses, self.hwm, self.max_bytes = (wearables, shards), hwm, max_bytes
        self.dropped = 0
        self.stop_event = threading.Event()
        self.warn = RateLimitedLog(log, period_s=10.0)

    def bind(self) -> None:
        self.ctx = zmq.Context()
        self.xsub, self.xpub = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self.hwm)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
        self.xsub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)  # before bind: it applies to later connections
        try:
            for sock, address in zip((self.xsub, self.xpub), self.addresses):
                sock.bind(address)
        except zmq.ZMQError:
            self.ctx.destroy(linger=0)
            raise

    def run(self) -> None:
        xsub, xpub = self.xsub, self.xpub
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        try:
            while not self.stop_event.is_set():
                ready = dict(poller.poll(timeout=100))
                if xpub in ready:  # subscriptions from the shards, upstream to the wearables
                    for _ in range(FORWARD_PER_POLL):
                        try:
                            xsub.send_multipart(xpub.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if xsub in ready:
                    for _ in range(FORWARD_PER_POLL):
                        try:
                            frames = xsub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        size = sum(len(f) for f in frames)
                        if size > self.max_bytes:
                            self.dropped += 1
                            self.warn.warning(
                                "oversized", "dropped an oversized message (%d bytes in %d frames, topic %r; "
                                "limit %d): %d so far", size, len(frames), frames[0][:80], self.max_bytes, self.dropped
                            )  # fmt: skip
                            continue
                        xpub.send_multipart(frames)
        finally:
            self.ctx.destroy(linger=0)

    def stop(self) -> None:
        self.stop_event.set()


class Proxy:
    """Both forwarders, each in its own thread; `start()` returns once they are bound.

    `hwm`: messages queued per connection; by default the ingest side holds at most QUEUE_MB MB per connection and
    the estimates side 10,000 estimates (~4 MB) per subscriber.
    """

    def __init__(self, wearables: str, shards: str, estimates: str, subscribers: str, hwm: int | None = None) -> None:
        self.ingest = IngestForwarder(wearables, shards, hwm_for_mb(QUEUE_MB) if hwm is None else hwm)
        # Estimates to subscribers: pyzmq's forwarder, its loop in C; a subscription longer than any topic drops
        # its subscriber, as on a daemon's own estimates socket.
        self.estimates = ThreadProxy(zmq.XSUB, zmq.XPUB)
        self.estimates.daemon = True
        self.estimates.bind_in(estimates)
        self.estimates.bind_out(subscribers)
        for option in (zmq.RCVHWM, zmq.SNDHWM):
            self.estimates.setsockopt_in(option, 10_000 if hwm is None else hwm)
            self.estimates.setsockopt_out(option, 10_000 if hwm is None else hwm)
        self.estimates.setsockopt_out(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX_BYTES)

    @property
    def dropped(self) -> int:
        """Ingest messages dropped for their size."""
        return self.ingest.dropped

    def start(self) -> None:
        self.ingest.bind()
        self.ingest.start()
        self.estimates.start()
        time.sleep(0.2)  # a failed bind ends the estimates device's thread at once
        if not self.estimates.launcher.is_alive():
            self.ingest.stop()
            raise zmq.ZMQError(zmq.EADDRINUSE, msg="a proxy socket could not bind")


def check_free(address: str, flag: str) -> None:
    """Refuse a tcp:// address something else has bound, naming the flag (the forwarders bind in their threads)."""
    if not address.startswith("tcp://"):
        return  # binding an ipc:// path to test it would unlink another process's socket file
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"{flag}: cannot bind {address} ({exc.strerror}); stop the other proxy or daemon using it, or give a free "
            "address"
        ) from exc
    finally:
        sock.close()
        ctx.term()


HELP = {
    "wearables": "wearables connect their PUB here, as to a single daemon",
    "shards": "daemons connect their ingest SUB here",
    "estimates": "daemons connect their estimates PUB here",
    "subscribers": "dashboards and clients connect their SUB here",
}


@command
def main(argv: list[str] | None = None, prog: str = "p2p-proxy") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[parent_parser()]
    )
    for name, default in DEFAULTS.items():
        p.add_argument(f"--{name}", default=default, metavar="ADDRESS", help=f"{HELP[name]} (default {default})")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    for name, default in DEFAULTS.items():
        check_address(getattr(args, name), f"--{name}", example=default)
    addresses = [getattr(args, name) for name in DEFAULTS]
    if len(set(addresses)) < len(addresses):
        raise ConfigError(f"--wearables, --shards, --estimates and --subscribers must differ, got {addresses}")
    for name in DEFAULTS:
        check_free(getattr(args, name), f"--{name}")
    proxy = Proxy(args.wearables, args.shards, args.estimates, args.subscribers)
    try:
        proxy.start()
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"cannot bind the proxy's addresses ({exc}); stop the other proxy or daemon using them, or give free ones"
        ) from exc
    print(f"p2p-proxy: wearables {args.wearables} → shards {args.shards}; estimates {args.estimates} → "
          f"subscribers {args.subscribers}", flush=True)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
