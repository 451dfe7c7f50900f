"""Counters: windows, batches, latencies and rejections, kept by the ingest loop and the worker; the heartbeat map."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class Counters:
    """Thread-safe counters shared by the ingest loop and the inference worker."""

    def __init__(self, latency_window: int = 10_000, rate_window_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.rejected: Counter[str] = Counter()
        self.windows_total = 0
        self.messages_total = 0
        self.batches_total = 0
        self._batch_sizes: deque[int] = deque(maxlen=1000)
        self._latencies_ms: deque[float] = deque(maxlen=latency_window)
        self._window_times: deque[tuple[float, int]] = deque()
        self._rate_window_s = rate_window_s

    def reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += n

    def message(self) -> None:
        # Unlocked on the hot path: only the ingest thread writes this counter. `+=` is a read, an add and a store,
        # not atomic, but with a single writer no increment is lost; a reader sees the old or the new value.
        self.messages_total += 1

    def batch(self, size: int, latencies_ms: list[float]) -> None:
        now = time.monotonic()
        with self._lock:
            self.batches_total += 1
            self.windows_total += size
            self._batch_sizes.append(size)
            self._latencies_ms.extend(latencies_ms)
            self._window_times.append((now, size))
            while self._window_times and now - self._window_times[0][0] > self._rate_window_s:
                self._window_times.popleft()

    def snapshot(self, devices: int, extra: dict | None = None) -> dict:
        """The heartbeat map of the contract (and `stats` reply)."""
        now = time.monotonic()
        with self._lock:
            lat = np.array(self._latencies_ms) if self._latencies_ms else np.array([np.nan])
            recent = sum(n for t, n in self._window_times if now - t <= self._rate_window_s)
            span = min(self._rate_window_s, max(now - self.started, 1e-3))
            status = {
                "uptime_s": round(now - self.started, 3),
                "devices": devices,
                "windows_total": self.windows_total,
                "windows_per_s": round(recent / span, 3),
                "batch_mean": round(float(np.mean(self._batch_sizes)), 3) if self._batch_sizes else 0.0,
                "latency_p50_ms": _finite(np.percentile(lat, 50)),
                "latency_p99_ms": _finite(np.percentile(lat, 99)),
                "rejected": dict(self.rejected),
                "messages_total": self.messages_total,
                "batches_total": self.batches_total,
            }
        status.update(extra or {})
        return status


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)
