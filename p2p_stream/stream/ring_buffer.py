"""Ring buffer: one device's contiguous samples in a preallocated array, cut into windows every hop.

Windows are cut by sample count, so jitter in arrival times never changes their size. A break — a `seq`
gap, a time gap beyond the tolerance, NaN/Inf samples, a change of sampling rate — empties the run, so no
window ever spans a hole. Repeated or older `seq` numbers are dropped, and so is a `seq` leap ahead that the time
between the messages cannot hold (`seq_jump`). No single message can lock a device out: `RESYNC_MESSAGES` refused
messages in a row that continue each other (seq + 1, samples where the last ended) restart the stream from them
(`resync`), so a forged or buggy message that moved the stream's seq or clock ahead costs its device two messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from p2p_stream.stream.protocol import Ingest

# Refused messages in a row, each continuing the one before, after which the stream restarts from them: a genuine
# stream is refused at most RESYNC_MESSAGES - 1 times. Late duplicates of a live stream are interleaved with its
# accepted messages, which start the count again, and one message repeated never continues itself.
RESYNC_MESSAGES = 3
# Messages a `seq` may skip beyond what the time skipped can hold (each lost message held at least one sample).
SEQ_JUMP_SLACK = 1_000


@dataclass
class Window:
    """A raw window ready for the quality gate and the model."""

    device: str
    x: np.ndarray | None  # (length,) float32 raw samples at `fs`; None for a break marker
    fs: float  # Hz, the device's rate
    t_last: float  # Unix time of the last sample, s
    arrival: float  # time.monotonic() when the last sample arrived
    ref: tuple[float, float] | None = None
    meta: dict | None = None
    enqueued: float = field(default=0.0)  # time.monotonic() when it entered the batcher
    reason: str | None = None  # set for a marker that only reports a break ("gap"): no samples, no model
    seq: int = 0  # the device's estimate counter, given when the window is cut, so estimates go out in order
    # The DeviceStream that cut it (`DeviceStream.generation`): a forgotten or evicted device that comes back gets a
    # new, higher one, so its calibration and smoothing never take windows of the stream before (0: built elsewhere).
    generation: int = 0


@dataclass
class PushResult:
    """What one message did to a device's stream."""

    windows: list[Window]
    dropped: str | None = None  # "duplicate", "out_of_order" or "seq_jump": the message was ignored
    # Why the run restarted: seq_gap, seq_reset, resync, time_gap, nan, fs_change.
    breaks: list[str] = field(default_factory=list)


