"""Security settings and their rules: CURVE keys go together, and plaintext stays on this machine.

The sockets that use them (the CURVE server, the authenticator thread, client key loading) are in
stream/security/curve.py; this module imports no ZeroMQ unless CURVE is asked for, so checking a config stays cheap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from p2p_stream.config.settings import setting
from p2p_stream.errors import ConfigError


@dataclass
class Security:
    """CURVE on the ingest and control sockets (p2p-keys init); the estimates socket is always plaintext."""

    curve_secret_key: str = setting(
        "", "the daemon's secret key file (p2p-keys init): CURVE on ingest and control; '' = off", metavar="FILE"
    )
    authorized_keys: str = setting(
        "",
        "folder of client public keys (*.key) allowed in, each naming the device ids it may act for "
        "(p2p-keys client NAME --devices PATTERNS adds one)",
        metavar="DIR",
    )
    allow_remote_plaintext: bool = setting(
        False, "without CURVE, binding beyond loopback is refused unless this is true"
    )


def is_local(address: str) -> bool:
    """True when only this machine can reach `address` (ipc, inproc, or tcp on a loopback host)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):  # any other transport reaches the network
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or a hostname ("*", "eth0", "example.org"): reachable from outside
        return False


DAEMON_SECURED = ("ingest", "control")  # the daemon's sockets CURVE serves; its estimates socket stays plaintext


def setting_name(name: str, flags: bool = False) -> str:
    """How a user gives a security setting: `security.curve_secret_key` in the daemon's config, or the flag
    `--curve-secret-key` where a tool takes flags (p2p-proxy)."""
    return "--" + name.replace("_", "-") if flags else f"security.{name}"


def validate(
    security: Security, addresses: dict[str, str], secured: tuple[str, ...] = DAEMON_SECURED, flags: bool = False
) -> None:
    """Refuse half a CURVE set-up, missing key files, and plaintext sockets exposed beyond this machine.

    `secured`: the sockets of `addresses` that CURVE serves when it is on (the others stay plaintext); `flags`:
    name settings and sockets as a tool's flags (`--curve-secret-key`, `--wearables ADDR`) in the messages.
    """
    key, folder = setting_name("curve_secret_key", flags), setting_name("authorized_keys", flags)
    if bool(security.curve_secret_key) != bool(security.authorized_keys):
        raise ConfigError(f"{key} and {folder} go together: set both (see `p2p-keys init`) or neither")
    if security.curve_secret_key:
        import zmq  # only when CURVE is asked for

        if not zmq.has("curve"):
            raise ConfigError("this libzmq was built without CURVE support; install pyzmq's wheels (they have it)")
        if not Path(security.curve_secret_key).is_file():
            raise ConfigError(f"{key}: no file {security.curve_secret_key!r}; run `p2p-keys init`")
        if not Path(security.authorized_keys).is_dir():
            raise ConfigError(f"{folder}: no folder {security.authorized_keys!r}; run `p2p-keys init`")
    exposed = {k: a for k, a in plaintext(security, addresses, secured).items() if not is_local(a)}
    if exposed and not security.allow_remote_plaintext:
        where = ", ".join(f"--{k} {a}" if flags else f"sockets.{k} = {a}" for k, a in exposed.items())
        # CURVE is a remedy only for a socket it serves: a daemon's estimates socket is plaintext with it too.
        curve = f"enable CURVE (p2p-keys init; {key} and {folder}), or " if set(exposed) & set(secured) else ""
        accept = "give --allow-remote-plaintext" if flags else "set security.allow_remote_plaintext = true"
        raise ConfigError(
            f"{where} would accept unauthenticated plaintext from other machines. Use a loopback or ipc:// "
            f"address, or {curve}{accept} to accept the risk"
        )


def plaintext(
    security: Security, addresses: dict[str, str], secured: tuple[str, ...] = DAEMON_SECURED
) -> dict[str, str]:
    """The sockets without CURVE: all of them when it is off, those not in `secured` always (the daemon's
    estimates socket)."""
    return {k: a for k, a in addresses.items() if not security.curve_secret_key or k not in secured}


def exposure_warning(security: Security, addresses: dict[str, str]) -> str | None:
    """The start-up warning for plaintext sockets other machines can reach, or None."""
    exposed = {k: a for k, a in plaintext(security, addresses).items() if not is_local(a)}
    if not exposed:
        return None
    what = "anyone who can reach them can read estimates" + ("" if security.curve_secret_key else
                                                               ", inject PPG and send control commands")  # fmt: skip
    return f"exposed without authentication: {', '.join(f'{k} {a}' for k, a in exposed.items())}; {what}"
