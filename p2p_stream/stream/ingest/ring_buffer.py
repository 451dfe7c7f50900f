"""Ring buffer: one device's contiguous samples in a preallocated array, cut into windows every hop.

Windows are cut by sample count, so jitter in arrival times never changes their size. A break — a `seq`
gap, a time gap beyond the tolerance, NaN/Inf samples, a change of sampling rate — empties the run, so no
window ever spans a hole. Repeated or older `seq` numbers are dropped, and so is a `seq` leap ahead that the time
between the messages cannot hold (`seq_jump`). No single message can lock a device out: `RESYNC_MESSAGES` refused
messages in a row that continue each other (seq + 1, samples where the last ended) restart the stream from them
(`resync`), so a forged or buggy message that moved the stream's seq or clock ahead costs its device two messages.
A new wearer (stream/state/sessions.py: another `wearer` key, a counter restart) breaks the run too (`new_wearer`).

No device takes more than its share (budget.py): samples at `rate_factor` times the declared rate, sustained, plus a
burst of `burst_s` seconds of them; a message beyond that is shed whole (`over_budget`) and changes nothing. Break
markers are budgeted too; beyond their budget the run still restarts, unmarked, and `over_budget` joins the breaks.
A message full of holes costs O(n) numpy work plus Python work per window it cuts, and yields at most one marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from p2p_stream.beats.device_beats import KEEP_MARGIN_S, BeatFeatures, DeviceBeats
from p2p_stream.config.daemon import Limits
from p2p_stream.ppg.crops import crop_length, crop_starts
from p2p_stream.stream.ingest.budget import TokenBucket
from p2p_stream.stream.ingest.ecg_channel import EcgChannel
from p2p_stream.stream.state.sessions import Session, new_wearer
from p2p_stream.wire.protocol import Ingest

# Refused messages in a row, each continuing the one before, after which the stream restarts from them: a genuine
# stream is refused at most RESYNC_MESSAGES - 1 times. Late duplicates of a live stream are interleaved with its
# accepted messages, which start the count again, and one message repeated never continues itself.
RESYNC_MESSAGES = 3
# Messages a `seq` may skip beyond what the time skipped can hold (each lost message held at least one sample).
SEQ_JUMP_SLACK = 1_000
# Break markers a device may emit at once; refilled at `rate_factor` per hop, more than a genuine stream breaks.
MARKER_BURST = 8


def ring_nbytes(window_s: float, fs: float, max_chunk: int) -> int:
    """Bytes of a device's ring at `fs` Hz: one window of `window_s` seconds plus one chunk, float32."""
    return (max(1, int(round(window_s * fs))) + max_chunk) * np.dtype(np.float32).itemsize


@dataclass
class Window:
    """What a device's stream hands the batcher, in the order it happened. Three kinds, each its own class:

    - `Window`: a window of raw samples, cut every hop: the quality gate and the model make its estimate;
    - `BreakMarker`: no samples: the stream broke there (`reason`, "gap"), and its estimate says so;
    - `CropAhead`: one crop of a run's first window, cut as soon as its samples are in: no estimate, only its
      features computed ahead, so that the first window costs one crop like every later one.
    """

    device: str
    x: np.ndarray | None  # (length,) float32 raw samples at `fs`; None for a break marker
    fs: float  # Hz, the device's rate
    t_last: float  # Unix time of the last sample, s
    arrival: float  # time.monotonic() when the last sample arrived
    ref: tuple[float, float] | None = None
    meta: dict | None = None
    enqueued: float = field(default=0.0)  # time.monotonic() when it entered the batcher
    reason: str | None = None  # a break marker's: why the stream broke ("gap"); no samples, no model
    seq: int = 0  # the device's estimate counter, given when the window is cut, so estimates go out in order
    # The DeviceStream that cut it (`DeviceStream.generation`): a forgotten or evicted device that comes back gets a
    # new, higher one, so its calibration and smoothing never take windows of the stream before (0: built elsewhere).
    generation: int = 0
    # Samples the DeviceStream had taken when this window's last one came (its position in the stream, which never
    # repeats within a generation): the key under which a backend keeps the features of this window's crops.
    # -1: not from a DeviceStream, nothing to share.
    end: int = -1
    session: int = 0  # the wearer session it belongs to (stream/state/sessions.py; 0: built elsewhere)
    facts_carried: bool = False  # its `meta` was kept from an earlier stream of the session (the state store)
    # The medians of its beats' features (beats/device_beats.py): arrival time with an ECG, pulse rate, rise time,
    # amplitude; None when the device's beats are not followed.
    beats: BeatFeatures | None = None


