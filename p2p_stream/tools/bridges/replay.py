"""Replay: recordings in the contract's replay CSV published as live wearables, paced in real time (or faster).

Publishes through an XPUB socket connected to the daemon's ingest address, and waits for the daemon's
subscription to arrive before the first sample, so nothing is lost to the PUB/SUB slow joiner. A device whose
rows give its subject's ``age`` / ``sex`` sends them as the ingest ``meta`` with every message; one whose rows have
an ``ecg`` sends it on ``ecg.<device>``, each chunk just after the same samples' PPG (same ``t0``, ``fs`` and ``seq``).
"""

from __future__ import annotations

import argparse
import heapq
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from p2p_stream.config.addresses import FORMS, check_address
from p2p_stream.config.daemon import Sockets, Windowing
from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.offline.datasets.replay_csv import JOIN_GAP_S, Recording, read_replay_csv
from p2p_stream.stream.security.curve import curve_client
from p2p_stream.tools.common import alias, command, parent_parser, setup_logging
from p2p_stream.wire import probe
from p2p_stream.wire.protocol import encode_ingest

log = logging.getLogger(__name__)


@dataclass
class Feed:
    """One device's position in its recording."""

    device: str
    rec: Recording
    chunk: int
    seq: int = 0
    pos: int = 0  # next sample of the recording
    sent: int = 0  # samples sent so far, over all loops: their time offset is sent / fs (plus `gap_s`)
    gap_s: float = 0.0  # time added at the joins crossed so far (between segments, and at each loop's wrap)
    meta: dict | None = None  # the ingest `meta` (subject's age/sex), None when the recording gives neither

    def __post_init__(self) -> None:
        if self.meta is None:
            self.meta = self.rec.meta()


def fan_out(recordings: list[Recording], devices: int) -> list[Feed]:
    """Each recording once (devices=0), or N device ids spread over the recordings round-robin."""
    if devices <= 0:
        return [Feed(r.device, r, 0) for r in recordings]
    return [
        Feed(f"{recordings[k % len(recordings)].device}-{k:05d}", recordings[k % len(recordings)], 0)
        for k in range(devices)
    ]


CURVE_HINT = (
    "if that daemon uses CURVE, give its public key and an allowed client key "
    "(--curve-server-key keys/server.key --curve-client-key keys/clients/NAME.key_secret)"
)


def wait_for_subscriber(sock: zmq.Socket, address: str, timeout_s: float | None, curve: bool = False) -> None:
    """Block until the daemon's SUB has subscribed through our XPUB (`probe.wait_for_subscriber`).

    A daemon that is not there and one that refuses our handshake (CURVE keys missing or not allowed) look the
    same from here: no subscription arrives. The error says that much, and what to check; `curve`: whether we
    gave keys.
    """
    try:
        probe.wait_for_subscriber(sock, address, timeout_s)
    except P2PError as exc:
        hint = "check that this client's key is in the daemon's authorized/ folder" if curve else CURVE_HINT
        raise P2PError(
            f"no subscription arrived from a daemon at {address} within {timeout_s:g} s; check that p2p daemon "
            f"runs with this ingest address (--ingest), and {hint}"
        ) from exc


def run_publisher(
    address: str, publish: Callable[[zmq.Socket], int], wait_s: float | None, curve: tuple[str, str] | None = None
) -> int:
    """Connect an XPUB to the daemon's ingest, wait for its subscription, then `publish(sock)`; an exit code.

    Ctrl-C ends it cleanly (0); a bad address, or a daemon that never subscribes within `wait_s`, is a `P2PError`
    (the tools' error handler makes it one line and exit status 2). `curve` is (server public key file, client
    secret key file) for a daemon with CURVE on.
    """
    check_address(address, "--ingest")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 2000)  # let queued messages reach the daemon on exit
    sock.setsockopt(zmq.SNDHWM, 1_000_000)
    try:
        if curve:
            curve_client(sock, *curve)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            sock.setsockopt(zmq.LINGER, 0)
            raise ConfigError(f"--ingest: cannot connect to {address} ({exc}); give {FORMS}") from exc
        wait_for_subscriber(sock, address, wait_s, curve=curve is not None)
        log.info("sent %d messages", publish(sock))
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        sock.close()
        ctx.term()
    return 0


