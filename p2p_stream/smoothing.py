"""Smoothing: a device's published estimate is the mean of its last K accepted windows, restarted at a break.

Windows overlap (a 10 s window every 2 s), so consecutive estimates share most of their samples, yet a model's
per-window answers jump by several mmHg. The mean of the last ``K`` (``smoothing.windows``) is steadier; the
interval bounds are averaged the same way. The history restarts when the device's stream breaks (a ``gap``
marker), when a new calibration starts to apply (calibrated and uncalibrated values are never averaged together),
and when the device is forgotten or evicted. Rejected windows neither enter it nor restart it. ``K = 1`` is off:
each published value is its window's own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np


def smooth_mean(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The column-wise mean of equally long rows (the last K windows' answers), in their units."""
    return np.mean(np.stack([np.asarray(r, dtype=np.float64) for r in rows]), axis=0)


class Smoother:
    """The last `windows` answers per device; thread-safe (the worker adds, the control loop forgets)."""

    def __init__(self, windows: int = 3) -> None:
        if windows < 1:
            raise ValueError(f"windows must be ≥ 1, got {windows}")
        self.windows = windows
        self._lock = threading.Lock()
        self._history: dict[str, tuple[int, deque[np.ndarray]]] = {}  # device → (epoch, last answers)

    def add(self, device: str, row: np.ndarray, epoch: int = 0) -> np.ndarray:
        """Append one accepted window's answer; returns the mean of the device's last `windows` answers.

        A different `epoch` (a new calibration) or a different row length restarts the history first.
        """
        row = np.asarray(row, dtype=np.float64)
        with self._lock:
            entry = self._history.get(device)
            if entry is None or entry[0] != epoch or entry[1][-1].shape != row.shape:
                entry = (epoch, deque(maxlen=self.windows))
                self._history[device] = entry
            entry[1].append(row)
            return smooth_mean(entry[1])

    def reset(self, device: str) -> None:
        """The device's stream broke: the next answer starts a new history."""
        with self._lock:
            self._history.pop(device, None)

    forget = reset

    def retain(self, devices: Iterable[str]) -> None:
        """Drop every device not in `devices` (evicted or forgotten ones), so nothing grows unbounded."""
        keep = set(devices)
        with self._lock:
            for device in [d for d in self._history if d not in keep]:
                del self._history[device]
