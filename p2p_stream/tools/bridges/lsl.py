"""`p2p lsl`: Lab Streaming Layer PPG streams published as wearables on the daemon's ingest contract.

    LSL outlet (a device's app) → inlet here → [b"ppg.<device>", {v, device, seq, t0, fs, ppg}] → daemon ingest

    p2p lsl                                   # every LSL stream of type PPG, each its own device
    p2p lsl --name Polar --device pulse-1     # one stream chosen by name, with an id of our choosing
    p2p lsl --list                            # which streams would be bridged, and as which devices

ECG, the second channel: a stream of LSL type `--ecg-type` (default ECG) that matches the same `--name` /
`--source-id` and maps to the same device id (the same source_id, or a `--device` mapping naming both sources) is
that device's ECG, sent on `ecg.<device>` with its own `seq` and rate, its time stamps through its own clock
correction (so it pairs with the PPG by time). A bare `--device ID` maps the PPG stream only (never every ECG on the
network); `--pin` names the PPG's outlet, and the ECG is pinned to the first outlet that feeds it (`--pin-mode`).
`--ecg-type ''` bridges PPG only.

Which streams: those whose LSL type is `--type` (default PPG), and name `--name` and source_id `--source-id` when
given; new ones are picked up while the bridge runs. Each becomes one device: its id is the `--device` mapping's
(`SOURCE=ID`, SOURCE a stream's source_id or name; or a bare ID when one stream is bridged), else its source_id,
else its name, with every character outside the protocol's `[A-Za-z0-9_.:-]` made `_` and cut to 64. A stream
that vanishes and comes back (an outlet with the same id) resumes as the same device: its `seq` carries on and its
`t0` jumps, which the daemon reads as a gap, not as a new wearable.

Time: an LSL time stamp is on the sending machine's `local_clock()`; the inlet's `time_correction()` moves it onto
this machine's, and the offset between `local_clock()` and `time.time()` onto Unix time, the protocol's `t0`. Each
message's `t0` is the Unix time of its first sample; a jump of more than 0.1 s between two samples starts a new
message there, so the daemon sees the break where it happened. `fs` is the stream's nominal rate: a stream of
irregular rate (nominal rate 0) cannot be windowed by sample count and is refused, as are text streams.

Who may feed a device: LSL has no authentication, so any program on the network can announce an outlet with any
name and source_id. A device is therefore pinned to the first outlet that fed it, and a lookalike (the same name
and source_id, another outlet) is refused — never forwarded, logged as "refusing LSL outlet ...", counted:
  --pin-mode host (default)  after a dropout, only an outlet on the same host (LSL's hostname) with the same
                             source_id and name feeds the device again: the device's app restarting its outlet
                             (a new uid) comes back; an outlet on another machine does not.
  --pin-mode uid             only that very outlet instance (its LSL uid): a restarted outlet is refused too,
                             until the operator restarts the bridge with --pin DEVICE=uid:UID.
  --pin DEVICE=host:HOST     DEVICE is fed only by an outlet on HOST, from the start (not whichever comes first).
  --pin DEVICE=uid:UID       DEVICE is fed only by the outlet UID (`--list` shows each outlet's host and uid).
Pins live as long as the bridge: a restarted bridge trusts again whichever outlet comes first, unless --pin says.
Outlets that claim a device no outlet has fed yet, and differ (host, source_id or name; uid with --pin-mode uid),
are all refused until one is pinned: the bridge cannot tell which is genuine. Pinning is not authentication (a
host and a uid are only what an outlet announces): run the bridge on the outlet's host or an isolated network, and
give it a CURVE key bound to the bridged devices (docs/devices.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import zmq

from p2p_stream.errors import ConfigError
from p2p_stream.ids import DEVICE_MAX_BYTES, DEVICE_RE
from p2p_stream.tools.bridges.replay import add_publisher_args, check_publisher_args, run_publisher
from p2p_stream.tools.common import command, parent_parser, setup_logging
from p2p_stream.wire.protocol import MAX_FS_HZ, MAX_SAMPLES, MIN_FS_HZ, encode_ingest

log = logging.getLogger(__name__)

PYLSL = "pylsl>=1.18,<2"  # what to install (it ships liblsl in its wheel)
GAP_SPLIT_S = 0.1  # two samples further apart than one period plus this start a new message (daemon: 0.2 s)
PULL_SAMPLES = min(1024, MAX_SAMPLES)  # per pull: a message holds at most this
BUFFER_S = 60  # an inlet holds this much while the bridge is busy elsewhere
OPEN_TIMEOUT_S = 5.0  # to open a stream and get its first clock correction
DISCOVER_EVERY_S = 1.0  # how often the resolver's list is looked at for new or returning streams
NOTE_EVERY_S = 10.0  # while nothing matches, a note this often
LIST_WAIT_S = 2.0  # `--list`: how long to look
LSL_CONFIGS = ("lsl_api.cfg", "~/lsl_api/lsl_api.cfg", "/etc/lsl_api/lsl_api.cfg")  # liblsl reads the first found
LSL_QUIET, LSL_INFO = -3, 0  # liblsl's log levels: fatal only, and its chatty default
PIN_MODES = ("host", "uid")  # --pin-mode: what of the first trusted outlet a returning one must match
PIN_KINDS = ("host", "uid")  # --pin DEVICE=KIND:VALUE


# ------------------------------------------------------------------------------------------------------ pure parts


def sanitise(text: str) -> str:
    """A device id by the protocol's rule (1–64 of [A-Za-z0-9_.:-]) from a stream's source_id or name."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", text)[:DEVICE_MAX_BYTES] or "lsl"


