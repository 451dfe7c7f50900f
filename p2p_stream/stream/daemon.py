"""Daemon: wires the stages — SUB → ring buffers → batcher → inference worker → PUB — plus the control socket.

The ingest loop (this thread) validates every message, feeds the device's ring buffer and hands finished
windows to the batcher; it never waits on the model. The inference worker thread owns the PUB socket.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from p2p_stream.backends.local import make_backend
from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.errors import ConfigError, P2PError, ProtocolError
from p2p_stream.model.estimator import Estimator, default_model_path
from p2p_stream.stream.batcher import DynamicBatcher
from p2p_stream.stream.calibration import Calibrations, params_from_metadata
from p2p_stream.stream.counters import Monitor
from p2p_stream.stream.devices import DeviceLimitError, DeviceTable
from p2p_stream.stream.protocol import DEVICE_RE, MAX_MESSAGE_BYTES, decode_ingest, decode_map, pack
from p2p_stream.stream.ratelimit import RateLimitedLog
from p2p_stream.stream.ring_buffer import Window
from p2p_stream.stream.security import CurveServer, exposure_warning
from p2p_stream.stream.smoothing import Smoother
from p2p_stream.stream.worker import InferenceWorker

log = logging.getLogger(__name__)
DRAIN_PER_POLL = 2000  # messages read per wake-up before control and housekeeping get a turn
COMMANDS = ("ping", "stats", "calibrate", "forget")


def auto_threads() -> int:
    """Torch threads when the config says 0: every core but one, which the ingest loop needs to itself.

    Measured on 2 cores (docs/performance.md): 1 torch thread cut the p99 latency at 1,000 devices from 362 to
    251 ms against torch's default of 2, which oversubscribes the cores the ingest loop also runs on.
    """
    return max(1, (os.cpu_count() or 1) - 1)


class Daemon:
    def __init__(self, config: DaemonConfig, estimator: Estimator | None = None) -> None:
        self.config = config
        torch.set_num_threads(config.model.threads or auto_threads())
        self.estimator = estimator or Estimator.load(config.model.path or None, device=config.model.device)
        min_s = self.estimator.quality_config.min_s
        if config.windowing.window_s < min_s:
            raise ConfigError(
                f"windowing.window_s = {config.windowing.window_s} s is shorter than the {min_s} s the model's "
                f"quality gate needs ({self.estimator.name}); use window_s ≥ {min_s}"
            )
        lo, hi = self.estimator.window_range_s
        if not lo - 1e-6 <= config.windowing.window_s <= hi + 1e-6:
            accepted = f"windowing.window_s = {lo:g}" if lo == hi else f"windowing.window_s within [{lo:g}, {hi:g}] s"
            raise ConfigError(
                f"windowing.window_s = {config.windowing.window_s} s is outside the window lengths "
                f"{self.estimator.name} was made for; set {accepted}"
            )
        w, b, lim = config.windowing, config.batching, config.limits
        self.devices = DeviceTable(
            w.window_s, w.hop_s, lim.max_chunk_samples, w.gap_tolerance_s, lim.max_devices, lim.device_idle_s
        )
        self.batcher = DynamicBatcher(b.max_batch, b.max_wait_ms, b.max_queue)
        self.monitor = Monitor()
        cal = config.calibration
        self.calibrations = Calibrations(
            cal.span_s, cal.min_estimates, hop_s=w.hop_s, **params_from_metadata(self.estimator.metadata)
        )
        self.smoother = Smoother(config.smoothing.windows)
        self.stop_event = threading.Event()
        self.warn = RateLimitedLog(log, period_s=10.0)
        checkpoint = Path(config.model.path) if config.model.path else default_model_path()
        self.backend = make_backend(config.model.backend, self.estimator, checkpoint, config.ray)
        self.ctx = zmq.Context()
        self.curve = CurveServer(self.ctx, config.security) if config.security.curve_secret_key else None
        # Options go before bind: ZeroMQ applies them to connections made after they are set.
        # Up to 16x the protocol's limit a message reaches us and is counted as "oversized"; beyond that ZeroMQ
        # itself drops the frame and disconnects the sender, so one peer cannot make us buffer gigabytes.
        self.sub = self._bind(
            zmq.SUB, config.sockets.ingest, "sockets.ingest", secure=True,
            options={zmq.RCVHWM: 100_000, zmq.MAXMSGSIZE: 16 * MAX_MESSAGE_BYTES}, connect=config.sockets.connect,
        )  # fmt: skip
        for prefix in config.sockets.prefixes.split(","):  # this daemon's shard of the devices
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        # Per subscriber: one that stops reading costs at most this many queued estimates, never the others' speed.
        self.pub = self._bind(
            zmq.PUB, config.sockets.publish, "sockets.publish", options={zmq.SNDHWM: config.limits.publish_hwm},
            connect=config.sockets.connect,
        )  # fmt: skip
        self.rep = self._bind(zmq.REP, config.sockets.control, "sockets.control", secure=True)
        # Refused CURVE handshakes never reach our code: the sockets' monitors report them.
        events = (
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        self.monitors = [s.get_monitor_socket(events) for s in (self.sub, self.rep)] if self.curve else []
        self.worker = InferenceWorker(
            self.estimator,
            self.backend,
            self.batcher,
            self.pub,
            self.calibrations,
            self.monitor,
            lambda: len(self.devices),
            config.operation.heartbeat_s,
            w.window_s,
            self.stop_event,
            self.smoother,
        )

    def _bind(
        self,
        kind: int,
        address: str,
        key: str,
        secure: bool = False,
        options: dict | None = None,
        connect: bool = False,
    ) -> zmq.Socket:
        """A socket bound to `address` (or connected to it, behind a p2p-proxy), options set before either."""
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        if secure and self.curve is not None:
            self.curve.serve(sock)
        try:
            if connect:
                sock.connect(address)  # behind a p2p-proxy: the proxy binds, the shards connect
            else:
                sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close()
            if self.curve is not None:
                self.curve.stop()
            self.ctx.destroy(linger=0)
            self.backend.close()
            raise ConfigError(f"{key}: cannot bind {address} ({exc}); is another daemon running there?") from exc
        return sock

    # ---------------------------------------------------------------- ingest

    def on_ingest(self, frames: list[bytes], arrival: float) -> None:
        """One message: validate, buffer, enqueue finished windows. Never raises for bad input."""
        self.monitor.message()
        try:
            msg = decode_ingest(frames)
            result = self.devices.push(msg, arrival)
        except ProtocolError as exc:
            self.monitor.reject(exc.reason)
            self.warn.warning(exc.reason, "dropped a malformed message (%s): %s", exc.reason, exc)
            return
        except DeviceLimitError as exc:
            self.monitor.reject("too_many_devices")
            self.warn.warning("too_many_devices", "dropped a message from a new device: %s", exc)
            return
        except Exception:  # a bug must cost one message, not the daemon: counted, logged with its traceback
            self.monitor.reject("internal")
            log.exception("dropped a message after an internal error")
            return
        if result.dropped:
            self.monitor.reject(result.dropped)
            return
        for reason in result.breaks:
            self.monitor.reject(reason)
        for window in result.windows:  # finished windows and break markers, in the order they happened
            self._enqueue(window)

    def _enqueue(self, window: Window) -> None:
        if not self.batcher.put(window):
            self.monitor.reject("overloaded")
            self.warn.warning("overloaded", "the model is behind: window queue full, shedding windows")

    # ---------------------------------------------------------------- control

    def on_control(self, frames: list[bytes]) -> dict:
        """A control request → its reply map; every failure is an `ok: false` reply with a clear error."""
        if len(frames) != 1:
            return {"ok": False, "error": f"a request is one frame holding a msgpack map, got {len(frames)} frames"}
        try:
            req = decode_map(frames[0])
        except ProtocolError as exc:
            return {"ok": False, "error": f"malformed request: {exc}"}
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        if cmd == "stats":
            return {"ok": True, **self.worker.status()}
        if cmd in ("calibrate", "forget"):
            device = req.get("device")
            if not isinstance(device, str) or not DEVICE_RE.match(device):
                return {"ok": False, "error": f"{cmd} needs 'device', 1–64 characters of [A-Za-z0-9_.:-]"}
            if cmd == "forget":
                # Its windows still queued or at the backend are of this generation: they must not rebuild its state.
                stream = self.devices.streams.get(device)
                generation = stream.generation if stream is not None else None
                known = self.devices.forget(device)
                self.calibrations.forget(device, generation)
                self.smoother.forget(device, generation)
                return {"ok": True, "known": known}
            values = [req.get(k) for k in ("sbp", "dbp")]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                return {"ok": False, "error": "calibrate needs numeric 'sbp' and 'dbp' in mmHg"}
            sbp, dbp = float(values[0]), float(values[1])
            if not (50 <= sbp <= 260 and 25 <= dbp <= 160 and dbp < sbp):
                return {
                    "ok": False,
                    "error": f"implausible cuff reading {sbp}/{dbp} mmHg: need SBP 50–260, DBP 25–160, DBP < SBP",
                }
            stream = self.devices.streams.get(device)
            if stream is None or stream.next_t0 is None:
                return {"ok": False, "error": f"unknown device {device!r}: it has sent no data (or was forgotten)"}
            # The reading's time on the device's clock, which its estimates' `t` use: its latest sample.
            # For the stream sending now: estimates of a stream before it (another wearer) never form its reference.
            t_cal = stream.next_t0 - 1.0 / stream.fs
            applied = self.calibrations.calibrate(device, sbp, dbp, t_cal, stream.generation)
            return {"ok": True, "applied": applied}
        return {"ok": False, "error": f"unknown cmd {repr(cmd)[:64]}; valid: {', '.join(COMMANDS)}"}

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until `stop()`; then finish the batch in flight, publish it, close the sockets."""
        self.worker.start()
        log.info(
            "p2p-daemon: ingest %s, estimates %s, control %s; model %s on %s",
            self.config.sockets.ingest,
            self.config.sockets.publish,
            self.config.sockets.control,
            self.estimator.name,
            self.worker.est_device,
        )
        warning = exposure_warning(self.config.security, self.config.sockets.addresses())
        if warning:
            log.warning(warning)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.rep, zmq.POLLIN)
        for m in self.monitors:
            poller.register(m, zmq.POLLIN)
        next_evict = time.monotonic() + 1.0
        try:
            while not self.stop_event.is_set():
                ready = dict(poller.poll(timeout=50))
                if self.sub in ready:
                    for _ in range(DRAIN_PER_POLL):
                        try:
                            frames = self.sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.on_ingest(frames, time.monotonic())
                if self.rep in ready:
                    self.rep.send(pack(self.on_control(self.rep.recv_multipart())))
                for m in self.monitors:
                    if m in ready:
                        self._on_monitor_event(recv_monitor_message(m))
                if time.monotonic() >= next_evict:
                    for device in self.devices.evict_idle():
                        log.info("forgot idle device %s", device)
                    self.calibrations.retain(self.devices.streams.keys())
                    self.smoother.retain(self.devices.streams.keys())
                    next_evict = time.monotonic() + 1.0
        finally:
            self.close()

    def _on_monitor_event(self, event: dict) -> None:
        """A refused CURVE handshake, logged (rate-limited) with the endpoint and counted: `auth_failed` for a key
        that is not allowed, `handshake_failed` for a peer that does not speak CURVE (it retries, so it counts
        once per attempt)."""
        auth = event.get("event") == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        self.monitor.reject("auth_failed" if auth else "handshake_failed")
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        self.warn.warning(
            "auth_failed", "refused a client at %s: CURVE handshake failed (code %s): key not authorized "
            "or not a CURVE client", endpoint, event.get("value")
        )  # fmt: skip

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.stop_event.set()
        if self.worker.is_alive():
            self.worker.join(timeout=10)  # the worker finishes and publishes its batch in flight, then stops
        if self.worker.is_alive():  # never close a socket another thread is using: leave it to process exit
            log.error("inference worker did not stop; exiting without closing its socket")
            return
        if self.monitors:
            for sock in (self.sub, self.rep):
                sock.disable_monitor()
        for sock in (*self.monitors, self.sub, self.rep, self.pub):
            sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.term()
        self.backend.close()
        if self.worker.error is not None:
            raise P2PError(f"inference worker failed: {self.worker.error}")
