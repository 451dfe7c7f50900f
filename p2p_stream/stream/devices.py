"""Device table: a DeviceStream per device id, bounded in number, idle devices evicted."""

from __future__ import annotations

import itertools
import time

from p2p_stream.errors import P2PError
from p2p_stream.stream.protocol import Ingest
from p2p_stream.stream.ring_buffer import DeviceStream, PushResult

# Every DeviceStream this process creates gets the next number: a device forgotten (or evicted) and heard from
# again is a new stream with a higher generation, which its windows carry to calibration and smoothing.
_GENERATIONS = itertools.count(1)


class DeviceLimitError(P2PError):
    """A new device would exceed `max_devices`."""


class DeviceTable:
    def __init__(
        self,
        *,
        window_s: float,
        hop_s: float,
        max_chunk: int,
        gap_tolerance_s: float,
        max_devices: int,
        idle_s: float,
    ) -> None:
        """Windows of `window_s` every `hop_s` seconds; chunks of at most `max_chunk` samples; a time gap above
        `gap_tolerance_s` seconds breaks a stream; at most `max_devices` devices, each forgotten after `idle_s`
        seconds of silence."""
        self.window_s, self.hop_s, self.max_chunk, self.gap_tolerance_s = window_s, hop_s, max_chunk, gap_tolerance_s
        self.max_devices, self.idle_s = max_devices, idle_s
        self.streams: dict[str, DeviceStream] = {}
        self.last_seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        stream = self.streams.get(msg.device)
        if stream is None:
            if len(self.streams) >= self.max_devices:
                raise DeviceLimitError(f"{len(self.streams)} devices already, the limit is {self.max_devices}")
            stream = DeviceStream(
                msg.device,
                msg.fs,
                window_s=self.window_s,
                hop_s=self.hop_s,
                max_chunk=self.max_chunk,
                gap_tolerance_s=self.gap_tolerance_s,
                generation=next(_GENERATIONS),
            )
            self.streams[msg.device] = stream
        result = stream.push(msg, arrival)
        if result.dropped is None:  # only accepted messages keep a device alive: garbage cannot hold its slot
            self.last_seen[msg.device] = arrival
        return result

    def forget(self, device: str) -> bool:
        self.last_seen.pop(device, None)
        return self.streams.pop(device, None) is not None

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Drop devices silent for longer than `idle_s`; returns their ids."""
        now = time.monotonic() if now is None else now
        gone = [d for d, t in self.last_seen.items() if now - t > self.idle_s]
        for d in gone:
            self.forget(d)
        return gone
