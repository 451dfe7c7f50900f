"""Batcher: dynamic batching — a batch goes when it is full or its oldest window has waited long enough.

Like Triton's dynamic batcher: `max_batch` bounds the batch, `max_wait_ms` bounds the wait of the oldest
window. The queue is bounded too, so a model that falls behind sheds load (counted) instead of growing memory.
"""

from __future__ import annotations

import queue
import time

from p2p_stream.stream.ring_buffer import Window


class DynamicBatcher:
    def __init__(self, max_batch: int, max_wait_ms: float, max_queue: int) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[Window] = queue.Queue(maxsize=max_queue)

    def put(self, window: Window) -> bool:
        """Enqueue without blocking (ingest never waits on the model); False when the queue is full."""
        window.enqueued = time.monotonic()
        try:
            self._queue.put_nowait(window)
        except queue.Full:
            return False
        return True

    def qsize(self) -> int:
        return self._queue.qsize()

    def next_batch(self, timeout_s: float) -> list[Window]:
        """Wait up to `timeout_s` for a first window, then fill until `max_batch` or its `max_wait_ms` is up."""
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        deadline = first.enqueued + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch
