"""Control quotas: how many state-changing requests (calibrate, forget, end_session) one client key, and one device,
may make, so no client can fill the state store's disk or its audit. Token buckets: a minute's worth at once, then
the rate; a refused request changes nothing and writes nothing."""

from __future__ import annotations

from p2p_stream.stream.ingest.budget import TokenBucket

ANONYMOUS = "*"  # without CURVE there are no keys: every client shares one quota
MAX_BUCKETS = 100_000  # beyond, the full ones (the same as new) are dropped: ids that never come back cost nothing


class ControlQuotas:
    def __init__(self, per_key_per_min: float, per_device_per_min: float) -> None:
        self.per_key, self.per_device = per_key_per_min, per_device_per_min
        self._keys: dict[str, TokenBucket] = {}
        self._devices: dict[str, TokenBucket] = {}

    def take(self, key: str | None, device: str, now: float) -> str | None:
        """Spend one write of `key`'s and of `device`'s quota at `now` (time.monotonic()), or say why not (both or
        neither are spent). A device's bucket is made only for a key within its quota: ids cannot be flooded in."""
        kb = self._bucket(self._keys, key or ANONYMOUS, self.per_key, now)
        if kb.available(now) < 1:
            who = "this client key" if key else "the clients (no CURVE: one quota for all)"
            wait = (1 - kb.tokens) * 60 / self.per_key
            return (f"over_quota: {who} made {self.per_key:g} state changes in the last minute "
                    f"(state.control_per_key_per_min); try again in {wait:.0f} s")  # fmt: skip
        db = self._bucket(self._devices, device, self.per_device, now)
        if db.available(now) < 1:
            wait = (1 - db.tokens) * 60 / self.per_device
            return (f"over_quota: {device!r} had {self.per_device:g} state changes in the last minute "
                    f"(state.control_per_device_per_min); try again in {wait:.0f} s")  # fmt: skip
        kb.take(1, now)
        db.take(1, now)
        return None

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], name: str, per_min: float, now: float) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None:
            if len(buckets) >= MAX_BUCKETS:  # a full bucket is as good as a new one
                for full in [n for n, b in buckets.items() if b.available(now) >= b.capacity]:
                    del buckets[full]
            bucket = buckets[name] = TokenBucket(per_min, per_min / 60.0)
        return bucket
