"""Dashboard columns: what each column of the device table shows, its fixed width, and which columns fit a width.

Columns in priority order; a narrower terminal leaves columns out from the end of this list and never cuts one:

 1. device     the id, never shortened: the column is as wide as the longest id heard so far
 2. SBP        systolic estimate ± the half-width of its prediction interval, mmHg (`128 ±16`)
 3. DBP        diastolic, the same (`80 ±9`)
 4. updated    seconds since the estimate of the device's latest window, accepted or rejected, arrived
 5. status     the AHA category of the estimate shown, `stale`, or why the latest window was rejected (a `gap`
               marker, which reports a break in the stream and has no window, shows only while nothing follows)
 6. SQI        the latest window's signal quality, 0–1 (red below the quality gate's threshold)
 7. pulse      the median pulse of the device's last accepted windows, bpm
 8. cuff       the reference reading sent with the PPG          } only once some estimate carried one
 9. est−cuff   the estimate minus the cuff reading, mmHg        }
10. daemon     the daemon that made the estimate (a cluster's estimates carry it; only once some did)
11. trend      the last SBP estimates on one fixed mmHg scale for all rows, as many as the width left (≥ 8)

The status is written out ("stage 1 hypertension") when every column fits that way, else short ("stage 1 HTN",
with the legend saying what HTN means). Every width is fixed, so nothing shifts from one frame to the next; the
device column only widens when a device with a longer id appears.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from p2p_stream.tools.dashboard.category import CATEGORIES, bp_category
from p2p_stream.tools.dashboard.state import TREND_POINTS, DeviceRow, interval_of, is_marker, number
from p2p_stream.wire.estimate import CALIBRATED_BASES

GAP = 2  # blank columns between two table columns
STALE_S = 10.0  # an estimate older than this is shown as stale
MIN_TREND = 8  # fewer trend points than this say nothing: the column is left out instead
SPARK = "▁▂▃▄▅▆▇█"
# Written out, and short (explained in the legend), for each category of bp_category.
FULL_LABELS = {
    "crisis": "hypertensive crisis",
    "stage 2": "stage 2 hypertension",
    "stage 1": "stage 1 hypertension",
    "hypotension": "hypotension",
    "elevated": "elevated",
    "normal": "normal",
}
SHORT_LABELS = {**FULL_LABELS, "crisis": "crisis", "stage 2": "stage 2 HTN", "stage 1": "stage 1 HTN"}
# After the status: its calibration or facts were kept from an earlier stream of the wearer's session (a restart, an
# eviction, a pause), not set in this one: the estimate's `carried` (wire/estimate.py). (A category is named only
# for a calibrated estimate, so it needs no mark of its own.)
CARRIED = "⟲"
TRACKED = "↕"  # a calibrated estimate moved by the pulse's change since the cuff reading (`basis` cuff+tracking)
REJECTED_SHORT = "✗ "  # before the reason, for "rejected: "
# An uncalibrated estimate is the population's blood pressure, not the wearer's: it is named by what it rests on
# (its `basis`), never by a category a reader would take for a diagnosis. Written out, and short.
BASIS_LABELS = {
    True: {"population": "population prior", "age_sex": "age/sex prior", "ppg": "uncalibrated"},
    False: {"population": "prior", "age_sex": "prior+age", "ppg": "uncalib."},
}
UNCALIBRATED_STYLE = "dim"


def is_tracked(e: dict) -> bool:
    """Whether estimate `e` is a cuff reading moved by the pulse's change since (`basis` cuff+tracking)."""
    return e.get("basis") == "cuff+tracking"


def is_calibrated(e: dict) -> bool:
    """Whether estimate `e` rests on a cuff reading: its `basis`, or (from a daemon before `basis`) `calibrated`."""
    basis = e.get("basis")
    return basis in CALIBRATED_BASES if isinstance(basis, str) else e.get("calibrated") is True


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int  # characters; 0 for the device and trend columns, whose width the layout sets
    justify: str = "right"


