"""Torch threads for a network that runs on this machine's cores (`model.threads`, `model.burst_threads`)."""

from __future__ import annotations

import os

from p2p_stream.config.daemon import DaemonConfig


def torch_threads(config: DaemonConfig) -> tuple[int, int]:
    """(steady, burst) torch threads of a local network. In a burst the ingest loop mostly waits (a profile of
    1,000 devices whose windows fall due at once: its thread idle 86 % of the time), so the network may take every
    core then; steadily one core stays with ingest (`auto_threads`)."""
    steady = config.model.threads or auto_threads()
    return steady, config.model.burst_threads or os.cpu_count() or 1


def auto_threads() -> int:
    """Torch threads when the config says 0: every core but one, which the ingest loop needs to itself.

    Measured on 2 cores (docs/performance.md): 1 torch thread cut the p99 latency at 1,000 devices from 362 to
    251 ms against torch's default of 2, which oversubscribes the cores the ingest loop also runs on.
    """
    return max(1, (os.cpu_count() or 1) - 1)
