"""p2p keys: make the CURVE key pairs for the daemon and its wearables (keys/ is in .gitignore: keep them out of git).

    p2p keys init keys/                 # keys/server.key(_secret) and an empty keys/authorized/
    p2p keys client watch-17 --dir keys/  # keys/clients/watch-17.key(_secret); its public key goes into authorized/
    p2p keys revoke watch-17 --dir keys/  # removes it from authorized/ (the daemon reads the folder at start-up)

The daemon gets `security.curve_secret_key = "keys/server.key_secret"` and `security.authorized_keys =
"keys/authorized"`; a wearable or simulator gets the server's public key and its own secret key
(`--curve-server-key keys/server.key --curve-client-key keys/clients/watch-17.key_secret`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path

import zmq.auth

from p2p_stream.errors import ConfigError
from p2p_stream.stream.security.grants import ANY_DEVICE, parse_patterns, read_key_file
from p2p_stream.tools.common import command, parent_parser, setup_logging

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def init(folder: Path) -> None:
    if (folder / "server.key_secret").exists():
        raise ConfigError(f"{folder}/server.key_secret exists; remove it first to make a new server key")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "authorized").mkdir(exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, "server")
    os.chmod(secret, 0o600)
    print(f"server key pair: {public} (give to clients), {secret} (the daemon's; keep it private)")
    print(f"allowed clients: {folder / 'authorized'}/ (empty; add with `p2p-keys client NAME --dir {folder}`)")


def client(name: str, folder: Path, devices: str = ANY_DEVICE) -> None:
    check_name(name)
    patterns = parse_patterns(devices)
    if not (folder / "authorized").is_dir():
        raise ConfigError(f"{folder}/authorized/ does not exist; run `p2p keys init {folder}` first")
    clients = folder / "clients"
    clients.mkdir(exist_ok=True)
    if (clients / f"{name}.key").exists():
        raise ConfigError(f"client {name!r} exists in {clients}; revoke it or choose another name")
    public, secret = zmq.auth.create_certificates(clients, name, metadata={"devices": ",".join(patterns)})
    os.chmod(secret, 0o600)
    key, _ = zmq.auth.load_certificate(public)
    write_public_key(Path(public), key, patterns)
    write_public_key(folder / "authorized" / f"{name}.key", key, patterns)
    print(
        f"client {name}: {secret} (install on the wearable), public key allowed in {folder / 'authorized'}/ "
        f"for devices {describe(patterns)}"
    )


def grant(name: str, folder: Path, devices: str) -> None:
    """Rewrite the devices an allowed client key may act for (its key is unchanged)."""
    check_name(name)
    patterns = parse_patterns(devices)
    target = folder / "authorized" / f"{name}.key"
    if not target.exists():
        raise ConfigError(f"{target} does not exist; give a client allowed now: {allowed_names(target.parent)}")
    key, _ = read_key_file(target)
    write_public_key(target, key.encode("ascii"), patterns)
    print(f"client {name} may now act for devices {describe(patterns)}; restart the daemon to apply")


def write_public_key(path: Path, key: bytes, patterns: tuple[str, ...]) -> None:
    """A ZeroMQ public certificate with the client's device patterns in its metadata (identity.read_key_file)."""
    path.write_text(
        f"#   ****  Generated on {datetime.datetime.now()} by p2p keys  ****\n"
        "#   ZeroMQ CURVE Public Certificate\n"
        "#   devices: the device ids (comma-separated shell patterns; * = any) this key may send for and control\n"
        "\n"
        "metadata\n"
        f'    devices = "{",".join(patterns)}"\n'
        "curve\n"
        f'    public-key = "{key.decode("ascii")}"\n',
        encoding="utf-8",
    )


def describe(patterns: tuple[str, ...]) -> str:
    return "any (restrict with --devices)" if ANY_DEVICE in patterns else ", ".join(patterns)


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(f"client name {name!r} must be 1-64 characters of [A-Za-z0-9_.-]")


def allowed_names(authorized: Path) -> list[str]:
    return sorted(p.stem for p in authorized.glob("*.key"))


def revoke(name: str, folder: Path) -> None:
    check_name(name)
    target = folder / "authorized" / f"{name}.key"
    if not target.exists():
        raise ConfigError(f"{target} does not exist; give a client allowed now: {allowed_names(target.parent)}")
    target.unlink()
    print(f"revoked {name}; restart the daemon to apply")


@command
def main(argv: list[str] | None = None, prog: str = "p2p-keys") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[parent_parser()]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init", help="the daemon's key pair and an empty authorized/ folder").add_argument("dir", type=Path)
    verbs = (
        ("client", "a client key pair, allowed in for --devices"),
        ("grant", "change the devices an allowed client may act for"),
        ("revoke", "remove a client from authorized/"),
    )
    for cmd, text in verbs:
        c = sub.add_parser(cmd, help=text)
        c.add_argument("name")
        c.add_argument("--dir", type=Path, default=Path("keys"))
        if cmd != "revoke":
            c.add_argument(
                "--devices", default=ANY_DEVICE, required=cmd == "grant", metavar="PATTERNS",
                help="device ids the key may send for and control: comma-separated shell patterns, e.g. "
                "'watch-*,ward3.*' (default '*': any device)",
            )  # fmt: skip
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    old_mask = os.umask(0o077)  # secret keys are never readable by others, not even before their chmod
    try:
        if args.cmd == "init":
            init(args.dir)
        elif args.cmd == "client":
            client(args.name, args.dir, args.devices)
        elif args.cmd == "grant":
            grant(args.name, args.dir, args.devices)
        else:
            revoke(args.name, args.dir)
    finally:
        os.umask(old_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