class Replayer:
    def __init__(self, feeds: list[Feed], sock: zmq.Socket, chunk: int, speed: float, loop: bool) -> None:
        self.feeds, self.sock, self.speed, self.loop = feeds, sock, speed, loop
        for f in feeds:
            f.chunk = chunk
        self.messages = 0

    def _send(self, f: Feed, t_wall0: float) -> bool:
        """Send the feed's next chunk; False when its recording is done (and not looping).

        A chunk never crosses a join between segments (nor the loop's wrap): the samples after one are sent
        JOIN_GAP_S later on the message clock, a time gap that breaks the daemon's run, so no window spans it.
        """
        rec = f.rec
        if f.pos >= rec.ppg.size:
            if not self.loop:
                return False
            f.pos = 0
        if f.sent and f.pos in rec.starts:  # a join (or the wrap to the first segment)
            f.gap_s += JOIN_GAP_S
        end = min(f.pos + f.chunk, next((s for s in rec.starts if s > f.pos), rec.ppg.size))
        x = rec.ppg[f.pos : end]
        sbp, dbp = rec.sbp_ref[f.pos : end], rec.dbp_ref[f.pos : end]
        ref = (float(np.nanmean(sbp)), float(np.nanmean(dbp))) if np.isfinite(sbp).any() else None
        t0 = t_wall0 + f.sent / rec.fs + f.gap_s
        self.sock.send_multipart(encode_ingest(f.device, f.seq, t0, rec.fs, x, ref=ref, meta=f.meta))
        if rec.ecg is not None:  # the second channel, the same samples' times
            self.sock.send_multipart(encode_ingest(f.device, f.seq, t0, rec.fs, rec.ecg[f.pos : end], channel="ecg"))
        f.seq += 1
        f.pos += len(x)
        f.sent += len(x)
        self.messages += 1
        return True

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> int:
        """Publish until every recording is done (forever with loop), `duration_s` passes or `stop` is set."""
        start, t_wall0 = time.monotonic(), time.time()
        # A heap of (due time, index): the feed whose next chunk is due first goes first.
        heap = [(0.0, i) for i in range(len(self.feeds))]
        heapq.heapify(heap)
        while heap:
            due, i = heapq.heappop(heap)
            delay = start + due - time.monotonic()
            if delay > 0:
                if stop is not None and stop.wait(delay):
                    break
                elif stop is None:
                    time.sleep(delay)
            if (duration_s is not None and time.monotonic() - start > duration_s) or (
                stop is not None and stop.is_set()
            ):
                break
            f = self.feeds[i]
            if self._send(f, t_wall0):
                heapq.heappush(heap, ((f.sent / f.rec.fs + f.gap_s) / self.speed, i))
        return self.messages


def window_warning(recordings: list[Recording], window_s: float = Windowing().window_s) -> str | None:
    """What to tell a user whose recordings' segments are shorter than the daemon's windows, or None.

    Each join between segments breaks the daemon's run, so a window must fit within one segment: with PPG-BP's
    2.1 s segments and the default 10 s windows no window is ever cut (before joins were marked, half the windows
    spanned one and were rejected `no_pulse`).
    """
    longest = max((r.longest_segment_s() for r in recordings), default=np.inf)
    if longest >= window_s:
        return None
    fit = np.floor(longest * 10) / 10
    return (
        f"the recordings' segments are at most {longest:.2f} s long (joins between them are sent as breaks): a "
        f"daemon with {window_s:g} s windows (the default) cuts no window from them; run it with --window-s {fit:g} "
        f"--hop-s {fit:g}, as p2p demo does"
    )


def add_publisher_args(p: argparse.ArgumentParser) -> None:
    """The flags replay and fleet share: where to send, how long, how long to wait for the daemon, CURVE keys."""
    p.add_argument(
        "--ingest",
        default=Sockets().ingest,  # the daemon's own default (config/daemon.py), not a copy of it
        metavar="ADDRESS",
        help="the daemon's ingest address, to send PPG to (default %(default)s, the daemon's own; old name: --connect)",
    )
    alias(p, "--connect", "ingest")
    p.add_argument("--duration-s", type=float, metavar="SECONDS", help="stop after this long (default: run on)")
    alias(p, "--duration", "duration_s", type=float)
    p.add_argument(
        "--wait-s",
        type=float,
        metavar="SECONDS",
        help="give up if no daemon subscribes within this long (default: wait, with a note every 5 s)",
    )
    p.add_argument("--curve-server-key", metavar="FILE", help="the daemon's public key file (CURVE on; see p2p keys)")
    p.add_argument("--curve-client-key", metavar="FILE", help="this client's secret key file (with --curve-server-key)")


def check_publisher_args(args: argparse.Namespace) -> tuple[str, str] | None:
    """Check what `add_publisher_args` gave; the CURVE key files, or None."""
    check_address(args.ingest, "--ingest")
    for flag, value in (("--duration-s", args.duration_s), ("--wait-s", args.wait_s)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must be ≥ 0 seconds, got {value}")
    if bool(args.curve_server_key) != bool(args.curve_client_key):
        raise ConfigError(
            "--curve-server-key and --curve-client-key go together; give both (the daemon's public key file and "
            "this client's secret key file) or neither"
        )
    return (args.curve_server_key, args.curve_client_key) if args.curve_server_key else None


@command
def main(argv: list[str] | None = None, prog: str = "replay.py") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, parents=[parent_parser(log_level="INFO")])
    p.add_argument("csv", type=Path, help="replay CSV: device,t,ppg[,sbp_ref,dbp_ref,age,sex] (see PROTOCOL.md)")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time; 10 = ten times faster")
    p.add_argument("--loop", action="store_true", help="start over at the end, forever (time stamps carry on)")
    p.add_argument("--chunk", type=int, default=25, help="samples per message")
    p.add_argument("--devices", type=int, default=0, metavar="N", help="fan the recordings out to N device ids")
    p.add_argument("--fs", type=float, help="sampling rate of a single-column CSV, Hz")
    add_publisher_args(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    curve = check_publisher_args(args)
    if args.speed <= 0 or args.chunk < 1 or args.devices < 0:
        raise ConfigError(
            f"--speed must be > 0, --chunk ≥ 1 and --devices ≥ 0, got {args.speed}, {args.chunk} and {args.devices}"
        )
    recordings = read_replay_csv(args.csv, fs=args.fs)
    warning = window_warning(recordings)
    if warning:
        log.warning(warning)
    feeds = fan_out(recordings, args.devices)

    def publish(sock: zmq.Socket) -> int:
        log.info("replaying %d device(s) from %s to %s at %gx", len(feeds), args.csv, args.ingest, args.speed)
        return Replayer(feeds, sock, args.chunk, args.speed, args.loop).run(args.duration_s)

    return run_publisher(args.ingest, publish, args.wait_s, curve)


if __name__ == "__main__":
    sys.exit(main())
