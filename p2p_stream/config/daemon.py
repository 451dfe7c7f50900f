"""Daemon configuration: every setting declared once (default, range, unit, help, flag); configs/default.toml,
the p2p-daemon flags and their --help are derived from these declarations (settings.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from p2p_stream.config.addresses import FORMS, check_address
from p2p_stream.config.layers import apply_layers
from p2p_stream.config.security import Security
from p2p_stream.config.security import validate as validate_security
from p2p_stream.config.settings import check_settings, defaults_toml, setting
from p2p_stream.errors import ConfigError
from p2p_stream.ids import DEVICE_RE

MAX_SPAN_WINDOWS = 600  # estimates within a calibration span: 600 × ~120 B per device, bounded at any device count
# Keys renamed, old → new: the old name is still accepted (TOML, --set), logging '<old> is deprecated; use <new>'.
RENAMED = {
    "model.device": "model.torch_device",  # a "device" is a wearable everywhere else
}


def _address(value: str) -> bool:
    try:  # the one address rule the tools apply too
        check_address(value, "address")
    except ConfigError:
        return False
    return True


def _names(value: str) -> bool:
    return not value or all(DEVICE_RE.fullmatch(n.strip()) for n in value.split(","))


def _redis_url(value: str) -> bool:
    return not value or value.startswith(("redis://", "rediss://", "unix://"))


def _torch_device(value: str) -> bool:
    return value in ("cpu", "cuda", "auto") or (value.startswith("cuda:") and value[5:].isdigit())


def _ray_address(value: str) -> bool:
    return not value or value == "auto" or value.startswith("ray://") or ":" in value


_ADDRESS = f"one of {FORMS} (a tcp port 1–65535)"


@dataclass
class Sockets:
    """The three sockets the daemon binds (or, with connect, connects to a p2p-proxy)."""

    ingest: str = setting(
        "tcp://127.0.0.1:5555", "SUB, binds: wearables and simulators connect a PUB",
        rule=_address, expect=_ADDRESS, flag="--ingest", metavar="ADDR",
    )  # fmt: skip
    publish: str = setting(
        "tcp://127.0.0.1:5556", "PUB, binds: sbp.<device> estimates and the status heartbeat",
        rule=_address, expect=_ADDRESS, flag="--estimates", aliases=("--publish",), metavar="ADDR",
    )  # fmt: skip
    control: str = setting(
        "tcp://127.0.0.1:5557", "REP, binds: ping, stats, calibrate, forget",
        rule=_address, expect=_ADDRESS, flag="--control", metavar="ADDR",
    )  # fmt: skip
    connect: bool = setting(
        False, "true: ingest and publish connect to a p2p-proxy (sharded daemons, docs/scaling.md) instead of binding"
    )

    def addresses(self) -> dict[str, str]:
        return {"ingest": self.ingest, "publish": self.publish, "control": self.control}


@dataclass
class Windowing:
    """How each device's stream is cut into windows (by sample count, so jitter does not change their size)."""

    window_s: float = setting(10.0, "window length", unit="s", range=(2, 120), flag="--window-s")
    hop_s: float = setting(2.0, "a new window every hop; at most window_s", unit="s", range=(0.1, 120), flag="--hop-s")
    gap_tolerance_s: float = setting(
        0.2, "a message's t0 this far from where the last ended breaks the window", unit="s", range=(0, 10)
    )


@dataclass
class Batching:
    """Windows of all devices are batched for the model: full batches go at once, others after max_wait_ms."""

    max_batch: int = setting(64, "windows per model call at most", range=(1, 4096), flag="--max-batch")
    max_wait_ms: float = setting(
        20.0, "the oldest window waits at most this long for company", unit="ms", range=(0, 10_000),
        flag="--max-wait-ms",
    )  # fmt: skip
    max_queue: int = setting(
        20_000, "windows waiting for the model; beyond it windows are shed (counted 'overloaded')",
        range=(1, 10_000_000),
    )  # fmt: skip
    max_queue_mb: float = setting(
        256.0, "…and at most this many megabytes of their samples (a window at 1 kHz holds 40 kB)", unit="MB",
        range=(1, 65_536),
    )  # fmt: skip
    max_queued_per_device: int = setting(
        32, "windows (and gap markers) of one wearable waiting at once; more of its own are shed (counted "
        "'over_budget'), never another's", range=(1, 100_000),
    )  # fmt: skip


