"""The cluster file of `p2p cluster`: its tables declared with `setting()`, checked in full (each daemon's settings
by the daemon's own validation), and turned into a `Plan`: the processes to run, their commands, addresses and logs."""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from p2p_stream.config.addresses import FORMS, check_address
from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.config.layers import apply_layers
from p2p_stream.config.security import Security
from p2p_stream.config.security import validate as validate_security
from p2p_stream.config.settings import check_settings, setting, toml_value
from p2p_stream.errors import ConfigError
from p2p_stream.tools.cluster.proxy import DEFAULTS as PROXY_DEFAULTS
from p2p_stream.tools.cluster.proxy import HELP as PROXY_HELP
from p2p_stream.tools.cluster.proxy import SECURED

log = logging.getLogger(__name__)
MAX_RESTART_DELAY_S = 30.0
# Daemon settings the cluster sets itself: the file's [daemon] table may not.
OWNED = ("sockets.ingest", "sockets.publish", "sockets.control", "sockets.connect", "cluster.id", "cluster.redis",
         "cluster.members")  # fmt: skip


def _redis_url(value: str) -> bool:
    return not value or value.startswith(("redis://", "rediss://", "unix://"))


# --- the file: each key declared once, as the daemon's settings are (config/settings.py) -------------------------


@dataclass
class Supervisor:
    """How `p2p cluster up` runs the processes."""

    logs: str = setting("runs/cluster", "folder of the log files: redis.log, proxy.log, daemon-<id>.log", metavar="DIR")
    stop_timeout_s: float = setting(
        10.0, "on stop, a process gets SIGTERM, then SIGKILL after this long", unit="s", range=(0.1, 600)
    )
    restart_delay_s: float = setting(
        1.0, "a process that exits is restarted after this long, doubled at each death within death_window_s",
        unit="s", range=(0, 60),
    )  # fmt: skip
    max_deaths: int = setting(5, "a process that dies this often within death_window_s is left down", range=(1, 1000))
    death_window_s: float = setting(60.0, "see max_deaths", unit="s", range=(1, 86_400))


def _proxy_address(name: str) -> str:
    return setting(PROXY_DEFAULTS[name], f"{PROXY_HELP[name]}; {FORMS}")  # checked by check_address


@dataclass
class ProxySection:
    """p2p-proxy: its four addresses and, optionally, CURVE on the wearables' side (as its flags)."""

    wearables: str = _proxy_address("wearables")
    shards: str = _proxy_address("shards")
    estimates: str = _proxy_address("estimates")
    subscribers: str = _proxy_address("subscribers")
    curve_secret_key: str = setting("", "the server's secret key file (p2p keys init); '' = plaintext", metavar="FILE")
    authorized_keys: str = setting("", "folder of client public keys allowed in (keys/authorized)", metavar="DIR")
    allow_remote_plaintext: bool = setting(False, "accept a plaintext side on an address other machines can reach")


@dataclass
class RedisSection:
    """The Redis holding the daemons' leases: one started here (start = true), or one running (url)."""

    start: bool = setting(True, "start a redis-server of the cluster's own; false: use url")
    url: str = setting(
        "", "with start = false: the running server", rule=_redis_url, expect="redis://host:port, unix:///path.sock"
    )
    port: int = setting(0, "with start: its TCP port, on 127.0.0.1; 0 = none (unixsocket only)", range=(0, 65_535))
    unixsocket: str = setting("", "with start: its unix socket's path", metavar="PATH")
    dir: str = setting("", "with start: its working folder (nothing is saved); '' = the logs folder", metavar="DIR")


@dataclass
class DaemonsSection:
    """How many daemons, their ids and their control addresses."""

    count: int = setting(0, "daemons named d1, d2, …; 0 = the ids list", range=(0, 1000))
    ids: list[str] = setting([], "the daemons' cluster.id, each unique (a daemon's devices follow its id)")
    control: str = setting(
        "ipc:///tmp/p2p-cluster/{id}.ctl", "each daemon's control address: {id} is its id, {port} control_port + "
        "its place in the list (0, 1, …)",
    )  # fmt: skip
    control_port: int = setting(0, "the first daemon's control port, with {port}", range=(0, 65_535))


