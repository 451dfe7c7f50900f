"""Record: every estimate a daemon publishes kept in a SQLite file — and its heartbeat, and raw PPG, if asked.

    p2p record --estimates tcp://127.0.0.1:5556 --db session.sqlite [--heartbeat] [--ingest ADDRESS] [--backlog N]
    p2p record export session.sqlite --csv out.csv [--parquet out.parquet] [--table estimates]
    p2p record score session.sqlite [--window] [--json score.json] [--predictions predictions.csv]

A SUB on the daemon's estimates (`sbp.` and `status`); each message validated, then queued and written in batches
(every --flush-s or --flush-rows, whichever comes first), each batch one transaction. Rows carry a natural key
(device, model, epoch, seq, t), so restarting on the same file never writes one twice; an estimate that contradicts
the one the file holds for its (device, epoch, seq) is counted as a conflict, not written. The daemon may stop and
come back (ZeroMQ reconnects; a line is logged when its heartbeat stops and returns); a malformed message is counted
and dropped. A full disk: the cause is logged, rows wait in memory (at most --backlog; beyond, the oldest are dropped
and counted) and the write is tried again, backing off to every RETRY_MAX_S, until there is room: they are then
written in the order received. Ctrl-C or SIGTERM: what was received is committed, the counts printed, exit 0 (exit 2,
with what was lost, if the disk is still full). Schema and queries: docs/recording.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import zmq

from p2p_stream.config.addresses import check_address
from p2p_stream.config.daemon import Sockets
from p2p_stream.errors import ConfigError, P2PError, ProtocolError
from p2p_stream.ratelimit import RateLimitedLog
from p2p_stream.tools.cluster.proxy import DEFAULTS as PROXY_DEFAULTS
from p2p_stream.tools.common import command, parent_parser, setup_logging
from p2p_stream.tools.dashboard.daemons import HEARTBEAT_LOST_S, LOST_BEATS
from p2p_stream.tools.recording.db import (
    BACKLOG,
    Counts,
    DiskFull,
    RecordingDB,
    estimate_row,
    failure,
    heartbeat_row,
    ppg_row,
)
from p2p_stream.wire.protocol import ESTIMATE_PREFIX, INGEST_PREFIX, STATUS_TOPIC, decode_estimate, decode_map

log = logging.getLogger(__name__)

FLUSH_S = 0.5  # a batch is committed at most this long after its first row arrived
FLUSH_ROWS = 500  # or once it holds this many rows
RESTART_SLACK_S = 0.5  # a heartbeat's uptime this much behind our clock's advance: a restarted daemon
POLL_MS = 100  # the longest a stop request waits
STOP_DRAIN_S = 1.0  # on stopping, messages already queued are read for this long at most
# Messages ZeroMQ may queue for us before it drops: ~300 bytes an estimate, so at most ~300 MB if the disk stalls.
ESTIMATES_HWM = 1_000_000
INGEST_HWM = 100_000  # ingest messages (a few hundred bytes each at wearable rates)
RETRY_S = 0.5  # a full disk: the first retry this long after the failure, then each wait twice the last …
RETRY_MAX_S = 5.0  # … up to this


class Recorder:
    """The SUB sockets and the loop that turns their messages into rows of `db`."""

    def __init__(
        self,
        db: RecordingDB,
        estimates: str,
        ingest: str | None = None,
        heartbeat: bool = False,
        flush_s: float = FLUSH_S,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        self.db, self.address, self.store_heartbeat = db, estimates, heartbeat
        self.flush_s, self.flush_rows = flush_s, flush_rows
        self.counts: Counts = db.counts
        self.malformed: Counter[str] = Counter()
        self.last_seq = db.last_seqs()  # (device, model) → (epoch, seq): gaps after it are estimates this file lacks
        self.warn = RateLimitedLog(log, period_s=10.0)
        self.ctx = zmq.Context()
        self.sub = self._socket(estimates, ESTIMATES_HWM, (ESTIMATE_PREFIX, STATUS_TOPIC))
        self.ppg = self._socket(ingest, INGEST_HWM, (INGEST_PREFIX,)) if ingest else None
        self.started = time.monotonic()
        self.heartbeat_at: float | None = None  # time.monotonic() of the latest heartbeat
        self.uptime_s = 0.0  # the daemon's, at its latest heartbeat
        self.lost = False  # told the user the heartbeat stopped (or never came)
        self.beat_s: float | None = None  # the shortest period between two heartbeats seen, s
        self.lost_s = HEARTBEAT_LOST_S  # LOST_BEATS such periods, at least HEARTBEAT_LOST_S (as the dashboard)
        self.full_since: float | None = None  # time.monotonic() when the disk was first found full; None: not full
        self.retry_at = 0.0  # while full: time.monotonic() of the next try
        self.retry_s = RETRY_S  # while full: the wait after the next failure
        self.conflicts_logged = self.counts.conflicts
        if db.full is not None:  # could not even open or start the recording for want of space: we wait, subscribed
            self.on_full(db.full, time.monotonic())

    def _socket(self, address: str, hwm: int, topics: tuple[bytes, ...]) -> zmq.Socket:
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        try:
            sock.connect(address)
        except zmq.ZMQError:
            self.ctx.destroy(linger=0)
            raise
        return sock

    def queue(self, table: str, row: tuple) -> None:
        if self.db.add(table, row):
            dropped = sum(self.counts.dropped.values())
            self.warn.warning("backlog", "recording %s: %d rows held in memory, the most --backlog allows: the "
                              "oldest dropped, %d in all", self.db.path, self.db.backlog, dropped)  # fmt: skip

    def drop(self, exc: ProtocolError) -> None:
        self.malformed[exc.reason] += 1
        self.counts.malformed = dict(self.malformed)
        self.warn.warning(exc.reason, "dropped a malformed message (%s): %s", exc.reason, exc)

    def on_estimate(self, frames: list[bytes], received: float) -> None:
        if len(frames) != 2:
            raise ProtocolError("bad_frames", f"expected 2 frames [topic, payload], got {len(frames)}")
        if frames[0] == STATUS_TOPIC:
            self.on_heartbeat(decode_map(frames[1]), received)
            return
        e = decode_estimate(frames)
        row = estimate_row(e, frames[0], self.db.run, received)
        self.queue("estimates", row)
        key, epoch, seq = (e["device"], e["model"]), e.get("epoch"), e["seq"]
        last_epoch, last = self.last_seq.get(key, (None, None))
        if epoch is not None and epoch != last_epoch and last is not None:
            missed = seq  # a new daemon start counts seq from 0 again: the ones before this never came
        elif epoch == last_epoch and last is not None:
            missed = max(0, seq - last - 1)  # a lower seq: the device's stream started again (not counted)
        else:
            missed = 0  # the first of a (device, model), or a daemon with no store after one with: nothing to go by
        if missed:
            self.counts.missed += missed
            self.warn.info(f"gap {key[0]}", "%s: %d estimate(s) missing before seq %d", key[0], missed, seq)
        self.last_seq[key] = (epoch, seq)

    def on_heartbeat(self, status: dict, received: float) -> None:
        now = time.monotonic()
        row = heartbeat_row(status, self.db.run, received) if self.store_heartbeat else None
        uptime = status.get("uptime_s") if isinstance(status.get("uptime_s"), (int, float)) else 0.0
        # A daemon's uptime grows as our clock does; one that grew less since the last beat is a daemon started since.
        new = self.heartbeat_at is not None and uptime < self.uptime_s + (now - self.heartbeat_at) - RESTART_SLACK_S
        if self.heartbeat_at is None:
            log.info("subscribed: heartbeat from %s (daemon up %.0f s, model %s)", self.address, uptime,
                     status.get("model", "?"))  # fmt: skip
        elif self.lost or new:
            which = "a new daemon" if new else "the same daemon"
            gap_s = now - self.heartbeat_at
            log.info("heartbeat back from %s after %.1f s (%s, up %.1f s)", self.address, gap_s, which, uptime)
        elif uptime > self.uptime_s:  # the same daemon's next beat: its period, on the daemon's own clock
            self.beat_s = min(self.beat_s or math.inf, uptime - self.uptime_s)
            self.lost_s = max(HEARTBEAT_LOST_S, LOST_BEATS * self.beat_s)
        self.heartbeat_at, self.uptime_s, self.lost = now, float(uptime), False
        if row is not None:
            self.queue("heartbeats", row)

    def watch(self, now: float) -> None:
        """Log once when the heartbeat stops (or never starts); ZeroMQ keeps reconnecting meanwhile."""
        if self.lost or now - (self.heartbeat_at or self.started) <= self.lost_s:
            return
        self.lost = True
        if self.heartbeat_at is None:
            log.warning("no heartbeat from %s yet; is p2p daemon running with --publish %s? Waiting", self.address,
                        self.address)  # fmt: skip
        else:
            log.warning("no heartbeat from %s for %.0f s: the daemon stopped or cannot be reached; still "
                        "subscribed, recording resumes when it is back", self.address, self.lost_s)  # fmt: skip

    def drain(self, sock: zmq.Socket, limit: int) -> int:
        """Handle up to `limit` messages already queued on `sock` without waiting; how many were handled."""
        for n in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            received = time.time()
            try:
                if sock is self.sub:
                    self.on_estimate(frames, received)
                else:
                    self.queue("ppg", ppg_row(frames, self.db.run, received))
            except ProtocolError as exc:
                self.drop(exc)
        return limit

    def run(self, stop: threading.Event, duration_s: float | None = None) -> Counts:
        """Record until `stop` is set or `duration_s` passes; commit what was received; the run's counts."""
        socks = [s for s in (self.sub, self.ppg) if s is not None]
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        end = None if duration_s is None else self.started + duration_s
        first_queued: float | None = None  # time.monotonic() when the oldest uncommitted row arrived
        try:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                if first_queued is None:
                    wait_s = POLL_MS / 1000
                else:  # the disk full: wait for the next try, not for the batch's flush
                    wait_s = self.retry_at if self.full_since is not None else first_queued + self.flush_s
                    wait_s -= time.monotonic()
                ready = dict(poller.poll(max(0, min(POLL_MS, int(wait_s * 1000) + 1))))
                limit = self.flush_rows if self.full_since is not None else max(1, self.flush_rows - self.db.queued)
                for sock in socks:
                    if sock in ready:
                        self.drain(sock, limit)
                now = time.monotonic()
                if self.db.queued and first_queued is None:
                    first_queued = now
                if self.full_since is not None:
                    due = first_queued is not None and now >= self.retry_at
                else:
                    due = first_queued is not None and now - first_queued >= self.flush_s
                    due = due or self.db.queued >= self.flush_rows
                if due:
                    self.commit()
                    first_queued = None if not self.db.queued else first_queued
                self.watch(now)
            deadline = time.monotonic() + STOP_DRAIN_S
            for sock in socks:  # stopping: keep what has already reached us (a busy stream: for a second at most)
                while self.drain(sock, self.flush_rows) and time.monotonic() < deadline:
                    pass
            self.commit(stopped=time.time())
        finally:
            self.ctx.destroy(linger=0)
        return self.counts

    def commit(self, stopped: float | None = None) -> None:
        """Write what is queued. A full disk: log it, keep the rows, try again later (`on_full`) — unless stopping:
        then what could not be written is lost, and the error says how much. Any other error ends the recorder."""
        now = time.monotonic()
        try:
            self.db.commit(stopped, chunk=self.flush_rows)
        except DiskFull as exc:
            if stopped is not None:
                raise P2PError(
                    f"recording {self.db.path}: disk full ({exc.cause}) at stop: {self.db.held['estimates']} "
                    f"estimates ({self.db.queued} rows) held in memory could not be written, "
                    f"{sum(self.counts.dropped.values())} rows dropped before; free space on its disk"
                ) from exc
            self.on_full(exc, now)
            return
        except sqlite3.Error as exc:  # not from a write: RecordingDB turns those into P2PError (DiskFull, or why not)
            raise failure(self.db.path, exc) from exc
        if self.full_since is not None:
            log.info("recording %s: written again after %.1f s of a full disk: the rows held in memory are in the file "
                     "(%d estimates in all), %d dropped from the backlog", self.db.path, now - self.full_since,
                     self.counts.estimates, sum(self.counts.dropped.values()))  # fmt: skip
            self.full_since, self.retry_s = None, RETRY_S
        if self.counts.conflicts > self.conflicts_logged:
            device, epoch, seq = self.db.conflict or ("?", -1, -1)
            self.warn.warning("conflict", "recording %s: %d estimate(s) refused, as the file holds another for their "
                              "(device, epoch, seq), e.g. (%s, %s, %d): %d conflicts in all; is something other than "
                              "the daemon publishing on %s? (docs/recording.md)",
                              self.db.path, self.counts.conflicts - self.conflicts_logged, device,
                              "none" if epoch == -1 else epoch, seq, self.counts.conflicts, self.address)  # fmt: skip
            self.conflicts_logged = self.counts.conflicts
        log.debug("committed: %d estimates, %d heartbeats, %d ppg in all", self.counts.estimates,
                  self.counts.heartbeats, self.counts.ppg)  # fmt: skip

    def on_full(self, exc: DiskFull, now: float) -> None:
        """The disk is full: say so (the cause, the file, what waits in memory), then try again later, backing off."""
        held, dropped = self.db.held["estimates"], sum(self.counts.dropped.values())
        if self.full_since is None:
            self.full_since = now
            log.error("recording %s: disk full (%s); %d estimates held in memory (at most %d rows: beyond, the oldest "
                      "are dropped and counted), retrying in %g s, then at most every %g s", self.db.path, exc.cause,
                      held, self.db.backlog, self.retry_s, RETRY_MAX_S)  # fmt: skip
        else:
            self.warn.warning("full", "recording %s: disk still full (%s) after %.0f s; %d estimates held in memory, "
                              "%d rows dropped; retrying every %g s", self.db.path, exc.cause, now - self.full_since,
                              held, dropped, self.retry_s)  # fmt: skip
        self.db.checkpoint()  # the WAL's space back to the disk, if the readers let it
        self.retry_at = now + self.retry_s
        self.retry_s = min(2 * self.retry_s, RETRY_MAX_S)


