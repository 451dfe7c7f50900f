"""Daemon: wires the stages — SUB → ring buffers → batcher → inference worker → PUB — plus the control socket.

Assembly is two steps: `build(config, estimator)` makes the parts (no socket), `bind(config)` opens the sockets;
`Daemon(config)` does both and wires the inference worker between them. The ingest loop (this thread)
validates every message, feeds the device's ring buffer and hands finished windows to the batcher; it never
waits on the model. The inference worker thread owns the PUB socket. Control requests are answered by the pure
`control.handle(request, daemon)`.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from p2p_stream.backends import Backend, make_backend
from p2p_stream.backends.crop_cache import CropCache
from p2p_stream.backends.process import InferenceProcess
from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.config.security import exposure_warning
from p2p_stream.errors import ConfigError, P2PError, ProtocolError
from p2p_stream.model.estimator import Estimator, default_model_path
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.cluster.membership import membership_for
from p2p_stream.stream.cluster.ownership import Ownership
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.arrival import ArrivalClock
from p2p_stream.stream.ingest.bounds import CONTROL_HWM, CONTROL_MAX_BYTES, MB, SUBSCRIPTION_MAX_BYTES, ingest_hwm
from p2p_stream.stream.ingest.devices import DeviceLimitError, DeviceTable
from p2p_stream.stream.ingest.ring_buffer import Window
from p2p_stream.stream.security.curve import CurveServer
from p2p_stream.stream.security.grants import DeviceGrants, recv_keyed
from p2p_stream.stream.state import control
from p2p_stream.stream.state.calibration import Calibrations, params_from_metadata
from p2p_stream.stream.state.smoothing import Smoother
from p2p_stream.stream.state.store import RememberingDeviceTable, StateStore
from p2p_stream.wire.protocol import INGEST_PREFIX, MAX_FRAME_BYTES, decode_ingest, pack

log = logging.getLogger(__name__)
DRAIN_PER_POLL = 2000  # messages read per wake-up before control, the stop flag and housekeeping get a turn…
DRAIN_BUDGET_S = 0.05  # …or this much ingest time, whichever comes first (one message may overrun it)


def torch_threads(config: DaemonConfig) -> tuple[int, int]:
    """(steady, burst) torch threads of the local backend. In a burst the ingest loop mostly waits (a profile of
    1,000 devices whose windows fall due at once: its thread idle 86 % of the time), so the network may take every
    core then; steadily one core stays with ingest (`auto_threads`)."""
    steady = config.model.threads or auto_threads()
    return steady, config.model.burst_threads or os.cpu_count() or 1


def reuses_crops(config: DaemonConfig, estimator: Estimator) -> bool:
    """Whether crop features are computed once and kept (`model.reuse_crops`): a local network (in this process or
    the inference process) on a crop-averaging model."""
    return config.model.backend == "local" and config.model.reuse_crops and estimator.caches_crops


def crop_cache_for(config: DaemonConfig, estimator: Estimator) -> CropCache | None:
    """The crop cache of a local network on a crop-averaging model (`model.reuse_crops`), one device per wearable
    the daemon may track; None where the network runs elsewhere or the model has no crops to share."""
    if not reuses_crops(config, estimator):
        return None
    return CropCache(estimator, capacity=config.limits.max_devices, window_s=config.windowing.window_s)


def auto_threads() -> int:
    """Torch threads when the config says 0: every core but one, which the ingest loop needs to itself.

    Measured on 2 cores (docs/performance.md): 1 torch thread cut the p99 latency at 1,000 devices from 362 to
    251 ms against torch's default of 2, which oversubscribes the cores the ingest loop also runs on.
    """
    return max(1, (os.cpu_count() or 1) - 1)


# ---------------------------------------------------------------- step 1: the parts, no socket


@dataclass
class DaemonParts:
    """Everything the daemon runs, built from its config: the stages of the data path and their state."""

    estimator: Estimator  # the quality gate's settings, the preprocessing and the network
    devices: DeviceTable  # one ring buffer per wearable
    batcher: DynamicBatcher  # finished windows waiting for the model
    counters: Counters  # what the heartbeat reports
    calibrations: Calibrations  # cuff readings per wearable
    smoother: Smoother  # the last few estimates per wearable
    backend: Backend  # where the network runs
    store: StateStore | None = None  # calibrations and device facts on disk (state.path); None: in memory only

    @property
    def epoch(self) -> int | None:
        """This daemon start's number in its state store (estimates carry it); None without a store."""
        return self.store.epoch if self.store is not None else None


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
    torch.set_num_threads(torch_threads(config)[0])
    estimator = estimator or Estimator.load(config.model.path or None, device=config.model.device)
    check_windowing(config, estimator)
    checkpoint = Path(config.model.path) if config.model.path else default_model_path()
    # Opened before anything else that holds resources: a store that cannot be used stops the start-up here.
    store = StateStore(config.state.path, estimator.name) if config.state.path else None
    try:
        parts = _parts(config, estimator, checkpoint, store)
    except BaseException:
        if store is not None:
            store.close()
        raise
    if store is not None:  # a device's new stream takes its stored calibration; references formed are saved
        parts.calibrations.recall = store.recall
        parts.calibrations.on_reference = store.set_reference
    return parts