# In priority order (the module docstring says why).
COLUMNS = (
    Column("device", "device", 0, "left"),
    Column("sbp", "SBP", len("128 ±16")),
    Column("dbp", "DBP", len("100 ±10")),
    Column("updated", "updated", len("updated")),
    Column("status", "status", 0, "left"),  # width: STATUS_WIDTH, by labels
    Column("sqi", "SQI", len("0.90")),
    Column("pulse", "pulse", len("pulse")),
    Column("cuff", "cuff", len("182/100")),
    Column("error", "est−cuff", len("est−cuff")),
    Column("daemon", "daemon", 0, "left"),  # width: the longest daemon id in the rows
    Column("trend", "SBP trend", 0, "right"),
)
STATUS_WIDTH = {True: len("stale after a stream gap"), False: len("stage 1 HTN" + CARRIED)}  # by full_labels
REFERENCE_COLUMNS = ("cuff", "error")


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]
    widths: tuple[int, ...]
    full_labels: bool  # status written out, or short with a legend

    def has(self, key: str) -> bool:
        return any(c.key == key for c in self.columns)

    def width_of(self, key: str) -> int:
        return next(w for c, w in zip(self.columns, self.widths) if c.key == key)


def _widths(columns: list[Column], sized: dict[str, int], full_labels: bool) -> list[int]:
    by_key = {**sized, "status": STATUS_WIDTH[full_labels], "trend": MIN_TREND}
    return [by_key.get(c.key, c.width) for c in columns]


def _spare(columns: list[Column], sized: dict[str, int], full_labels: bool, width: int) -> int:
    """Characters left over when `columns` stand in a line `width` wide; negative when they do not fit."""
    return width - sum(_widths(columns, sized, full_labels)) - GAP * (len(columns) - 1)


def choose_layout(width: int, device_width: int, references: bool, daemon_width: int = 0) -> Layout:
    """The columns for a line `width` characters wide: all of them with full labels if they fit, else short labels
    and as many columns, in priority order, as fit; the trend takes what is left (up to TREND_POINTS). The daemon
    column only when some row's estimate names its daemon (`daemon_width` > 0: the longest such name)."""
    columns = [
        c for c in COLUMNS if (references or c.key not in REFERENCE_COLUMNS) and (daemon_width > 0 or c.key != "daemon")
    ]
    sized = {"device": max(device_width, len("device")), "daemon": max(daemon_width, len("daemon"))}
    full_labels = _spare(columns, sized, True, width) >= 0
    while len(columns) > 1 and _spare(columns, sized, full_labels, width) < 0:
        columns.pop()
    widths = _widths(columns, sized, full_labels)
    if columns[-1].key == "trend":
        widths[-1] = min(TREND_POINTS, MIN_TREND + _spare(columns, sized, full_labels, width))
    return Layout(tuple(columns), tuple(widths), full_labels)


def sparkline(values: list[float], lo: float, hi: float) -> str:
    """One block per value on the fixed scale `lo`–`hi` (mmHg): ▁ at or below `lo`, █ at or above `hi`."""
    top = len(SPARK) - 1
    return "".join(SPARK[max(0, min(top, round((v - lo) / (hi - lo) * top)))] for v in values)