@dataclass
class Model:
    """The network and where it runs."""

    path: str = setting("", "checkpoint folder; '' = the shipped default model", flag="--model", metavar="DIR")
    torch_device: str = setting(
        "auto", "torch device the network runs on (auto: CUDA when present)",
        rule=_torch_device, expect="cpu, cuda, cuda:N or auto",
        flag="--torch-device", deprecated=("--device",), metavar="DEVICE",
    )  # fmt: skip
    threads: int = setting(
        0, "torch intra-op threads; 0 = every core but one (one is left to the ingest loop)", range=(0, 256),
        flag="--threads",
    )  # fmt: skip
    burst_threads: int = setting(
        0, "torch threads while more windows wait than one batch holds (a burst: devices switched on together, a "
        "partition healing), when the ingest loop has little to do; 0 = every core; equal to threads: off",
        range=(0, 256),
    )  # fmt: skip
    reuse_crops: bool = setting(
        True, "a crop-averaging model's crop features are computed once and reused by every window that holds "
        "them (10 s windows every 2 s: one crop of five is new); the same numbers either way, false only to "
        "measure what it saves (local backend)",
    )  # fmt: skip
    inference_process: bool = setting(
        False, "the quality gate and the network run in a child process, so ingest and inference do not share "
        "one interpreter lock (local backend; the daemon starts it, and a new one if it dies)",
    )  # fmt: skip
    backend: str = setting(
        "local", "local: the network runs in this process | ray: on a Ray Serve deployment ([ray])",
        choices=("local", "ray"), flag="--backend",
    )  # fmt: skip


@dataclass
class Limits:
    """Bounds on what one daemon holds, so no sender can exhaust it."""

    max_devices: int = setting(
        10_000, "wearables tracked at once; more are refused (counted 'too_many_devices')", range=(1, 1_000_000)
    )
    device_idle_s: float = setting(60.0, "a wearable silent this long is forgotten", unit="s", range=(1, 86_400))
    max_chunk_samples: int = setting(
        1024, "ring-buffer slack per wearable; longer messages are fed in pieces", unit="samples",
        range=(16, 100_000),
    )  # fmt: skip
    max_clock_skew_s: float = setting(
        300.0, "a message whose t0 is further than this from the daemon's clock is refused (counted 'bad_time')",
        unit="s", range=(1, 1_000_000_000),
    )  # fmt: skip
    max_fs_hz: float = setting(
        1000.0, "highest sampling rate accepted (counted 'bad_fs' above); it bounds a wearable's ring memory",
        unit="Hz", range=(20, 10_000),
    )  # fmt: skip
    ring_memory_mb: float = setting(
        512.0, "ring buffers of all wearables together: (window_s × fs + max_chunk_samples) × 4 bytes each; a new "
        "wearable that does not fit is refused (counted 'too_many_devices')", unit="MB", range=(1, 65_536),
    )  # fmt: skip
    rate_factor: float = setting(
        4.0, "a wearable may send samples at most this many times its declared rate, sustained (catching up after "
        "a lost link); beyond, its messages are shed (counted 'over_budget')", range=(1, 1000),
    )  # fmt: skip
    burst_s: float = setting(60.0, "…plus a burst of this many seconds of samples", unit="s", range=(1, 3600))
    ingest_queue_mb: float = setting(
        256.0, "messages ZeroMQ may queue per ingest connection, in megabytes of the largest message (its receive "
        "high-water mark is derived from it)", unit="MB", range=(1, 65_536),
    )  # fmt: skip
    max_devices_per_key: int = setting(
        1000, "with CURVE: device ids one client key may hold at once; more from that key are refused (counted "
        "'too_many_devices')", range=(1, 1_000_000),
    )  # fmt: skip
    publish_hwm: int = setting(
        10_000, "estimates queued per subscriber; a subscriber further behind loses the newest",
        range=(10, 10_000_000),
    )  # fmt: skip


