"""Device table: a DeviceStream per device id, bounded in number and ring memory, idle devices evicted.

When the table is full, a new device may take the slot of an *unproductive* one — a device that has cut no window
for `UNPRODUCTIVE_WINDOWS` window lengths (a younger one is not unproductive) — so ids kept alive with tiny messages
cannot lock a real wearable out. The devices are kept in the order they last cut a window (or were created), on a
clock that never goes back (the latest arrival seen), so the one to replace is the first: no scan, whatever the
number of devices.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict

from p2p_stream.config.daemon import Limits
from p2p_stream.errors import P2PError
from p2p_stream.stream.ingest.bounds import MB
from p2p_stream.stream.ingest.ring_buffer import DeviceStream, PushResult, Window, ring_nbytes
from p2p_stream.stream.state.sessions import MemorySessions, SessionBook
from p2p_stream.wire.protocol import Ingest

# Every DeviceStream this process creates gets the next number, and so does each new wearer session of one: a device
# forgotten (or evicted) and heard from again, or worn by someone else, is a new generation, which its windows carry
# to calibration and smoothing.
_GENERATIONS = itertools.count(1)
# A device that has cut no window for this many window lengths (of arrival time) may lose its slot to a new one:
# a streaming wearable cuts one every hop, and one just back from a break has its first within one window length.
UNPRODUCTIVE_WINDOWS = 2.0
# At most this many unproductive devices make room for one new device (a fast one may need several slow ones' ring
# memory): bounded work per message.
MAX_REPLACED = 16


class DeviceLimitError(P2PError):
    """A new device would exceed `max_devices` or the ring memory, and no unproductive device can make room."""


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
        ring_memory_bytes: int | None = int(Limits().ring_memory_mb * MB),  # the defaults are the daemon's settings
        rate_factor: float = Limits().rate_factor,
        burst_s: float = Limits().burst_s,
        warm_crop_s: float = 0.0,
        sessions: SessionBook | None = None,
        follow_beats: bool = False,
        beats_without_ecg: bool = True,
    ) -> None:
        """Windows of `window_s` every `hop_s` seconds; chunks of at most `max_chunk` samples; a time gap above
        `gap_tolerance_s` seconds breaks a stream; at most `max_devices` devices whose rings hold at most
        `ring_memory_bytes` together (None: no bound), each forgotten after `idle_s` seconds without an accepted
        message; each device's samples budgeted at `rate_factor` times its rate plus `burst_s` seconds of them.
        `sessions`: where wearer sessions are opened (the state store; in memory without one). `follow_beats`: each
        device's beats are found and each window carries their medians (beats/device_beats.py) — only for devices
        that send an ECG, unless `beats_without_ecg`."""
        self.window_s, self.hop_s, self.max_chunk, self.gap_tolerance_s = window_s, hop_s, max_chunk, gap_tolerance_s
        self.max_devices, self.idle_s, self.ring_memory_bytes = max_devices, idle_s, ring_memory_bytes
        self.rate_factor, self.burst_s = rate_factor, burst_s
        self.warm_crop_s = warm_crop_s  # each stream cuts its first window's crops ahead (`DeviceStream`): 0 = not
        self.sessions = sessions if sessions is not None else MemorySessions()
        self.follow_beats, self.beats_without_ecg = follow_beats, beats_without_ecg
        self.streams: dict[str, DeviceStream] = {}
        self.last_seen: dict[str, float] = {}  # arrival of the last accepted message (or of the creating one)
        # When each device last cut a window (or was created), on `clock`, oldest first: the front is the least
        # productive device. `clock` is the latest arrival seen, so the order holds even if arrivals come out of order.
        self.last_window: OrderedDict[str, float] = OrderedDict()
        self.clock = float("-inf")
        self.ring_bytes = 0  # all rings together

    def __len__(self) -> int:
        return len(self.streams)

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        """Apply `msg`, received at `arrival` (time.monotonic()); raises DeviceLimitError for a new device that does
        not fit. `PushResult.replaced` names the devices forgotten to make room for it."""
        self.clock = max(self.clock, arrival)
        stream = self.streams.get(msg.device)
        replaced: list[str] = []
        if stream is None:
            replaced = self._make_room(ring_nbytes(self.window_s, msg.fs, self.max_chunk))
            stream = self._create(msg, arrival)
        elif msg.fs != stream.fs and self._over_memory(
            self.ring_bytes - stream.nbytes + ring_nbytes(self.window_s, msg.fs, self.max_chunk)
        ):
            return PushResult([], dropped="over_budget")  # its new rate's ring does not fit: shed, stream untouched
        before = stream.nbytes
        try:
            result = stream.push(msg, arrival)
        finally:
            self.ring_bytes += stream.nbytes - before  # an fs change resized the ring
        result.replaced = replaced
        if result.dropped is None:  # only accepted messages keep a device alive: garbage cannot hold its slot
            self.last_seen[msg.device] = arrival
            if any(type(w) is Window for w in result.windows):  # a break marker or a crop cut ahead is no window
                self.last_window[msg.device] = self.clock
                self.last_window.move_to_end(msg.device)
        return result

    def push_ecg(self, msg: Ingest, arrival: float) -> str | None:
        """Apply an ECG message (ecg_channel.py); why it was dropped, or None. It never creates a device: a device
        is in the table by its PPG (`no_ppg_stream` until then), and kept alive by it alone."""
        stream = self.streams.get(msg.device)
        if stream is None:
            return "no_ppg_stream"
        return stream.push_ecg(msg, arrival)

    def _create(self, msg: Ingest, arrival: float) -> DeviceStream:
        stream = DeviceStream(
            msg.device,
            msg.fs,
            window_s=self.window_s,
            hop_s=self.hop_s,
            max_chunk=self.max_chunk,
            gap_tolerance_s=self.gap_tolerance_s,
            generation=next(_GENERATIONS),
            rate_factor=self.rate_factor,
            burst_s=self.burst_s,
            warm_crop_s=self.warm_crop_s,
            follow_beats=self.follow_beats,
            beats_without_ecg=self.beats_without_ecg,
        )
        stream.opener = self._open  # its first message opens its session (DeviceStream.push)
        self.streams[msg.device] = stream
        self.ring_bytes += stream.nbytes
        # Seen and productive from its creation: a device whose every message is refused is evicted after `idle_s`,
        # and a new one is not taken for unproductive before it could have cut a window.
        self.last_seen[msg.device] = arrival
        self.last_window[msg.device] = self.clock
        return stream

    def _open(self, stream: DeviceStream, wearer: str | None, seq: int, t0: float, fresh: bool) -> None:
        """`stream`'s session from (`seq`, `t0`) on (stream/state/sessions.py), resumed or new. A stream that had one
        takes a new generation, so calibration and smoothing start again; the facts are the session's own."""
        if stream.session is not None:
            stream.generation = next(_GENERATIONS)
        stream.session = self.sessions.open_session(stream.device, wearer, seq, t0, fresh)
        stream.meta, stream.facts_carried = None, False

    def end_session(self, device: str) -> int | None:
        """The device's wearer session ends now (an operator's `end_session`): its stream goes on as a new session
        that knows nothing of the last one. The ended session's id, or None for a device not in the table."""
        stream = self.streams.get(device)
        if stream is None or stream.session is None:
            return None
        ended = stream.session.id
        seq = stream.last_seq if stream.last_seq is not None else 0
        t = stream.next_t0 if stream.next_t0 is not None else 0.0
        self._open(stream, None, seq, t, fresh=True)
        stream.run = 0  # no window holds samples of both sessions: the next one is cut from samples after this
        return ended

    def _over_memory(self, ring_bytes: int) -> bool:
        return self.ring_memory_bytes is not None and ring_bytes > self.ring_memory_bytes

    def _make_room(self, nbytes: int) -> list[str]:
        """Room for a new device's ring of `nbytes`: forget the fewest unproductive devices (least productive first)
        that make it fit, and return their ids; raise DeviceLimitError if they cannot."""
        count, total = len(self.streams), self.ring_bytes
        victims: list[str] = []
        for device, t in self.last_window.items():  # oldest first: stops at the first productive one
            if count < self.max_devices and not self._over_memory(total + nbytes):
                break
            if self.clock - t <= UNPRODUCTIVE_WINDOWS * self.window_s or len(victims) == MAX_REPLACED:
                break
            victims.append(device)
            count, total = count - 1, total - self.streams[device].nbytes
        if count >= self.max_devices:
            raise DeviceLimitError(
                f"{len(self.streams)} devices already, the limit is {self.max_devices} (max_devices), "
                "and none is unproductive"
            )
        if self._over_memory(total + nbytes):
            raise DeviceLimitError(
                f"rings hold {self.ring_bytes} bytes; one more of {nbytes} would exceed the ring memory limit of "
                f"{self.ring_memory_bytes} bytes, and not enough devices are unproductive"
            )
        for device in victims:
            self.forget(device)
        return victims

    def forget(self, device: str) -> bool:
        self.last_seen.pop(device, None)
        self.last_window.pop(device, None)
        stream = self.streams.pop(device, None)
        if stream is None:
            return False
        self.ring_bytes -= stream.nbytes
        return True

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Drop devices without an accepted message for longer than `idle_s`; returns their ids."""
        now = time.monotonic() if now is None else now
        gone = [d for d, t in self.last_seen.items() if now - t > self.idle_s]
        for d in gone:
            self.forget(d)
        return gone