class BreakMarker(Window):
    """The device's stream broke at `t_last` (`reason`): an estimate with no value says so, in order with the
    windows, and the device's smoothing starts again after it."""

    def __init__(
        self, device: str, fs: float, t_last: float, arrival: float, *, seq: int, generation: int = 0,
        reason: str = "gap", ref: tuple[float, float] | None = None, meta: dict | None = None, session: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(device, None, fs, t_last, arrival, ref, meta, reason=reason, seq=seq, generation=generation,
                         session=session)  # fmt: skip


class CropAhead(Window):
    """One crop of a run's first window, cut as soon as its samples are in (`DeviceStream` with `warm_crop_s`): its
    features are computed ahead and kept by a backend with a crop cache; it has no estimate and takes no seq."""

    def __init__(self, device: str, x: np.ndarray, fs: float, t_last: float, arrival: float, *, generation: int,
                 end: int) -> None:  # fmt: skip
        super().__init__(device, x, fs, t_last, arrival, generation=generation, end=end)


# Reasons a device's run restarts that are events of its stream, not faults of a message or a window: counted in the
# heartbeat's `rejected` map all the same (the contract's one map), told apart by those who show it.
STREAM_BREAKS = ("seq_gap", "seq_reset", "resync", "time_gap", "fs_change", "new_wearer")


@dataclass
class PushResult:
    """What one message did to a device's stream."""

    windows: list[Window]
    dropped: str | None = None  # "duplicate", "out_of_order", "seq_jump" or "over_budget": the message was ignored
    # Why the run restarted: seq_gap, seq_reset, resync, time_gap, nan, fs_change; "over_budget" for each marker shed.
    # "nan" comes once per message whatever the number of holes in it (its breaks after the first are not counted).
    breaks: list[str] = field(default_factory=list)
    # Devices that lost their slot to this message's new one (DeviceTable: unproductive ones, when the table is full).
    replaced: list[str] = field(default_factory=list)


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
        rate_factor: float = Limits().rate_factor,  # the defaults are the daemon's settings (config/daemon.py)
        burst_s: float = Limits().burst_s,
        warm_crop_s: float = 0.0,
        follow_beats: bool = False,
        beats_without_ecg: bool = True,
    ):
        """Windows of `window_s` every `hop_s` seconds, chunks of at most `max_chunk` samples, a time gap above
        `gap_tolerance_s` breaks the run; samples at most `rate_factor` times `fs`, sustained, plus `burst_s` seconds of
        them at once (on `push`'s arrival clock). `warm_crop_s` > 0: the crops of `warm_crop_s` seconds that the first
        window of each run holds before its last are cut ahead (`CropAhead`) as soon as their samples are in.
        `follow_beats`: find its beats (and, once an ECG comes, R peaks) and give each window their medians; only
        once an ECG has come, unless `beats_without_ecg` (the PPG-only features are then wanted too)."""
        self.device = device
        self.generation = generation  # given by DeviceTable, process-wide increasing; every window carries it
        self.window_s, self.hop_s, self.max_chunk, self.gap_tolerance_s = window_s, hop_s, max_chunk, gap_tolerance_s
        self.taken = 0  # samples appended ever, through every run and rate: where each window ends (`Window.end`)
        self.warm_crop_s = warm_crop_s
        self._configure(fs)
        self.last_seq: int | None = None
        # The run of refused messages that continue each other: (seq, t0 where the last ended, fs, how many).
        self.refused: tuple[int, float, float, int] | None = None
        self.estimates = 0  # estimate `seq` numbers handed out so far
        self.meta: dict | None = None
        self.facts_carried = False  # `meta` came from the state store, not from this stream's messages
        self.ref: tuple[float, float] | None = None
        # Who wears it (stream/state/sessions.py). `opener(stream, wearer, seq, t0, fresh)`, given by the device table,
        # opens the session of the stream's first message and of each new wearer (a new generation, its own facts).
        self.session: Session | None = None
        self.opener: Callable[[DeviceStream, str | None, int, float, bool], None] | None = None
        # Counted in seconds of signal (a message costs len / fs), so a change of fs keeps the bucket as full as it was.
        self.samples = TokenBucket(burst_s, rate_factor)
        self.markers = TokenBucket(MARKER_BURST, rate_factor / hop_s)
        self.rate_factor, self.burst_s = rate_factor, burst_s
        self.beats = DeviceBeats(keep_s=window_s + KEEP_MARGIN_S) if follow_beats else None
        self.beats_without_ecg = beats_without_ecg
        self.ecg: EcgChannel | None = None  # its ECG channel (ecg_channel.py), from its first ECG message

    def _configure(self, fs: float) -> None:
        self.fs = fs
        self.length = max(1, int(round(self.window_s * fs)))
        self.hop = max(1, int(round(self.hop_s * fs)))
        # The run positions where a crop of the first window ends, but for its last (the window's own end).
        self.warm_crop = min(crop_length(self.warm_crop_s, fs), self.length) if self.warm_crop_s > 0 else 0
        ends = crop_starts(self.length, self.warm_crop) + self.warm_crop if self.warm_crop else []
        self.warm_at: tuple[int, ...] = tuple(sorted(int(e) for e in ends if e < self.length))
        self.buf = np.zeros(self.length + self.max_chunk, dtype=np.float32)
        self.run = 0  # contiguous samples since the last break
        self.pos = 0  # ring index of the next sample
        self.next_t0: float | None = None  # expected t0 of the next message

    @property
    def nbytes(self) -> int:
        """Bytes the ring holds (`ring_nbytes` of its fs)."""
        return self.buf.nbytes

    def take_seq(self) -> int:
        """The next estimate number of this device."""
        self.estimates += 1
        return self.estimates - 1

    def _break(self, result: PushResult, reason: str, t: float, arrival: float) -> None:
        """The run restarts; if it had samples, say why and mark the break at `t` (the last sample before it)."""
        if self.run > 0:
            result.breaks.append(reason)
            self._mark(result, t, arrival)
        self.run = 0

    def _mark(self, result: PushResult, t: float, arrival: float) -> None:
        """A `gap` marker at `t`, in order with the windows, if the marker budget allows; else `over_budget`."""
        if not self.markers.take(1, arrival):
            result.breaks.append("over_budget")
            return
        result.windows.append(
            BreakMarker(self.device, self.fs, t, arrival, seq=self.take_seq(), generation=self.generation,
                        ref=self.ref, meta=self.meta, session=self.session.id if self.session else 0)
        )  # fmt: skip

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
        if self.beats is not None and (self.ecg is not None or self.beats_without_ecg):
            self.beats.add_ppg(x, t0, self.fs)  # queued for the detector, which restarts at a hole or jump on its own
        run0, taken0 = self.run, self.taken
        self.run += n
        self.taken += n
        self.pos = end % cap
        windows = [self._warm(e, run0, taken0, t0, arrival) for e in self.warm_at if run0 < e <= self.run]
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
                        end=taken0 + end_run - run0,
                        session=self.session.id if self.session is not None else 0,
                        facts_carried=self.facts_carried,
                        beats=self._features(t_last),
                    )
                )
        return windows

    def _features(self, t_last: float) -> BeatFeatures | None:
        if self.beats is None or (self.ecg is None and not self.beats_without_ecg):
            return None  # a PPG-only device where only the arrival time is wanted: no work at all
        return self.beats.features(t_last - (self.length - 1) / self.fs, t_last)

    def push_ecg(self, msg: Ingest, arrival: float) -> str | None:
        """An ECG message of this device (ecg_channel.py): why it was dropped, or None."""
        if self.beats is None:
            return "no_ppg_stream"
        if self.ecg is None:
            self.ecg = EcgChannel(self.beats, self.rate_factor, self.burst_s, RESYNC_MESSAGES)
        dropped = self.ecg.push(msg, arrival)
        if dropped is None:  # `ref` and `meta` may ride on either topic (PROTOCOL.md)
            self._take_facts(msg)
        return dropped

    def _take_facts(self, msg: Ingest) -> None:
        """An accepted message's `meta` and `ref`, whichever its channel."""
        if msg.meta is not None:
            self.meta, self.facts_carried = msg.meta, False
        if msg.ref is not None:
            self.ref = msg.ref

    def _warm(self, end_run: int, run0: int, taken0: int, t0: float, arrival: float) -> CropAhead:
        """The crop of the run's first window that ends at run position `end_run`, cut ahead."""
        back = self.run - end_run
        x = self._copy_out((self.pos - back) % len(self.buf), self.warm_crop)
        t_last = t0 + (end_run - 1 - run0) / self.fs
        end = taken0 + end_run - run0
        return CropAhead(self.device, x, self.fs, t_last, arrival, generation=self.generation, end=end)

    def _copy_out(self, stop: int, length: int | None = None) -> np.ndarray:
        """The `length` samples (a window's, unless told) that end just before ring index `stop`, as a new array
        (slices, not fancy indexing)."""
        start = stop - (self.length if length is None else length)
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

    def _refused_run(self, msg: Ingest) -> tuple[int, float, float, int]:
        """The run of refused messages with `msg` added; it resyncs when it is RESYNC_MESSAGES long."""
        run = self.refused
        continues = (
            run is not None
            and msg.seq == run[0] + 1
            and msg.fs == run[2]
            and abs(msg.t0 - run[1]) <= self.gap_tolerance_s
        )
        return msg.seq, msg.t0 + len(msg.ppg) / msg.fs, msg.fs, run[3] + 1 if continues else 1

    def push(self, msg: Ingest, arrival: float) -> PushResult:
        """Apply one validated message; `arrival` is time.monotonic() at receipt."""
        refusal = self._refusal(msg)
        refused = self._refused_run(msg) if refusal is not None else None
        if refused is not None and refused[3] < RESYNC_MESSAGES:
            self.refused = refused
            return PushResult([], dropped=refusal)
        # Refused messages cost nothing, so replaying a device's messages cannot spend its budget. A message shed
        # here leaves the stream as it was, its refused run too: it is as if it never came.
        if not self.samples.take(len(msg.ppg) / msg.fs, arrival):
            return PushResult([], dropped="over_budget")
        restart: str | None = None  # why the stream restarts from this message whatever it continues
        if refused is not None:
            restart = "resync"  # the stream's seq or clock was wrong (forged, or the device's): restart from these
        elif self.last_seq is not None and msg.seq <= self.last_seq:
            restart = "seq_reset"
        self.refused = None

        begin, fresh = new_wearer(restart, msg.wearer, self.session)
        result = PushResult([])
        last_t = self.next_t0 - 1.0 / self.fs if self.next_t0 is not None else msg.t0  # the last sample so far
        if restart == "resync":
            if self.run == 0:  # no run to cut, no marker: counted all the same
                result.breaks.append("resync")
            self._break(result, "resync", msg.t0, arrival)  # at this message's t0: the stream's clock may be forged
            if msg.fs != self.fs:
                self._configure(msg.fs)
        elif msg.fs != self.fs:
            self._break(result, "fs_change", last_t, arrival)
            self._configure(msg.fs)
        elif restart:
            self._break(result, restart, last_t, arrival)
        elif begin and self.session is not None:  # another wearer: no window holds two people's samples
            self._break(result, "new_wearer", last_t, arrival)
        elif self.last_seq is not None and msg.seq != self.last_seq + 1:
            self._break(result, "seq_gap", last_t, arrival)
        elif self.next_t0 is not None and abs(msg.t0 - self.next_t0) > self.gap_tolerance_s:
            self._break(result, "time_gap", last_t, arrival)
        if begin and self.opener is not None:  # windows cut from here on are the new session's
            self.opener(self, msg.wearer, msg.seq, msg.t0, fresh)
        self.last_seq = msg.seq
        self._take_facts(msg)
        finite = np.isfinite(msg.ppg)
        if finite.all():
            result.windows += self._append(msg.ppg, msg.t0, arrival)
        else:
            self._append_with_holes(msg.ppg, finite, msg.t0, last_t, arrival, result)
        self.next_t0 = msg.t0 + len(msg.ppg) / self.fs
        return result

    def _append_with_holes(
        self, x: np.ndarray, finite: np.ndarray, t0: float, last_t: float, arrival: float, result: PushResult
    ) -> None:
        """Append `x`, whose NaN/Inf samples are holes that restart the run, in O(n) numpy work plus Python work per
        window cut: 50,000 holes must cost no more than a few.

        Only stretches that can matter are appended: the first (it may continue the run), each long enough to cut a
        window on its own, and the last (the next message may continue it); any other is cut off by the next hole
        before it holds a window. One marker, at the message's first break that ends samples; "nan" once in the
        breaks, for the lot.
        """
        n = len(x)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
        starts, stops = edges[::2], edges[1::2]  # finite stretches x[starts[i]:stops[i]], holes between them
        holed_start = len(starts) == 0 or starts[0] > 0
        mark: int | None = None  # where the marker goes: -1 before the first stretch, 0 after it, None nowhere
        if holed_start and self.run > 0:
            mark = -1  # the hole ends the run of earlier messages
        elif len(starts) > 1 or (len(starts) == 1 and stops[0] < n):
            mark = 0  # the first stretch (continuing the run or not) ends at a hole
        if mark is not None:
            result.breaks.append("nan")
        if mark == -1:
            self._mark(result, last_t, arrival)
        if holed_start:
            self.run = 0
        if len(starts) == 0:
            return
        needed = stops - starts >= self.length
        needed[0] = needed[-1] = True
        for i in np.flatnonzero(needed).tolist():
            if i > 0:
                self.run = 0
            a, b = int(starts[i]), int(stops[i])
            result.windows += self._append(x[a:b], t0 + a / self.fs, arrival)
            if i == 0 and mark == 0:
                self._mark(result, t0 + (b - 1) / self.fs, arrival)
        if stops[-1] < n:
            self.run = 0
