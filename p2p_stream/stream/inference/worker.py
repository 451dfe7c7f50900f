"""Inference worker: batch → backend (quality gate, model) → calibration → smoothing → PUB, off the ingest thread;
sends the heartbeat."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import zmq

from p2p_stream.backends.base import Answer, Backend, BackendUnavailable, Item, Request
from p2p_stream.model.demographics import parse_meta
from p2p_stream.model.estimator import Estimator
from p2p_stream.model.tracking import feature_vector
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.ingest.ring_buffer import CropAhead, Window
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.stream.state.smoothing import Smoother
from p2p_stream.wire.estimate import INTERVAL_KEYS  # columns 2-5 of a backend's answer, when it has them
from p2p_stream.wire.protocol import VERSION, encode_estimate, encode_status

log = logging.getLogger(__name__)
POLL_IN_FLIGHT_S = 0.002  # with batches in flight, how often the worker looks for their answers
STOP_GRACE_S = 3.0  # stopping: how long batches in flight may still take; well within the daemon's 10 s join


def mmhg(value: float) -> float:
    return round(float(value), 2)


def _items(windows: list[Window]) -> list[Item]:
    return [Item(w.device, w.x, w.fs, w.end, w.generation) for w in windows]


@dataclass
class InFlight:
    """A batch whose estimates wait for the backend: its windows and break markers in arrival order, and the future
    of the backend's answer for those with samples (None: none had samples, nothing was asked)."""

    batch: list[Window]
    answer: Future | None

    def done(self) -> bool:
        return self.answer is None or self.answer.done()

    def wait(self, timeout_s: float) -> None:
        """Until the answer is in, or `timeout_s` has passed."""
        if self.answer is not None:
            futures.wait([self.answer], timeout=timeout_s)


