"""What the daemon may hold in memory whatever its peers send, derived from its configuration (docs/reliability.md).

Each entry is a queue or buffer between a socket and the model with the setting that bounds it. The hostile-input
tests drive each attack and check the daemon's peak RSS against `total_mb` (plus what it held before).
"""

from __future__ import annotations

from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.ids import DEVICE_MAX_BYTES
from p2p_stream.wire.protocol import INGEST_PREFIX, MAX_FRAME_BYTES

MB = 1 << 20
CONTROL_MAX_BYTES = 64 * 1024  # a control request is a small map; a bigger frame drops the requester's connection
CONTROL_HWM = 100  # control requests ZeroMQ queues per connection
# The largest frame the estimates socket takes from a subscriber: a subscription of the longest topic (`sbp.` and a
# 64-byte id) fits, and so does ZeroMQ's handshake (it failed at 70 bytes, passed at 128); a longer subscription,
# which could match no topic, drops that subscriber's connection before ZeroMQ stores it.
SUBSCRIPTION_MAX_BYTES = 256
MAX_INGEST_MESSAGE_BYTES = MAX_FRAME_BYTES + len(INGEST_PREFIX) + DEVICE_MAX_BYTES  # a topic and the largest frame


def hwm_for_mb(queue_mb: float) -> int:
    """A high-water mark (messages) that holds at most `queue_mb` MB of the largest ingest messages; ≥ 10."""
    return max(10, int(queue_mb * MB // MAX_INGEST_MESSAGE_BYTES))


def ingest_hwm(config: DaemonConfig) -> int:
    """The daemon's ingest receive high-water mark: `limits.ingest_queue_mb` of the largest messages."""
    return hwm_for_mb(config.limits.ingest_queue_mb)


def memory_bounds(config: DaemonConfig, connections: int = 1) -> dict[str, float]:
    """Megabytes each queue or buffer may hold at most, for `connections` ingest/control connections.

    ZeroMQ counts whole messages against a high-water mark and frames against MAXMSGSIZE; a message of more than the
    protocol's two frames is held whole until its last frame (ZeroMQ has no frame-count limit): the ingest bound is
    for messages of two frames, which is every message a wearable or simulator sends. Subscriptions on the estimates
    socket are bounded in length (SUBSCRIPTION_MAX_BYTES), not in number: see docs/reliability.md.
    """
    lim, b = config.limits, config.batching
    return {
        "ingest queue (ZeroMQ, per connection × connections)": connections
        * ingest_hwm(config) * MAX_INGEST_MESSAGE_BYTES / MB,
        "control queue (ZeroMQ)": connections * CONTROL_HWM * CONTROL_MAX_BYTES / MB,
        "ring buffers (limits.ring_memory_mb)": lim.ring_memory_mb,
        "window queue (batching.max_queue_mb)": b.max_queue_mb,
    }  # fmt: skip


def total_mb(config: DaemonConfig, connections: int = 1) -> float:
    return sum(memory_bounds(config, connections).values())
