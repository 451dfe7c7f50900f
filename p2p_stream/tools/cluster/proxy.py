"""p2p proxy: the ingest tier across machines, on pyzmq's own proxy devices.

    wearables ──PUB──▶ [XSUB wearables | XPUB shards] ──SUB──▶ p2p-daemon × N
    subscribers ◀──SUB── [XPUB subscribers | XSUB estimates] ◀──PUB── p2p-daemon × N

Two XSUB/XPUB forwarders: wearables and subscribers keep the addresses they use with a single daemon; each daemon
runs with `sockets.connect = true`. The proxy takes every wearable's messages and passes each to the daemons
subscribed (in a cluster each keeps the devices it owns: stream/cluster/ownership.py); one that comes while no daemon is
subscribed is counted (`unowned`) and logged, rate-limited.

The ingest forwarder enforces the daemon's message limit before forwarding: a message whose frames together exceed
`MAX_FORWARD_BYTES` (what the daemon could accept at most) is dropped, counted and logged (rate-limited), and a
frame over the daemon's own `MAXMSGSIZE` never gets in (ZeroMQ drops that wearable's connection at the proxy). So
nothing one wearable sends can make ZeroMQ drop a shard's link, which carries every device of the shard. The
estimates forwarder is pyzmq's `ThreadProxy` (its loop in C); a subscription longer than any topic drops its
subscriber there, as on a daemon. Every queue is bounded in bytes (docs/reliability.md).

Security, as on a daemon (config/security.py, stream/security/curve.py): with `--curve-secret-key` and
`--authorized-keys` (the files `p2p keys init` and `p2p keys client` write) the wearables' side is a CURVE server
with the daemon's allow-list: a wearable whose key is not in the folder is refused at the handshake (logged,
rate-limited), and a message for a device id its key file's `devices` patterns do not match is dropped before it
is forwarded (counted, logged rate-limited). The proxy→daemon link carries no client key, so the daemons behind a
proxy run without CURVE and cannot check keys themselves: the proxy does it for them, but `limits.max_devices_per_key`
(which needs the device table) is not enforced behind a proxy. The shards, estimates and subscribers sides are
always plaintext. Any side that would be plaintext on an address other machines can reach (anything but loopback
or ipc://) is refused at start unless `--allow-remote-plaintext` accepts it, and then a warning names it.

    p2p keys init keys/ && p2p keys client watch-17 --dir keys/ --devices watch-17
    p2p proxy --wearables tcp://0.0.0.0:5555 --curve-secret-key keys/server.key_secret \\
              --authorized-keys keys/authorized --shards tcp://127.0.0.1:5565 \\
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
from zmq.utils.monitor import recv_monitor_message

from p2p_stream.config.addresses import check_address
from p2p_stream.config.daemon import Limits, Sockets
from p2p_stream.config.security import Security, is_local, plaintext, validate
from p2p_stream.errors import ConfigError
from p2p_stream.ids import DEVICE_MAX_BYTES
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.ingest.bounds import SUBSCRIPTION_MAX_BYTES, hwm_for_mb
from p2p_stream.stream.security.curve import CurveServer
from p2p_stream.stream.security.grants import recv_keyed
from p2p_stream.tools.common import command, parent_parser, setup_logging
from p2p_stream.wire.protocol import CHANNELS, INGEST_PREFIX, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

# The proxy's four addresses: the outer two are a single daemon's defaults (config/daemon.py), so wearables and
# dashboards need no change; the inner two are the proxy's own, declared here only.
DEFAULTS = {
    "wearables": Sockets().ingest,  # wearables connect their PUB here, as to a single daemon
    "shards": "tcp://127.0.0.1:5565",  # daemons connect their ingest SUB here
    "estimates": "tcp://127.0.0.1:5566",  # daemons connect their estimates PUB here
    "subscribers": Sockets().publish,  # dashboards and clients connect their SUB here, as to a single daemon
}
log = logging.getLogger(__name__)
# The largest ingest message a daemon can accept: a topic `ppg.<device>` and a payload of MAX_MESSAGE_BYTES.
# Anything larger the daemon would drop (`oversized`, `bad_device` or `bad_frames`): the proxy drops it first.
MAX_FORWARD_BYTES = MAX_MESSAGE_BYTES + len(INGEST_PREFIX) + DEVICE_MAX_BYTES
FORWARD_PER_POLL = 1000  # messages forwarded per wake-up before subscriptions get a turn
QUEUE_MB = Limits().ingest_queue_mb  # per connection, the daemon's default: each ingest HWM holds this many MB at most
SUBSCRIBER_HWM = Limits().publish_hwm  # estimates queued per subscriber (and per daemon), the daemon's default
SECURED = ("wearables",)  # the side CURVE serves when it is on; the daemons' and subscribers' sides stay plaintext
# What anyone who can reach a plaintext side can do, for the start-up warning.
EXPOSURE = {
    "wearables": "send PPG for any device",
    "shards": "read every wearable's PPG",
    "estimates": "publish forged estimates to every subscriber",
    "subscribers": "read every estimate",
}
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class IngestForwarder(threading.Thread):
    """XSUB (wearables) → XPUB (shards), dropping every message over `max_bytes`, and every message while no
    daemon is subscribed (`unowned`); the XSUB takes every ingest topic, the daemons' subscriptions are counted.

    A frame over the daemon's MAXMSGSIZE never gets in (ZeroMQ drops that wearable's connection at the proxy).
    With CURVE (`security.curve_secret_key`), the XSUB is a CURVE server with the daemon's key pair and allow-list
    (stream/security/curve.py's `CurveServer`): refused handshakes are logged and counted in `auth_failed`, and a
    message for a device its key's patterns do not match is dropped and counted in `unauthorized`.
    Sockets are made and bound by `bind()` in the caller's thread (a taken address fails there) and used only by
    this thread afterwards. `dropped` counts the messages refused for their size.
    """

    def __init__(
        self,
        wearables: str,
        shards: str,
        hwm: int,
        max_bytes: int = MAX_FORWARD_BYTES,
        security: Security | None = None,
    ) -> None:
        super().__init__(name="p2p-proxy-ingest", daemon=True)
        self.addresses, self.hwm, self.max_bytes = (wearables, shards), hwm, max_bytes
        self.security = security or Security()
        self.curve: CurveServer | None = None
        self.monitor: zmq.Socket | None = None
        self.dropped = 0  # messages over max_bytes
        self.unauthorized = 0  # messages for a device their key may not send for (with CURVE)
        self.auth_failed = 0  # refused CURVE handshakes (with CURVE)
        self.unowned = 0  # messages that came while no daemon was subscribed to take them
        self.subscriptions: dict[bytes, int] = {}  # topic → daemons subscribed to it now
        self.taken = False  # whether some daemon's subscription matches ingest topics
        self.stop_event = threading.Event()
        self.warn = RateLimitedLog(log, period_s=10.0)

    def bind(self) -> None:
        self.ctx = zmq.Context()
        try:
            if self.security.curve_secret_key:  # the authenticator runs before any wearable can connect
                self.curve = CurveServer(self.ctx, self.security)
            self.xsub, self.xpub = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB)
            for sock in (self.xsub, self.xpub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, self.hwm)
                sock.setsockopt(zmq.SNDHWM, self.hwm)
            self.xsub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)  # before bind: it applies to later connections
            # Every subscribe and unsubscribe, a daemon's going away included: the proxy counts the daemons that take
            # wearables' messages, so a message none takes is counted (`_subscription`, `_unowned`).
            self.xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
            if self.curve is not None:
                self.curve.serve(self.xsub)
                self.monitor = self.xsub.get_monitor_socket(HANDSHAKE_FAILED)
            for sock, address in zip((self.xsub, self.xpub), self.addresses):
                sock.bind(address)
            # The proxy takes every wearable's messages, daemons or not, so that one no daemon takes is counted here
            # (`unowned`) rather than dropped unseen at the wearable's own socket.
            for prefix in CHANNELS.values():  # PPG and the second channel, ECG
                self.xsub.send(b"\x01" + prefix)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the sockets, stop the authenticator, end the context (in this order: its thread uses the context)."""
        if self.monitor is not None:
            self.xsub.disable_monitor()
            self.monitor.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.destroy(linger=0)

    def may_send(self, user: str | None, topic: bytes) -> bool:
        """Whether the client key `user` (z85 text, with CURVE) may send for the device its topic `ppg.<device>`
        (or `ecg.<device>`) names: the daemon's own check (`KeyGrant.allows`, its key file's `devices` patterns). The
        daemon accepts a message only when its topic names the device of its payload, so checking the topic is
        enough."""
        grant = self.curve.keys.get(user) if self.curve is not None and user is not None else None
        if grant is None:
            return False
        if grant.regex is None:  # any device
            return True
        try:
            prefix = next((p for p in CHANNELS.values() if topic.startswith(p)), None)
            device = topic[len(prefix) :].decode("ascii") if prefix is not None else None
        except UnicodeDecodeError:
            return False  # no device id has such a byte
        return device is not None and grant.allows(device)

    def _refuse(self, user: str | None, topic: bytes) -> None:
        self.unauthorized += 1
        grant = self.curve.keys.get(user) if self.curve is not None and user is not None else None
        self.warn.warning(
            "unauthorized_device", "dropped a message for %r from key %s: not one of its devices (its key file's "
            "devices patterns): %d so far", topic[:80], grant.name if grant is not None else user, self.unauthorized
        )  # fmt: skip

    def _subscription(self, frames: list[bytes]) -> None:
        """A daemon's subscribe (b"\\x01topic") or unsubscribe (b"\\x00topic"), counted per topic: whether some
        daemon takes ingest topics now. Not passed upstream: the proxy takes every wearable's messages itself."""
        msg = frames[0] if len(frames) == 1 else b""
        if not msg or msg[0] > 1:
            return
        topic, n = msg[1:], self.subscriptions.get(msg[1:], 0)
        if msg[0] == 1:
            self.subscriptions[topic] = n + 1
        elif n > 1:
            self.subscriptions[topic] = n - 1
        else:
            self.subscriptions.pop(topic, None)
        self.taken = any(t.startswith(INGEST_PREFIX) or INGEST_PREFIX.startswith(t) for t in self.subscriptions)

    def _unowned(self) -> None:
        self.unowned += 1
        self.warn.warning(
            "unowned", "no daemon is subscribed to take the wearables' messages: %d dropped so far (are the daemons "
            "running, with --ingest at this proxy's shards address?)", self.unowned
        )  # fmt: skip

    def _on_monitor_event(self) -> None:
        event = recv_monitor_message(self.monitor)
        self.auth_failed += 1
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        self.warn.warning(
            "auth_failed", "refused a wearable at %s: CURVE handshake failed (code %s): key not authorized or not a "
            "CURVE client: %d so far", endpoint, event.get("value"), self.auth_failed
        )  # fmt: skip

    def run(self) -> None:
        xsub, xpub, monitor = self.xsub, self.xpub, self.monitor
        keyed = self.curve is not None  # with CURVE, each message's key too; without, the copying fast path
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self.stop_event.is_set():
                ready = dict(poller.poll(timeout=100))
                if xpub in ready:  # the daemons' subscriptions: who takes the wearables' messages
                    for _ in range(FORWARD_PER_POLL):
                        try:
                            self._subscription(xpub.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if xsub in ready:
                    for _ in range(FORWARD_PER_POLL):
                        try:
                            frames, user = (
                                recv_keyed(xsub, zmq.NOBLOCK) if keyed else (xsub.recv_multipart(zmq.NOBLOCK), None)
                            )
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
                        if keyed and not self.may_send(user, frames[0]):
                            self._refuse(user, frames[0])
                            continue
                        if not self.taken:
                            self._unowned()
                            continue
                        xpub.send_multipart(frames)
                if monitor is not None and monitor in ready:
                    self._on_monitor_event()
        finally:
            self.close()

    def stop(self) -> None:
        self.stop_event.set()


class Proxy:
    """Both forwarders, each in its own thread; `start()` returns once they are bound.

    `hwm`: messages queued per connection; by default the ingest side holds at most QUEUE_MB MB per connection and
    the estimates side SUBSCRIBER_HWM estimates (~4 MB at the default) per subscriber, as a daemon does. `security`:
    CURVE on the wearables' side when its `curve_secret_key` is set (checked beforehand by
    `config.security.validate`, as `main` does).
    """

    def __init__(
        self,
        wearables: str,
        shards: str,
        estimates: str,
        subscribers: str,
        hwm: int | None = None,
        security: Security | None = None,
    ) -> None:
        self.ingest = IngestForwarder(
            wearables, shards, hwm_for_mb(QUEUE_MB) if hwm is None else hwm, security=security
        )
        # Estimates to subscribers: pyzmq's forwarder, its loop in C; a subscription longer than any topic drops
        # its subscriber, as on a daemon's own estimates socket.
        self.estimates = ThreadProxy(zmq.XSUB, zmq.XPUB)
        self.estimates.daemon = True
        self.estimates.bind_in(estimates)
        self.estimates.bind_out(subscribers)
        for option in (zmq.RCVHWM, zmq.SNDHWM):
            self.estimates.setsockopt_in(option, SUBSCRIBER_HWM if hwm is None else hwm)
            self.estimates.setsockopt_out(option, SUBSCRIBER_HWM if hwm is None else hwm)
        self.estimates.setsockopt_out(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX_BYTES)

    @property
    def dropped(self) -> int:
        """Ingest messages dropped for their size."""
        return self.ingest.dropped

    @property
    def unauthorized(self) -> int:
        """Ingest messages dropped (with CURVE) for a device their key may not send for."""
        return self.ingest.unauthorized

    @property
    def auth_failed(self) -> int:
        """Wearables refused (with CURVE) at the handshake."""
        return self.ingest.auth_failed

    @property
    def unowned(self) -> int:
        """Ingest messages that came while no daemon was subscribed: no one owned them (logged, rate-limited)."""
        return self.ingest.unowned

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
    "wearables": "wearables connect their PUB here, as to a single daemon (CURVE with --curve-secret-key)",
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
    security = p.add_argument_group("security (as the daemon's [security] settings)")
    security.add_argument(
        "--curve-secret-key", default="", metavar="FILE",
        help="the server's secret key file (p2p keys init: keys/server.key_secret): CURVE on the wearables' side; "
        "default off",
    )  # fmt: skip
    security.add_argument(
        "--authorized-keys", default="", metavar="DIR",
        help="folder of client public keys allowed in (keys/authorized), each naming the device ids it may send for "
        "(p2p keys client NAME --devices PATTERNS adds one)",
    )  # fmt: skip
    security.add_argument(
        "--allow-remote-plaintext", action="store_true",
        help="accept a plaintext side (every side without CURVE) on an address other machines can reach; refused "
        "otherwise",
    )  # fmt: skip
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    for name, default in DEFAULTS.items():
        check_address(getattr(args, name), f"--{name}", example=default)
    addresses = {name: getattr(args, name) for name in DEFAULTS}
    if len(set(addresses.values())) < len(addresses):
        raise ConfigError(
            f"--wearables, --shards, --estimates and --subscribers must differ, got {list(addresses.values())}"
        )
    config = Security(args.curve_secret_key, args.authorized_keys, args.allow_remote_plaintext)
    validate(config, addresses, secured=SECURED, flags=True)  # the daemon's rules, named as this tool's flags
    for name in DEFAULTS:
        check_free(getattr(args, name), f"--{name}")
    proxy = Proxy(args.wearables, args.shards, args.estimates, args.subscribers, security=config)
    try:
        proxy.start()
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"cannot bind the proxy's addresses ({exc}); stop the other proxy or daemon using them, or give free ones"
        ) from exc
    exposed = {k: a for k, a in plaintext(config, addresses, SECURED).items() if not is_local(a)}
    if exposed:  # accepted with --allow-remote-plaintext: say what it costs
        where = ", ".join(f"--{k} {a}" for k, a in exposed.items())
        log.warning("exposed without authentication: %s; anyone who can reach them can %s", where,
                    ", ".join(EXPOSURE[k] for k in exposed))  # fmt: skip
    print(f"p2p-proxy: wearables {args.wearables} ({'CURVE' if config.curve_secret_key else 'plaintext'}) → shards "
          f"{args.shards}; estimates {args.estimates} → subscribers {args.subscribers}", flush=True)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
