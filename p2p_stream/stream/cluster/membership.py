"""Membership: the daemons of a cluster alive now, as one daemon sees them — a fixed list, or leases in Redis.

With Redis (`cluster.redis`), each daemon holds a lease, the key ``p2p:<cluster>:daemon:<id>``, that expires after
`cluster.lease_s` unless renewed; it renews every third of that and lists the live keys as often. A daemon that
stops cleanly deletes its lease (the others take its devices at once); one that dies or hangs loses it when it
expires. Redis is the one authority on who is alive: no daemon decides that on its own, so no two daemons' views
differ for longer than one listing. If Redis cannot be reached, a daemon keeps the last live set it saw (so all of
them keep theirs: nothing moves) and says so in its log and heartbeat (`cluster_ok`); when Redis is back, it takes
its lease again, and for one lease_s only adds daemons to its view, removing none: a Redis restarted without its
data lists only the daemons that have renewed so far, and the others are about to.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

from p2p_stream.errors import ConfigError
from p2p_stream.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
# Delete the lease only if it is still ours (a daemon that restarted under the same id may hold it by now).
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Membership:
    """The daemons alive now. `version` grows at every change; `members` is a sorted tuple. This one is a fixed
    list (`cluster.members`): no failover."""

    def __init__(self, me: str, members: Sequence[str]) -> None:
        self.me = me
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        self.version = 0
        self._lock = threading.Lock()

    def _set(self, members: Sequence[str]) -> None:
        new = tuple(sorted(set(members)))
        with self._lock:
            if new != self.members:
                self.members, self.version = new, self.version + 1

    def start(self) -> None:
        """Join the cluster (a fixed list: nothing to do)."""

    def stop(self) -> None:
        """Leave it (a fixed list: nothing to do)."""

    def status(self) -> dict:
        """The heartbeat's cluster keys."""
        return {"members": list(self.members)}


class RedisMembership(Membership):
    """Leases in Redis (module docstring). `start()` takes this daemon's lease, waiting out one left by a previous
    run of the same id (a crash), and refuses an id a live daemon holds; a thread renews it and lists the others."""

    def __init__(self, me: str, url: str, cluster: str, lease_s: float) -> None:
        super().__init__(me, ())
        try:
            import redis
        except ImportError as exc:
            raise ConfigError("cluster.redis needs the redis client: pip install -e '.[cluster]'") from exc
        self.url, self.cluster, self.lease_s = url, cluster, lease_s
        self.period_s = lease_s / 3
        self.redis = redis.Redis.from_url(
            url, socket_timeout=self.period_s, socket_connect_timeout=self.period_s, decode_responses=True
        )
        self.errors = (redis.RedisError, OSError)
        self.prefix = f"p2p:{cluster}:daemon:"
        self.key = self.prefix + me
        self.token = uuid.uuid4().hex  # this run's: tells its own lease from one a namesake took
        self.ok = False  # whether the last renewal reached Redis
        self._grace_until = 0.0  # after an outage, until every daemon has had time to take its lease back
        self.warn = RateLimitedLog(log, period_s=10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p2p-membership", daemon=True)

    def start(self) -> None:
        lease_ms = int(self.lease_s * 1000)
        deadline = time.monotonic() + 2 * self.lease_s  # a crashed run's lease is gone within one lease_s
        try:
            while not self.redis.set(self.key, self.token, nx=True, px=lease_ms):
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"cluster.id {self.me!r} is held by a live daemon of cluster {self.cluster!r} (its lease in "
                        f"{self.url} keeps being renewed); give this daemon another cluster.id"
                    )
                time.sleep(self.period_s / 2)
            self.ok = True
            self._list()
        except self.errors as exc:
            raise ConfigError(
                f"cluster.redis: cannot reach {self.url} ({exc}); is redis-server running there?"
            ) from exc
        log.info("cluster %s: joined as %s through %s; live daemons %s", self.cluster, self.me, self.url,
                 ", ".join(self.members))  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._renew()
                if not self.ok:  # a Redis restarted without its data lists only those who renewed so far
                    self._grace_until = time.monotonic() + self.lease_s
                    log.info("cluster %s: Redis at %s reachable again", self.cluster, self.url)
                self._list()
                self.ok = True
            except self.errors as exc:
                self.ok = False
                self.warn.warning("redis", "cluster %s: Redis at %s unreachable (%s); keeping the live daemons seen "
                                  "last: %s", self.cluster, self.url, exc, ", ".join(self.members))  # fmt: skip

    def _renew(self) -> None:
        lease_ms = int(self.lease_s * 1000)
        if self.redis.set(self.key, self.token, xx=True, px=lease_ms, get=True) == self.token:
            return
        # Expired (this daemon was cut off longer than lease_s), or taken by a namesake: take it back if free.
        if not self.redis.set(self.key, self.token, nx=True, px=lease_ms):
            self.warn.error("id_taken", "cluster %s: another daemon holds the id %s", self.cluster, self.me)

    def _list(self) -> None:
        keys = self.redis.scan_iter(match=self.prefix + "*", count=1000)
        live = [k[len(self.prefix) :] for k in keys]
        if time.monotonic() < self._grace_until:  # just after an outage: add who is back, take no one away yet
            live += self.members
        self._set(live)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.period_s + 1)
        try:
            self.redis.eval(RELEASE, 1, self.key, self.token)
        except self.errors as exc:
            log.warning("cluster %s: could not release the lease of %s (%s); it expires in %g s", self.cluster,
                        self.me, exc, self.lease_s)  # fmt: skip
        self.redis.close()

    def status(self) -> dict:
        return {"members": list(self.members), "cluster_ok": self.ok}


def membership_for(cluster) -> Membership | None:
    """The membership a `[cluster]` config asks for; None for a standalone daemon."""
    if cluster.redis:
        return RedisMembership(cluster.id, cluster.redis, cluster.name, cluster.lease_s)
    if cluster.members:
        return Membership(cluster.id, [m.strip() for m in cluster.members.split(",") if m.strip()])
    return None
