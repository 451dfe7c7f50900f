"""Dashboard view: `render(state, now, max_rows, view)`, the whole screen: header, daemons, devices, legend, disclaimer.

A pure function of the state, fed to rich's `Live` by `p2p monitor` and printed once by `--once`. Rows come in
the order the user picked (`View.sort`, by device id unless asked otherwise), so they stay put between frames; the
table's columns and widths come from `dashboard_columns.choose_layout` for the width rich gives it.

Behind a proxy the header adds up every daemon still beating (`dashboard_daemons.cluster_total`) and says how many
there are and how many went silent; with two or more daemons heard, a small table gives each its line.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from importlib import resources

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from p2p_stream.stream.ingest.ring_buffer import STREAM_BREAKS
from p2p_stream.tools.dashboard.category import CATEGORIES, bp_category
from p2p_stream.tools.dashboard.columns import (
    CARRIED,
    GAP,
    REJECTED_SHORT,
    STALE_S,
    TRACKED,
    CellContext,
    Layout,
    cells,
    choose_layout,
    daemon_of,
    format_age,
    is_calibrated,
    is_stale,
    is_tracked,
    shown_estimate,
    status_text,
)
from p2p_stream.tools.dashboard.daemons import HeardDaemon, cluster_total
from p2p_stream.tools.dashboard.state import (
    PULSE_WINDOWS,
    DashboardState,
    DeviceRow,
    interval_level,
    interval_of,
)

MAX_DAEMON_ROWS = 5  # lines of the per-daemon table; more daemons: the silent first, then "… and N more"
ATTENTION_RANK = 2  # rows ranked this or lower need attention: crisis, stage 2, stale or rejected
UNCALIBRATED_RANK = max(rank for _, rank in CATEGORIES.values()) + 1  # after every calibrated row
SORTS = {  # --sort: the row order, and what it means; ties go by device id
    "id": "by device id",
    "sbp": "highest SBP first",
    "update": "most recently updated first",
    "attention": "most urgent first: crisis, stage 2 hypertension, stale or rejected, stage 1, hypotension, …",
}
DISCLAIMER = "research use — not a medical device: not for diagnosis or treatment"


@functools.cache
def sqi_threshold() -> float:
    """The quality gate's SQI threshold (`QualityConfig.min_sqi`) as the shipped model's checkpoint sets it.

    Read from the checkpoint's metadata file rather than through `Estimator`, which would load torch into the
    monitor; `QualityConfig`'s default when the file does not say.
    """
    path = resources.files("p2p_stream") / "assets" / "default" / "model.json"
    try:
        return float(json.loads(path.read_text())["quality"]["min_sqi"])
    except (OSError, ValueError, KeyError, TypeError):
        from p2p_stream.ppg.quality import QualityConfig  # scipy, a second to import: only when needed

        return QualityConfig().min_sqi


@dataclass(frozen=True)
class View:
    """How the user asked to see the table: the flags of `p2p monitor`."""

    sort: str = "id"  # row order, one of SORTS
    trend_mmhg: tuple[float, float] = (80.0, 200.0)  # the trend's fixed SBP scale for every row, bottom and top
    sqi_threshold: float | None = None  # shown in the legend, SQIs below in red; None: the shipped model's


def attention(row: DeviceRow, now: float) -> int:
    """Lower needs attention sooner: the category's rank, ATTENTION_RANK when stale or the latest window rejected."""
    shown = shown_estimate(row)
    if is_stale(row, now) or not row.latest.get("ok") or shown is None:
        return ATTENTION_RANK
    if not is_calibrated(row.latest):  # the population's pressure says nothing about this wearer: last
        return UNCALIBRATED_RANK
    return CATEGORIES[bp_category(shown["sbp"], shown["dbp"])][1]


