"""Replay: recordings in the contract's replay CSV published as live wearables, paced in real time (or faster).

Publishes through an XPUB socket connected to the daemon's ingest address, and waits for the daemon's
subscription to arrive before the first sample, so nothing is lost to the PUB/SUB slow joiner. A device whose
rows give its subject's ``age`` / ``sex`` sends them as the ingest ``meta`` with every message.
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

from p2p_stream.errors import P2PError
from p2p_stream.offline.datasets.replay_csv import Recording, read_replay_csv
from p2p_stream.stream.protocol import encode_ingest
from p2p_stream.stream.security import add_client_args, client_keys, curve_client

log = logging.getLogger(__name__)


@dataclass
class Feed:
    """One device's position in its recording."""

    device: str
    rec: Recording
    chunk: int
    seq: int = 0
    pos: int = 0  # next sample of the recording
    sent: int = 0  # samples sent so far, over all loops: their time offset is sent / fs
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


def wait_for_subscriber(sock: zmq.Socket, address: str, timeout_s: float | None) -> None:
    """Block until the daemon's SUB has subscribed through our XPUB (its subscription message arrives)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    next_note = time.monotonic() + 2.0
    while True:
        if sock.poll(200):
            if sock.recv()[:1] == b"\x01":
                return
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise P2PError(f"no daemon subscribed at {address} within {timeout_s} s")
        if now >= next_note:
            log.warning("waiting for a daemon at %s ...", address)
            next_note = now + 5.0


def run_publisher(
    address: str, publish: Callable[[zmq.Socket], int], wait_s: float | None, curve: tuple[str, str] | None = None
) -> int:
    """Connect an XPUB to the daemon's ingest, wait for its subscription, then `publish(sock)`; an exit code.

    Ctrl-C ends it cleanly (0); a daemon that never subscribes within `wait_s` is an error (2). `curve` is
    (server public key file, client secret key file) for a daemon with CURVE on.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 2000)  # let queued messages reach the daemon on exit
    sock.setsockopt(zmq.SNDHWM, 1_000_000)
    try:
        if curve:
            curve_client(sock, *curve)
        sock.connect(address)
        wait_for_subscriber(sock, address, wait_s)
        log.info("sent %d messages", publish(sock))
    except KeyboardInterrupt:
        log.info("stopped")
    except P2PError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
        """Send the feed's next chunk; False when its recording is done (and not looping)."""
        rec = f.rec
        if f.pos >= rec.ppg.size:
            if not self.loop:
                return False
            f.pos = 0
        x = rec.ppg[f.pos : f.pos + f.chunk]
        sbp, dbp = rec.sbp_ref[f.pos : f.pos + f.chunk], rec.dbp_ref[f.pos : f.pos + f.chunk]
        ref = (float(np.nanmean(sbp)), float(np.nanmean(dbp))) if np.isfinite(sbp).any() else None
        t0 = t_wall0 + f.sent / rec.fs
        self.sock.send_multipart(encode_ingest(f.device, f.seq, t0, rec.fs, x, ref=ref, meta=f.meta))
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
                heapq.heappush(heap, (f.sent / f.rec.fs / self.speed, i))
        return self.messages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="replay.py", description=__doc__)
    p.add_argument("csv", type=Path, help="replay CSV: device,t,ppg[,sbp_ref,dbp_ref,age,sex] (see PROTOCOL.md)")
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="the daemon's ingest address")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time; 10 = ten times faster")
    p.add_argument("--loop", action="store_true", help="start over at the end, forever (time stamps carry on)")
    p.add_argument("--chunk", type=int, default=25, help="samples per message")
    p.add_argument("--devices", type=int, default=0, help="fan the recordings out to N device ids (load tests)")
    p.add_argument("--fs", type=float, help="sampling rate of a single-column CSV, Hz")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--wait-s", type=float, help="give up if no daemon subscribes within this time (default: wait)")
    add_client_args(p)
    args = p.parse_args(argv)
    curve = client_keys(args, p)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.speed <= 0 or args.chunk < 1 or args.devices < 0:
        p.error("--speed must be > 0, --chunk ≥ 1 and --devices ≥ 0")
    try:
        feeds = fan_out(read_replay_csv(args.csv, fs=args.fs), args.devices)
    except P2PError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def publish(sock: zmq.Socket) -> int:
        log.info("replaying %d device(s) from %s to %s at %gx", len(feeds), args.csv, args.connect, args.speed)
        return Replayer(feeds, sock, args.chunk, args.speed, args.loop).run(args.duration)

    return run_publisher(args.connect, publish, args.wait_s, curve)


if __name__ == "__main__":
    sys.exit(main())