def parse_devices(items: list[str]) -> dict[str, str]:
    """`--device` values → {source_id or name: device id}; a bare `ID` maps whatever stream is bridged (key "")."""
    mapping: dict[str, str] = {}
    for item in items:
        key, _, device = item.rpartition("=")
        if not DEVICE_RE.fullmatch(device):
            raise ConfigError(
                f"--device {item!r}: {device!r} is not a device id; give SOURCE=ID (or ID), ID 1–64 characters of "
                "[A-Za-z0-9_.:-]"
            )
        if key in mapping:
            raise ConfigError(f"--device {item!r}: {key or 'a bare ID'} is mapped twice; give each stream one id")
        mapping[key] = device
    if "" in mapping and len(mapping) > 1:
        raise ConfigError("--device: a bare ID maps the one stream bridged; with several, give SOURCE=ID for each")
    return mapping


def device_for(source_id: str, name: str, mapping: dict[str, str]) -> str:
    """The device id of a stream: the mapping's (by source_id, then name, then a bare ID), else its own, sanitised."""
    for key in (source_id, name):
        if key and key in mapping:
            return mapping[key]
    return mapping.get("") or sanitise(source_id or name)


def _quoted(value: str, flag: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{flag} {value!r} holds both kinds of quote; LSL's query language cannot say it")


def predicate(stream_type: str, name: str | None, source_id: str | None, ecg_type: str = "") -> str:
    """The LSL query (XPath 1.0 over a stream's description) for the streams to bridge; "" for all of them. With
    `ecg_type`, streams of that type too (the same name and source_id filters)."""
    kind = f"type={_quoted(stream_type, '--type')}" if stream_type else ""
    if kind and ecg_type:
        kind = f"({kind} or type={_quoted(ecg_type, '--ecg-type')})"
    parts = [kind] * bool(kind) + [
        f"{key}={_quoted(value, flag)}"
        for key, value, flag in (("name", name, "--name"), ("source_id", source_id, "--source-id"))
        if value
    ]
    return " and ".join(parts)


def refusal(rate_hz: float, channels: int, text: bool, channel: int) -> str | None:
    """Why a stream cannot feed the daemon, or None when it can."""
    if text:
        return "it carries text (cf_string), not samples"
    if rate_hz <= 0:
        return (
            "its rate is irregular (nominal_srate 0): the daemon cuts windows by sample count at a fixed fs; give "
            "the outlet its nominal rate, or resample to one before LSL"
        )
    if not MIN_FS_HZ <= rate_hz <= MAX_FS_HZ:
        return f"its rate {rate_hz:g} Hz is outside the protocol's {MIN_FS_HZ:g}–{MAX_FS_HZ:g} Hz"
    if channel >= channels:
        return f"it has {channels} channel(s), so --channel {channel} does not exist; give 0–{channels - 1}"
    return None


@dataclass(frozen=True)
class Outlet:
    """Who an LSL outlet says it is. `uid` is new with every outlet (a restarted outlet has a new one); `hostname`
    is the machine it runs on as liblsl reports it; `source_id` and `name` are whatever its program chose — and any
    other program may choose them too."""

    hostname: str
    source_id: str
    name: str
    uid: str

    @classmethod
    def of(cls, info) -> Outlet:
        return cls(info.hostname(), info.source_id(), info.name(), info.uid())


def parse_pins(items: list[str]) -> dict[str, tuple[str, str]]:
    """`--pin` values → {device id: (kind, value)}: `DEVICE=host:HOST` or `DEVICE=uid:UID`."""
    pins: dict[str, tuple[str, str]] = {}
    for item in items:
        device, eq, rest = item.partition("=")
        kind, colon, value = rest.partition(":")
        if not (eq and colon and kind in PIN_KINDS and value):
            raise ConfigError(f"--pin {item!r}: give DEVICE=host:HOST or DEVICE=uid:UID")
        if not DEVICE_RE.fullmatch(device):
            raise ConfigError(f"--pin {item!r}: {device!r} is not a device id (1–64 characters of [A-Za-z0-9_.:-])")
        if device in pins:
            raise ConfigError(f"--pin {item!r}: {device} is pinned twice; give each device one pin")
        pins[device] = (kind, value)
    return pins


def identity(outlet: Outlet, mode: str) -> tuple[str, ...]:
    """What of an outlet a device pinned under `mode` holds it to: its uid, or its host, source_id and name."""
    return (outlet.uid,) if mode == "uid" else (outlet.hostname, outlet.source_id, outlet.name)


def lookalike(outlet: Outlet, trusted: Outlet | None, pin: tuple[str, str] | None, mode: str = "host") -> str | None:
    """Why `outlet` may not feed a device whose pinned outlet is `trusted` (the first that fed it; None: none yet)
    and whose `--pin` is `pin` ((kind, value), or None), under `--pin-mode` `mode`; None when it may."""
    if pin is not None:
        kind, value = pin
        if kind == "host" and outlet.hostname != value:
            return f"it is pinned by --pin to host {value!r}"
        if kind == "uid" and outlet.uid != value:
            return f"it is pinned by --pin to the outlet uid {value}"
    if trusted is None:
        return None
    if mode == "uid" or (pin is not None and pin[0] == "uid"):
        if outlet.uid != trusted.uid:
            return (
                f"it is pinned to the outlet on host {trusted.hostname!r} (uid {trusted.uid}) by uid: no other "
                "outlet may feed it, not even that outlet restarted"
            )
        return None
    if identity(outlet, "host") != identity(trusted, "host"):
        return (
            f"it is pinned to the outlet on host {trusted.hostname!r} (uid {trusted.uid}, source_id "
            f"{trusted.source_id!r}, name {trusted.name!r}): only an outlet on that host with that source_id and name "
            "may feed it again"
        )
    return None


def runs(t: np.ndarray, fs: float, tolerance_s: float = GAP_SPLIT_S) -> list[tuple[int, int]]:
    """[start, stop) pieces of time stamps `t` (s) with no step further than `tolerance_s` from one period."""
    breaks = np.flatnonzero(np.abs(np.diff(t) - 1.0 / fs) > tolerance_s) + 1
    edges = [0, *breaks.tolist(), len(t)]
    return list(zip(edges[:-1], edges[1:]))


def unix_minus_lsl(local_clock: Callable[[], float]) -> float:
    """`time.time() - local_clock()` now, s: the best of three reads bracketed by the LSL clock."""
    best = (np.inf, 0.0)
    for _ in range(3):
        before = local_clock()
        unix = time.time()
        after = local_clock()
        best = min(best, (after - before, unix - (before + after) / 2))
    return best[1]


# ------------------------------------------------------------------------------------------------------ pylsl


def load_pylsl(verbose: bool = False) -> ModuleType:
    """pylsl, its liblsl log quiet unless `verbose` (when the user has no lsl_api.cfg of their own to say so)."""
    try:
        import pylsl
    except ImportError as exc:
        raise ConfigError(f"p2p lsl needs pylsl ({exc}); install it: pip install '{PYLSL}'") from exc
    except RuntimeError as exc:  # pylsl raises this when its liblsl cannot be loaded
        raise ConfigError(
            f"pylsl cannot load liblsl ({exc}); reinstall it: pip install --force-reinstall '{PYLSL}'"
        ) from exc
    if "LSLAPICFG" not in os.environ and not any(Path(p).expanduser().is_file() for p in LSL_CONFIGS):
        pylsl.set_config_content(f"[log]\nlevel = {LSL_INFO if verbose else LSL_QUIET}\n")
    return pylsl


@dataclass
class Feed:
    """One device's channel: its seq counts on across the streams that feed it (one at a time)."""

    device: str
    kind: str = "ppg"  # the channel (wire/protocol.py CHANNELS): "ppg", or "ecg" from a stream of `--ecg-type`
    seq: int = 0
    uid: str | None = None  # the LSL stream feeding it now; None while it is away
    trusted: Outlet | None = None  # the outlet it is pinned to: the first that fed it


@dataclass
class Link:
    """One open LSL inlet and the device it feeds."""

    uid: str
    label: str  # for the log: the stream's name and source_id
    inlet: object  # pylsl.StreamInlet
    feed: Feed
    fs: float
    channel: int
    correction_s: float  # time_correction(): add to the stream's time stamps for this machine's local_clock()


class Bridge:
    """LSL streams in, ingest messages out on `sock` (an XPUB or PUB connected to the daemon's ingest)."""

    def __init__(
        self,
        lsl: ModuleType,
        sock: zmq.Socket,
        query: str,
        devices: dict[str, str] | None = None,
        channel: int = 0,
        pins: dict[str, tuple[str, str]] | None = None,
        pin_mode: str = "host",
        ecg_type: str = "",
    ) -> None:
        if pin_mode not in PIN_MODES:
            raise ConfigError(f"--pin-mode {pin_mode!r}: give one of {', '.join(PIN_MODES)}")
        self.lsl, self.sock, self.query = lsl, sock, query
        self.devices, self.channel = devices or {}, channel
        self.pins, self.pin_mode = pins or {}, pin_mode
        self.ecg_type = ecg_type  # a stream of this LSL type is its device's ECG
        self.resolver = lsl.ContinuousResolver(pred=query) if query else lsl.ContinuousResolver()
        self.feeds: dict[tuple[str, str], Feed] = {}  # (channel, device id) → its feed, kept while its stream is away
        self.links: dict[str, Link] = {}  # stream uid → its open inlet
        self.skip: dict[str, str] = {}  # stream uid → why it is never bridged (said once); lost ones too
        self.waiting: set[str] = set()  # stream uids whose device another stream feeds now (said once)
        self.unsure: set[str] = set()  # stream uids among several that claim a device none has fed yet (said once)
        self.refused = 0  # lookalike outlets refused: each another outlet than the one its device is pinned to
        self.messages = 0
        self.samples = 0

    # ---------------------------------------------------------------- streams

    def discover(self) -> None:
        """Open an inlet for each new matching stream; a returning stream finds its device's feed again, if it is
        the outlet its device is pinned to: a lookalike is refused."""
        infos = self.resolver.results()
        seen = {info.uid() for info in infos}
        self.skip = {uid: why for uid, why in self.skip.items() if uid in seen}  # forgotten by LSL: forget too
        self.waiting &= seen
        self.unsure &= seen
        fresh: dict[tuple[str, str], list[tuple[object, Outlet, str]]] = {}  # (channel, device) → new candidates
        for info in infos:
            uid = info.uid()
            if uid in self.links or uid in self.skip:
                continue
            label = f"{info.name()!r} (source_id {info.source_id()!r}, on {info.hostname()})"
            why = refusal(
                info.nominal_srate(), info.channel_count(), info.channel_format() == self.lsl.cf_string, self.channel
            )
            if why is not None:
                log.warning("LSL stream %s refused: %s", label, why)
                self.skip[uid] = why
                continue
            outlet = Outlet.of(info)
            kind = "ecg" if self.ecg_type and info.type() == self.ecg_type else "ppg"
            # A bare --device ID names the one PPG stream: it must not pull in every ECG stream on the network (another
            # person's among them), so an ECG stream maps by its own source_id, or a SOURCE=ID naming it.
            mapping = self.devices if kind == "ppg" else {k: v for k, v in self.devices.items() if k}
            device = device_for(outlet.source_id, outlet.name, mapping)
            feed = self.feeds.get((kind, device))
            pin = self.pins.get(device) if kind == "ppg" else None  # a --pin names the PPG outlet (its uid or host)
            why = lookalike(outlet, feed and feed.trusted, pin, self.pin_mode)
            if why is not None:
                self._refuse(outlet, label, device, why)
                continue
            fresh.setdefault((kind, device), []).append((info, outlet, label))
        for (kind, device), candidates in fresh.items():
            pinned = self.pins.get(device, ("",))[0] if kind == "ppg" else ""
            mode = "uid" if self.pin_mode == "uid" or pinned == "uid" else "host"
            if (kind, device) not in self.feeds and len({identity(o, mode) for _, o, _ in candidates}) > 1:
                uids = {o.uid for _, o, _ in candidates}
                if not uids <= self.unsure:
                    log.error(
                        "LSL outlets %s all claim device %s, which none has fed yet: the bridge cannot tell which is "
                        "genuine and takes none of them; choose one with --pin %s=host:HOST or --pin %s=uid:UID "
                        "(--list shows each outlet's host and uid), or bridge one by --name / --source-id",
                        ", ".join(f"{label} uid {o.uid}" for _, o, label in candidates), device, device, device,
                    )  # fmt: skip
                    self.unsure |= uids
                continue
            for info, outlet, label in candidates:
                feed = self.feeds.get((kind, device))
                if feed is not None and feed.uid is not None:  # its pinned outlet feeds it now: this one waits
                    if outlet.uid not in self.waiting:
                        log.warning(
                            "LSL stream %s waits: it would be device %r, which %s feeds now; give each its own id "
                            "with --device SOURCE=ID", label, device, self.links[feed.uid].label,
                        )  # fmt: skip
                        self.waiting.add(outlet.uid)
                    continue
                self.waiting.discard(outlet.uid)
                self.unsure.discard(outlet.uid)
                self._open(info, outlet, label, feed or Feed(device, kind))

    def _refuse(self, outlet: Outlet, label: str, device: str, why: str) -> None:
        log.error(
            "refusing LSL outlet %s (uid %s) for device %s: %s; nothing it sends is forwarded. An outlet restarted or "
            "moved on purpose needs the operator: check it is the device's, then restart p2p lsl with --pin %s=uid:%s "
            "(or --pin %s=host:%s)",
            label, outlet.uid, device, why, device, outlet.uid, device, outlet.hostname,
        )  # fmt: skip
        self.skip[outlet.uid] = f"lookalike: {why}"  # said and counted once while LSL lists it
        self.refused += 1

    def _open(self, info, outlet: Outlet, label: str, feed: Feed) -> None:
        lsl, uid = self.lsl, outlet.uid
        inlet = lsl.StreamInlet(info, max_buflen=BUFFER_S, recover=False)
        try:
            inlet.open_stream(timeout=OPEN_TIMEOUT_S)
            correction = inlet.time_correction(timeout=OPEN_TIMEOUT_S)
        except (lsl.util.TimeoutError, lsl.util.LostError) as exc:
            log.warning("LSL stream %s found but not opened (%s): is its host reachable over TCP?", label, exc)
            self.skip[uid] = str(exc)
            inlet.close_stream()
            return
        fs = info.nominal_srate()
        back = (feed.kind, feed.device) in self.feeds
        self.feeds[feed.kind, feed.device] = feed
        feed.uid = uid
        feed.trusted = feed.trusted or outlet  # pinned to the first outlet that fed it, for good
        self.links[uid] = Link(uid, label, inlet, feed, fs, self.channel, correction)
        if back:
            log.info(
                "LSL stream %s is back: device %s continues at seq %d (the daemon sees a gap)",
                label,
                feed.device,
                feed.seq,
            )
        else:
            log.info(
                "LSL stream %s → device %s%s: %g Hz, channel %d of %d, clock %+.3f ms from this machine's",
                label, feed.device, " (its ECG)" if feed.kind == "ecg" else "", fs, self.channel,
                info.channel_count(), 1000 * correction,
            )  # fmt: skip

    def _lose(self, link: Link) -> None:
        log.warning("LSL stream %s lost; device %s waits for it to come back", link.label, link.feed.device)
        del self.links[link.uid]
        link.feed.uid = None
        self.skip[link.uid] = "lost"  # the resolver lists a dead stream a few seconds more: never reopen it
        link.inlet.close_stream()

    # ---------------------------------------------------------------- samples

    def pump(self) -> int:
        """Forward what every inlet holds; the number of messages sent."""
        sent = self.messages
        offset_s = unix_minus_lsl(self.lsl.local_clock)
        for link in list(self.links.values()):
            try:
                while self._forward(link, offset_s) == PULL_SAMPLES:
                    pass
            except self.lsl.util.LostError:
                self._lose(link)
        return self.messages - sent

    def _forward(self, link: Link, offset_s: float) -> int:
        """One pull from `link` sent as ingest messages; the number of samples pulled."""
        samples, stamps = link.inlet.pull_chunk(timeout=0.0, max_samples=PULL_SAMPLES)
        if not stamps:
            return 0
        try:  # cheap after the first: liblsl refreshes it in the background
            link.correction_s = link.inlet.time_correction(timeout=0.5)
        except self.lsl.util.TimeoutError:
            pass  # keep the last one
        x = np.asarray(samples, dtype=np.float64)[:, link.channel].astype(np.float32)  # (n,)
        t = np.asarray(stamps, dtype=np.float64) + link.correction_s + offset_s  # (n,) Unix time, s
        feed = link.feed
        for start, stop in runs(t, link.fs):
            self.sock.send_multipart(
                encode_ingest(feed.device, feed.seq, float(t[start]), link.fs, x[start:stop], channel=feed.kind)
            )
            feed.seq += 1
            self.messages += 1
        self.samples += len(x)
        return len(x)

    # ---------------------------------------------------------------- loop

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None, chunk_s: float = 0.1) -> int:
        """Forward every `chunk_s` until `duration_s` passes or `stop` is set; the number of messages sent."""
        start = time.monotonic()
        next_discover, next_note = start, start + 2.0  # the resolver's first answers take a moment
        try:
            while not (stop is not None and stop.is_set()):
                now = time.monotonic()
                if duration_s is not None and now - start >= duration_s:
                    break
                if now >= next_discover:
                    self.discover()
                    next_discover = now + DISCOVER_EVERY_S
                if not self.links and now >= next_note:
                    log.warning("waiting for an LSL stream (%s) ...", self.query or "any")
                    next_note = now + NOTE_EVERY_S
                self.pump()
                delay = chunk_s - (time.monotonic() - now)
                if delay > 0:
                    if stop is not None:
                        stop.wait(delay)
                    else:
                        time.sleep(delay)
        finally:
            self.close()
        return self.messages

    def close(self) -> None:
        for link in self.links.values():
            link.inlet.close_stream()
        self.links.clear()


