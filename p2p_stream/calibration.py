"""Calibration: per-device offsets from a cuff reading, applied to later estimates.

Method: offset = cuff reading − the model's latest uncalibrated estimate for that device (if the device has
none yet, the first one after the request). Later estimates are the model's plus the offset, for SBP and DBP
separately. A calibration-based protocol like PulseDB's CalBased test: it removes a subject's constant bias,
not errors that change over time.
"""

from __future__ import annotations

import threading


class Calibrations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offsets: dict[str, tuple[float, float]] = {}
        self._latest: dict[str, tuple[float, float]] = {}
        self._pending: dict[str, tuple[float, float]] = {}

    def calibrate(self, device: str, sbp: float, dbp: float) -> bool:
        """Record a cuff reading; True when applied now, False when waiting for the device's next estimate."""
        with self._lock:
            if device in self._latest:
                model_sbp, model_dbp = self._latest[device]
                self._offsets[device] = (sbp - model_sbp, dbp - model_dbp)
                self._pending.pop(device, None)
                return True
            self._pending[device] = (sbp, dbp)
            return False

    def apply(self, device: str, sbp: float, dbp: float) -> tuple[float, float, bool]:
        """An uncalibrated estimate → (sbp, dbp, calibrated); remembers it as the device's latest."""
        with self._lock:
            self._latest[device] = (sbp, dbp)
            if device in self._pending:
                cuff_sbp, cuff_dbp = self._pending.pop(device)
                self._offsets[device] = (cuff_sbp - sbp, cuff_dbp - dbp)
            offset = self._offsets.get(device)
        if offset is None:
            return sbp, dbp, False
        return sbp + offset[0], dbp + offset[1], True

    def retain(self, devices) -> None:
        """Drop every entry of devices not in `devices` (evicted or forgotten ones), so nothing grows unbounded."""
        keep = set(devices)
        with self._lock:
            for table in (self._offsets, self._latest, self._pending):
                for device in [d for d in table if d not in keep]:
                    del table[device]

    def forget(self, device: str) -> None:
        with self._lock:
            for table in (self._offsets, self._latest, self._pending):
                table.pop(device, None)
