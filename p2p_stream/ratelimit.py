"""Rate-limited logging: a warning that repeats (one per bad message) is logged once per period, with a count."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, period_s: float = 10.0) -> None:
        self.logger, self.period_s = logger, period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.INFO, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        """Log `msg` at `level` unless a message of the same `key` went out less than a period ago."""
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        skipped = self._suppressed.pop(key, 0)
        self._last[key] = now
        suffix = f" (and {skipped} more like it in the last {self.period_s:g} s)" if skipped else ""
        self.logger.log(level, msg + suffix, *args)
