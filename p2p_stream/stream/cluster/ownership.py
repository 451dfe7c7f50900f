"""Ownership: which daemon of a cluster estimates a device. Every daemon behind a p2p-proxy hears every wearable and
keeps only the devices it owns: the owner of a device is the live daemon with the highest rendezvous weight
(highest-random-weight hashing) for the device id. That covers every id exactly once by construction — no prefix
to forget or overlap — and when a daemon leaves, only its own devices move (each to whichever daemon is next for
it); when one joins, it takes about 1/N of the devices, from every other daemon alike.

The live set comes from a `Membership` (stream/cluster/membership.py): a fixed list (`cluster.members`) or Redis leases
(`cluster.redis`). Two daemons agree on every owner as soon as they see the same live set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from p2p_stream.stream.cluster.membership import Membership
from p2p_stream.wire.protocol import INGEST_PREFIX

CACHE_MAX = 200_000  # topics remembered; past this the cache starts afresh (ids a sender makes up cost nothing lasting)


def weight(member: str, device: str) -> int:
    """The rendezvous weight of `member` for `device`: 64 bits of BLAKE2b, the same on every machine and run."""
    digest = hashlib.blake2b(f"{member}\0{device}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(device: str, members: Sequence[str]) -> str | None:
    """The member that owns `device` (ties, never seen with 64 bits, go to the greater name); None without members."""
    return max(members, key=lambda m: (weight(m, device), m), default=None)


class Ownership:
    """`mine(topic)`: whether this daemon owns the device of a message's topic (`<prefix><device>`, one of the
    ingest router's prefixes: every channel of a device goes to one daemon), cached per topic; `refresh()` follows
    the live set. Both on the daemon's loop thread only (the cache is not locked)."""

    def __init__(self, membership: Membership, prefixes: Sequence[bytes] = (INGEST_PREFIX,)) -> None:
        self.membership = membership
        self.me = membership.me
        self.prefixes = tuple(prefixes)
        self._version = -1  # the live set the cache was made for
        self._cache: dict[bytes, tuple[str, bool]] = {}  # topic → (its device, whether it is this daemon's)
        self.foreign = 0  # messages of devices another daemon owns: dropped unread

    def mine(self, topic: bytes) -> bool:
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
        cached = self._cache.get(topic)
        if cached is None:
            prefix = next((p for p in self.prefixes if topic.startswith(p)), None)
            if prefix is None:
                return True  # not a topic any handler takes: the router counts it, on whichever daemon reads it
            device = topic[len(prefix) :].decode("utf-8", "replace")
            cached = self._cache[topic] = (device, self.owns(device))
        if not cached[1]:
            self.foreign += 1
        return cached[1]

    def owns(self, device: str) -> bool:
        return owner(device, self.membership.members) == self.me

    def refresh(self) -> list[str] | None:
        """None while the live set is the one the cache was made for; after a change, the devices heard since the
        last change that are this daemon's now and were another's (taken over), and the cache starts afresh."""
        if self._version == self.membership.version:
            return None
        self._version = self.membership.version
        heard_as_others = {device for device, was_mine in self._cache.values() if not was_mine}
        taken = sorted(d for d in heard_as_others if self.owns(d))
        self._cache.clear()
        return taken
