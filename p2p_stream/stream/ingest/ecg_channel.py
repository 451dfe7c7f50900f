"""ECG channel: a device's second stream (`ecg.<device>`), beside its PPG, on the same clock.

It only feeds the device's beat detectors (beats/device_beats.py), so its rules are few:

- a message whose samples start before the last one's ended, with a `seq` not above the last, is a replay
  (`duplicate`) and changes nothing;
- `resync` refused in a row (the PPG's `RESYNC_MESSAGES`) restart the channel from them: a forged message that
  moved its clock ahead costs the device two messages of ECG, as on the PPG topic;
- samples beyond the device's share are shed (`over_budget`: the same `limits.rate_factor` and `limits.burst_s` as
  its PPG);
- a hole (NaN, a lost message, a time jump) restarts the R-peak detector: its filter's state means nothing across
  one.

A device without a PPG stream has no channel: ECG alone never takes a slot of the device table (`no_ppg_stream`).
"""

from __future__ import annotations

import numpy as np

from p2p_stream.beats.device_beats import DeviceBeats
from p2p_stream.stream.ingest.budget import TokenBucket
from p2p_stream.wire.protocol import Ingest


class EcgChannel:
    def __init__(self, beats: DeviceBeats, rate_factor: float, burst_s: float, resync: int) -> None:
        self.beats, self.resync = beats, resync
        self.samples = TokenBucket(burst_s, rate_factor)  # seconds of signal, like the PPG's
        self.last_seq: int | None = None
        self.next_t0: float | None = None
        self.refused = 0  # refused in a row
        self.messages = 0  # accepted

    def push(self, msg: Ingest, arrival: float) -> str | None:
        """Apply one validated ECG message; why it was dropped, or None."""
        x = msg.samples
        if self._replayed(msg):
            self.refused += 1
            if self.refused < self.resync:
                return "duplicate"
        if not self.samples.take(len(x) / msg.fs, arrival):
            return "over_budget"
        self.refused = 0
        self.messages += 1
        self.last_seq, self.next_t0 = msg.seq, msg.t0 + len(x) / msg.fs
        finite = np.isfinite(x)
        if finite.all():
            self.beats.add_ecg(x, msg.t0, msg.fs)
            return None
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):  # each finite stretch alone
            self.beats.add_ecg(x[a:b], msg.t0 + a / msg.fs, msg.fs)
        return None

    def _replayed(self, msg: Ingest) -> bool:
        return (
            self.last_seq is not None
            and msg.seq <= self.last_seq
            and self.next_t0 is not None
            and msg.t0 < self.next_t0 - 0.5 / msg.fs
        )
