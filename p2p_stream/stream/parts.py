"""Parts: everything the daemon runs, built from its config with no socket open — the model checked against the
windowing, the device table, the batcher, counters, calibrations, smoothing, the backend and the state store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2p_stream.backends import Backend, make_backend
from p2p_stream.config.daemon import DEFAULT_STATE_PATH, DaemonConfig, state_path
from p2p_stream.errors import ConfigError
from p2p_stream.model.estimator import Estimator, default_model_path
from p2p_stream.model.tracking import Tracker
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.ingest.bounds import MB
from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.state.calibration import Calibrations, params_from_metadata
from p2p_stream.stream.state.remembering import RememberingDeviceTable
from p2p_stream.stream.state.smoothing import Smoother
from p2p_stream.stream.state.store import StateStore


@dataclass
class DaemonParts:
    """Everything the daemon runs, built from its config: the stages of the data path and their state."""

    estimator: Estimator  # the quality gate's settings, the preprocessing and the network
    devices: DeviceTable  # one ring buffer per wearable
    batcher: DynamicBatcher  # finished windows waiting for the model
    counters: Counters  # what the heartbeat reports
    calibrations: Calibrations  # cuff readings per wearable
    smoother: Smoother  # the last few estimates per wearable
    backend: Backend  # where the gate and the network run
    store: StateStore | None = None  # calibrations and device facts on disk (state.path); None: in memory only

    @property
    def boot(self) -> int | None:
        """This daemon start's number in its state store (the estimates' `epoch`); None without a store."""
        return self.store.boot if self.store is not None else None


def check_windowing(config: DaemonConfig, estimator: Estimator) -> None:
    """Refuse a window length the model's quality gate or training cannot serve (ConfigError)."""
    window_s = config.windowing.window_s
    min_s = estimator.quality_config.min_s
    if window_s < min_s:
        raise ConfigError(
            f"windowing.window_s = {window_s} s is shorter than the {min_s} s the model's "
            f"quality gate needs ({estimator.name}); use window_s ≥ {min_s}"
        )
    lo, hi = estimator.window_range_s
    if not lo - 1e-6 <= window_s <= hi + 1e-6:
        accepted = f"windowing.window_s = {lo:g}" if lo == hi else f"windowing.window_s within [{lo:g}, {hi:g}] s"
        raise ConfigError(
            f"windowing.window_s = {window_s} s is outside the window lengths "
            f"{estimator.name} was made for; set {accepted}"
        )


def build(config: DaemonConfig, estimator: Estimator | None = None) -> DaemonParts:
    """The daemon's parts: the model loaded (or `estimator`) and checked against the windowing, then each stage."""
    estimator = estimator or Estimator.load(config.model.path or None, torch_device=config.model.torch_device)
    check_windowing(config, estimator)
    checkpoint = Path(config.model.path) if config.model.path else default_model_path()
    # Opened before anything else that holds resources: a store that cannot be used stops the start-up here.
    store = open_store(config, estimator.name)
    backend = None
    try:
        backend = make_backend(config, estimator, checkpoint)
        parts = _parts(config, estimator, backend, store)
    except BaseException:
        if backend is not None:
            backend.close()
        if store is not None:
            store.close()
        raise
    if store is not None:  # a device's new stream takes its stored calibration; references formed are saved
        parts.calibrations.recall = store.recall
        parts.calibrations.on_reference = store.set_reference
    return parts


def open_store(config: DaemonConfig, model: str) -> StateStore | None:
    """The state store `state.path` names (its folder made for the default one), or None for '' (memory only)."""
    path = state_path(config.state)
    if not path:
        return None
    if config.state.path == DEFAULT_STATE_PATH:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"state.path: cannot make the folder of the default store {path} ({exc}); set "
                "state.path to a file in a writable folder, or '' to keep state in memory"
            ) from exc
    s = config.state
    return StateStore(path, model, resume_gap_s=s.resume_gap_s, keep_days=s.keep_days,
                      audit_rows_per_device=s.audit_rows_per_device, adopt=s.adopt)  # fmt: skip


def _parts(config: DaemonConfig, estimator: Estimator, backend: Backend, store: StateStore | None) -> DaemonParts:
    w, b, lim, cal = config.windowing, config.batching, config.limits, config.calibration
    table = DeviceTable if store is None else lambda **kw: RememberingDeviceTable(store, **kw)
    return DaemonParts(
        estimator=estimator,
        devices=table(
            window_s=w.window_s,
            hop_s=w.hop_s,
            max_chunk=lim.max_chunk_samples,
            gap_tolerance_s=w.gap_tolerance_s,
            max_devices=lim.max_devices,
            idle_s=lim.device_idle_s,
            ring_memory_bytes=int(lim.ring_memory_mb * MB),
            rate_factor=lim.rate_factor,
            burst_s=lim.burst_s,
            # a backend that keeps crop features gets a run's first crops cut ahead, as their samples come in
            warm_crop_s=estimator.crop_s if backend.caches_crops else 0.0,
            follow_beats=cal.tracking != "off",  # each window carries its beats' features (pat_ms, tracking)…
            beats_without_ecg=cal.tracking == "ppg",  # …a PPG-only device's only where they are used: no cost else
        ),
        batcher=DynamicBatcher(
            b.max_batch,
            b.max_wait_ms,
            b.max_queue,
            max_bytes=int(b.max_queue_mb * MB),
            per_device=b.max_queued_per_device,
        ),  # fmt: skip
        counters=Counters(),
        calibrations=Calibrations(
            cal.span_s,
            cal.min_estimates,
            hop_s=w.hop_s,
            **params_from_metadata(estimator.metadata),
            tracker=Tracker.load(ppg_only=cal.tracking == "ppg") if cal.tracking != "off" else None,
        ),
        smoother=Smoother(config.smoothing.windows),
        backend=backend,
        store=store,
    )
