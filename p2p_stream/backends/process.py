"""Process backend: the quality gate, the crop cache and the network in a child process (`model.inference_process`).

Why: the daemon's ingest loop and a network in its own process share one interpreter lock, so on 2 cores under
thousands of devices the second core sits idle while windows queue (docs/performance.md). The child has its own
interpreter: the daemon's process keeps ingest, buffering, calibration, smoothing and publishing (everything with
state a client changes), the child does the numbers. What crosses is small: a window's raw samples one way, its
quality and six numbers back, over a pipe.

The child is started with "spawn" (a fork of a process holding torch's threads can deadlock), from the estimator
itself, so a checkpoint loaded or built in memory is what the child runs. Requests are pipelined (`max_in_flight`)
so the child never waits for the daemon between them. If the child dies (or holds a request for `HANG_S`: it is
stopped), the requests it held and every request until a new child is in place fail with `BackendUnavailable`
(the worker rejects their windows, counted; the daemon goes on), and a new child is started `RESTART_S` later, off
the worker thread.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future

from p2p_stream.backends.analysis import analyse
from p2p_stream.backends.base import Answer, BackendUnavailable, Request
from p2p_stream.model.estimator import Estimator

log = logging.getLogger(__name__)
RESTART_S = 1.0  # a dead child is replaced this long after it died
HANG_S = 20.0  # a child that holds one batch this long is stopped (and replaced) as if it had died
POLL_S = 0.5  # how often the reader looks at the oldest batch's age while no answer comes
READY = "ready"  # the child's first message: loaded, answering (a batch's age counts from here at the earliest)


def _serve(conn, estimator: Estimator, capacity: int, window_s: float, caches_crops: bool, threads: int) -> None:
    """The child: answer each request in order until the pipe closes or a None arrives."""
    import torch

    from p2p_stream.backends.crop_cache import CropCache

    torch.set_num_threads(threads)
    cache = CropCache(estimator, capacity, window_s) if caches_crops else None
    gc.collect()  # torch and the model stay for good: keep full collections from walking them (as the daemon does)
    gc.freeze()
    conn.send(READY)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            answer: Answer | str = analyse(estimator, request, estimator.infer_prepared, cache)
        except Exception as exc:  # noqa: BLE001 — told to the daemon, which rejects the batch and goes on
            answer = f"{type(exc).__name__}: {exc}"
        conn.send(answer)


def _later(delay_s: float, fn) -> None:
    timer = threading.Timer(delay_s, fn)
    timer.daemon = True  # a restart pending at exit must not hold the process
    timer.start()


class ProcessBackend:
    """The daemon's side: `analyse(request)` → a future of its `Answer`; never blocks the caller."""

    max_in_flight = 4  # requests sent and unanswered: enough that the child never waits between two

    def __init__(self, estimator: Estimator, capacity: int, window_s: float, caches_crops: bool, threads: int) -> None:
        """The child keeps a crop cache of `capacity` devices for `window_s` windows when `caches_crops` (`make_backend`
        decides: `model.reuse_crops` on a model that averages crops); its network runs on `threads` torch threads."""
        self.est, self.capacity, self.window_s = estimator, capacity, window_s
        self.caches_crops, self.threads = caches_crops, threads
        self.runs_on = estimator.torch_device  # the heartbeat's `backend_device`: the torch device, as in this process
        self.ready = threading.Event()  # the child has loaded: a child still loading is killed at close, not awaited
        self.lock = threading.Lock()
        # Sent or queued to send, with when: answered strictly in this order.
        self.pending: deque[tuple[Future, float]] = deque()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.proc = None
        self.died_at: float | None = None
        self.closing = False
        self.starts = 0
        self._install(*self._spawn())

    def _spawn(self):
        """A new child and the daemon's end of its pipe (blocks while Python starts it: never on the worker)."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        args = (child, self.est, self.capacity, self.window_s, self.caches_crops, self.threads)
        proc = ctx.Process(target=_serve, args=args, name="p2p-inference", daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _install(self, proc, conn) -> None:
        outbox: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            self.proc, self.outbox, self.died_at = proc, outbox, None
            self.starts += 1
        threading.Thread(target=self._send, args=(conn, outbox), name="p2p-inference-send", daemon=True).start()
        threading.Thread(target=self._read, args=(conn, proc), name="p2p-inference-read", daemon=True).start()

    def _restart(self) -> None:
        """After a death: a new child, started off the worker thread; if that fails, another try later."""
        if self.closing:
            return
        try:
            proc, conn = self._spawn()
        except Exception:  # noqa: BLE001 — no child for now: batches stay rejected, and it is tried again
            log.exception("could not start a new inference process; trying again in %.0f s", RESTART_S)
            _later(RESTART_S, self._restart)
            return
        if self.closing:
            proc.kill()
            return
        log.warning("started a new inference process (the last one died)")
        self._install(proc, conn)

    def analyse(self, request: Request) -> Future:
        future: Future = Future()
        with self.lock:
            if self.died_at is not None or self.closing:
                future.set_exception(BackendUnavailable("the inference process died; a new one is starting"))
                return future
            self.pending.append((future, time.monotonic()))
            self.outbox.put(request)
        return future

    def _send(self, conn, outbox: queue.SimpleQueue) -> None:
        """Off the worker thread: a full pipe (the child busy) must never hold the heartbeat."""
        while True:
            request = outbox.get()
            try:
                conn.send(request)
            except Exception:  # noqa: BLE001 — the reader sees the child go (or hang) and fails what waits
                return
            if request is None:
                return

    def _read(self, conn, proc) -> None:
        """Answers in order; a child that dies, or holds a batch longer than HANG_S once it is up, is done with:
        what it held is rejected and a new child starts RESTART_S later."""
        ready_at: float | None = None  # while it loads, a batch waits in the pipe: not a hang
        while True:
            try:
                if not conn.poll(POLL_S):
                    with self.lock:
                        oldest = self.pending[0][1] if self.pending and self.proc is proc else None
                    if ready_at is not None and oldest is not None:
                        if time.monotonic() - max(oldest, ready_at) > HANG_S:
                            log.error("the inference process held a batch %.0f s: stopping it", HANG_S)
                            proc.kill()
                    continue
                answer = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(answer, str) and answer == READY:
                self.ready.set()
                ready_at = time.monotonic()
                continue
            with self.lock:
                if not self.pending:
                    continue
                future, _ = self.pending.popleft()
            if isinstance(answer, str):
                future.set_exception(BackendUnavailable(f"the inference process failed on a batch: {answer}"))
            else:
                future.set_result(answer)
        with self.lock:  # the child is gone: what it held gets no answer
            if self.proc is not proc:
                return
            self.died_at = time.monotonic()
            lost, self.pending = [f for f, _ in self.pending], deque()
            self.outbox.put(None)
        for future in lost:
            future.set_exception(BackendUnavailable("the inference process exited"))
        if not self.closing:
            log.error("the inference process exited (code %s); %d batches rejected", proc.exitcode, len(lost))
            _later(RESTART_S, self._restart)

    def close(self) -> None:
        self.closing = True
        with self.lock:
            proc = self.proc
            self.outbox.put(None)
        if proc is not None:
            if not self.ready.is_set():  # a failed start-up (a taken port, a refused lease): no batch to finish
                proc.kill()
            proc.join(timeout=3.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