@dataclass
class ClusterFile:
    """The whole file, one table per part (configs/cluster.toml)."""

    supervisor: Supervisor = field(default_factory=Supervisor)
    proxy: ProxySection = field(default_factory=ProxySection)
    redis: RedisSection = field(default_factory=RedisSection)
    daemons: DaemonsSection = field(default_factory=DaemonsSection)
    daemon: dict = setting({}, "every daemon's settings, as in configs/default.toml")


# --- the plan: what would run, checked up front ------------------------------------------------------------------


@dataclass
class Child:
    """One process of the plan."""

    name: str  # "redis", "proxy", "daemon a"
    cmd: list[str]
    log: Path
    address: str  # what the status line shows


@dataclass
class Plan:
    file: ClusterFile
    redis: Child | None  # None: a server that runs already
    redis_url: str
    proxy: Child
    daemons: list[Child]
    folders: list[Path]  # made by `up`: logs, Redis's folder, the ipc:// sockets' folders


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """{"windowing": {"window_s": 4}} → {"windowing.window_s": 4}."""
    out: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nest(flat: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *sections, name = key.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[name] = value
    return out


def daemon_ids(d: DaemonsSection) -> list[str]:
    if bool(d.count) == bool(d.ids):
        raise ConfigError("[daemons]: give count (daemons d1, d2, …) or ids (a list of names), one of them")
    ids = list(d.ids) or [f"d{n}" for n in range(1, d.count + 1)]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"daemons.ids: duplicate ids {twice}; give each daemon its own id")
    return ids


def control_address(d: DaemonsSection, daemon: str, index: int) -> str:
    if "{id}" not in d.control and "{port}" not in d.control:
        raise ConfigError(
            f"daemons.control {d.control!r} would be one address for all: put {{id}} or {{port}} in it, e.g. "
            "ipc:///tmp/p2p-cluster/{id}.ctl or tcp://127.0.0.1:{port} with control_port"
        )
    if "{port}" in d.control and not d.control_port:
        raise ConfigError("daemons.control uses {port}: set daemons.control_port, the first daemon's port, e.g. 5570")
    try:
        address = d.control.format(id=daemon, port=d.control_port + index)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"daemons.control {d.control!r}: only {{id}} and {{port}} may be filled in ({exc})") from exc
    return check_address(address, f"daemons.control (daemon {daemon})", example="tcp://127.0.0.1:5570")


def check_distinct(uses: list[tuple[str, str]]) -> None:
    """Refuse two processes on one tcp port or one ipc path (or unix socket): `uses` is (who, address)."""
    seen: dict[str, str] = {}
    for who, address in uses:
        scheme, _, rest = address.partition("://")
        if scheme == "inproc":
            raise ConfigError(f"{who} {address}: inproc:// reaches only its own process; give tcp:// or ipc://")
        key = f"port {rest.rpartition(':')[2]}" if scheme == "tcp" else f"path {rest}"
        if key in seen:
            raise ConfigError(f"{seen[key]} and {who} both use {key} ({address}); give each its own")
        seen[key] = who