def sort_rows(rows: list[DeviceRow], sort: str, now: float) -> list[DeviceRow]:
    """`rows` in the `sort` order of SORTS; ties by device id, so equal rows never swap between frames."""
    if sort not in SORTS:
        raise ValueError(f"sort {sort!r}: give one of {', '.join(SORTS)}")
    rows = sorted(rows, key=lambda r: r.device)
    if sort == "sbp":
        return sorted(rows, key=lambda r: -(shown_estimate(r) or {"sbp": -1e9})["sbp"])
    if sort == "update":
        return sorted(rows, key=lambda r: -r.received)
    if sort == "attention":
        return sorted(rows, key=lambda r: attention(r, now))
    return rows


def _split_rejected(counted: dict) -> tuple[dict, int]:
    """(rejections by reason, stream breaks): a break (a seq or time gap, e.g. the demo's joins between recorded
    segments) is not a fault, so it is counted apart."""
    breaks = sum(n for reason, n in counted.items() if reason in STREAM_BREAKS)
    return {reason: n for reason, n in counted.items() if reason not in STREAM_BREAKS}, breaks


def _spread(values: list[float] | None, digits: int = 0) -> str:
    """`12` for one value (or equal ones as printed), `12–30` for a range; `—` for none."""
    if not values:
        return "—"
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}–{hi}"


def _header(state: DashboardState, now: float, view: View) -> Panel:
    subtitle = f"{state.address} · sorted by {view.sort} (--sort)"
    live, silent = state.daemons.live(now), state.daemons.silent(now)
    if not live:
        waited = now - max((d.heard_at for d in silent), default=state.started)
        text = Text(
            f"No daemon reachable at {state.address} (no heartbeat for {waited:.0f} s). "
            "Is p2p daemon running, and is this its estimates address (--estimates)?",
            style="bold red",
        )
        return Panel(text, title="Pulse2Pressure", subtitle=subtitle)
    # Only the daemons still beating are added up: a silent one's last figures are not the cluster's now.
    total = cluster_total([d.heartbeat for d in live])
    rejected, breaks = _split_rejected(total["rejected"])
    top = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])[:3]) or "none"
    p50, p99 = total["latency_p50_ms_range"], total["latency_p99_ms_worst"]
    parts: list[tuple[str, str]] = []
    if len(state.daemons.heard) > 1:
        parts += [(f"{len(live)} daemon" + ("s" if len(live) != 1 else ""), "bold")]
        if silent:
            parts += [(f" + {len(silent)} silent", "bold red")]
        parts += [("   ", "")]
    if len(live) == 1:
        lat = [
            ("   latency p50/p99 ", "dim"),
            (f"{p50[0]:.0f} / {p99:.0f} ms" if p50 and p99 is not None else "—", "bold"),
        ]
    else:
        # Percentiles do not add up: each daemon's p50 as a range, and the worst daemon's p99, said to be the worst.
        worst = "—" if p99 is None else f"{p99:.0f} ms"
        lat = [("   latency p50 ", "dim"), (_spread(p50) + " ms", "bold"), (", worst p99 ", "dim"), (worst, "bold")]
    parts += [
        ("devices ", "dim"),
        (f"{total['devices']}", "bold"),
        ("   windows/s ", "dim"),
        (f"{total['windows_per_s']:.1f}", "bold"),
        ("   batch ", "dim"),
        (_spread(total["batch_mean_range"], 1), "bold"),
        *lat,
        ("   rejected ", "dim"),
        (f"{sum(rejected.values())}", "bold"),
        (f" ({top})", "dim"),
        ("   breaks ", "dim"),
        (f"{breaks}", "bold"),
        ("   model ", "dim"),
        (", ".join(total["models"]) or "?", ""),
    ]
    return Panel(Text.assemble(*parts), title="Pulse2Pressure — live cuff-less blood pressure", subtitle=subtitle)


