"""Security: CurveZMQ for the ingest and control sockets, and the rule that plaintext stays on this machine.

With `[security] curve_secret_key` and `authorized_keys` set, the daemon's ingest SUB and control REP are CURVE
servers: traffic is encrypted and a ZAP authenticator (pyzmq's, in a thread) admits only clients whose public
key is in the `authorized_keys` folder. A refused handshake never reaches the daemon's code; the socket monitor
reports it, and the daemon logs it and counts it as `auth_failed` in the heartbeat's `rejected`. Each admitted
message carries its key (`User-Id`), and the device patterns in that key's file say which device ids it may send
for and control (stream/security/grants.py).

Without CURVE, a socket reachable from other machines (tcp on anything but loopback) is refused at start-up
unless `security.allow_remote_plaintext` says the operator accepts it, and then a warning says so.
Key files are the ZeroMQ certificate format that `p2p-keys` (zmq.auth.create_certificates) writes. The settings and
the rules above (`Security`, `validate`, `is_local`, `exposure_warning`) are in config/security.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from p2p_stream.config.security import Security
from p2p_stream.errors import ConfigError
from p2p_stream.stream.security.grants import ANY_DEVICE, KeyGrant, read_authorized

log = logging.getLogger(__name__)


class CurveServer:
    """The daemon's side of CURVE: its key pair, the authenticator thread, and how to make a socket a server."""

    def __init__(self, ctx: zmq.Context, security: Security) -> None:
        try:
            self.public, self.secret = zmq.auth.load_certificate(security.curve_secret_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"security.curve_secret_key: cannot read a key pair ({exc})") from exc
        if self.secret is None:
            raise ConfigError(
                f"security.curve_secret_key: {security.curve_secret_key} holds only a public key; "
                "give the server.key_secret file"
            )
        if len(self.public) != 40 or len(self.secret) != 40:
            raise ConfigError(f"security.curve_secret_key: {security.curve_secret_key} is not a CURVE key pair")
        # One reading of the folder serves both the handshake (is the key allowed?) and the device grants (what may
        # it act for?): the authenticator asks `self.keys`, never the folder again, so the two cannot disagree.
        self.keys: dict[str, KeyGrant] = read_authorized(security.authorized_keys)
        if not self.keys:
            log.warning("CURVE on, but %s holds no client keys: every client will be refused", security.authorized_keys)
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self)
        restricted = sum(ANY_DEVICE not in g.patterns for g in self.keys.values())
        log.info(
            "CURVE on: %d client key(s) allowed from %s, %d of them bound to device patterns",
            len(self.keys), security.authorized_keys, restricted,
        )  # fmt: skip

    def callback(self, domain: str, key: bytes) -> bool:
        """The authenticator's question (in its thread): is this client key (z85) allowed in? Its messages then
        carry the key's z85 text as their `User-Id` (pyzmq's `curve_user_id`), which `DeviceGrants` looks up."""
        return key.decode("ascii", "replace") in self.keys

    def serve(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server; call before bind."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def curve_client(sock: zmq.Socket, server_public_file: str | Path, client_secret_file: str | Path) -> None:
    """Make `sock` a CURVE client of the daemon whose public key is in `server_public_file`; call before connect."""
    try:
        server_public, _ = zmq.auth.load_certificate(server_public_file)
        public, secret = zmq.auth.load_certificate(client_secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE keys ({exc}); make them with `p2p-keys`") from exc
    if secret is None:
        raise ConfigError(f"{client_secret_file} holds no secret key; give the client's .key_secret file")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