def summary(counts: Counts, path: Path, run: int) -> str:
    malformed, dropped = sum(counts.malformed.values()), sum(counts.dropped.values())
    return (
        f"recorded {counts.estimates} estimates, {counts.heartbeats} heartbeats and {counts.ppg} PPG messages "
        f"into {path} (run {run}); {counts.already_there} already there, {counts.missed} missed (gaps in seq), "
        f"{malformed} malformed dropped{f' {counts.malformed}' if malformed else ''}, {counts.conflicts} conflicts, "
        f"{dropped} dropped (disk full, backlog over){f' {counts.dropped}' if dropped else ''}"
    )


def record(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent_parser(log_level="INFO")],
    )
    p.add_argument("--estimates", default=Sockets().publish, metavar="ADDRESS",
                   help="the daemon's estimates address, its --estimates (default %(default)s, the daemon's "
                   "own)")  # fmt: skip
    p.add_argument("--db", type=Path, required=True, metavar="FILE", help="the SQLite file (created, or appended to)")
    p.add_argument("--heartbeat", action="store_true", help="store the daemon's heartbeat too (table heartbeats)")
    p.add_argument("--ingest", metavar="ADDRESS", help="store raw PPG (table ppg) from where ingest is published "
                   "outward: a p2p proxy's --shards address (a daemon's own ingest cannot be subscribed "
                   "to)")  # fmt: skip
    p.add_argument("--flush-s", type=float, default=FLUSH_S, metavar="SECONDS",
                   help="commit at most this long after a row arrives (default %(default)s)")  # fmt: skip
    p.add_argument("--flush-rows", type=int, default=FLUSH_ROWS, metavar="N",
                   help="or once this many rows wait (default %(default)s)")  # fmt: skip
    p.add_argument("--backlog", type=int, default=BACKLOG, metavar="ROWS",
                   help="rows held in memory while the disk is full; beyond, the oldest are dropped and counted "
                   "(default %(default)s, ~1 KB each)")  # fmt: skip
    p.add_argument("--duration-s", type=float, metavar="SECONDS", help="stop after this long (default: run on)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    check_address(args.estimates, "--estimates", p.get_default("estimates"))
    if args.ingest is not None:
        check_address(args.ingest, "--ingest", PROXY_DEFAULTS["shards"])
    if not (0 < args.flush_s <= 3600) or args.flush_rows < 1 or (args.duration_s is not None and args.duration_s < 0):
        raise ConfigError(
            f"--flush-s must be within (0, 3600], --flush-rows ≥ 1 and --duration-s ≥ 0, got {args.flush_s}, "
            f"{args.flush_rows} and {args.duration_s}"
        )
    if args.backlog < args.flush_rows:
        raise ConfigError(f"--backlog must be at least --flush-rows ({args.flush_rows}), got {args.backlog}")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    db = None
    try:
        # A full disk at start is waited out, subscribed: the rows wait in memory (Recorder.on_full)
        db = RecordingDB(args.db, backlog=args.backlog, wait_for_space=True)
        run = db.start_run(args.estimates, args.ingest, args.heartbeat, time.time())
        log.info("recording %s into %s (run %s)%s", args.estimates, args.db, run or "numbered once the disk has room",
                 f", raw PPG from {args.ingest}" if args.ingest else "")  # fmt: skip
        recorder = Recorder(db, args.estimates, args.ingest, args.heartbeat, args.flush_s, args.flush_rows)
        counts = recorder.run(stop, args.duration_s)
    finally:
        for sig, handler in previous.items():  # as they were: `main` may run inside another program (tests)
            signal.signal(sig, handler)
        if db is not None:
            db.close()
    print(summary(counts, args.db, db.run), flush=True)
    return 0


@command
def main(argv: list[str] | None = None, prog: str = "p2p record") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("export", "score"):
        from p2p_stream.tools.recording import read as recording_read  # numpy and the metrics: only for these

        return recording_read.ACTIONS[argv[0]](argv[1:], f"{prog} {argv[0]}")
    return record(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
