"""Batcher: dynamic batching — a batch goes when it is full or its oldest window has waited long enough.

Like Triton's dynamic batcher: `max_batch` bounds the batch, `max_wait_ms` bounds the wait of the oldest
window. The queue is bounded three ways, so a model that falls behind sheds load (counted) instead of growing
memory, and no one device can take the queue from the others: in windows, in bytes of samples, and per device.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from p2p_stream.stream.ingest.ring_buffer import Window

WINDOW_OVERHEAD_BYTES = 600  # a Window's object, its dicts and the array header, over its samples (measured ~0.5 kB)


def window_bytes(window: Window) -> int:
    """What one queued window holds in memory: its samples plus the object around them."""
    return WINDOW_OVERHEAD_BYTES + (window.x.nbytes if window.x is not None else 0)


class DynamicBatcher:
    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        max_bytes: int | None = None,
        per_device: int | None = None,
    ) -> None:
        """At most `max_queue` windows, `max_bytes` bytes of them (None: no byte bound) and `per_device` windows of
        any one device (None: no such bound) wait at once."""
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue, self.max_bytes, self.per_device = max_queue, max_bytes, per_device
        self._queue: deque[Window] = deque()
        self._bytes = 0
        self._of_device: Counter[str] = Counter()
        self._ready = threading.Condition()

    def put(self, window: Window) -> str | None:
        """Enqueue without blocking (ingest never waits on the model). None when queued, else why it was shed:
        `over_budget` when its own device has `per_device` windows waiting (the others are untouched),
        `overloaded` when the queue as a whole is full."""
        size = window_bytes(window)
        with self._ready:
            if self.per_device is not None and self._of_device[window.device] >= self.per_device:
                return "over_budget"
            if len(self._queue) >= self.max_queue or (
                self.max_bytes is not None and self._bytes + size > self.max_bytes
            ):
                return "overloaded"
            window.enqueued = time.monotonic()
            self._queue.append(window)
            self._bytes += size
            self._of_device[window.device] += 1
            self._ready.notify()
        return None

    def qsize(self) -> int:
        return len(self._queue)

    def nbytes(self) -> int:
        """Bytes of the windows waiting (as `window_bytes` counts them)."""
        return self._bytes

    def _take(self) -> Window:
        window = self._queue.popleft()
        self._bytes -= window_bytes(window)
        left = self._of_device[window.device] - 1
        if left:
            self._of_device[window.device] = left
        else:
            del self._of_device[window.device]  # the counter holds only devices with windows waiting
        return window

    def next_batch(self, timeout_s: float) -> list[Window]:
        """Wait up to `timeout_s` for a first window, then fill until `max_batch` or its `max_wait_ms` is up."""
        with self._ready:
            if not self._queue and not self._ready.wait_for(lambda: self._queue, timeout=timeout_s):
                return []
            batch = [self._take()]
            deadline = batch[0].enqueued + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._take())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._ready.wait_for(lambda: self._queue, timeout=remaining):
                    break
        return batch
