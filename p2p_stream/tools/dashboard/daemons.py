"""Dashboard daemons: the latest heartbeat of each daemon heard, which went silent, and their total across a cluster.

Behind `p2p proxy` every daemon's heartbeat reaches one subscriber. Each names its daemon (`daemon`: its
`cluster.id`, or its host name when it runs alone); a heartbeat without the key, from a daemon older than it, counts
as one unnamed daemon. A name alone does not always tell daemons apart (two daemons run alone on one host share its
name), so a daemon here is its name *and* when it started, read off its heartbeats (arrival − `uptime_s`): a
heartbeat whose start matches none heard under its name is another daemon of that name, shown as `name #2` — unless
the one heard before under that name stopped beating before this one started: a restart, which takes its place.

`cluster_total` adds heartbeats (or `stats` replies, the same map) up the one way the dashboard's header and
`p2p ctl stats` both show.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from p2p_stream.config.daemon import Operation

LOST_BEATS = 3  # no heartbeat for this many of its own periods (when it beats slower than the default), or…
HEARTBEAT_LOST_S = LOST_BEATS * Operation().heartbeat_s  # …for this long (at the default period): the daemon is silent
START_SLACK_S = 1.0  # two heartbeats whose daemon started this close together (on our clock) are from one daemon
UNNAMED = "(unnamed)"  # the label of a daemon whose heartbeat has no `daemon` (older than the key)
# Counters and rates: the cluster's is the sum of its daemons'. Latency percentiles and batch means are not summed.
SUMMED = ("devices", "windows_total", "windows_per_s", "messages_total", "batches_total", "queue")
SUMMED_IF_ANY = ("foreign_total",)  # only daemons of a cluster send it


def _number(hb: dict, key: str) -> int | float | None:
    v = hb.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return v
    return None


def uptime_of(hb: dict) -> float:
    """The heartbeat's `uptime_s`, s; 0 when absent or not a number."""
    v = _number(hb, "uptime_s")
    return max(0.0, float(v)) if v is not None else 0.0


@dataclass
class HeardDaemon:
    """One daemon as its heartbeats tell it: the latest one, when it came, and when that daemon started."""

    name: str | None  # the heartbeat's `daemon`; None from a daemon older than the key
    heartbeat: dict  # the latest
    heard_at: float  # time.monotonic() when the latest arrived
    started: float  # when the daemon started, on time.monotonic()'s clock: the earliest arrival − uptime_s seen
    copy: int = 1  # 2, 3, …: another daemon reporting the same name
    beat_s: float | None = None  # its heartbeat period: the shortest rise of uptime_s between two heartbeats, s

    @property
    def label(self) -> str:
        name = self.name if self.name is not None else UNNAMED
        return name if self.copy == 1 else f"{name} #{self.copy}"

    def lost_after_s(self) -> float:
        """No heartbeat for this long: silent (HEARTBEAT_LOST_S, or LOST_BEATS of its own periods if longer)."""
        return max(HEARTBEAT_LOST_S, LOST_BEATS * self.beat_s) if self.beat_s else HEARTBEAT_LOST_S

    def silent(self, now: float) -> bool:
        return now - self.heard_at > self.lost_after_s()


@dataclass
class Daemons:
    """Every daemon heard, in the order first heard; a silent one stays (shown silent) until it comes back."""

    heard: list[HeardDaemon] = field(default_factory=list)

    def update(self, hb: dict, now: float) -> HeardDaemon:
        """File heartbeat `hb`, arrived at `now`, under its daemon; that daemon."""
        name = hb["daemon"] if isinstance(hb.get("daemon"), str) and hb["daemon"] else None
        uptime = uptime_of(hb)
        started = now - uptime  # later than the true start by the time the heartbeat waited to be read
        same = [d for d in self.heard if d.name == name]
        # The same daemon: started when it did (within the slack of reading delays), and its uptime has not gone back.
        alike = [d for d in same if abs(d.started - started) <= START_SLACK_S and uptime >= uptime_of(d.heartbeat)]
        if alike:
            d = min(alike, key=lambda d: abs(d.started - started))
            rise = uptime - uptime_of(d.heartbeat)
            if rise > 0:
                d.beat_s = min(d.beat_s or math.inf, rise)
            d.heartbeat, d.heard_at, d.started = hb, now, min(d.started, started)
            return d
        # A daemon of that name that stopped beating before this one started: this is it, restarted.
        restarted = next((d for d in same if d.heard_at <= started + START_SLACK_S), None)
        if restarted is not None:
            restarted.heartbeat, restarted.heard_at, restarted.started, restarted.beat_s = hb, now, started, None
            return restarted
        d = HeardDaemon(name, hb, now, started, copy=1 + max((d.copy for d in same), default=0))
        self.heard.append(d)
        return d

    def live(self, now: float) -> list[HeardDaemon]:
        return [d for d in self.heard if not d.silent(now)]

    def silent(self, now: float) -> list[HeardDaemon]:
        return [d for d in self.heard if d.silent(now)]

    def shared_names(self) -> list[str]:
        """Names that more than one daemon reports (each shown as `name`, `name #2`, …)."""
        return sorted({d.name if d.name is not None else UNNAMED for d in self.heard if d.copy > 1})


def _add(values: list[int | float]) -> int | float:
    total = sum(values)
    return total if all(isinstance(v, int) for v in values) else round(float(total), 3)


def _range(values: list[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def cluster_total(heartbeats: list[dict]) -> dict:
    """The cluster's figures from its daemons' heartbeats (or `stats` replies): give only the daemons alive.

    Counters and rates add up (`devices`, `windows_per_s`, `messages_total`, `queue`, every `rejected` reason, …).
    Percentiles do not: the cluster's p99 is not any sum or mean of its daemons' p99s, and without their latencies
    it cannot be computed. So the total states what can be said honestly — the p50 as the range over the daemons
    (`latency_p50_ms_range`, [lowest, highest]) and the worst daemon's p99 (`latency_p99_ms_worst`): no device's
    estimates are slower at the 99th percentile of its daemon than that. Batch means likewise as a range
    (`batch_mean_range`); `models` and `backend_devices` list the distinct values. None where no daemon says.
    """
    total: dict = {"daemons": len(heartbeats)}
    for key in SUMMED + SUMMED_IF_ANY:
        values = [v for hb in heartbeats if (v := _number(hb, key)) is not None]
        if values or key in SUMMED:
            total[key] = _add(values)
    rejected: Counter = Counter()
    for hb in heartbeats:
        counts = hb.get("rejected")
        if isinstance(counts, dict):
            rejected.update({str(k): v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)})
    total["rejected"] = dict(rejected)
    p50s = [float(v) for hb in heartbeats if (v := _number(hb, "latency_p50_ms")) is not None]
    p99s = [float(v) for hb in heartbeats if (v := _number(hb, "latency_p99_ms")) is not None]
    total["latency_p50_ms_range"] = _range(p50s)
    total["latency_p99_ms_worst"] = max(p99s) if p99s else None
    total["batch_mean_range"] = _range([float(v) for hb in heartbeats if (v := _number(hb, "batch_mean")) is not None])
    total["models"] = sorted({str(hb["model"]) for hb in heartbeats if hb.get("model") is not None})
    runs_on = (hb.get("backend_device", hb.get("device")) for hb in heartbeats)
    total["backend_devices"] = sorted({str(v) for v in runs_on if v is not None})
    return total
