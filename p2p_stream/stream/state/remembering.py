"""Remembering device table: a `DeviceTable` whose wearer sessions live in the state store, so a device's stream after
a restart or an eviction resumes its session — its facts and calibration — when it is the same wearer's."""

from __future__ import annotations

from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.ingest.ring_buffer import DeviceStream, PushResult
from p2p_stream.stream.state.sessions import Position, Session
from p2p_stream.stream.state.store import StateStore
from p2p_stream.wire.protocol import Ingest


class RememberingDeviceTable(DeviceTable):
    """Sessions opened by the store (`StateStore.open_session`); each session's facts (`meta`) saved when they
    change and given back to a resumed session's stream that starts without them; where each stored session's
    stream is, handed to the store every few seconds (`flush`)."""

    def __init__(self, store: StateStore, **kwargs) -> None:
        super().__init__(sessions=store, **kwargs)
        self.store = store
        self._saved: dict[str, dict | None] = {}  # facts as stored, for the devices in the table
        self._seen: dict[int, DeviceStream] = {}  # the streams of stored sessions heard since the last `flush`
        self._left: list[Session] = []  # sessions whose stream left (evicted, another wearer), until the next `flush`

    def _open(self, stream: DeviceStream, wearer: str | None, seq: int, t0: float, fresh: bool) -> None:
        if stream.session is not None:
            self._left.append(stream.session)
        super()._open(stream, wearer, seq, t0, fresh)
        facts = self.store.facts(stream.session.id) if stream.session.resumed else None
        stream.meta, stream.facts_carried = facts, facts is not None  # a message's own meta replaces them
        self._saved[stream.device] = facts

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        result = super().push(msg, arrival)
        if result.dropped is not None:
            return result
        stream = self.streams[msg.device]
        if msg.meta is not None and self._saved.get(msg.device) != msg.meta:
            self.store.save_facts(msg.device, stream.session, msg.meta, position(stream))
            self._saved[msg.device] = msg.meta
        if stream.session.stored:  # its position is read at the next flush: nothing computed per message
            self._seen[stream.session.id] = stream
        return result

    def flush(self) -> None:
        """Hand the store the stored sessions' positions, and the sessions whose streams left (a transaction each,
        whatever their number: 10,000 squatted ids evicted at once cost one)."""
        seen, self._seen = self._seen, {}
        left, self._left = self._left, []
        self.store.touch({sid: position(s) for sid, s in seen.items() if s.session is not None and s.session.id == sid})
        if left:  # a session whose device came back before this flush is held again: it stays
            held = {s.session.id for s in self.streams.values() if s.session is not None}
            self.store.release([s for s in left if s.id not in held])

    def forget(self, device: str) -> bool:
        stream = self.streams.get(device)
        self._saved.pop(device, None)
        if stream is not None and stream.session is not None:  # out of the table: a facts-only session goes
            self._left.append(stream.session)
        return super().forget(device)


def position(stream: DeviceStream) -> Position:
    """Where `stream` is: its last `seq` and the time of its last sample (device clock)."""
    return Position(stream.last_seq, stream.next_t0 - 1.0 / stream.fs)
