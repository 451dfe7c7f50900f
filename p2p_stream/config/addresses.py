"""Addresses: the one check of a ZeroMQ address that the daemon, the tools and the simulators all apply."""

from __future__ import annotations

from p2p_stream.errors import ConfigError

SCHEMES = ("tcp://", "ipc://", "inproc://")
FORMS = "tcp://HOST:PORT, ipc://PATH or inproc://NAME"


def check_address(address: str, flag: str, example: str = "tcp://127.0.0.1:5555") -> str:
    """`address` unchanged when ZeroMQ can use it; else a `ConfigError` naming `flag` and a right value.

    The rules: one of the schemes tcp://, ipc://, inproc://; tcp:// needs HOST:PORT with a port 1–65535
    (HOST may be `*` or `[::1]`-style IPv6); ipc:// and inproc:// need a path or name.
    """
    if not isinstance(address, str) or not address.startswith(SCHEMES):
        scheme = "no scheme" if "://" not in str(address) else f"an unknown scheme {str(address).split('://')[0]!r}"
        raise ConfigError(f"{flag} {address!r} has {scheme}; give {FORMS}, e.g. {example}")
    scheme, rest = address.split("://", 1)
    if scheme != "tcp":
        if not rest:
            what = "PATH" if scheme == "ipc" else "NAME"
            raise ConfigError(f"{flag} {address!r} has no {what.lower()}; give {scheme}://{what}, or e.g. {example}")
        return address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or host == "[]":
        raise ConfigError(f"{flag} {address!r} needs a host and a port; give tcp://HOST:PORT, e.g. {example}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {address!r} has port {port!r}; give a port from 1 to 65535, e.g. {example}")
    return address