@dataclass
class Calibration:
    """The `calibrate` command (docs/protocol.md): a cuff reading offsets a wearable's later estimates."""

    span_s: float = setting(
        60.0, "reference = median of the estimates from span_s/2 before to span_s/2 after the cuff reading; "
        "span_s / hop_s ≤ 600", unit="s", range=(0, 3600),
    )  # fmt: skip
    min_estimates: int = setting(
        3, "the reference needs at least this many; until then estimates stay uncalibrated", range=(1, 64)
    )
    tracking: str = setting(
        "ecg", "after a cuff reading, for an hour, SBP moves by the change since of: ecg = the pulse arrival time, for "
        "devices that send an ECG (others keep the cuff reading); ppg = that, and the PPG's pulse rate, rise time and "
        "amplitude for devices without (worse than the cuff where pressure holds still: docs/results.md); off = the "
        "cuff reading carried forward, no beat detection, no pat_ms", choices=("ecg", "ppg", "off"),
    )  # fmt: skip


@dataclass
class Smoothing:
    """What is published besides each window's own estimate."""

    windows: int = setting(
        3, "published sbp/dbp: mean of the wearable's last K accepted windows, restarted at a gap; 1 = off",
        range=(1, 100),
    )  # fmt: skip


@dataclass
class Operation:
    """Logging and the heartbeat."""

    log_level: str = setting(
        "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), fold_case=True, flag="--log-level"
    )
    heartbeat_s: float = setting(1.0, "the `status` heartbeat period", unit="s", range=(0.05, 60))


DEFAULT_STATE_PATH = "~/.local/state/p2p/state.sqlite"  # under $XDG_STATE_HOME when that is set (`state_path`)


@dataclass
class State:
    """What an operator tells the daemon (calibrations, device facts), kept per wearer session across restarts and
    crashes (docs/reliability.md, "State")."""

    path: str = setting(
        DEFAULT_STATE_PATH, "SQLite file of wearer sessions, calibrations, device facts and the audit of "
        "calibrate/forget/end_session ($XDG_STATE_HOME/p2p/state.sqlite when XDG_STATE_HOME is set); '' = in memory "
        "only, lost at a restart. Daemons of a cluster on one machine share one file", metavar="FILE",
    )  # fmt: skip
    resume_gap_s: float = setting(
        1800.0, "a wearable back (after a restart, an eviction) with its counter and clock going on, within this "
        "long of its last sample, is the same wearer; later, or with a restarted counter, only its `wearer` key "
        "brings its session back", unit="s", range=(1, 30 * 86_400),
    )  # fmt: skip
    keep_days: float = setting(
        90.0, "a session with a `wearer` key unseen this long is dropped with its calibration and facts (the audit "
        "stays)", unit="days", range=(1, 3650),
    )  # fmt: skip
    audit_rows_per_device: int = setting(
        1000, "audit rows kept per wearable; its oldest beyond are folded into one 'compacted' row (count, time "
        "span, commands, clients)", range=(10, 1_000_000),
    )  # fmt: skip
    adopt: bool = setting(
        False, "take a store its witness does not recognise (restored from a backup, replaced, or missing) for this "
        "start; its epochs go on after the witness's (docs/reliability.md)",
    )  # fmt: skip
    control_per_key_per_min: float = setting(
        60.0, "calibrate/forget/end_session one client key (with CURVE; without, all clients together) may make per "
        "minute, a minute's worth at once; beyond, refused (counted 'over_quota')", unit="/min", range=(1, 60_000),
    )  # fmt: skip
    control_per_device_per_min: float = setting(
        6.0, "…and per wearable, whichever key asks", unit="/min", range=(1, 60_000),
    )  # fmt: skip