def set_flags(settings: dict[str, object]) -> list[str]:
    """--set key=value for each setting, the value in TOML (as `p2p daemon --set` reads it)."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={toml_value(value)}")]


def proxy_child(p: ProxySection, logs: Path) -> Child:
    """p2p-proxy with this file's [proxy], checked by the proxy's own rules (its flags named as this file's keys)."""
    addresses = {
        name: check_address(getattr(p, name), f"proxy.{name}", example=d) for name, d in PROXY_DEFAULTS.items()
    }
    try:
        security = Security(p.curve_secret_key, p.authorized_keys, p.allow_remote_plaintext)
        validate_security(security, addresses, secured=SECURED, flags=True)
    except ConfigError as exc:
        message = str(exc)
        for name in [*addresses, "curve_secret_key", "authorized_keys", "allow_remote_plaintext"]:
            message = message.replace("--" + name.replace("_", "-"), f"proxy.{name}")
        raise ConfigError(message) from exc
    cmd = [sys.executable, "-m", "p2p_stream.tools.cluster.proxy"]
    cmd += [arg for name, address in addresses.items() for arg in (f"--{name}", address)]
    if p.curve_secret_key:
        cmd += ["--curve-secret-key", p.curve_secret_key, "--authorized-keys", p.authorized_keys]
    if p.allow_remote_plaintext:
        cmd.append("--allow-remote-plaintext")
    return Child("proxy", cmd, logs / "proxy.log", f"wearables {p.wearables} → subscribers {p.subscribers}")


def redis_child(r: RedisSection, logs: Path) -> tuple[Child | None, str]:
    """redis-server as [redis] asks (None: a server that runs already), and the url the daemons are given."""
    if not r.start:
        if not r.url:
            raise ConfigError("redis: give url, a running server (redis://host:port or unix:///path), or start = true")
        spare = [k for k in ("port", "unixsocket", "dir") if getattr(r, k)]
        if spare:
            raise ConfigError(f"redis.{spare[0]} is for start = true; with redis.url the server is yours: remove it")
        return None, r.url
    if r.url:
        raise ConfigError("redis: give start = true (a server of the cluster's own) or url (one running), not both")
    if not r.port and not r.unixsocket:
        raise ConfigError("redis.start = true needs redis.port or redis.unixsocket, e.g. /tmp/p2p-cluster/redis.sock")
    if len(r.unixsocket.encode()) > 100:
        raise ConfigError(f"redis.unixsocket {r.unixsocket!r} is over 100 bytes; give a shorter path")
    if shutil.which("redis-server") is None:
        raise ConfigError("redis.start = true needs redis-server (apt-get install redis-server), or give redis.url")
    folder = Path(r.dir) if r.dir else logs
    # Leases only: nothing is saved (a restarted Redis is empty; each daemon takes its lease again within lease_s/3).
    cmd = ["redis-server", "--port", str(r.port), "--dir", str(folder.resolve()), "--save", "", "--appendonly", "no"]
    if r.port:
        cmd += ["--bind", "127.0.0.1"]
    if r.unixsocket:
        cmd += ["--unixsocket", str(Path(r.unixsocket).resolve()), "--unixsocketperm", "700"]
    url = f"unix://{Path(r.unixsocket).resolve()}" if r.unixsocket else f"redis://127.0.0.1:{r.port}"
    return Child("redis", cmd, logs / "redis.log", url), url


def daemon_children(f: ClusterFile, redis_url: str, logs: Path) -> list[Child]:
    """One daemon per id: [daemon] plus what the cluster sets, checked by the daemon's own validation."""
    given = flatten(f.daemon)
    for key in given:
        if key in OWNED:
            raise ConfigError(f"daemon.{key} is set by the cluster (from [proxy], [redis] and [daemons]): remove it")
    children = []
    for index, daemon in enumerate(daemon_ids(f.daemons)):
        control = control_address(f.daemons, daemon, index)
        own = {"sockets.ingest": f.proxy.shards, "sockets.publish": f.proxy.estimates, "sockets.control": control,
               "sockets.connect": True, "cluster.id": daemon, "cluster.redis": redis_url}  # fmt: skip
        try:  # exactly what it will be given
            load_daemon_config(None, [nest(given), nest(own)])
        except ConfigError as exc:
            raise ConfigError(f"daemon {daemon}: {exc}") from exc
        cmd = [sys.executable, "-m", "p2p_stream.tools.cli.daemon", *set_flags({**given, **own})]
        children.append(Child(f"daemon {daemon}", cmd, logs / f"daemon-{daemon}.log", f"control {control}"))
    return children


def make_plan(path: Path) -> Plan:
    """Read and check the whole file; a ConfigError names the key and what would be right."""
    f = ClusterFile()
    apply_layers(f, path, None)
    check_settings(f)
    logs = Path(f.supervisor.logs)
    proxy = proxy_child(f.proxy, logs)
    redis, redis_url = redis_child(f.redis, logs)
    daemons = daemon_children(f, redis_url, logs)
    uses = [(f"proxy.{name}", getattr(f.proxy, name)) for name in PROXY_DEFAULTS]
    if redis is not None and f.redis.port:
        uses.append(("redis.port", f"tcp://127.0.0.1:{f.redis.port}"))
    if redis is not None and f.redis.unixsocket:
        uses.append(("redis.unixsocket", f"ipc://{f.redis.unixsocket}"))
    uses += [(f"{d.name}'s control", d.address.removeprefix("control ")) for d in daemons]
    check_distinct(uses)
    folders = [logs] + [Path(a.removeprefix("ipc://")).parent for _, a in uses if a.startswith("ipc://")]
    if redis is not None:
        folders.append(Path(f.redis.dir) if f.redis.dir else logs)
    return Plan(f, redis, redis_url, proxy, daemons, folders)


# --- running it ----------------------------------------------------------------------------------------------------
