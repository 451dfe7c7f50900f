"""Smoothing: a device's published estimate is the mean of its last K accepted windows, restarted at a break.

Windows overlap (a 10 s window every 2 s), so consecutive estimates share most of their samples, yet a model's
per-window answers jump by several mmHg. The mean of the last ``K`` (``smoothing.windows``) is steadier; the
interval bounds are averaged the same way. The history restarts when the device's stream breaks (a ``gap``
marker), when a new calibration starts to apply (calibrated and uncalibrated values are never averaged together),
and when the device is forgotten or evicted. Rejected windows neither enter it nor restart it. ``K = 1`` is off:
each published value is its window's own.

The history belongs to one stream generation of the device (`Window.generation`): a window of a newer generation
restarts it; a window (or gap marker) of an older one, or of a forgotten one, changes nothing and its value goes
out unsmoothed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def smooth_mean(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The column-wise mean of equally long rows (the last K windows' answers), in their units."""
    return np.mean(np.stack([np.asarray(r, dtype=np.float64) for r in rows]), axis=0)


@dataclass
class _History:
    generation: int  # the stream generation the answers are of
    cal_version: int | None  # the calibration version they were calibrated under; None for a forgotten stream's marker
    rows: deque[np.ndarray]


class Smoother:
    """The last `windows` answers per device; thread-safe (the worker adds, the control loop forgets)."""

    def __init__(self, windows: int = 3) -> None:
        if windows < 1:
            raise ValueError(f"windows must be ≥ 1, got {windows}")
        self.windows = windows
        self._lock = threading.Lock()
        self._history: dict[str, _History] = {}

    def _stale(self, device: str, generation: int) -> bool:
        entry = self._history.get(device)
        return entry is not None and (
            generation < entry.generation or (generation == entry.generation and entry.cal_version is None)
        )

    def add(self, device: str, row: np.ndarray, cal_version: int = 0, generation: int = 0) -> np.ndarray:
        """Append one accepted window's answer; returns the mean of the device's last `windows` answers.

        A newer `generation`, a different `cal_version` (a new calibration) or a different row length restarts the
        history first; an older (or forgotten) generation leaves it alone and gets its own row back.
        """
        row = np.asarray(row, dtype=np.float64)
        with self._lock:
            if self._stale(device, generation):
                return row
            entry = self._history.get(device)
            if (
                entry is None
                or entry.generation != generation
                or entry.cal_version != cal_version
                or entry.rows[-1].shape != row.shape
            ):
                entry = self._history[device] = _History(generation, cal_version, deque(maxlen=self.windows))
            entry.rows.append(row)
            return smooth_mean(entry.rows)

    def reset(self, device: str, generation: int = 0) -> None:
        """The device's stream broke: the next answer starts a new history (a stale stream's break is ignored)."""
        with self._lock:
            if not self._stale(device, generation):
                self._history.pop(device, None)

    def forget(self, device: str, generation: int | None = None) -> None:
        """Drop the device's history. Given the forgotten stream's `generation`, a marker stays until a newer
        generation (or `retain`) replaces it, so that stream's windows still on their way change nothing."""
        with self._lock:
            self._history.pop(device, None)
            if generation is not None:
                self._history[device] = _History(generation, None, deque(maxlen=1))

    def retain(self, devices: Iterable[str]) -> None:
        """Drop every device not in `devices` (evicted or forgotten ones), so nothing grows unbounded."""
        keep = set(devices)
        with self._lock:
            for device in [d for d in self._history if d not in keep]:
                del self._history[device]
