"""p2p proxy: the ingest tier across machines, on pyzmq's own proxy devices.

    wearables ──PUB──▶ [XSUB wearables | XPUB shards] ──SUB──▶ p2p-daemon × N (each subscribes its prefixes)
    subscribers ◀──SUB── [XPUB subscribers | XSUB estimates] ◀──PUB── p2p-daemon × N

Two XSUB/XPUB forwarders (`zmq.devices.ThreadProxy`): wearables and subscribers keep the addresses they use
with a single daemon; each daemon runs with `sockets.connect = true` and a `sockets.prefixes` shard, and
subscriptions flow upstream, so a wearable's messages reach only the daemon whose prefix matches its topic.

    p2p proxy --wearables tcp://0.0.0.0:5555 --shards tcp://127.0.0.1:5565 \
              --estimates tcp://127.0.0.1:5566 --subscribers tcp://127.0.0.1:5556
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import zmq
from zmq.devices import ThreadProxy

from p2p_stream.config.addresses import check_address
from p2p_stream.errors import ConfigError
from p2p_stream.tools.common import command, parent_parser, setup_logging

DEFAULTS = {
    "wearables": "tcp://127.0.0.1:5555",  # wearables connect their PUB here, as to a single daemon
    "shards": "tcp://127.0.0.1:5565",  # daemons connect their ingest SUB here
    "estimates": "tcp://127.0.0.1:5566",  # daemons connect their estimates PUB here
    "subscribers": "tcp://127.0.0.1:5556",  # dashboards and clients connect their SUB here
}


class Proxy:
    """Both forwarders, each in its own thread; `start()` returns once they are bound."""

    def __init__(self, wearables: str, shards: str, estimates: str, subscribers: str, hwm: int = 100_000) -> None:
        self.devices = []
        for front, back in ((wearables, shards), (estimates, subscribers)):
            device = ThreadProxy(zmq.XSUB, zmq.XPUB)
            device.daemon = True
            device.bind_in(front)
            device.bind_out(back)
            for option in (zmq.RCVHWM, zmq.SNDHWM):
                device.setsockopt_in(option, hwm)
                device.setsockopt_out(option, hwm)
            self.devices.append(device)

    def start(self) -> None:
        for device in self.devices:
            device.start()
        time.sleep(0.2)  # a failed bind ends the device's thread at once
        if not all(device.launcher.is_alive() for device in self.devices):
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