def format_age(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def signed(value: int) -> str:
    """`+8`, `-33`, and `0` (never `-0` nor `+0`)."""
    return f"{value:+d}" if value else "0"


def _bp(value: float, lo: float | None, hi: float | None) -> str:
    """`128 ±16`. An interval not centred on the estimate (the model's are; a future one might not be) is shown by
    its wider side, so the range read off the screen always holds the whole interval."""
    if lo is None or hi is None:
        return f"{value:.0f}"
    return f"{value:.0f} ±{max(hi - value, value - lo):.0f}"


@dataclass(frozen=True)
class CellContext:
    now: float  # time.monotonic()
    layout: Layout
    trend_mmhg: tuple[float, float]  # the trend's fixed scale, bottom and top
    sqi_threshold: float  # the quality gate's: lower SQIs are shown in red


def shown_estimate(row: DeviceRow) -> dict | None:
    """The estimate a row shows: the latest accepted one, while later windows are rejected too (None before one)."""
    return row.last_ok


def daemon_of(row: DeviceRow) -> str:
    """The daemon that made the row's latest window's estimate ("" when it does not say: not in a cluster)."""
    daemon = row.latest.get("daemon")
    return daemon if isinstance(daemon, str) else ""


def is_stale(row: DeviceRow, now: float) -> bool:
    return now - row.received > STALE_S


def status_text(row: DeviceRow, now: float, full: bool) -> Text:
    e, shown = row.latest, shown_estimate(row)
    broke = row.gap_at is not None and row.gap_at >= row.received  # no window since the stream's latest break
    if is_stale(row, now):
        return Text("stale" + ((" after a stream gap" if full else ", gap") if broke else ""), style="magenta")
    if is_marker(e):
        return Text("stream gap", style="magenta")
    if not e.get("ok") or shown is None:
        reason = str(e.get("reason", "?"))
        words = "rejected: " + reason
        fits = full and len(words) <= STATUS_WIDTH[True]  # else the short form, which the legend explains
        return Text(words if fits else REJECTED_SHORT + reason, style="bold magenta")
    if not is_calibrated(e):
        label = BASIS_LABELS[full].get(str(e.get("basis")), BASIS_LABELS[full]["ppg"])
        return Text(label + (CARRIED if e.get("carried") else ""), style=UNCALIBRATED_STYLE)
    category = bp_category(shown["sbp"], shown["dbp"])
    labels = FULL_LABELS if full else SHORT_LABELS
    # One character, fits 80 columns; never both (a calibration kept from before a restart applies untracked).
    mark = CARRIED if e.get("carried") else TRACKED if is_tracked(e) else ""
    return Text(labels[category] + mark, style=CATEGORIES[category][0])


def cells(row: DeviceRow, ctx: CellContext) -> list[Text]:
    """The row's cells for the layout's columns, each within its column's width."""
    e, shown = row.latest, shown_estimate(row)
    interval = interval_of(shown)
    slo, shi, dlo, dhi = interval if interval else (None,) * 4
    out: dict[str, Text] = {"device": Text(row.device)}
    if shown is not None:
        style = CATEGORIES[bp_category(shown["sbp"], shown["dbp"])][0] if is_calibrated(e) else ""
        out["sbp"] = Text(_bp(shown["sbp"], slo, shi), style=style)
        out["dbp"] = Text(_bp(shown["dbp"], dlo, dhi), style=style)
    else:
        out["sbp"] = out["dbp"] = Text("—", style="dim")
    out["updated"] = Text(format_age(ctx.now - row.received), style="magenta" if is_stale(row, ctx.now) else "")
    out["status"] = status_text(row, ctx.now, ctx.layout.full_labels)
    sqi = None if is_marker(e) else number(e, "sqi")
    out["sqi"] = Text(
        "—" if sqi is None else f"{sqi:.2f}", style="red" if sqi is not None and sqi < ctx.sqi_threshold else ""
    )
    pulse = row.pulse_bpm()
    out["pulse"] = Text("—" if pulse is None else f"{pulse:.0f}")
    ref_sbp, ref_dbp = number(e, "ref_sbp"), number(e, "ref_dbp")
    out["cuff"] = out["error"] = Text("")
    if ref_sbp is not None and ref_dbp is not None:
        out["cuff"] = Text(f"{ref_sbp:.0f}/{ref_dbp:.0f}")
        if shown is not None:  # from the rounded numbers on screen, so the difference is the one a reader computes
            ds, dd = round(shown["sbp"]) - round(ref_sbp), round(shown["dbp"]) - round(ref_dbp)
            out["error"] = Text(f"{signed(ds)}/{signed(dd)}")
    out["daemon"] = Text(daemon_of(row))
    if ctx.layout.has("trend"):
        points = list(row.history)[-ctx.layout.width_of("trend") :]
        out["trend"] = Text(sparkline(points, *ctx.trend_mmhg), style="dim" if is_stale(row, ctx.now) else "")
    return [out[c.key] for c in ctx.layout.columns]