def state_path(state: State) -> str:
    """The store's file: `state.path` with ~ expanded; the default under $XDG_STATE_HOME when that is set; '' = none."""
    if state.path == DEFAULT_STATE_PATH and os.environ.get("XDG_STATE_HOME"):
        return os.path.join(os.environ["XDG_STATE_HOME"], "p2p", "state.sqlite")
    return os.path.expanduser(state.path) if state.path else ""


@dataclass
class Cluster:
    """Daemons sharing a fleet behind p2p-proxy: each owns the devices that rendezvous hashing over the live daemons
    gives it (stream/cluster/ownership.py, docs/scaling.md). Standalone when both members and redis are empty."""

    id: str = setting(
        "", "this daemon's name in the cluster, unique and kept across restarts (its devices follow the name)",
        rule=_names, expect="1–64 characters of [A-Za-z0-9_.:-]",
    )  # fmt: skip
    members: str = setting(
        "", "a fixed cluster: every daemon's id, comma-separated, the same list on each (no failover)",
        rule=_names, expect="comma-separated ids of 1–64 characters of [A-Za-z0-9_.:-]",
    )  # fmt: skip
    redis: str = setting(
        "", "a live cluster: the Redis server holding the daemons' leases (failover); '' = none",
        rule=_redis_url, expect="redis://host:port[/db], rediss://… or unix:///path.sock",
    )  # fmt: skip
    name: str = setting(
        "p2p", "the cluster's name in Redis: daemons of one fleet share it, another fleet takes another",
        rule=_names, expect="1–64 characters of [A-Za-z0-9_.:-]",
    )  # fmt: skip
    lease_s: float = setting(
        3.0, "a daemon that has not renewed its lease for this long is taken for dead: its devices move", unit="s",
        range=(0.3, 600),
    )  # fmt: skip

    def on(self) -> bool:
        return bool(self.members or self.redis)


@dataclass
class Ray:
    """Only with model.backend = "ray" (docs/scaling.md; pip install -e '.[cluster]')."""

    address: str = setting(
        "", "the Ray cluster the daemon uses", rule=_ray_address,
        expect="'' (a Ray of this daemon's own), 'auto' (the cluster `ray start` made here), ray://host:port or "
        "host:port",
    )  # fmt: skip
    app: str = setting("p2p-inference", "the Serve application the daemons share; one per model")
    max_batch: int = setting(
        8, "daemon batches a replica merges into one forward pass (@serve.batch max_batch_size)", range=(1, 1024)
    )
    max_wait_ms: float = setting(
        0.0, "the first waits this long for others; 0 = merge what is queued, never wait", unit="ms",
        range=(0, 10_000),
    )  # fmt: skip
    min_replicas: int = setting(1, "Ray's autoscaler keeps at least this many replicas…", range=(0, 10_000))
    max_replicas: int = setting(4, "…and adds up to this many as requests queue up", range=(1, 10_000))
    target_ongoing_requests: float = setting(
        2.0, "requests in flight per replica the autoscaler aims for", range=(0.1, 10_000)
    )
    num_cpus: float = setting(1.0, "CPUs per replica (also its torch threads)", range=(0, 1024))
    num_gpus: float = setting(0.0, "GPUs per replica; > 0 places replicas on GPUs and runs them on CUDA", range=(0, 64))
    max_in_flight: int = setting(
        2, "batches a daemon has sent and awaits at once; >1 lets one daemon feed several replicas", range=(1, 256)
    )
    timeout_s: float = setting(
        10.0, "a batch without an answer after this long is tried again", unit="s", range=(0.1, 600)
    )
    retries: int = setting(
        2, "tries after the first; then its windows are published as rejected: backend_unavailable", range=(0, 100)
    )
    deploy_timeout_s: float = setting(
        60.0, "a deploy whose replicas are not all running after this long fails, naming the cause (e.g. no GPU)",
        unit="s", range=(1, 3600),
    )  # fmt: skip


