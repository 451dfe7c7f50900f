"""Sockets: the daemon's ZeroMQ side — ingest SUB, estimates PUB, control REP — bound with their limits, CURVE and
the socket monitors that report what never reaches our code (refused handshakes; behind a proxy, a lost link)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import zmq

from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.errors import ConfigError
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.ingest.bounds import CONTROL_HWM, CONTROL_MAX_BYTES, SUBSCRIPTION_MAX_BYTES, ingest_hwm
from p2p_stream.stream.security.curve import CurveServer
from p2p_stream.wire.protocol import MAX_FRAME_BYTES

log = logging.getLogger(__name__)


@dataclass
class Sockets:
    """The daemon's ZeroMQ side: ingest SUB, estimates PUB, control REP, and (with CURVE) their handshake monitors."""

    ctx: zmq.Context
    sub: zmq.Socket
    pub: zmq.Socket
    rep: zmq.Socket
    curve: CurveServer | None = None
    ingest_address: str = ""  # connected to, behind a proxy: connected again after a lost link
    monitors: list[zmq.Socket] = field(default_factory=list)  # ZeroMQ's socket monitors: refused handshakes

    def on_monitor_event(self, event: dict, counters: Counters, warn: RateLimitedLog) -> None:
        """A refused CURVE handshake, logged (rate-limited) with the endpoint and counted: `auth_failed` for a key
        that is not allowed, `handshake_failed` for a peer that does not speak CURVE (it retries, so it counts
        once per attempt). Or, behind a proxy, the ingest link lost: `_relink`."""
        if event.get("event") == zmq.EVENT_DISCONNECTED:  # only the connecting SUB's monitor asks for it
            self._relink(counters, warn)
            return
        auth = event.get("event") == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        counters.reject("auth_failed" if auth else "handshake_failed")
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        warn.warning(
            "auth_failed", "refused a client at %s: CURVE handshake failed (code %s): key not authorized "
            "or not a CURVE client", endpoint, event.get("value")
        )  # fmt: skip

    def _relink(self, counters: Counters, warn: RateLimitedLog) -> None:
        """The ingest SUB's connection to the proxy dropped: connect again, counted as `link_lost` and logged.

        ZeroMQ reconnects by itself after a network error, but not after a protocol error (a frame over
        MAXMSGSIZE from a proxy that does not enforce the limits): without this the shard would get nothing more.
        Connecting afresh is right in both cases; the SUB sends its subscriptions again on the new connection.
        """
        address = self.ingest_address
        counters.reject("link_lost")
        warn.warning("link_lost", "lost the ingest link to %s; connecting again", address)
        sub = self.sub
        try:
            sub.disconnect(address)  # drops ZeroMQ's own reconnect, if it is trying, so there is one link
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ENOENT:  # ENOENT: ZeroMQ has forgotten the endpoint already
                raise
        sub.connect(address)

    def close(self) -> None:
        if self.monitors:
            for sock in (self.sub, self.rep):
                sock.disable_monitor()
        for sock in (*self.monitors, self.sub, self.rep, self.pub):
            sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.term()


def bind(config: DaemonConfig, topics: list[bytes]) -> Sockets:
    """Open the three sockets on the configured addresses, the SUB subscribed to `topics` (the ingest router's
    prefixes); a ConfigError (and nothing left open) if one cannot."""
    ctx = zmq.Context()
    curve: CurveServer | None = None
    opened: list[zmq.Socket] = []
    s = config.sockets

    def open_socket(
        kind: int, address: str, key: str, secure: bool = False, options: dict | None = None, connect: bool = False
    ) -> zmq.Socket:
        """A socket bound to `address` (or connected to it, behind a p2p-proxy), options set before either."""
        sock = ctx.socket(kind)
        opened.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        if secure and curve is not None:
            curve.serve(sock)
        try:
            if connect:
                sock.connect(address)  # behind a p2p-proxy: the proxy binds, the shards connect
            else:
                sock.bind(address)
        except zmq.ZMQError as exc:
            raise ConfigError(f"{key}: cannot bind {address} ({exc}); is another daemon running there?") from exc
        return sock

    try:
        if config.security.curve_secret_key:
            curve = CurveServer(ctx, config.security)
        # Options go before bind: ZeroMQ applies them to connections made after they are set. Every queue is bounded
        # in bytes (stream/ingest/bounds.py): a frame over MAX_FRAME_BYTES makes ZeroMQ drop the sender's connection (up
        # to it, a payload over the protocol's limit reaches us and is counted `oversized`), and the high-water mark
        # holds at most limits.ingest_queue_mb of such messages per connection.
        sub = open_socket(
            zmq.SUB, s.ingest, "sockets.ingest", secure=True,
            options={zmq.RCVHWM: ingest_hwm(config), zmq.MAXMSGSIZE: MAX_FRAME_BYTES}, connect=s.connect,
        )  # fmt: skip
        # Every wearable: in a cluster, each daemon hears all and keeps those it owns (stream/cluster/ownership.py).
        for topic in topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        # Per subscriber: one that stops reading costs at most this many queued estimates, never the others' speed.
        # A subscription is a message to this socket: one longer than any topic (it could match nothing) drops the
        # subscriber's connection before ZeroMQ stores it (100,000 of 513 bytes once took 2.4 GB: docs/reliability.md).
        pub = open_socket(
            zmq.PUB, s.publish, "sockets.publish",
            options={zmq.SNDHWM: config.limits.publish_hwm, zmq.MAXMSGSIZE: SUBSCRIPTION_MAX_BYTES}, connect=s.connect,
        )  # fmt: skip
        # A control request is a small map: a bigger frame drops the requester's connection before it is held.
        rep = open_socket(
            zmq.REP, s.control, "sockets.control", secure=True,
            options={zmq.MAXMSGSIZE: CONTROL_MAX_BYTES, zmq.RCVHWM: CONTROL_HWM},
        )  # fmt: skip
    except BaseException:
        for sock in opened:
            sock.close(linger=0)
        if curve is not None:
            curve.stop()
        ctx.destroy(linger=0)
        raise
    sockets = Sockets(ctx, sub, pub, rep, curve, ingest_address=s.ingest)
    # ZeroMQ's socket monitors report what never reaches our code. Refused CURVE handshakes; and, behind a proxy,
    # a lost link: ZeroMQ does not reconnect after a protocol error (a frame over MAXMSGSIZE), so the loop does.
    handshakes = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )
    sub_events = (handshakes if curve is not None else 0) | (zmq.EVENT_DISCONNECTED if s.connect else 0)
    if sub_events:
        sockets.monitors.append(sub.get_monitor_socket(sub_events))
    if curve is not None:
        sockets.monitors.append(rep.get_monitor_socket(handshakes))
    return sockets
