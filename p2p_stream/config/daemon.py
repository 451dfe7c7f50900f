"""Daemon configuration: every knob with its default and accepted range; configs/default.toml mirrors it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from p2p_stream.config.layers import apply_layers
from p2p_stream.errors import ConfigError
from p2p_stream.stream.calibration import MIN_ESTIMATES_MAX
from p2p_stream.stream.security import Security
from p2p_stream.stream.security import validate as validate_security


@dataclass
class Sockets:
    ingest: str = "tcp://127.0.0.1:5555"  # SUB, binds; wearables connect a PUB
    publish: str = "tcp://127.0.0.1:5556"  # PUB, binds; estimates and the heartbeat
    control: str = "tcp://127.0.0.1:5557"  # REP, binds; ping, stats, calibrate, forget
    connect: bool = False  # ingest and publish connect to a p2p-proxy (sharded daemons) instead of binding
    prefixes: str = "ppg."  # comma-separated ingest topic prefixes this daemon takes (its shard of the devices)

    def addresses(self) -> dict[str, str]:
        return {"ingest": self.ingest, "publish": self.publish, "control": self.control}


@dataclass
class Windowing:
    window_s: float = 10.0  # window length, s
    hop_s: float = 2.0  # a new window every hop, s
    gap_tolerance_s: float = 0.2  # a message's t0 this far from where the last ended breaks the window, s


@dataclass
class Batching:
    max_batch: int = 64  # windows per model call at most
    max_wait_ms: float = 20.0  # the oldest window waits at most this long for company
    max_queue: int = 20_000  # windows waiting for the model; beyond it windows are shed (counted "overloaded")


@dataclass
class Model:
    path: str = ""  # checkpoint folder; empty = the shipped default
    device: str = "auto"  # cpu | cuda | cuda:N | auto (CUDA when present)
    threads: int = 0  # torch intra-op threads; 0 = every core but one (one is left to the ingest loop)
    backend: str = "local"  # local: the network runs in this process | ray: on a Ray Serve deployment ([ray])


@dataclass
class Ray:
    address: str = ""  # "" = a Ray instance of this daemon's own | "auto" = the cluster `ray start` made here | ray://…
    app: str = "p2p-inference"  # the Serve application the daemons share; one per model
    max_batch: int = 8  # daemon batches a replica merges into one forward pass (@serve.batch max_batch_size)
    max_wait_ms: float = 0.0  # the first waits this long for others; 0 = merge what is queued, never wait
    min_replicas: int = 1  # Ray's autoscaler keeps at least this many replicas…
    max_replicas: int = 4  # …and adds up to this many as requests queue up
    target_ongoing_requests: float = 2.0  # requests in flight per replica the autoscaler aims for
    num_cpus: float = 1.0  # CPUs per replica (also its torch threads)
    num_gpus: float = 0.0  # GPUs per replica; > 0 places replicas on GPUs and runs them on CUDA
    max_in_flight: int = 2  # batches a daemon has sent and awaits at once; >1 lets one daemon feed several replicas
    timeout_s: float = 10.0  # a batch without an answer after this long is tried again
    retries: int = 2  # tries after the first; then its windows are published as rejected: backend_unavailable


@dataclass
class Limits:
    max_devices: int = 10_000  # devices tracked at once; more are refused (counted "too_many_devices")
    device_idle_s: float = 60.0  # a device silent this long is forgotten
    max_chunk_samples: int = 4096  # ring-buffer slack per device; longer messages are fed in pieces
    publish_hwm: int = 10_000  # estimates queued per subscriber; a subscriber further behind loses the newest


@dataclass
class Calibration:
    span_s: float = 60.0  # a cuff reading's reference: the median of the estimates from span_s/2 before to after it, s
    min_estimates: int = 3  # the reference needs at least this many; until then estimates stay uncalibrated


@dataclass
class Smoothing:
    windows: int = 3  # published sbp/dbp: mean of the device's last K accepted windows, restarted at a gap; 1 = off


@dataclass
class Operation:
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR
    heartbeat_s: float = 1.0  # the `status` heartbeat period, s


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
    ray: Ray = field(default_factory=Ray)

    def to_dict(self) -> dict:
        return asdict(self)


# key → (low, high) inclusive; the message names both, so a wrong value says what would be right.
RANGES = {
    "windowing.window_s": (2.0, 120.0),
    "windowing.hop_s": (0.1, 120.0),
    "windowing.gap_tolerance_s": (0.0, 10.0),
    "batching.max_batch": (1, 4096),
    "batching.max_wait_ms": (0.0, 10_000.0),
    "batching.max_queue": (1, 10_000_000),
    "model.threads": (0, 256),
    "limits.max_devices": (1, 1_000_000),
    "limits.device_idle_s": (1.0, 86_400.0),
    "limits.max_chunk_samples": (16, 100_000),
    "limits.publish_hwm": (10, 10_000_000),
    "calibration.span_s": (0.0, 3600.0),
    "calibration.min_estimates": (1, MIN_ESTIMATES_MAX),
    "smoothing.windows": (1, 100),
    "operation.heartbeat_s": (0.05, 60.0),
    "ray.max_batch": (1, 1024),
    "ray.max_wait_ms": (0.0, 10_000.0),
    "ray.min_replicas": (0, 10_000),
    "ray.max_replicas": (1, 10_000),
    "ray.target_ongoing_requests": (0.1, 10_000.0),
    "ray.num_cpus": (0.0, 1024.0),
    "ray.num_gpus": (0.0, 64.0),
    "ray.max_in_flight": (1, 256),
    "ray.timeout_s": (0.1, 600.0),
    "ray.retries": (0, 100),
}
BACKENDS = ("local", "ray")
MAX_SPAN_WINDOWS = 600  # estimates within a calibration span: 600 × ~120 B per device, bounded at any device count
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ADDRESS_SCHEMES = ("tcp://", "ipc://", "inproc://")


def _validate(c: DaemonConfig) -> None:
    for key, (lo, hi) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(c, section), name)
        if not lo <= value <= hi:
            raise ConfigError(f"{key} must be within [{lo}, {hi}], got {value}")
    if c.calibration.span_s / c.windowing.hop_s > MAX_SPAN_WINDOWS:  # bounds each device's calibration history
        raise ConfigError(
            f"calibration.span_s / windowing.hop_s must be ≤ {MAX_SPAN_WINDOWS} (the estimates a device's calibration "
            f"keeps), got {c.calibration.span_s} / {c.windowing.hop_s}; shorten the span or lengthen the hop"
        )
    if c.windowing.hop_s > c.windowing.window_s:
        raise ConfigError(
            f"windowing.hop_s ({c.windowing.hop_s}) must not exceed windowing.window_s ({c.windowing.window_s})"
        )
    prefixes = c.sockets.prefixes.split(",")
    if not all(p.startswith("ppg.") for p in prefixes):
        raise ConfigError(f"sockets.prefixes must be comma-separated topics starting with 'ppg.', got {prefixes}")
    for f in fields(c.sockets):
        if f.name in ("connect", "prefixes"):
            continue
        address = getattr(c.sockets, f.name)
        if not address.startswith(ADDRESS_SCHEMES):
            raise ConfigError(f"sockets.{f.name} must start with one of {ADDRESS_SCHEMES}, got {address!r}")
    addresses = [c.sockets.ingest, c.sockets.publish, c.sockets.control]
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"sockets.ingest, publish and control must differ, got {addresses}")
    device = c.model.device
    if device not in ("cpu", "cuda", "auto") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"model.device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if c.model.backend not in BACKENDS:
        raise ConfigError(f"model.backend must be one of {BACKENDS}, got {c.model.backend!r}")
    if c.ray.min_replicas > c.ray.max_replicas:
        raise ConfigError(
            f"ray.min_replicas ({c.ray.min_replicas}) must not exceed ray.max_replicas ({c.ray.max_replicas})"
        )
    address = c.ray.address
    if address and address != "auto" and not address.startswith("ray://") and ":" not in address:
        raise ConfigError(
            f"ray.address must be '' (a Ray of this daemon's own), 'auto', ray://host:port or host:port, "
            f"got {address!r}"
        )
    if c.operation.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"operation.log_level must be one of {LOG_LEVELS}, got {c.operation.log_level!r}")
    validate_security(c.security, c.sockets.addresses())


def load_daemon_config(path: str | Path | None = None, overrides: list[dict] | None = None) -> DaemonConfig:
    config = DaemonConfig()
    apply_layers(config, path, overrides)
    _validate(config)
    return config