@dataclass
class DaemonConfig:
    sockets: Sockets = field(default_factory=Sockets)
    windowing: Windowing = field(default_factory=Windowing)
    batching: Batching = field(default_factory=Batching)
    model: Model = field(default_factory=Model)
    limits: Limits = field(default_factory=Limits)
    calibration: Calibration = field(default_factory=Calibration)
    smoothing: Smoothing = field(default_factory=Smoothing)
    operation: Operation = field(default_factory=Operation)
    security: Security = field(default_factory=Security)
    state: State = field(default_factory=State)
    cluster: Cluster = field(default_factory=Cluster)
    ray: Ray = field(default_factory=Ray)


def _validate(c: DaemonConfig) -> None:
    """Each setting against its declaration, then the rules that tie settings together."""
    check_settings(c)
    if c.calibration.span_s / c.windowing.hop_s > MAX_SPAN_WINDOWS:  # bounds each device's calibration history
        raise ConfigError(
            f"calibration.span_s / windowing.hop_s must be ≤ {MAX_SPAN_WINDOWS} (the estimates a device's calibration "
            f"keeps), got {c.calibration.span_s} / {c.windowing.hop_s}; shorten the span or lengthen the hop"
        )
    if c.state.resume_gap_s < c.limits.device_idle_s:  # else a paused device still in the table loses its session
        raise ConfigError(
            f"state.resume_gap_s ({c.state.resume_gap_s} s) must be at least limits.device_idle_s "
            f"({c.limits.device_idle_s} s): a device paused but not yet evicted must still be able to resume"
        )
    if c.windowing.hop_s > c.windowing.window_s:
        raise ConfigError(
            f"windowing.hop_s ({c.windowing.hop_s}) must not exceed windowing.window_s ({c.windowing.window_s})"
        )
    addresses = [c.sockets.ingest, c.sockets.publish, c.sockets.control]
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"sockets.ingest, publish and control must differ, got {addresses}")
    if c.ray.min_replicas > c.ray.max_replicas:
        raise ConfigError(
            f"ray.min_replicas ({c.ray.min_replicas}) must not exceed ray.max_replicas ({c.ray.max_replicas})"
        )
    if c.security.curve_secret_key and c.sockets.connect:  # its ingest would never complete a handshake with the proxy
        raise ConfigError(
            "security.curve_secret_key with sockets.connect = true: behind p2p-proxy, CURVE goes on the proxy "
            "(p2p proxy --curve-secret-key … --authorized-keys …) and the daemons run without it, their control "
            "socket on loopback or ipc://"
        )
    cl = c.cluster
    if cl.members and cl.redis:
        raise ConfigError("cluster.members and cluster.redis: give one — a fixed list, or Redis for a live cluster")
    if cl.on() and not cl.id:
        raise ConfigError("cluster.id: a daemon in a cluster needs a name unique there, e.g. --set cluster.id=a")
    members = [m.strip() for m in cl.members.split(",") if m.strip()]
    if members and cl.id not in members:
        raise ConfigError(f"cluster.members {members} must include this daemon's cluster.id {cl.id!r}")
    validate_security(c.security, c.sockets.addresses())


def load_daemon_config(path: str | Path | None = None, overrides: list[dict] | None = None) -> DaemonConfig:
    config = DaemonConfig()
    apply_layers(config, path, overrides, RENAMED)
    _validate(config)
    return config


DEFAULTS_HEADER = """\
p2p-daemon defaults: every setting at the value it has when this file is absent.
Generated from the declarations in p2p_stream/config/daemon.py by `python -m p2p_stream.config`; do not edit
(a test fails when it differs). Each comment: help (unit), accepted values, and the setting's flag if it has one;
any setting is also `p2p-daemon --set section.key=value`. A value outside its range is refused at start-up."""


def defaults_text() -> str:
    """configs/default.toml as the declarations make it."""
    return defaults_toml(DaemonConfig, DEFAULTS_HEADER)