def listing(
    lsl: ModuleType, query: str, devices: dict[str, str], channel: int, pins: dict[str, tuple[str, str]] | None = None,
    ecg_type: str = "",
) -> str:  # fmt: skip
    """`--list`: the streams that match now, each with its host and uid, and the device id it would feed or why it
    is refused (its rate, its format, or a `--pin` it does not match)."""
    resolver = lsl.ContinuousResolver(pred=query) if query else lsl.ContinuousResolver()
    time.sleep(LIST_WAIT_S)
    lines = []
    for info in sorted(resolver.results(), key=lambda i: (i.name(), i.source_id())):
        why = refusal(info.nominal_srate(), info.channel_count(), info.channel_format() == lsl.cf_string, channel)
        device = device_for(info.source_id(), info.name(), devices)
        why = why or lookalike(Outlet.of(info), None, (pins or {}).get(device))
        ecg = " (its ECG)" if ecg_type and info.type() == ecg_type else ""
        fate = f"refused: {why}" if why else f"→ device {device}{ecg}"
        lines.append(
            f"{info.name()!r} type {info.type()!r} source_id {info.source_id()!r} {info.nominal_srate():g} Hz "
            f"{info.channel_count()} ch on {info.hostname()} uid {info.uid()}  {fate}"
        )
    return "\n".join(lines) or f"no LSL stream matches ({query or 'any'}) after {LIST_WAIT_S:g} s"


