"""Daemon: the stages wired in data-path order — build the parts, bind the sockets, run the loop, ingest.

    build(config)   the parts, no socket (stream/parts.py): model, device table, batcher, calibrations, backend, …
    bind(config)    the sockets (stream/sockets.py): ingest SUB, estimates PUB, control REP
    Daemon.run()    the loop: follow the cluster, drain ingest, answer control, evict idle devices
    on_ingest()     one message: routed by topic (`IngestRouter`), validated, buffered, its windows to the batcher

The ingest loop (this thread) never waits on the model: the inference worker thread (stream/inference/worker.py)
takes batches, runs them through the backend (backends/) and owns the PUB socket. Control requests are answered
by `DaemonControl` (stream/state/daemon_control.py); a cluster is followed by `ClusterFollower`.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.config.security import exposure_warning
from p2p_stream.errors import P2PError, ProtocolError
from p2p_stream.model.estimator import Estimator
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.cluster.following import follower_for
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.arrival import ArrivalClock
from p2p_stream.stream.ingest.devices import DeviceLimitError
from p2p_stream.stream.ingest.ring_buffer import BreakMarker, CropAhead, Window
from p2p_stream.stream.ingest.router import IngestRouter
from p2p_stream.stream.parts import build
from p2p_stream.stream.security.grants import DeviceGrants, recv_keyed
from p2p_stream.stream.sockets import bind
from p2p_stream.stream.state.daemon_control import DaemonControl
from p2p_stream.stream.state.following import StoreFollower
from p2p_stream.stream.state.quotas import ControlQuotas
from p2p_stream.wire.protocol import ECG_PREFIX, INGEST_PREFIX, decode_ingest, pack

log = logging.getLogger(__name__)
DRAIN_PER_POLL = 2000  # messages read per wake-up before control, the stop flag and housekeeping get a turn…
DRAIN_BUDGET_S = 0.05  # …or this much ingest time, whichever comes first (one message may overrun it)
ECG_DROPS = {  # why an ECG message was dropped (counted as `ecg_<reason>`), said in the log
    "no_ppg_stream": "no PPG from that device yet, or its beats are not followed (calibration.tracking)",
    "duplicate": "its samples were already received",
    "over_budget": "over its share: limits.rate_factor × its rate, limits.burst_s",
}


# ---------------------------------------------------------------- the daemon: build → bind → run → ingest


class Daemon:
    """Built and bound on construction (a bad model or a taken port fails here); `run()` serves until `stop()`."""

    def __init__(self, config: DaemonConfig, estimator: Estimator | None = None) -> None:
        self.config = config
        self.parts = p = build(config, estimator)
        self.router = IngestRouter()
        self.register(self.router)  # before bind: the SUB subscribes to what is registered
        try:
            self.sockets = bind(config, self.router.prefixes)
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
        try:  # in a cluster: the live daemons (a fixed list, or Redis leases) and which devices are this daemon's
            self.cluster = follower_for(config.cluster, self.router.prefixes)
        except BaseException:
            self.sockets.close()
            self._release_parts()
            raise
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
            boot=p.boot,
            daemon=config.cluster.id or socket.gethostname(),
            cluster_status=self.cluster.status if self.cluster is not None else None,
        )
        st = config.state
        self.control = DaemonControl(
            devices=p.devices, calibrations=p.calibrations, smoother=p.smoother, store=p.store, grants=self.grants,
            status=self.worker.status, refuse=self._refuse_for_key,
            quotas=ControlQuotas(st.control_per_key_per_min, st.control_per_device_per_min),
        )  # fmt: skip
        self.store_follower = StoreFollower(p.store, p.devices, self.control) if p.store is not None else None

    def register(self, router: IngestRouter) -> None:
        """The kinds of message the wearables send, each to its handler: a new kind (a second channel) is one line."""
        router.register(INGEST_PREFIX, self._on_ppg)
        router.register(ECG_PREFIX, self._on_ecg)

    def on_control(self, frames: list[bytes] | dict, user: str | None = None) -> dict:
        """A control request → its reply map (stream/state/daemon_control.py)."""
        return self.control.on_control(frames, user)

    def status(self) -> dict:
        """The heartbeat map."""
        return self.worker.status()

    # ---------------------------------------------------------------- run: the loop

    def run(self) -> None:
        """Serve until `stop()`; then finish the batch in flight, publish it, close the sockets."""
        # What exists now (torch, the model, every module) lives as long as the daemon: out of the collector's sight,
        # so a full collection walks only what serving creates (docs/performance.md: full collections that walked it
        # all stalled the loop 110-160 ms under thousands of devices).
        gc.collect()
        gc.freeze()
        self.worker.start()
        s = self.config.sockets
        log.info("p2p-daemon: ingest %s, estimates %s, control %s; model %s on %s", s.ingest, s.publish, s.control,
                 self.parts.estimator.name, self.parts.backend.runs_on)  # fmt: skip
        warning = exposure_warning(self.config.security, s.addresses())
        if warning:
            log.warning(warning)
        sub, rep, monitors = self.sockets.sub, self.sockets.rep, self.sockets.monitors
        poller = zmq.Poller()
        for sock in (sub, rep, *monitors):
            poller.register(sock, zmq.POLLIN)
        next_evict = time.monotonic() + 1.0
        try:
            while not self.stop_event.is_set():
                if self.cluster is not None and (handed := self.cluster.follow(self.parts.devices)):
                    self._left_table(handed)
                ready = dict(poller.poll(timeout=50))
                if sub in ready:
                    self._drain(sub)
                if rep in ready:
                    request, user = recv_keyed(rep) if self.keyed else (rep.recv_multipart(), None)
                    rep.send(pack(self.on_control(request, user)))
                for m in monitors:
                    if m in ready:
                        self.sockets.on_monitor_event(recv_monitor_message(m), self.parts.counters, self.warn)
                if time.monotonic() >= next_evict:
                    gone = self.parts.devices.evict_idle()
                    self._left_table(gone)
                    self._log_evicted(gone)
                    if self.store_follower is not None:  # positions saved, other daemons' forgets followed
                        self.store_follower.tick(time.monotonic())
                    next_evict = time.monotonic() + 1.0
        finally:
            self.close()

    def _drain(self, sub: zmq.Socket) -> None:
        """Ingest messages, bounded in count and in time: control and the stop flag wait ~50 ms at most."""
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

    # ---------------------------------------------------------------- ingest

    def on_ingest(self, frames: list[bytes], arrival: float, user: str | None = None) -> None:
        """One message, to the handler its topic is registered for. Never raises for bad input.

        `user` is the client key that sent it (z85 text, with CURVE): it must be allowed the message's device.
        In a cluster, a message of a device another daemon owns is dropped unread (counted in `foreign_total`).
        """
        if self.cluster is not None and frames and not self.cluster.mine(frames[0]):
            return
        self.parts.counters.message()
        try:
            self.router.route(frames)(frames, arrival, user)
        except ProtocolError as exc:
            self.parts.counters.reject(exc.reason)
            self.warn.warning(exc.reason, "dropped a malformed message (%s): %s", exc.reason, exc)
        except DeviceLimitError as exc:
            self.parts.counters.reject("too_many_devices")
            self.warn.warning("too_many_devices", "dropped a message from a new device: %s", exc)
        except Exception:  # a bug must cost one message, not the daemon: counted, logged with its traceback
            self.parts.counters.reject("internal")
            log.exception("dropped a message after an internal error")

    def _on_ppg(self, frames: list[bytes], arrival: float, user: str | None) -> None:
        """A wearable's PPG samples: validated, checked against its key, buffered; finished windows to the batcher."""
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
        if self.cluster is not None and self.cluster.taken_over(msg.device):
            self._mark_takeover(msg.device, msg.t0, arrival)
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

    def _on_ecg(self, frames: list[bytes], arrival: float, user: str | None) -> None:
        """A wearable's ECG samples (a second channel, stream/ingest/ecg_channel.py): validated, checked against its
        key like its PPG, and handed to the device's beat detectors. It never creates a device nor cuts a window."""
        now = time.time()
        msg = decode_ingest(frames, now, self.max_clock_skew_s, self.max_fs_hz, channel="ecg")
        if self.keyed and not self.grants.allows(user, msg.device):  # no table slot is taken: only whose device
            self._refuse_for_key("unauthorized_device", user, msg.device)
            return
        dropped = self.parts.devices.push_ecg(msg, arrival)
        if dropped:
            self.parts.counters.reject(f"ecg_{dropped}")
            self.warn.warning(f"ecg_{dropped}", "dropped an ECG message of %s (%s)", msg.device, ECG_DROPS[dropped])

    def _enqueue(self, window: Window) -> None:
        shed = self.parts.batcher.put(window)
        if shed and isinstance(window, CropAhead):  # no window: its window computes it, nothing is lost or told
            return
        if shed == "overloaded":
            self.parts.counters.reject(shed)
            self.warn.warning(shed, "the model is behind: window queue full, shedding windows")
        elif shed:  # this device's own share of the queue is full: its window goes, no one else's
            self.parts.counters.reject(shed)
            self.warn.warning(shed, "shed a window of %s: %d of its windows already wait", window.device,
                              self.parts.batcher.per_device)  # fmt: skip

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
        stream = self.parts.devices.streams.get(device)
        if stream is not None:
            self._enqueue(
                BreakMarker(
                    device,
                    stream.fs,
                    t,
                    arrival,
                    seq=stream.take_seq(),
                    generation=stream.generation,
                    session=stream.session.id if stream.session is not None else 0,
                )
            )

    def _refuse_for_key(self, reason: str, user: str | None, device: str) -> None:
        """A message (or control request) from key `user` for `device` refused: counted and logged, rate-limited."""
        self.parts.counters.reject(reason)
        if reason == "unauthorized_device":
            self.warn.warning(reason, "refused key %s acting for device %s: not among its devices (its key file's "
                              "devices patterns)", self.grants.name(user), device)  # fmt: skip
        elif reason == "over_quota":
            self.warn.warning(reason, "refused a state change for %s from key %s: over its quota (state.control_per_"
                              "key_per_min, state.control_per_device_per_min)", device,
                              self.grants.name(user) if user else "(no CURVE)")  # fmt: skip
        else:  # a separate rate limit from the table's own too_many_devices
            self.warn.warning(f"key_{reason}", "refused new device %s from key %s: it holds %d device ids already "
                              "(limits.max_devices_per_key)", device, self.grants.name(user),
                              self.grants.max_devices_per_key)  # fmt: skip

    def _log_evicted(self, gone: list[str], why: str = "that were idle", named: int = 5) -> None:
        """One line per eviction pass, naming a few, and rate-limited: 10,000 squatted ids expiring at once must not
        stall the loop on 10,000 log lines."""
        if gone:
            more = f" and {len(gone) - named} more" if len(gone) > named else ""
            self.warn.info(f"evicted {why.split()[0]}", "forgot %d device(s) %s: %s%s", len(gone), why,
                           ", ".join(gone[:named]), more)  # fmt: skip

    def stop(self) -> None:
        self.stop_event.set()

    def _release_parts(self) -> None:
        self.parts.backend.close()
        if self.parts.store is not None:
            self.parts.store.close()

    def close(self) -> None:
        self.stop_event.set()
        if self.cluster is not None:  # leave at once: the others take this daemon's devices now, not in lease_s
            self.cluster.stop()
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
