"""Following the cluster: which messages are this daemon's, and what changes when the live set of daemons does.

Devices another daemon owns now leave this daemon's device table (their calibrations stay in the state store, for
whoever owns them next); a device taken over from another daemon gets a `gap` estimate first, when its next message
starts its stream here, so subscribers see where its estimates broke off and went on from this daemon.
"""

from __future__ import annotations

import logging

from p2p_stream.stream.cluster.membership import Membership, membership_for
from p2p_stream.stream.cluster.ownership import Ownership
from p2p_stream.stream.ingest.devices import DeviceTable

log = logging.getLogger(__name__)


class ClusterFollower:
    """On the daemon's loop thread: `mine(topic)` per message, `follow(devices)` once per loop turn."""

    def __init__(self, membership: Membership, cluster_name: str, prefixes: list[bytes]) -> None:
        """`membership` already started (it holds this daemon's lease, when on Redis); `prefixes`: the topics the
        ingest router takes, `<prefix><device>` each."""
        self.membership, self.cluster_name = membership, cluster_name
        self.ownership = Ownership(membership, prefixes)
        self._taken_over: set[str] = set()  # devices taken over from another daemon, not heard here since

    def mine(self, topic: bytes) -> bool:
        """Whether this daemon owns the device of a message's topic (one it does not is counted `foreign_total`)."""
        return self.ownership.mine(topic)

    def status(self) -> dict:
        """The heartbeat's cluster keys: the live members as this daemon sees them, the messages left to others."""
        return {**self.membership.status(), "foreign_total": self.ownership.foreign}

    def follow(self, devices: DeviceTable) -> list[str]:
        """After a change of the live set: the devices now another's, forgotten from `devices` (returned, so what
        else is kept per device can follow); nothing when the live set is unchanged."""
        taken = self.ownership.refresh()
        if taken is None:
            return []
        self._taken_over = set(taken)  # a later change replaces it: a device not heard since is no one's news
        gone = [d for d in devices.streams if not self.ownership.owns(d)]
        for device in gone:
            devices.forget(device)
        log.info("cluster %s: live daemons %s; %d device(s) handed to others, %d taken over", self.cluster_name,
                 ", ".join(self.membership.members) or "none", len(gone), len(taken))  # fmt: skip
        return gone

    def taken_over(self, device: str) -> bool:
        """Whether this is the first message here of a device another daemon estimated until now (asked once)."""
        if self._taken_over and device in self._taken_over:
            self._taken_over.discard(device)
            return True
        return False

    def stop(self) -> None:
        """Leave at once: the others take this daemon's devices now, not a lease later."""
        self.membership.stop()


def follower_for(cluster, prefixes: list[bytes]) -> ClusterFollower | None:
    """The follower a `[cluster]` config asks for, its membership started (a ConfigError says why it cannot be);
    None for a standalone daemon."""
    membership = membership_for(cluster)
    if membership is None:
        return None
    membership.start()
    return ClusterFollower(membership, cluster.name, prefixes)