class DeviceStream:
    """One device: the ring, the run of contiguous samples in it, and where the next window ends."""

    def __init__(
        self,
        device: str,
        fs: float,
        window_s: float,
        hop_s: float,
        max_chunk: int,
        gap_tolerance_s: float,
        generation: int = 0,
    ):
        self.device = device
        self.generation = generation  # given by DeviceTable, process-wide increasing; every window carries it
        self.window_s, self.hop_s, self.max_chunk, self.gap_tolerance_s = window_s, hop_s, max_chunk, gap_tolerance_s
        self._configure(fs)
        self.last_seq: int | None = None
        # The run of refused messages that continue each other: (seq, t0 where the last ended, fs, how many).
        self.refused: tuple[int, float, float, int] | None = None
        self.estimates = 0  # estimate `seq` numbers handed out so far
        self.meta: dict | None = None
        self.ref: tuple[float, float] | None = None

    def _configure(self, fs: float) -> None:
        self.fs = fs
        self.length = max(1, int(round(self.window_s * fs)))
        self.hop = max(1, int(round(self.hop_s * fs)))
        self.buf = np.zeros(self.length + self.max_chunk, dtype=np.float32)
        self.run = 0  # contiguous samples since the last break
        self.pos = 0  # ring index of the next sample
        self.next_t0: float | None = None  # expected t0 of the next message

    def take_seq(self) -> int:
        """The next estimate number of this device."""
        self.estimates += 1
        return self.estimates - 1

    def _restart(self) -> None:
        self.run = 0

    def _append(self, x: np.ndarray, t0: float, arrival: float) -> list[Window]:
        """Append finite samples `x` (first at Unix time t0); return the windows that end inside them."""
        if len(x) > self.max_chunk:  # the ring holds one window plus one chunk: feed big messages in pieces
            windows = []
            for start in range(0, len(x), self.max_chunk):
                windows += self._append(x[start : start + self.max_chunk], t0 + start / self.fs, arrival)
            return windows
        n, cap = len(x), len(self.buf)
        end = self.pos + n
        if end <= cap:
            self.buf[self.pos : end] = x
        else:
            k = cap - self.pos
            self.buf[self.pos :] = x[:k]
            self.buf[: n - k] = x[k:]
        run0 = self.run
        self.run += n
        self.pos = end % cap
        windows = []
        if self.run >= self.length:
            # Window ends are the run lengths L with L >= length and (L - length) % hop == 0.
            lo = max(self.length, run0 + 1)
            first_end = self.length + -(-(lo - self.length) // self.hop) * self.hop
            for end_run in range(first_end, self.run + 1, self.hop):
                back = self.run - end_run  # samples written after this window's last sample
                stop = (self.pos - back) % cap
                t_last = t0 + (end_run - 1 - run0) / self.fs
                windows.append(
                    Window(
                        self.device,
                        self._copy_out(stop),
                        self.fs,
                        t_last,
                        arrival,
                        self.ref,
                        self.meta,
                        seq=self.take_seq(),
                        generation=self.generation,
                    )
                )
        return windows

    def _copy_out(self, stop: int) -> np.ndarray:
        """The `length` samples that end just before ring index `stop`, as a new array (slices, not fancy indexing)."""
        start = stop - self.length
        if start >= 0:
            return self.buf[start:stop].copy()
        return np.concatenate((self.buf[start:], self.buf[:stop]))

    def _refusal(self, msg: Ingest) -> str | None:
        """Why `msg` cannot continue this stream (duplicate, out_of_order, seq_jump), or None."""
        if self.last_seq is None or self.next_t0 is None:
            return None
        if msg.seq <= self.last_seq:
            # An old number with old samples is a replay; with samples that start where the last ended or later,
            # the device restarted its counter (a reboot).
            if msg.t0 < self.next_t0 - 0.5 / self.fs:
                return "duplicate" if msg.seq == self.last_seq else "out_of_order"
            return None
        # A leap of seq (2**63, a counter gone wild) that the time skipped cannot hold is refused on its own.
        skipped = msg.seq - self.last_seq - 1
        if skipped > SEQ_JUMP_SLACK + max(0.0, msg.t0 - self.next_t0) * max(self.fs, msg.fs):
            return "seq_jump"
        return None

    def _resyncs(self, msg: Ingest) -> bool:
        """Note a refused `msg`; True when it is the RESYNC_MESSAGES-th in a row of messages continuing each other."""
        run = self.refused
        continues = (
            run is not None
            and msg.seq == run[0] + 1
            and msg.fs == run[2]
            and abs(msg.t0 - run[1]) <= self.gap_tolerance_s
        )
        count = run[3] + 1 if continues else 1
        self.refused = (msg.seq, msg.t0 + len(msg.ppg) / msg.fs, msg.fs, count)
        return count >= RESYNC_MESSAGES

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        """Apply one validated message; `arrival` is time.monotonic() at receipt."""
        result = PushResult([])
        restart: str | None = None  # why the stream restarts from this message whatever it continues
        refusal = self._refusal(msg)
        if refusal is not None:
            if not self._resyncs(msg):
                return PushResult([], dropped=refusal)
            restart = "resync"  # the stream's seq or clock was wrong (forged, or the device's): restart from these
        elif self.last_seq is not None and msg.seq <= self.last_seq:
            restart = "seq_reset"
        self.refused = None

        def broke(reason: str, t: float | None) -> None:
            # A run that had samples ends here: say so, in order with the windows, so subscribers see why.
            if self.run > 0:
                result.breaks.append(reason)
                marker_t = t if t is not None else msg.t0
                result.windows.append(
                    Window(self.device, None, self.fs, marker_t, arrival, self.ref, self.meta, reason="gap",
                           seq=self.take_seq(), generation=self.generation)
                )  # fmt: skip
            self._restart()

        last_t = self.next_t0 - 1.0 / self.fs if self.next_t0 is not None else None
        if restart == "resync":
            if self.run == 0:  # no run to cut, no marker: counted all the same
                result.breaks.append("resync")
            broke("resync", None)  # at this message's t0: the stream's own clock may be the forged one
            if msg.fs != self.fs:
                self._configure(msg.fs)
        elif msg.fs != self.fs:
            broke("fs_change", last_t)
            self._configure(msg.fs)
        elif restart:
            broke(restart, last_t)
        elif self.last_seq is not None and msg.seq != self.last_seq + 1:
            broke("seq_gap", last_t)
        elif self.next_t0 is not None and abs(msg.t0 - self.next_t0) > self.gap_tolerance_s:
            broke("time_gap", last_t)
        self.last_seq = msg.seq
        if msg.meta is not None:
            self.meta = msg.meta
        if msg.ref is not None:
            self.ref = msg.ref
        x = msg.ppg
        finite = np.isfinite(x)
        if finite.all():
            result.windows += self._append(x, msg.t0, arrival)
        else:
            # NaN/Inf is a hole: append each finite stretch, restarting the run before each one after a hole.
            edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
            last_good_t = last_t
            for a, b in zip(edges[::2], edges[1::2]):
                if a > 0:
                    broke("nan", last_good_t)
                result.windows += self._append(x[a:b], msg.t0 + a / self.fs, arrival)
                last_good_t = msg.t0 + (b - 1) / self.fs
            if not finite[-1]:
                broke("nan", last_good_t)
        self.next_t0 = msg.t0 + len(x) / self.fs
        return result