def _parts(config: DaemonConfig, estimator: Estimator, checkpoint: Path, store: StateStore | None) -> DaemonParts:
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
            warm_crop_s=estimator.crop_s if reuses_crops(config, estimator) else 0.0,
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
            cal.span_s, cal.min_estimates, hop_s=w.hop_s, **params_from_metadata(estimator.metadata)
        ),
        smoother=Smoother(config.smoothing.windows),
        backend=make_backend(config.model.backend, estimator, checkpoint, config.ray),
        store=store,
    )


# ---------------------------------------------------------------- step 2: the sockets


@dataclass
class Sockets:
    """The daemon's ZeroMQ side: ingest SUB, estimates PUB, control REP, and (with CURVE) their handshake monitors."""

    ctx: zmq.Context
    sub: zmq.Socket
    pub: zmq.Socket
    rep: zmq.Socket
    curve: CurveServer | None = None
    monitors: list[zmq.Socket] = field(default_factory=list)  # ZeroMQ's socket monitors: refused handshakes

    def close(self) -> None:
        if self.monitors:
            for sock in (self.sub, self.rep):
                sock.disable_monitor()
        for sock in (*self.monitors, self.sub, self.rep, self.pub):
            sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.term()


def bind(config: DaemonConfig) -> Sockets:
    """Open the three sockets on the configured addresses; a ConfigError (and nothing left open) if one cannot."""
    ctx = zmq.Context()
    curve: CurveServer | None = None
    opened: list[zmq.Socket] = []
    s = config.sockets

    def open_socket(
        kind: int, address: str, key: str, secure: bool = False, options: dict | None = None, connect: bool = False
    ) -> zmq.Socket:
        """A socket bound to `address` (or connected to it, behind a p2p-proxy), options set before either."""
        sock = ctx.socket(kind)
        opened.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        if secure and curve is not None:
            curve.serve(sock)
        try:
            if connect:
                sock.connect(address)  # behind a p2p-proxy: the proxy binds, the shards connect
            else:
                sock.bind(address)
        except zmq.ZMQError as exc:
            raise ConfigError(f"{key}: cannot bind {address} ({exc}); is another daemon running there?") from exc
        return sock

    try:
        if config.security.curve_secret_key:
            curve = CurveServer(ctx, config.security)
        # Options go before bind: ZeroMQ applies them to connections made after they are set. Every queue is bounded
        # in bytes (stream/ingest/bounds.py): a frame over MAX_FRAME_BYTES makes ZeroMQ drop the sender's connection (up
        # to it, a payload over the protocol's limit reaches us and is counted `oversized`), and the high-water mark
        # holds at most limits.ingest_queue_mb of such messages per connection.
        sub = open_socket(
            zmq.SUB, s.ingest, "sockets.ingest", secure=True,
            options={zmq.RCVHWM: ingest_hwm(config), zmq.MAXMSGSIZE: MAX_FRAME_BYTES}, connect=s.connect,
        )  # fmt: skip
        # Every wearable: in a cluster, each daemon hears all and keeps those it owns (stream/cluster/ownership.py).
        sub.setsockopt(zmq.SUBSCRIBE, INGEST_PREFIX)
        # Per subscriber: one that stops reading costs at most this many queued estimates, never the others' speed.
        # A subscription is a message to this socket: one longer than any topic (it could match nothing) drops the
        # subscriber's connection before ZeroMQ stores it (100,000 of 513 bytes once took 2.4 GB: issue 14).
        pub = open_socket(
            zmq.PUB, s.publish, "sockets.publish",
            options={zmq.SNDHWM: config.limits.publish_hwm, zmq.MAXMSGSIZE: SUBSCRIPTION_MAX_BYTES}, connect=s.connect,
        )  # fmt: skip
        # A control request is a small map: a bigger frame drops the requester's connection before it is held.
        rep = open_socket(
            zmq.REP, s.control, "sockets.control", secure=True,
            options={zmq.MAXMSGSIZE: CONTROL_MAX_BYTES, zmq.RCVHWM: CONTROL_HWM},
        )  # fmt: skip
    except BaseException:
        for sock in opened:
            sock.close(linger=0)
        if curve is not None:
            curve.stop()
        ctx.destroy(linger=0)
        raise
    sockets = Sockets(ctx, sub, pub, rep, curve)
    # ZeroMQ's socket monitors report what never reaches our code. Refused CURVE handshakes; and, behind a proxy,
    # a lost link: ZeroMQ does not reconnect after a protocol error (a frame over MAXMSGSIZE), so the loop does.
    handshakes = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )
    sub_events = (handshakes if curve is not None else 0) | (zmq.EVENT_DISCONNECTED if s.connect else 0)
    if sub_events:
        sockets.monitors.append(sub.get_monitor_socket(sub_events))
    if curve is not None:
        sockets.monitors.append(rep.get_monitor_socket(handshakes))
    return sockets