class InferenceWorker(threading.Thread):
    """Owns the PUB socket: every estimate and heartbeat leaves from this thread."""

    def __init__(
        self,
        *,
        estimator: Estimator,
        backend: Backend,
        batcher: DynamicBatcher,
        pub: zmq.Socket | None,
        calibrations: Calibrations,
        counters: Counters,
        device_count: Callable[[], int],
        heartbeat_s: float,
        window_s: float,
        stop: threading.Event,
        smoother: Smoother | None = None,
        boot: int | None = None,
        daemon: str | None = None,
        cluster_status: Callable[[], dict] | None = None,
    ) -> None:
        """Every collaborator by keyword. `pub` may be None for a worker whose `submit`/`finish` a test calls
        directly (nothing is published then); `device_count` gives the number of wearables for the heartbeat.
        `daemon`: this daemon's name, in every heartbeat, and in every estimate when it is one of a cluster
        (`cluster_status` given: its keys join the heartbeat).
        `backend` runs the quality gate and the network (backends/: here, in a child process or on Ray Serve)."""
        super().__init__(name="p2p-inference", daemon=True)
        self.est, self.backend, self.batcher, self.pub = estimator, backend, batcher, pub
        self.warn = RateLimitedLog(log, period_s=10.0)
        self.calibrations, self.counters, self.device_count = calibrations, counters, device_count
        self.heartbeat_s, self.window_s, self.stop = heartbeat_s, window_s, stop
        self.smoother = smoother if smoother is not None else Smoother(1)
        self.model_name = estimator.name
        self.boot = boot  # this daemon start's number in its state store (None without one): the wire's `epoch`
        self.daemon, self.cluster_status = daemon, cluster_status
        level = getattr(estimator, "interval_level", None)  # the level of the model's interval; None: it has none
        self.interval_level = None if level is None else float(level)
        self.error: BaseException | None = None

    def run(self) -> None:
        """Publish each batch's estimates once the backend has answered, in order, and a heartbeat every
        `heartbeat_s`: the worker never waits on the backend longer than until the next heartbeat is due, so a
        backend that is slow or gone never silences the heartbeat."""
        next_beat = time.monotonic()
        in_flight: deque[InFlight] = deque()  # batches sent to the backend, published strictly in this order
        try:
            while not self.stop.is_set():
                while in_flight and in_flight[0].done():
                    self.publish(self.finish(in_flight.popleft()))
                if time.monotonic() >= next_beat:
                    self.pub.send_multipart(encode_status(self.status()))
                    next_beat = time.monotonic() + self.heartbeat_s
                wait = max(0.0, min(0.05, next_beat - time.monotonic()))
                if len(in_flight) >= self.max_in_flight:  # at most that many on their way: wait for the
                    in_flight[0].wait(wait)  # oldest, the batches meanwhile queue in the batcher (bounded there)
                    continue
                batch = self.batcher.next_batch(timeout_s=min(wait, POLL_IN_FLIGHT_S) if in_flight else wait)
                if batch:
                    in_flight.append(self.submit(batch))
            # Stopping: what was sent still gets its answer (or its reason) published, but a backend that does not
            # answer within STOP_GRACE_S does not hold the daemon's exit: those windows go out as backend_unavailable.
            deadline = time.monotonic() + STOP_GRACE_S
            while in_flight:
                in_flight[0].wait(max(0.0, deadline - time.monotonic()))
                self.publish(self.finish(in_flight.popleft(), timeout_s=0.0))
        except BaseException as exc:  # surfaced by the daemon, which then stops: a dead worker must not go unnoticed
            log.exception("inference worker failed")
            self.error = exc
            self.stop.set()

    def status(self) -> dict:
        """The heartbeat map (and `stats` reply): the counters plus the model, the queue and where the model runs.

        `devices` counts wearables; `backend_device` is where the network runs. `device` repeats `backend_device`
        for clients written before it existed: deprecated, kept because outside clients may read it.
        """
        runs_on = str(self.backend.runs_on)
        extra = {"model": self.model_name, "queue": self.batcher.qsize(), "backend_device": runs_on, "device": runs_on}
        if self.daemon is not None:
            extra["daemon"] = self.daemon
        if self.cluster_status is not None:
            extra.update(self.cluster_status())
        return self.counters.snapshot(self.device_count(), extra)

    def _estimate(self, w: Window, ok: bool, reason: str | None, sqi: float, hr: float | None) -> dict:
        """A window's estimate, values nil until `_fill`: the keys and their nil rules are wire/estimate.py's."""
        e = {
            "v": VERSION,
            "device": w.device,
            "seq": w.seq,
            "t": w.t_last,
            "window_s": round(len(w.x) / w.fs, 6) if w.x is not None else self.window_s,
            "sbp": None,
            "dbp": None,
            "sbp_window": None,  # this window's own value; sbp/dbp are the smoothed ones
            "dbp_window": None,
            "ok": ok,
            "sqi": round(float(sqi), 4),
            "hr": None if hr is None else round(float(hr), 2),
            "pat_ms": None,  # the window's beats': `_fill`
            "calibrated": False,
            "basis": None,  # what the number rests on: `_fill`
            "session": w.session,
            "model": self.model_name,
            "latency_ms": 0.0,
        }
        if self.interval_level is not None:  # nil until the model's answer fills them; nil when rejected
            e.update(dict.fromkeys(INTERVAL_KEYS), interval=self.interval_level)
        if self.boot is not None:  # with a state store only: without one there is no start number that lasts
            e["epoch"] = self.boot
        if self.cluster_status is not None:  # one of a cluster: which daemon estimated it (its seq is its own)
            e["daemon"] = self.daemon
        if reason:
            e["reason"] = reason
        if w.ref is not None:
            e["ref_sbp"], e["ref_dbp"] = float(w.ref[0]), float(w.ref[1])
        return e

    @property
    def max_in_flight(self) -> int:
        return self.backend.max_in_flight

    def submit(self, batch: list[Window]) -> InFlight:
        """The windows with samples (and crops cut ahead) to the backend; break markers wait for their turn."""
        ahead = [w for w in batch if isinstance(w, CropAhead)]  # features to keep, no estimate
        batch = [w for w in batch if not isinstance(w, CropAhead)]
        live = [w for w in batch if not w.reason]  # not a `BreakMarker`
        if not live and not ahead:
            return InFlight(batch, None)
        burst = self.batcher.qsize() >= self.batcher.max_batch  # a burst queued behind this batch
        request = Request(_items(live), self._meta(live), _items(ahead), burst=burst)
        return InFlight(batch, self.backend.analyse(request))

    def _gate(self, batch: list[Window], checked: dict[int, tuple]) -> tuple[list[tuple[Window, dict]], list[tuple]]:
        """Each window's estimate from its quality (`checked`: position → (quality, row)) → (every estimate in
        arrival order, (window, estimate, row) of those that passed)."""
        out: list[tuple[Window, dict]] = []
        passed: list[tuple[Window, dict, np.ndarray]] = []
        for k, w in enumerate(batch):
            if w.reason:
                e = self._estimate(w, False, w.reason, 0.0, None)
            else:
                q, x = checked[k]
                e = self._estimate(w, q.ok, q.reason, q.sqi, q.hr_bpm)
                if q.ok:
                    passed.append((w, e, x))
                else:
                    self.counters.reject(q.reason)
            out.append((w, e))  # in arrival order, so each device's seq goes out in order
        return out, passed

    def _meta(self, windows: list[Window]) -> np.ndarray:
        """The windows' age and sex features (N, 4), or zeros for a model that does not read them."""
        if self.est.uses_demographics:
            return parse_meta([w.meta for w in windows], len(windows))
        return np.zeros((len(windows), 4), dtype=np.float32)

    def finish(self, job: InFlight, timeout_s: float | None = None) -> list[tuple[Window, dict]]:
        """The backend's answer into the estimates; one it could not give (within `timeout_s`, when given) marks the
        windows concerned rejected.

        Calibration and smoothing then run over the estimates in arrival order, so each device's history sees
        its windows, and its breaks, in the order they happened.
        """
        out, answers = self._estimates(job, timeout_s)
        for w, e in out:
            if w.reason:  # the device's stream broke: the smoothing starts again after it
                self.smoother.reset(w.device, w.generation)
            elif id(e) in answers:  # rejected windows neither enter the smoothing nor restart it
                self._fill(w, e, answers[id(e)])
        return out

    def _estimates(self, job: InFlight, timeout_s: float | None) -> tuple[list, dict[int, np.ndarray]]:
        """The batch's estimates in arrival order, and id(estimate) → the model's row for those it answered."""
        live = [k for k, w in enumerate(job.batch) if not w.reason]
        try:
            answer = self._result(job.answer, timeout_s) if job.answer is not None else Answer([], None)
        except BackendUnavailable as exc:  # nothing answered, the gate included: every window goes out rejected
            out = [(w, self._estimate(w, False, w.reason, 0.0, None)) for w in job.batch]
            self._unanswered(exc, [e for w, e in out if not w.reason])
            return out, {}
        rows = answer.rows
        out, passed = self._gate(job.batch, {k: (q, rows[i]) for i, (k, q) in enumerate(zip(live, answer.qualities))})
        answers: dict[int, np.ndarray] = {}
        if answer.unavailable is not None:  # the gate's verdicts stand; those that passed and got no number go
            unanswered = [e for _, e, row in passed if np.isnan(row[:2]).any()]
            self._unanswered(BackendUnavailable(answer.unavailable), unanswered)
            passed = [(w, e, row) for w, e, row in passed if not np.isnan(row[:2]).any()]
        for _, e, row in passed:
            self._answer(e, np.asarray(row, dtype=np.float64), answers)
        return out, answers

    def _result(self, call: Future, timeout_s: float | None) -> Answer:
        if timeout_s is not None and not call.done() and not futures.wait([call], timeout_s).done:
            raise BackendUnavailable(f"no answer from {self.backend.runs_on} before the daemon stopped")
        return call.result()

    def _unanswered(self, exc: BackendUnavailable, estimates: list[dict]) -> None:
        if not estimates:  # crops cut ahead only: nothing to answer, their window computes them again
            return
        self.warn.warning(exc.reason, "published %d windows as rejected: %s", len(estimates), exc)
        for e in estimates:
            e["ok"], e["reason"] = False, exc.reason
        self.counters.reject(exc.reason, len(estimates))

    def _answer(self, e: dict, row: np.ndarray, answers: dict[int, np.ndarray]) -> None:
        """One window's model answer `row` for estimate `e`, into `answers`; a non-finite one rejects it ("nan")."""
        if not np.isfinite(row[:2]).all():  # e.g. samples near float32's limit
            e["ok"], e["reason"] = False, "nan"
            self.counters.reject("nan")
            return
        answers[id(e)] = row if np.isfinite(row).all() else row[:2]  # NaN interval: a model without one

    def _fill(self, w: Window, e: dict, row: np.ndarray) -> None:
        """Calibrate one window's answer, smooth it with the device's last ones, and put both on the estimate.

        A window of a stream the device no longer has (forgotten while it was queued or at the backend) goes out
        as the model answered it, uncalibrated and unsmoothed, and leaves the new stream's state alone.
        """
        cal = self.calibrations.apply(w.device, w.t_last, row, w.generation, w.session, feature_vector(w.beats))
        smooth = cal.row if cal.stale else self.smoother.add(w.device, cal.row, cal.version, w.generation)
        e["sbp"], e["dbp"] = mmhg(smooth[0]), mmhg(smooth[1])
        e["sbp_window"], e["dbp_window"] = mmhg(cal.row[0]), mmhg(cal.row[1])
        e["calibrated"] = cal.calibrated
        e["basis"] = ("cuff+tracking" if cal.tracked else "cuff") if cal.calibrated else self.est.basis(w.meta)
        if w.beats is not None and math.isfinite(w.beats.pat_ms):
            e["pat_ms"] = round(w.beats.pat_ms, 1)
        if len(smooth) >= 6:
            e.update({key: mmhg(value) for key, value in zip(INTERVAL_KEYS, smooth[2:6])})
        # What of it was kept from an earlier stream of the wearer's session (a restart, an eviction): said, so a
        # dashboard can show it (wire/estimate.py).
        carried = ["calibration"] * (cal.calibrated and cal.carried) + ["facts"] * (
            w.facts_carried and self.est.uses_demographics
        )
        if carried:
            e["carried"] = carried

    def publish(self, results: list[tuple[Window, dict]]) -> None:
        """Send the estimates; each one's latency runs from when its last sample reached the socket (`arrival`,
        which the daemon sets back by the time the message queued in ZeroMQ: stream/ingest/arrival.py) to now."""
        latencies = []
        for w, e in results:
            e["latency_ms"] = round(1000.0 * (time.monotonic() - w.arrival), 3)
            self.pub.send_multipart(encode_estimate(e))
            latencies.append(e["latency_ms"])
        if results:  # a batch of crops cut ahead only has nothing to publish, and is no batch of windows
            self.counters.batch(sum(1 for w, _ in results if not w.reason), latencies)
