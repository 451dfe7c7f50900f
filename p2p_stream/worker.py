"""Inference worker: batch → quality gate → model → calibration → PUB, off the ingest thread; sends the heartbeat."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import zmq

from .batcher import DynamicBatcher
from .calibration import Calibrations
from .demographics import parse_meta
from .estimator import Estimator
from .inference_backend import Backend, BackendUnavailable
from .monitor import Monitor
from .protocol import VERSION, encode_estimate, encode_status
from .ratelimit import RateLimitedLog
from .ring_buffer import Window

log = logging.getLogger(__name__)


class InferenceWorker(threading.Thread):
    """Owns the PUB socket: every estimate and heartbeat leaves from this thread."""

    def __init__(
        self,
        estimator: Estimator,
        backend: Backend,
        batcher: DynamicBatcher,
        pub: zmq.Socket,
        calibrations: Calibrations,
        monitor: Monitor,
        device_count: Callable[[], int],
        heartbeat_s: float,
        window_s: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="p2p-inference", daemon=True)
        self.est, self.backend, self.batcher, self.pub = estimator, backend, batcher, pub
        self.warn = RateLimitedLog(log, period_s=10.0)
        self.calibrations, self.monitor, self.device_count = calibrations, monitor, device_count
        self.heartbeat_s, self.window_s, self.stop = heartbeat_s, window_s, stop
        self.model_name = estimator.name
        self.error: BaseException | None = None

    def run(self) -> None:
        next_beat = time.monotonic()
        try:
            while not self.stop.is_set():
                batch = self.batcher.next_batch(timeout_s=max(0.0, min(0.05, next_beat - time.monotonic())))
                if batch:
                    self.publish(self.process(batch))
                if time.monotonic() >= next_beat:
                    self.pub.send_multipart(encode_status(self.status()))
                    next_beat = time.monotonic() + self.heartbeat_s
        except BaseException as exc:  # surfaced by the daemon, which then stops: a dead worker must not go unnoticed
            log.exception("inference worker failed")
            self.error = exc
            self.stop.set()

    def status(self) -> dict:
        return self.monitor.snapshot(
            self.device_count(),
            {"model": self.model_name, "queue": self.batcher.qsize(), "device": str(self.est_device)},
        )

    @property
    def est_device(self) -> str:
        return self.backend.device

    def _estimate(self, w: Window, ok: bool, reason: str | None, sqi: float, hr: float | None) -> dict:
        e = {
            "v": VERSION,
            "device": w.device,
            "seq": w.seq,
            "t": w.t_last,
            "window_s": round(len(w.x) / w.fs, 6) if w.x is not None else self.window_s,
            "sbp": None,
            "dbp": None,
            "ok": ok,
            "sqi": round(float(sqi), 4),
            "hr": None if hr is None else round(float(hr), 2),
            "calibrated": False,
            "model": self.model_name,
            "latency_ms": 0.0,
        }
        if reason:
            e["reason"] = reason
        if w.ref is not None:
            e["ref_sbp"], e["ref_dbp"] = float(w.ref[0]), float(w.ref[1])
        return e

    def process(self, batch: list[Window]) -> list[tuple[Window, dict]]:
        """Quality-gate each window, run the model once per window length on those that pass."""
        out: list[tuple[Window, dict]] = []
        passed: list[tuple[Window, dict, np.ndarray]] = []
        checked: dict[int, tuple] = {}  # position in batch → (quality, model input)
        shapes = {(w.fs, len(w.x)) for w in batch if not w.reason}
        for fs, length in shapes:  # one vectorised resample + band-pass per device rate and window length
            rows = [k for k, w in enumerate(batch) if not w.reason and w.fs == fs and len(w.x) == length]
            qualities, inputs = self.est.assess_batch(np.stack([batch[k].x for k in rows]), fs)
            checked.update({k: (q, x) for k, q, x in zip(rows, qualities, inputs)})
        for k, w in enumerate(batch):
            if w.reason:
                e = self._estimate(w, False, w.reason, 0.0, None)
            else:
                q, x = checked[k]
                e = self._estimate(w, q.ok, q.reason, q.sqi, q.hr_bpm)
                if q.ok:
                    passed.append((w, e, x))
                else:
                    self.monitor.reject(q.reason)
            out.append((w, e))  # in arrival order, so each device's seq goes out in order
        for length in {len(x) for _, _, x in passed}:
            group = [(w, e, x) for w, e, x in passed if len(x) == length]
            features = (
                parse_meta([w.meta for w, _, _ in group], len(group))
                if self.est.uses_demographics
                else np.zeros((len(group), 4), dtype=np.float32)
            )
            try:
                pred = self.backend.predict(np.stack([x for _, _, x in group]), features)
            except BackendUnavailable as exc:  # the windows go out as rejected, counted; the daemon carries on
                self.warn.warning(exc.reason, "published %d windows as rejected: %s", len(group), exc)
                for _, e, _ in group:
                    e["ok"], e["reason"] = False, exc.reason
                self.monitor.reject(exc.reason, len(group))
                continue
            for (w, e, _), (sbp, dbp) in zip(group, pred):
                if not (np.isfinite(sbp) and np.isfinite(dbp)):  # e.g. samples near float32's limit
                    e["ok"], e["reason"] = False, "nan"
                    self.monitor.reject("nan")
                    continue
                sbp, dbp, calibrated = self.calibrations.apply(w.device, float(sbp), float(dbp))
                e["sbp"], e["dbp"], e["calibrated"] = round(sbp, 2), round(dbp, 2), calibrated
        return out

    def publish(self, results: list[tuple[Window, dict]]) -> None:
        latencies = []
        for w, e in results:
            e["latency_ms"] = round(1000.0 * (time.monotonic() - w.arrival), 3)
            self.pub.send_multipart(encode_estimate(e))
            latencies.append(e["latency_ms"])
        self.monitor.batch(sum(1 for w, _ in results if not w.reason), latencies)
