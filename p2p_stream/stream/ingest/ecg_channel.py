"""ECG channel: a device's second stream (`ecg.<device>`), beside its PPG, on the same clock.

It only feeds the device's beat detectors (beats/device_beats.py), so its rules are few:

- a message whose samples start before the last one's ended, with a `seq` not above the last, is a replay
  (`duplicate`) and changes nothing;
- `resync` refused in a row that continue each other (seq + 1, each starting where the one before ended, one rate;
  the PPG's `RESYNC_MESSAGES`) restart the channel from them: a forged message that moved its clock ahead costs the
  device two messages of ECG, as on the PPG topic; the same replay sent again and again never does;
- samples beyond the device's share are shed (`over_budget`: the same `limits.rate_factor` and `limits.burst_s` as
  its PPG); a change of rate also costs `RESTART_COST_S` of it (a new filter: ~1 ms), so cycling rates is shed too;
- a hole (NaN, a lost message, a time jump) restarts the R-peak detector: its filter's state means nothing across
  one; stretches between NaNs shorter than `MIN_STRETCH_S` (no R peak fits) are not fed at all, so a message of
  alternating NaNs costs numpy work, not Python work per stretch.

A device without a PPG stream has no channel: ECG alone never takes a slot of the device table (`no_ppg_stream`).
"""

from __future__ import annotations

import numpy as np

from p2p_stream.beats.device_beats import DeviceBeats
from p2p_stream.stream.ingest.budget import TokenBucket
from p2p_stream.wire.protocol import Ingest

RESTART_COST_S = 1.0  # seconds of the sample budget a change of rate costs
MIN_STRETCH_S = 0.5  # a finite stretch shorter than this between holes is not fed: no R peak fits it


class EcgChannel:
    def __init__(self, beats: DeviceBeats, rate_factor: float, burst_s: float, resync: int) -> None:
        self.beats, self.resync = beats, resync
        self.samples = TokenBucket(burst_s, rate_factor)  # seconds of signal, like the PPG's
        self.last_seq: int | None = None
        self.next_t0: float | None = None
        self.fs: float | None = None
        self.refused = 0  # refused in a row that continue each other
        self.refused_end: tuple[int, float, float] | None = None  # the last refused one's (seq, end, fs)

    def push(self, msg: Ingest, arrival: float) -> str | None:
        """Apply one validated ECG message; why it was dropped, or None."""
        x = msg.samples
        end = msg.t0 + len(x) / msg.fs
        if self._replayed(msg):
            r = self.refused_end
            continues = r is not None and msg.seq == r[0] + 1 and msg.fs == r[2] and abs(msg.t0 - r[1]) < 1 / msg.fs
            self.refused = self.refused + 1 if continues else 1
            self.refused_end = (msg.seq, end, msg.fs)
            if self.refused < self.resync:
                return "duplicate"
        cost = len(x) / msg.fs + (RESTART_COST_S if self.fs is not None and msg.fs != self.fs else 0.0)
        if not self.samples.take(cost, arrival):
            return "over_budget"
        self.refused, self.refused_end = 0, None
        self.last_seq, self.next_t0, self.fs = msg.seq, end, msg.fs
        finite = np.isfinite(x)
        if finite.all():
            self.beats.add_ecg(x, msg.t0, msg.fs)
            return None
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
        starts, stops = edges[::2], edges[1::2]
        long_enough = stops - starts >= MIN_STRETCH_S * msg.fs
        for a, b in zip(starts[long_enough].tolist(), stops[long_enough].tolist(), strict=True):  # each alone
            self.beats.add_ecg(x[a:b], msg.t0 + a / msg.fs, msg.fs)
        return None

    def _replayed(self, msg: Ingest) -> bool:
        return (
            self.last_seq is not None
            and msg.seq <= self.last_seq
            and self.next_t0 is not None
            and msg.t0 < self.next_t0 - 0.5 / msg.fs
        )
