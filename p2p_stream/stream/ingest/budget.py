"""Budget: a token bucket, so one wearable's share of the daemon's work has a ceiling: one sender cannot hurt
another. Time is passed in, never read, so tests drive it and the daemon passes time.monotonic()."""

from __future__ import annotations


class TokenBucket:
    """Up to `capacity` tokens, refilled at `rate` tokens per second; starts full.

    `take(n, now)` spends `n` tokens if there are that many and says whether it did: a request is granted whole or
    not at all. Time that goes backwards refills nothing and does not move the clock back.
    """

    def __init__(self, capacity: float, rate: float) -> None:
        if capacity < 0 or rate < 0:
            raise ValueError(f"capacity and rate must be >= 0, got {capacity} and {rate}")
        self.capacity, self.rate = capacity, rate
        self.tokens = capacity
        self.at: float | None = None  # time of the last refill; None until first asked

    def available(self, now: float) -> float:
        """Tokens there are at `now` (refilled up to then)."""
        if self.at is not None and now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        if self.at is None or now > self.at:
            self.at = now
        return self.tokens

    def take(self, n: float, now: float) -> bool:
        """Spend `n` tokens at `now` if there are that many; False (and nothing spent) otherwise."""
        if n > self.available(now):
            return False
        self.tokens -= n
        return True
