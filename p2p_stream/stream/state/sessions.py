"""Wearer sessions: who wears a device, so a calibration or a person's facts never follow the device to its next wearer.

A *session* is one wearer's time on one device. Calibrations and facts (`meta`) belong to a session and apply to it
alone. A device's session changes when:

- its ingest names another `wearer` (an opaque subject or session key; a message without one says nothing);
- its counter restarts (`seq_reset`, `resync`: a reboot, or another person's device on the same id) and the
  restarting message does not name the session's own `wearer`;
- an operator ends it (`ctl end-session`, the control command `end_session`).

When a device starts a new stream here (the daemon restarted, the device was evicted, another daemon of a cluster
had it), its last stored session goes on (`resumed`) only if the message names that session's `wearer`, or names
none and continues the stored position: a higher `seq`, a `t0` not before the last sample seen and at most
`state.resume_gap_s` after it — and no other session began on the device since (that one *closed* it to resumption
by position; its wearer key still brings it back). Anything else is a new wearer: nothing known. Without a state
store a session lasts as long as the device's stream here (nothing to resume from).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

COUNTER_RESTARTS = ("seq_reset", "resync")  # stream breaks that say the device's counter started again


@dataclass
class Session:
    """One wearer on one device."""

    id: int  # the estimates' `session`: never reused for another wearer on any device of this store
    wearer: str | None  # the ingest's `wearer` key, when one was sent
    resumed: bool = False  # opened again from the store: what it holds was kept from an earlier stream
    stored: bool = False  # has a row in the store (only a session with something to keep gets one)


@dataclass(frozen=True)
class Position:
    """Where a device's stream was last seen: its `seq` and the time of its last sample (device clock, s)."""

    seq: int
    t: float


def continues(last: Position, seq: int, t0: float, resume_gap_s: float) -> bool:
    """Whether a stream starting at (`seq`, `t0`) continues one last seen at `last`: its counter went on and its
    clock moved forward by at most `resume_gap_s`. A counter that started again is never the same stream."""
    return seq > last.seq and last.t - 1.0 <= t0 <= last.t + resume_gap_s  # 1 s: the last sample vs the next t0


def new_wearer(restart: str | None, wearer: str | None, session: Session | None) -> tuple[bool, bool]:
    """For one accepted message of a stream holding `session`: (a new session begins, the device restarted).

    A `wearer` other than the session's is a new session; a counter restart is one unless the message names the
    session's own wearer (the same person, the device rebooted)."""
    if session is None:
        return True, False
    if wearer is not None and wearer != session.wearer:
        return True, False
    if restart in COUNTER_RESTARTS and wearer is None:
        return True, True
    return False, False


class SessionBook(Protocol):
    """Where sessions are opened: `MemorySessions`, or the state store (stream/state/store.py)."""

    def open_session(self, device: str, wearer: str | None, seq: int, t0: float, fresh: bool) -> Session:
        """The session of a device's stream starting at (`seq`, `t0`): resumed or new; `fresh`: the device's
        counter restarted (or its session was ended), so only a `wearer` key can bring a stored session back."""
        ...


class MemorySessions:
    """Without a state store: every new stream, and every new wearer in one, is a new session; numbered from 1."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def open_session(self, device: str, wearer: str | None, seq: int, t0: float, fresh: bool) -> Session:
        return Session(next(self._ids), wearer)
