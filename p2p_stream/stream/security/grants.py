"""Identities bound to keys: with CURVE, which device ids each client key may send for and control, and how many.

Each allowed client's public key file (`authorized_keys/NAME.key`, written by `p2p keys client NAME --devices …`)
names its devices in the certificate's metadata section, as comma-separated shell patterns (fnmatch: `*`, `?`,
`[…]`); a file without them allows any device, as every key did before ids were bound to keys:

    metadata
        devices = "watch-17,ward3.*"
    curve
        public-key = "…40 characters of z85…"

ZeroMQ's authenticator (stream/security/curve.py) admits exactly the keys read here, and stamps every message of an
admitted connection with the key's z85 text as its `User-Id`; the daemon hands that to `DeviceGrants`, which says
whether the key may act for a device (`unauthorized_device` otherwise) and keeps at most
`limits.max_devices_per_key` of the device table's ids per key (`too_many_devices` beyond). Without CURVE there
are no keys: every local process is trusted with every device (docs/reliability.md, "Who may act for a device").
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

from p2p_stream.errors import ConfigError

ANY_DEVICE = "*"
PATTERN_RE = re.compile(r"\A[A-Za-z0-9_.:*?\[\]!-]{1,64}\Z")  # a device id's characters and fnmatch's


def parse_patterns(text: str) -> tuple[str, ...]:
    """`'watch-*, ward3.*'` → `('watch-*', 'ward3.*')`; a ConfigError naming the bad pattern and what is allowed."""
    patterns = tuple(p.strip() for p in text.split(","))
    for p in patterns:
        if not PATTERN_RE.fullmatch(p):
            raise ConfigError(
                f"device pattern {p!r}: give comma-separated patterns of device-id characters [A-Za-z0-9_.:-] "
                "and the wildcards * ? [ ] !, e.g. 'watch-*,ward3.*' ('*' allows any device)"
            )
    return patterns


@dataclass
class KeyGrant:
    """One allowed client key: the file it came from (its name, for logs) and the device patterns it may act for."""

    name: str
    patterns: tuple[str, ...] = (ANY_DEVICE,)
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)  # None: any device

    def __post_init__(self) -> None:
        # One anchored regex for all patterns (fnmatch.translate ends each with \Z): one match per check.
        self.regex = (
            None
            if ANY_DEVICE in self.patterns
            else re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))
        )

    def allows(self, device: str) -> bool:
        return self.regex is None or self.regex.match(device) is not None


def read_key_file(path: Path) -> tuple[str, KeyGrant]:
    """A client's public key file → (its key as z85 text, its grant). Raises ConfigError for an unreadable file."""
    try:
        public, _ = zmq.auth.load_certificate(path)
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"security.authorized_keys: cannot read {path} ({exc})") from exc
    if len(public) != 40:
        raise ConfigError(f"security.authorized_keys: {path} does not hold a CURVE public key")
    devices = metadata(text).get("devices")
    if devices is None:
        return public.decode("ascii"), KeyGrant(path.stem)
    try:
        return public.decode("ascii"), KeyGrant(path.stem, parse_patterns(devices))
    except ConfigError as exc:
        raise ConfigError(f"security.authorized_keys: {path}: {exc}") from None


def metadata(text: str) -> dict[str, str]:
    """The `metadata` section of a ZeroMQ certificate (ZPL: a section name at column 0, `name = value` indented
    below it; values may be quoted). pyzmq's `load_certificate` reads the keys only, so this reads the rest."""
    found: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            section = line.strip()
            continue
        if section == "metadata" and "=" in line:
            name, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            found[name.strip()] = value
    return found


def read_authorized(folder: str | Path) -> dict[str, KeyGrant]:
    """Every `*.key` in `folder` (as pyzmq's authenticator reads them): z85 public key → its grant. Two files
    holding one key are refused: which of their device lists holds would be a guess."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"security.authorized_keys: no folder {str(folder)!r}; run `p2p keys init`")
    keys: dict[str, KeyGrant] = {}
    for path in sorted(folder.glob("*.key")):
        public, grant = read_key_file(path)
        if public in keys:
            raise ConfigError(
                f"security.authorized_keys: {keys[public].name}.key and {path.name} hold the same public key; "
                "keep one (its devices line says what the key may act for)"
            )
        keys[public] = grant
    return keys


class DeviceGrants:
    """Which device ids each client key may act for, and how many of the device table's ids it holds.

    `keys` is None without CURVE: no identities, everything allowed, nothing counted. A user id is the z85 text of
    the client's public key (the `User-Id` ZeroMQ puts on its messages); `None` with keys means no key at all.
    """

    def __init__(self, keys: Mapping[str, KeyGrant] | None, max_devices_per_key: int) -> None:
        self.keys = keys
        self.max_devices_per_key = max_devices_per_key
        self.held: dict[str, set[str]] = {}  # key → the device ids in the table it has fed
        self.holders: dict[str, set[str]] = {}  # device id → the keys that hold it (overlapping patterns: several)

    @property
    def open(self) -> bool:
        """True without CURVE: every device is anyone's."""
        return self.keys is None

    def name(self, user: str | None) -> str:
        """The key's file name for logs (`watch-17`), or its z85 text if unknown."""
        grant = self.keys.get(user) if self.keys is not None and user is not None else None
        return grant.name if grant is not None else str(user)

    def allows(self, user: str | None, device: str) -> bool:
        """Whether the key `user` may send for and control `device`."""
        if self.keys is None:
            return True
        grant = self.keys.get(user) if user is not None else None
        return grant is not None and grant.allows(device)

    def refusal(self, user: str | None, device: str) -> str | None:
        """None when `user` may send this message for `device` now; else why not: `unauthorized_device` (not one
        of its devices) or `too_many_devices` (a device new to the key, which holds `max_devices_per_key` ids of
        the daemon's device table already). Call `hold` once the message is in the table, `release` when ids
        leave it."""
        if self.keys is None:
            return None
        if user is None:
            return "unauthorized_device"
        held = self.held.get(user)
        if held is not None and device in held:  # the common case: a device it already sends for
            return None
        if not self.allows(user, device):
            return "unauthorized_device"
        if held is not None and len(held) >= self.max_devices_per_key:
            return "too_many_devices"
        return None

    def hold(self, user: str | None, device: str) -> None:
        """`user`'s message for `device` went into the device table: the key holds that id."""
        if self.keys is not None and user is not None:
            self.held.setdefault(user, set()).add(device)
            self.holders.setdefault(device, set()).add(user)

    def release(self, devices) -> None:
        """These ids left the device table (forgotten, evicted, replaced): no key holds them any more."""
        for device in devices:
            for user in self.holders.pop(device, ()):
                held = self.held.get(user)
                if held is not None:
                    held.discard(device)
                    if not held:
                        del self.held[user]


def recv_keyed(sock: zmq.Socket, flags: int = 0) -> tuple[list[bytes], str | None]:
    """One message from a CURVE server socket and the z85 text of the client key that sent it (its `User-Id`)."""
    parts = sock.recv_multipart(flags, copy=False)
    return [p.bytes for p in parts], parts[0].get("User-Id")