def _daemon_table(daemons: list[HeardDaemon], shared: list[str], now: float) -> Group:
    """One line per daemon: its own figures and how long ago it beat; silent ones say so, in red, and come first
    when not all fit. A name more than one daemon reports is said below."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, GAP // 2), collapse_padding=True)
    table.add_column("daemon", overflow="fold")
    for title, width in (("devices", 7), ("windows/s", 9), ("p99 ms", 6), ("queue", 5), ("rejected", 8)):
        table.add_column(title, justify="right", width=width, no_wrap=True)
    table.add_column("heartbeat", width=len("silent 99 min"), no_wrap=True)
    ordered = sorted(daemons, key=lambda d: (not d.silent(now), d.label))
    shown = sorted(ordered[:MAX_DAEMON_ROWS], key=lambda d: d.label)
    for d in shown:
        hb, quiet = d.heartbeat, d.silent(now)
        rejected, _ = _split_rejected(hb.get("rejected") or {})
        p99 = hb.get("latency_p99_ms")
        age = format_age(now - d.heard_at)
        table.add_row(
            d.label,
            f"{hb.get('devices', 0)}",
            f"{hb.get('windows_per_s', 0):.1f}",
            "—" if p99 is None else f"{p99:.0f}",
            f"{hb.get('queue', 0)}",
            f"{sum(rejected.values())}",
            Text(f"silent {age}", style="bold red") if quiet else Text(f"{age} ago"),
            style="dim" if quiet else "",
        )
    lines: list = [table]
    hidden = ordered[MAX_DAEMON_ROWS:]
    if hidden:
        quiet = sum(d.silent(now) for d in hidden)
        note = f", {quiet} of them silent" if quiet else ", all beating"
        lines.append(Text(f"… and {len(hidden)} more daemons{note}", style="bold red" if quiet else "dim"))
    if shared:
        names = ", ".join(shared)
        lines.append(Text(f"{names}: one name, several daemons (told apart by when each started)", style="yellow"))
    return Group(*lines)


def _legend(layout: Layout, rows: list[DeviceRow], now: float, view: View) -> list[Text]:
    """What the columns on screen mean, one `key meaning` entry for each that needs saying (SQI: `_sqi_line`)."""
    shown = [e for e in (shown_estimate(r) for r in rows) if e is not None]
    with_interval = [e for e in shown if interval_of(e) is not None]
    level = interval_level(with_interval)
    entries = []
    if with_interval:
        entries.append(("SBP/DBP", f"mmHg, ± {level} prediction interval" if level else "mmHg, ± prediction interval"))
    else:
        entries.append(("SBP/DBP", "mmHg"))
    if layout.has("updated"):
        entries.append(("updated", "seconds since the estimate"))
    if layout.has("status"):
        statuses = [status_text(r, now, layout.full_labels).plain for r in rows]
        if not layout.full_labels:
            entries.append(("HTN", "hypertension"))
        if any(s.startswith(REJECTED_SHORT) for s in statuses):
            entries.append((REJECTED_SHORT.strip(), "window rejected, the reason follows"))
        if any(r.latest.get("ok") and not is_calibrated(r.latest) for r in rows):
            entries.append(("prior", "not calibrated: the population's blood pressure, not the wearer's"))
        if any(r.latest.get("ok") and is_tracked(r.latest) for r in rows):
            entries.append((TRACKED, "the cuff reading, moved by the pulse's change since (tracking)"))
        if any(r.latest.get("carried") for r in rows):
            entries.append((CARRIED, "calibration or facts kept from before a restart or pause, same wearer"))
        if any(is_stale(r, now) for r in rows):
            entries.append(("stale", f"no window for {STALE_S:.0f} s"))
    if layout.has("pulse"):
        entries.append(("pulse", f"bpm, median of the last {PULSE_WINDOWS} windows"))
    if layout.has("error"):
        entries.append(("est−cuff", "estimate minus cuff, mmHg (+: estimate higher)"))
    if layout.has("trend"):
        lo, hi = view.trend_mmhg
        entries.append(
            ("SBP trend", f"last {layout.widths[-1]} estimates on a fixed scale, ▁ {lo:.0f} … █ {hi:.0f} mmHg")
        )
    return [Text.assemble((key, "bold"), f": {meaning}") for key, meaning in entries]


def _sqi_line(threshold: float) -> Text:
    """The SQI and its threshold, on a line of its own."""
    return Text.assemble(
        ("SQI", "bold"), f": signal quality of the latest window, 0–1; a window below {threshold:.2f} is rejected"
    )


def _wrap(items: list[Text], width: int) -> list[Text]:
    """`items` three spaces apart on as few lines of `width` as they fit, in order."""
    out: list[Text] = []
    for item in items:
        if out and out[-1].cell_len + 3 + item.cell_len <= width:
            out[-1].append("   ")
            out[-1].append_text(item)
        else:
            out.append(item.copy())
    return out


class _Body:
    """The device table, the "… more" line, the legend and the disclaimer, laid out for the width rich gives."""

    def __init__(self, state: DashboardState, rows: list[DeviceRow], hidden: list[DeviceRow], now: float, view: View):
        self.state, self.rows, self.hidden, self.now, self.view = state, rows, hidden, now, view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        threshold = self.view.sqi_threshold if self.view.sqi_threshold is not None else sqi_threshold()
        device_width = max((len(d) for d in self.state.devices), default=0)
        daemon_width = max((len(daemon_of(r)) for r in self.state.devices.values()), default=0)
        layout = choose_layout(options.max_width, device_width, self.state.references, daemon_width)
        if len(self.state.daemons.heard) > 1:
            yield _daemon_table(self.state.daemons.heard, self.state.daemons.shared_names(), self.now)
        if self.state.devices:
            yield self._table(layout, threshold)
        if self.hidden:
            yield self._more()
        if not self.state.devices:
            yield Text("No estimates yet.", style="dim")
        else:
            legend = _wrap(_legend(layout, self.rows, self.now, self.view), options.max_width)
            if layout.has("sqi"):
                legend.append(_sqi_line(threshold))
            for line in legend:
                line.stylize("dim")
                yield line
        yield Text(DISCLAIMER, style="bold yellow")

    def _table(self, layout: Layout, threshold: float) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, GAP // 2),
            collapse_padding=True,
            header_style="bold",
        )
        for column, width in zip(layout.columns, layout.widths):
            overflow = "fold" if column.key == "device" else "ellipsis"  # an id wraps rather than lose characters
            table.add_column(
                column.title,
                justify=column.justify,  # type: ignore[arg-type]
                width=width,
                min_width=width,
                max_width=width,
                no_wrap=column.key != "device",
                overflow=overflow,  # type: ignore[arg-type]
            )
        ctx = CellContext(self.now, layout, self.view.trend_mmhg, threshold)
        for row in self.rows:
            table.add_row(*cells(row, ctx))
        return table

    def _more(self) -> Text:
        n = len(self.hidden)
        if self.view.sort == "attention":
            return Text(f"… and {n} more devices, needing less attention", style="dim")
        urgent = sum(attention(r, self.now) <= ATTENTION_RANK for r in self.hidden)
        note = f", {urgent} needing attention (--sort attention shows them first)" if urgent else ""
        return Text(f"… and {n} more devices{note}", style="bold" if urgent else "dim")


def render(state: DashboardState, now: float | None = None, max_rows: int = 40, view: View = View()) -> Group:
    """The whole screen for `state` at time `now` (monotonic): header, one row per device in `view.sort` order
    (the first `max_rows`), legend and the research-use line."""
    now = time.monotonic() if now is None else now
    rows = sort_rows(list(state.devices.values()), view.sort, now)
    return Group(_header(state, now, view), _Body(state, rows[:max_rows], rows[max_rows:], now, view))
