"""When a message reached the socket, not when Python read it: latency that counts the time queued in ZeroMQ.

ZeroMQ gives no receive time, and a message can wait seconds in its queue when the daemon is behind (once the
heartbeat's p99 said 2.4 s while subscribers saw 20.5 s: docs/reliability.md). Each message carries its samples'
time on the device's clock, so `read time − end of its samples` is the device's clock offset plus the transit and
the time queued. Its smallest value over the device's recent messages is offset plus the fastest transit; what a
message shows above it is the time it queued. The floor rises slowly (DRIFT_PER_S) so a drifting device clock cannot
make it stale, and the time queued is capped (MAX_QUEUED_S) so a forged `t0` moves no estimate's latency by more.
"""

from __future__ import annotations

DRIFT_PER_S = 1e-3  # how fast the floor may rise: 1 ms per second, 20× a cheap crystal's drift (50 ppm)
MAX_QUEUED_S = 120.0  # a message is never taken as queued longer than this


class ArrivalClock:
    """Per device: the floor of `read time − end of samples`, and from it how long each message queued."""

    def __init__(self) -> None:
        self._floor: dict[str, tuple[float, float]] = {}  # device → (floor s, wall time it was set)

    def queued_s(self, device: str, samples_end: float, now: float) -> float:
        """Seconds the message whose last sample is at `samples_end` (device clock) waited before `now` (Unix time,
        read by the daemon) beyond the device's fastest; 0 for its first message."""
        lag = now - samples_end
        floor = self._floor.get(device)
        if floor is not None:
            lowest = floor[0] + DRIFT_PER_S * (now - floor[1])
            if lag > lowest:
                self._floor[device] = (lowest, now)
                return min(lag - lowest, MAX_QUEUED_S)
        self._floor[device] = (lag, now)
        return 0.0

    def retain(self, devices) -> None:
        """Forget devices no longer tracked (the daemon's table evicted or forgot them)."""
        for device in [d for d in self._floor if d not in devices]:
            del self._floor[device]