@command
def main(argv: list[str] | None = None, prog: str = "p2p lsl") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent_parser(log_level="INFO")],
    )
    group = p.add_argument_group("which LSL streams")
    group.add_argument("--type", default="PPG", help="the streams' LSL type (default %(default)s; '' for any)")
    group.add_argument("--name", help="only the stream(s) of this LSL name")
    group.add_argument("--source-id", help="only the stream(s) of this LSL source_id")
    group.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="SOURCE=ID",
        help="the device id of the stream whose source_id or name is SOURCE (repeat per stream); a bare ID when "
        "one stream is bridged (default: the stream's source_id, else its name, made to fit the id rule)",
    )
    group.add_argument(
        "--channel", type=int, default=0, help="which channel of each stream is the signal: PPG or ECG (default 0)"
    )
    group.add_argument(
        "--ecg-type", default="ECG",
        help="streams of this LSL type are ECG: each feeds the device its source_id (or --device) maps it to, on "
        "ecg.<device> (default %(default)s; '' for none)",
    )  # fmt: skip
    group.add_argument(
        "--list", action="store_true", help="print the matching streams, their hosts, uids and device ids; exit"
    )
    group = p.add_argument_group(
        "which outlet may feed a device (LSL has no authentication: any program can announce any name and source_id)"
    )
    group.add_argument(
        "--pin-mode",
        choices=PIN_MODES,
        default="host",
        help="a device is pinned to the first outlet that feeds it, and any other outlet for it is refused (not "
        "forwarded, logged 'refusing LSL outlet'). host (default): after a dropout an outlet on the same host with "
        "the same source_id and name feeds it again, so the device's app restarting its outlet (a new uid) comes "
        "back. uid: only that very outlet instance; a restarted outlet is refused too, until you restart the "
        "bridge with --pin DEVICE=uid:UID",
    )
    group.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="DEVICE=host:HOST|DEVICE=uid:UID",
        help="from the start, not trusting whichever outlet comes first: device DEVICE is fed only by an outlet "
        "on host HOST (its hostname as LSL reports it), or only by the outlet of uid UID (--list shows both); "
        "repeat per device",
    )
    p.add_argument(
        "--chunk-s",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="forward what has arrived this often: each message holds that much (default %(default)s)",
    )
    add_publisher_args(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    curve = check_publisher_args(args)
    if args.channel < 0 or not 0.01 <= args.chunk_s <= 10:
        raise ConfigError(
            f"--channel must be ≥ 0 and --chunk-s within 0.01–10 s, got {args.channel} and {args.chunk_s}"
        )
    devices = parse_devices(args.device)
    pins = parse_pins(args.pin)
    query = predicate(args.type, args.name, args.source_id, args.ecg_type)
    lsl = load_pylsl(verbose=args.log_level == "DEBUG")
    if args.list:
        print(listing(lsl, query, devices, args.channel, pins, args.ecg_type), flush=True)
        return 0

    def publish(sock: zmq.Socket) -> int:
        bridge = Bridge(lsl, sock, query, devices, args.channel, pins, args.pin_mode, args.ecg_type)
        log.info("bridging LSL streams (%s) to %s, pinning by %s", query or "any", args.ingest, args.pin_mode)
        sent = bridge.run(args.duration_s, chunk_s=args.chunk_s)
        log.info(
            "%d samples of %d device(s); %d lookalike outlet(s) refused", bridge.samples,
            len({device for _, device in bridge.feeds}),
            bridge.refused,
        )  # fmt: skip
        return sent

    return run_publisher(args.ingest, publish, args.wait_s, curve)


if __name__ == "__main__":
    sys.exit(main())