# ---------------------------------------------------------------- the daemon: parts + sockets + worker + loop


class Daemon:
    """Built and bound on construction (a bad model or a taken port fails here); `run()` serves until `stop()`.

    It is also the `control.ControlState` the control protocol acts on: `status`, `known`, `forget`, `calibrate`,
    `history`.
    """

    def __init__(self, config: DaemonConfig, estimator: Estimator | None = None) -> None:
        self.config = config
        self.parts = build(config, estimator)
        self.inference_process: InferenceProcess | None = None  # started with the worker, when configured
        try:
            self.sockets = bind(config)
        except BaseException:
            self._release_parts()
            raise
        self.stop_event = threading.Event()
        self.max_clock_skew_s = config.limits.max_clock_skew_s  # read once per message: kept at hand
        self.max_fs_hz = config.limits.max_fs_hz
        self.arrivals = ArrivalClock()  # how long each message waited in ZeroMQ before we read it
        self.warn = RateLimitedLog(log, period_s=10.0)
        # With CURVE, each message carries its client key, and the key's file says which device ids it may act for.
        curve = self.sockets.curve
        self.keyed = curve is not None
        self.grants = DeviceGrants(curve.keys if curve is not None else None, config.limits.max_devices_per_key)
        # In a cluster: the live daemons (a fixed list, or Redis leases) and which devices are this daemon's.
        self.membership = membership_for(config.cluster)
        if self.membership is not None:
            try:
                self.membership.start()  # Redis: takes this daemon's lease, or a ConfigError says why it cannot
            except BaseException:
                self.sockets.close()
                self._release_parts()
                raise
        self.ownership = Ownership(self.membership) if self.membership is not None else None
        self._taken_over: set[str] = set()  # devices taken over from another daemon, not heard here since
        p = self.parts
        process = config.model.inference_process and config.model.backend == "local"
        self.inference_process = (
            InferenceProcess(
                p.estimator,
                capacity=config.limits.max_devices,
                window_s=config.windowing.window_s,
                reuse_crops=config.model.reuse_crops,
                threads=torch_threads(config)[0],
            )
            if process
            else None
        )
        self.worker = InferenceWorker(
            estimator=p.estimator,
            backend=p.backend,
            batcher=p.batcher,
            pub=self.sockets.pub,
            calibrations=p.calibrations,
            counters=p.counters,
            device_count=lambda: len(p.devices),
            heartbeat_s=config.operation.heartbeat_s,
            window_s=config.windowing.window_s,
            stop=self.stop_event,
            smoother=p.smoother,
            epoch=p.epoch,
            daemon=config.cluster.id or socket.gethostname(),
            cluster_status=self._cluster_status if self.ownership is not None else None,
            threads=torch_threads(config) if config.model.backend == "local" and not process else None,
            crop_cache=None if process else crop_cache_for(config, p.estimator),
            process=self.inference_process,
        )
        self.client: str | None = None  # the client key of the control request being answered (with CURVE)

    # ---------------------------------------------------------------- ingest

    def on_ingest(self, frames: list[bytes], arrival: float, user: str | None = None) -> None:
        """One message: validate, buffer, enqueue finished windows. Never raises for bad input.

        `user` is the client key that sent it (z85 text, with CURVE): it must be allowed the message's device.
        In a cluster, a message of a device another daemon owns is dropped unread (counted in `foreign_total`).
        """
        if self.ownership is not None and not self.ownership.mine(frames[0]):
            return
        self.parts.counters.message()
        try:
            now = time.time()
            msg = decode_ingest(frames, now=now, max_clock_skew_s=self.max_clock_skew_s, max_fs_hz=self.max_fs_hz)
            if self.keyed:
                refused = self.grants.refusal(user, msg.device)
                if refused is not None:
                    self._refuse_for_key(refused, user, msg.device)
                    return
            result = self.parts.devices.push(msg, arrival)
            if self.keyed:
                self.grants.hold(user, msg.device)  # it is in the device table now, held by this key
            if self._taken_over and msg.device in self._taken_over:
                self._mark_takeover(msg.device, msg.t0, arrival)
        except ProtocolError as exc:
            self.parts.counters.reject(exc.reason)
            self.warn.warning(exc.reason, "dropped a malformed message (%s): %s", exc.reason, exc)
            return
        except DeviceLimitError as exc:
            self.parts.counters.reject("too_many_devices")
            self.warn.warning("too_many_devices", "dropped a message from a new device: %s", exc)
            return
        except Exception:  # a bug must cost one message, not the daemon: counted, logged with its traceback
            self.parts.counters.reject("internal")
            log.exception("dropped a message after an internal error")
            return
        if result.replaced:  # the table was full: this new device took the slots of devices that cut no window
            self.grants.release(result.replaced)
            self.parts.counters.reject("replaced", len(result.replaced))
            self._log_evicted(result.replaced, why=f"to make room for {msg.device}")
        if result.dropped:
            self.parts.counters.reject(result.dropped)
            if result.dropped == "over_budget":  # a sender over its share is named, so its owner can be found
                self.warn.warning("over_budget", "shed a message of %s: over its share (limits.rate_factor × its "
                                  "rate, limits.burst_s, or limits.ring_memory_mb)", msg.device)  # fmt: skip
            return
        for reason in result.breaks:
            self.parts.counters.reject(reason)
        # Latency counts from when the samples reached the socket: set the windows' arrival back by the time this
        # message waited in ZeroMQ's queue (stream/ingest/arrival.py).
        queued = self.arrivals.queued_s(msg.device, msg.t0 + len(msg.ppg) / msg.fs, now)
        for window in result.windows:  # finished windows and break markers, in the order they happened
            window.arrival -= queued
            self._enqueue(window)

    def _enqueue(self, window: Window) -> None:
        shed = self.parts.batcher.put(window)
        if shed and window.warm:  # a crop cut ahead is no window: its window computes it, nothing is lost or told
            return
        if shed == "overloaded":
            self.parts.counters.reject(shed)
            self.warn.warning(shed, "the model is behind: window queue full, shedding windows")
        elif shed:  # this device's own share of the queue is full: its window goes, no one else's
            self.parts.counters.reject(shed)
            self.warn.warning(shed, "shed a window of %s: %d of its windows already wait", window.device,
                              self.parts.batcher.per_device)  # fmt: skip

    # ---------------------------------------------------------------- cluster

    def _cluster_status(self) -> dict:
        """The heartbeat's cluster keys: the live members as this daemon sees them, the messages left to others."""
        assert self.ownership is not None and self.membership is not None
        return {**self.membership.status(), "foreign_total": self.ownership.foreign}

    def _follow_membership(self) -> None:
        """The live set changed: devices now another daemon's leave this one's table (their calibrations stay in the
        state store, for whoever owns them next); devices taken over from another get a `gap` estimate first, when
        their next message starts their stream here."""
        assert self.ownership is not None and self.membership is not None
        taken = self.ownership.refresh()
        if taken is None:
            return
        self._taken_over = set(taken)  # a later change replaces it: a device not heard since is no one's news
        devices = self.parts.devices
        gone = [d for d in devices.streams if not self.ownership.owns(d)]
        for device in gone:
            devices.forget(device)
        self._left_table(gone)
        log.info("cluster %s: live daemons %s; %d device(s) handed to others, %d taken over",
                 self.config.cluster.name, ", ".join(self.membership.members) or "none", len(gone),
                 len(taken))  # fmt: skip

    def _left_table(self, gone: list[str]) -> None:
        """Devices out of the device table (evicted, or handed to another daemon): what else is kept per device
        follows the table. Their stored calibrations stay on disk, for their return."""
        streams = self.parts.devices.streams.keys()
        self.grants.release(gone)
        self.parts.calibrations.retain(streams)
        self.parts.smoother.retain(streams)
        self.arrivals.retain(streams)

    def _mark_takeover(self, device: str, t: float, arrival: float) -> None:
        """The first message here of a device another daemon estimated until now: a `gap` estimate (seq 0 of its
        stream here) tells subscribers its estimates broke off there and go on from this daemon."""
        self._taken_over.discard(device)
        stream = self.parts.devices.streams.get(device)
        if stream is not None:
            self._enqueue(Window(device, None, stream.fs, t, arrival, reason="gap", seq=stream.take_seq(),
                                 generation=stream.generation))  # fmt: skip

    # ---------------------------------------------------------------- control

    def _refuse_for_key(self, reason: str, user: str | None, device: str) -> None:
        """A message (or control request) from key `user` for `device` refused: counted and logged, rate-limited."""
        self.parts.counters.reject(reason)
        if reason == "unauthorized_device":
            self.warn.warning(reason, "refused key %s acting for device %s: not among its devices (its key file's "
                              "devices patterns)", self.grants.name(user), device)  # fmt: skip
        else:  # a separate rate limit from the table's own too_many_devices
            self.warn.warning(f"key_{reason}", "refused new device %s from key %s: it holds %d device ids already "
                              "(limits.max_devices_per_key)", device, self.grants.name(user),
                              self.grants.max_devices_per_key)  # fmt: skip

    def on_control(self, frames: list[bytes], user: str | None = None) -> dict:
        """A control request → its reply map (`control.handle`); every failure is an `ok: false` reply. With CURVE,
        a command naming a device `user`'s key may not act for is refused and counted `unauthorized_device`."""
        self.client = user
        if not self.keyed:
            return control.handle(frames, self)

        def allowed(device: str) -> bool:
            if self.grants.allows(user, device):
                return True
            self._refuse_for_key("unauthorized_device", user, device)
            return False

        return control.handle(frames, self, allowed)

    def status(self) -> dict:
        return self.worker.status()

    def known(self, device: str) -> bool:
        stream = self.parts.devices.streams.get(device)
        return stream is not None and stream.next_t0 is not None

    def forget(self, device: str) -> bool:
        p = self.parts
        if p.store is not None:  # for good, on disk first: a restart or its return must not bring it back
            p.store.forget(device, self.client)  # StoreError: nothing forgotten, the client hears why
        # Its windows still queued or at the backend are of this generation: they must not rebuild its state.
        stream = p.devices.streams.get(device)
        generation = stream.generation if stream is not None else None
        known = p.devices.forget(device)
        self.grants.release([device])
        p.calibrations.forget(device, generation)
        p.smoother.forget(device, generation)
        return known

    def calibrate(self, device: str, sbp: float, dbp: float) -> bool:
        stream = self.parts.devices.streams[device]  # `control.handle` asked `known(device)` first
        # The reading's time on the device's clock, which its estimates' `t` use: its latest sample.
        # For the stream sending now: estimates of a stream before it (another wearer) never form its reference.
        t_cal = stream.next_t0 - 1.0 / stream.fs
        store, key = self.parts.store, None
        if store is not None:  # on disk with its audit row before it is applied (StoreError: not applied at all)
            key = store.add_calibration(device, (sbp, dbp), t_cal, self.client)
        return self.parts.calibrations.calibrate(device, sbp, dbp, t_cal, stream.generation, key=key)

    def history(self, device: str, limit: int) -> list[dict] | None:
        if self.parts.store is None:
            return None
        rows = self.parts.store.history(device, limit)
        for row in rows:  # the key file's name where this daemon still allows the key (a revoked one: its key only)
            name = self.grants.name(row["client"]) if row["client"] is not None else None
            if name is not None and name != row["client"]:
                row["client_name"] = name
        return rows

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until `stop()`; then finish the batch in flight, publish it, close the sockets."""
        # What exists now (torch, the model, every module) lives as long as the daemon: out of the collector's sight,
        # so a full collection walks only what serving creates (one walked it all: 110-160 ms stalls under 4,000
        # devices, py-spy and gc.callbacks, issue 17).
        gc.collect()
        gc.freeze()
        self.worker.start()
        log.info(
            "p2p-daemon: ingest %s, estimates %s, control %s; model %s on %s",
            self.config.sockets.ingest,
            self.config.sockets.publish,
            self.config.sockets.control,
            self.parts.estimator.name,
            self.parts.backend.runs_on,
        )
        warning = exposure_warning(self.config.security, self.config.sockets.addresses())
        if warning:
            log.warning(warning)
        sub, rep, monitors = self.sockets.sub, self.sockets.rep, self.sockets.monitors
        devices = self.parts.devices
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(rep, zmq.POLLIN)
        for m in monitors:
            poller.register(m, zmq.POLLIN)
        next_evict = time.monotonic() + 1.0
        try:
            while not self.stop_event.is_set():
                if self.ownership is not None:
                    self._follow_membership()
                ready = dict(poller.poll(timeout=50))
                if sub in ready:  # bounded in count and in time: control and the stop flag wait ~50 ms at most
                    budget_end = time.monotonic() + DRAIN_BUDGET_S
                    for _ in range(DRAIN_PER_POLL):
                        try:
                            if self.keyed:  # with CURVE, the key that sent it too; without, the copying fast path
                                frames, user = recv_keyed(sub, zmq.NOBLOCK)
                            else:
                                frames, user = sub.recv_multipart(zmq.NOBLOCK), None
                        except zmq.Again:
                            break
                        self.on_ingest(frames, time.monotonic(), user)
                        if time.monotonic() >= budget_end or self.stop_event.is_set():
                            break
                if rep in ready:
                    request, user = recv_keyed(rep) if self.keyed else (rep.recv_multipart(), None)
                    rep.send(pack(self.on_control(request, user)))
                for m in monitors:
                    if m in ready:
                        self._on_monitor_event(recv_monitor_message(m))
                if time.monotonic() >= next_evict:
                    gone = devices.evict_idle()
                    self._left_table(gone)
                    self._log_evicted(gone)
                    next_evict = time.monotonic() + 1.0
        finally:
            self.close()

    def _log_evicted(self, gone: list[str], why: str = "that were idle", named: int = 5) -> None:
        """One line per eviction pass, naming a few, and rate-limited: 10,000 squatted ids expiring at once must not
        stall the loop on 10,000 log lines (issue 14, item 9)."""
        if gone:
            more = f" and {len(gone) - named} more" if len(gone) > named else ""
            self.warn.info(f"evicted {why.split()[0]}", "forgot %d device(s) %s: %s%s", len(gone), why,
                           ", ".join(gone[:named]), more)  # fmt: skip

    def _on_monitor_event(self, event: dict) -> None:
        """A refused CURVE handshake, logged (rate-limited) with the endpoint and counted: `auth_failed` for a key
        that is not allowed, `handshake_failed` for a peer that does not speak CURVE (it retries, so it counts
        once per attempt). Or, behind a proxy, the ingest link lost: `_relink`."""
        if event.get("event") == zmq.EVENT_DISCONNECTED:  # only the connecting SUB's monitor asks for it
            self._relink()
            return
        auth = event.get("event") == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        self.parts.counters.reject("auth_failed" if auth else "handshake_failed")
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        self.warn.warning(
            "auth_failed", "refused a client at %s: CURVE handshake failed (code %s): key not authorized "
            "or not a CURVE client", endpoint, event.get("value")
        )  # fmt: skip

    def _relink(self) -> None:
        """The ingest SUB's connection to the proxy dropped: connect again, counted as `link_lost` and logged.

        ZeroMQ reconnects by itself after a network error, but not after a protocol error (a frame over
        MAXMSGSIZE from a proxy that does not enforce the limits): without this the shard would get nothing more.
        Connecting afresh is right in both cases; the SUB sends its subscriptions again on the new connection.
        """
        address = self.config.sockets.ingest
        self.parts.counters.reject("link_lost")
        self.warn.warning("link_lost", "lost the ingest link to %s; connecting again", address)
        sub = self.sockets.sub
        try:
            sub.disconnect(address)  # drops ZeroMQ's own reconnect, if it is trying, so there is one link
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ENOENT:  # ENOENT: ZeroMQ has forgotten the endpoint already
                raise
        sub.connect(address)

    def stop(self) -> None:
        self.stop_event.set()

    def _release_parts(self) -> None:
        self.parts.backend.close()
        if self.inference_process is not None:
            self.inference_process.close()
        if self.parts.store is not None:
            self.parts.store.close()

    def close(self) -> None:
        self.stop_event.set()
        if self.membership is not None:  # leave at once: the others take this daemon's devices now, not in lease_s
            self.membership.stop()
        if self.worker.is_alive():
            self.worker.join(timeout=10)  # the worker finishes and publishes its batch in flight, then stops
        if self.worker.is_alive():  # never close a socket another thread is using: leave it to process exit
            log.error("inference worker did not stop; exiting without closing its socket")
            return
        self.sockets.close()
        self._release_parts()
        gc.unfreeze()  # what run() froze is collectable again (a process that builds daemons one after another)
        if self.worker.error is not None:
            raise P2PError(f"inference worker failed: {self.worker.error}")
