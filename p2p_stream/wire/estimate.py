"""Estimate: the `sbp.<device>` message declared once — each key's type, unit, when it is present, and when it is nil.

The worker builds plain dicts with these keys (in `NAMES` order); the dashboard, the recorder, the tests and
docs/protocol.md (its tables are `markdown()`, checked by tests/test_estimate_declaration.py) read them from here.

An estimate's *status* picks the column of the nil rules that applies to it:

    ok        `ok` true: the window passed the quality gate and the model answered with finite numbers
    rejected  `ok` false, `reason` other than `gap`: the gate refused the window, or the model gave no usable answer
    gap       `ok` false, `reason` "gap": no window, a marker that the device's stream broke
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from p2p_stream.ids import DEVICE_RE
from p2p_stream.wire.protocol import VERSION

OK, REJECTED, GAP = "ok", "rejected", "gap"  # GAP is also the break marker's `reason`
STATUSES = (OK, REJECTED, GAP)
VALUE, NIL, EITHER, ABSENT = "value", "nil", "value or nil", "absent"  # a key's value under one status

# When an optional key is in the map at all. ALWAYS and NOT_OK follow from the message; the others from the daemon.
ALWAYS, INTERVAL, EPOCH, CLUSTER, NOT_OK, REF = "always", "interval", "epoch", "cluster", "not_ok", "ref"
CARRIED = "carried"
WHEN = {
    ALWAYS: "always",
    INTERVAL: "the model has an interval",
    EPOCH: "the daemon has a state store (`state.path`)",
    CLUSTER: "the daemon is one of a cluster (`cluster.id`)",
    NOT_OK: "`ok` is false",
    REF: "the device's ingest carried `ref` (the latest is echoed): a cuff reading, a replay's reference",
    CARRIED: "the calibration applied, or the facts the model read, were kept from an earlier stream of the session",
}
# a float may come as a msgpack int
TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,)}


@dataclass(frozen=True)
class Field:
    """One key of the estimate map."""

    name: str
    type: str  # a TYPES key
    unit: str  # "" when it has none
    present: str  # a WHEN key
    nil: tuple[str, str, str]  # VALUE / NIL / EITHER / ABSENT under each of STATUSES
    meaning: str
    low: float | None = None  # the value's bounds, inclusive, when it has them
    high: float | None = None
    nil_note: str = ""  # when an EITHER is nil

    def under(self, status: str) -> str:
        return self.nil[STATUSES.index(status)]


_V, _OK, _BOUND = (VALUE, VALUE, VALUE), (VALUE, NIL, NIL), (EITHER, NIL, NIL)  # the cells of the nil rules
_HR_NIL = (
    "rejected: nil when the quality gate refused the window, or the backend gave no answer at all; the pulse when the "
    "window passed the gate but got no finite number (`nan`, `backend_unavailable`)"
)
_INTERVAL_NIL = "ok: nil only when the model's interval for the window was not finite (never with a head's)"
# fmt: off
FIELDS: tuple[Field, ...] = (
    Field("v", "int", "", ALWAYS, _V, "protocol version", 1, 1),
    Field("device", "str", "", ALWAYS, _V, "device id, equal to the topic's suffix"),
    Field("seq", "int", "", ALWAYS, _V, "per-device estimate counter, from 0 (again from 0 for a new stream)", 0),
    Field("t", "float", "s", ALWAYS, _V, "Unix time of the window's last sample; for a `gap`, of the last sample "
          "before the break (after a `resync`, the new run's first `t0`)"),
    Field("window_s", "float", "s", ALWAYS, _V, "window length; for a `gap`, the configured `windowing.window_s`", 0),
    Field("sbp", "float", "mmHg", ALWAYS, _OK, "systolic estimate, smoothed over the device's last accepted windows"),
    Field("dbp", "float", "mmHg", ALWAYS, _OK, "diastolic estimate, smoothed like `sbp`"),
    Field("sbp_window", "float", "mmHg", ALWAYS, _OK, "this window's own SBP (calibrated if `calibrated`), unsmoothed"),
    Field("dbp_window", "float", "mmHg", ALWAYS, _OK, "this window's own DBP, like `sbp_window`"),
    Field("ok", "bool", "", ALWAYS, _V, "true when the window passed the quality gate and the model answered"),
    Field("sqi", "float", "", ALWAYS, _V, "signal quality index; 0 for a `gap` and for most rejections", 0, 1),
    Field("hr", "float", "bpm", ALWAYS, (VALUE, EITHER, NIL), "pulse rate over the window", nil_note=_HR_NIL),
    Field("pat_ms", "float", "ms", ALWAYS, _BOUND, "median pulse arrival time over the window (ECG R peak → PPG "
          "foot, `ecg.<device>`); nil without a usable ECG", 0, 1000, nil_note="ok: nil when the device sends no "
          "ECG, or too few of the window's beats had an R peak before them"),
    Field("calibrated", "bool", "", ALWAYS, _V, "true when a calibration of this device was applied (false if not ok)"),
    Field("basis", "str", "", ALWAYS, _OK, "what the number rests on: one of the bases below"),
    Field("session", "int", "", ALWAYS, _V, "the device's wearer session: a new number when a new wearer begins (a "
          "`wearer` change, a counter reset, `end_session`); its calibration and facts apply to it alone", 1),
    Field("model", "str", "", ALWAYS, _V, "`<name>@<first 8 hex of the weights' SHA-256>`"),
    Field("latency_ms", "float", "ms", ALWAYS, _V, "from the arrival of the window's last sample to publication", 0),
    Field("sbp_lo", "float", "mmHg", INTERVAL, _BOUND, "lower bound of the SBP interval, smoothed like `sbp`",
          nil_note=_INTERVAL_NIL),
    Field("sbp_hi", "float", "mmHg", INTERVAL, _BOUND, "upper bound of the SBP interval, smoothed like `sbp`",
          nil_note=_INTERVAL_NIL),
    Field("dbp_lo", "float", "mmHg", INTERVAL, _BOUND, "lower bound of the DBP interval, smoothed like `dbp`",
          nil_note=_INTERVAL_NIL),
    Field("dbp_hi", "float", "mmHg", INTERVAL, _BOUND, "upper bound of the DBP interval, smoothed like `dbp`",
          nil_note=_INTERVAL_NIL),
    Field("interval", "float", "", INTERVAL, _V, "the interval's level, e.g. 0.8: the true value inside it 80 % of the "
          "time, as measured", 0, 1),
    Field("epoch", "int", "", EPOCH, _V, "the daemon start that published it: 1, 2, 3, … (below)", 1),
    Field("daemon", "str", "", CLUSTER, _V, "the id of the daemon that estimated it (below)"),
    Field("reason", "str", "", NOT_OK, (ABSENT, VALUE, VALUE), "why there is no number: one of the reasons below"),
    Field("ref_sbp", "float", "mmHg", REF, _V, "echo of the ingest's `ref.sbp`"),
    Field("ref_dbp", "float", "mmHg", REF, _V, "echo of the ingest's `ref.dbp`"),
    Field("carried", "list", "", CARRIED, (VALUE, ABSENT, ABSENT), "what comes from before this stream (a restart, an "
          "eviction, a pause), of the same session: `calibration`, `facts` or both"),
)
# fmt: on
FIELD = {f.name: f for f in FIELDS}
NAMES = tuple(FIELD)  # in the order the worker builds them
ALWAYS_KEYS = tuple(f.name for f in FIELDS if f.present == ALWAYS)
INTERVAL_KEYS = ("sbp_lo", "sbp_hi", "dbp_lo", "dbp_hi")  # the prediction interval, mmHg (`interval`: its level)
REF_KEYS = ("ref_sbp", "ref_dbp")
TOGETHER = tuple(tuple(f.name for f in FIELDS if f.present == p) for p in (INTERVAL, REF))  # present all or none

BASES = {  # `basis` → what an estimate with it is worth
    "population": "nothing known of the wearer: the adult population's blood pressure (a national survey's mean), "
    "the same for everyone",
    "age_sex": "the wearer's age and/or sex (`meta`): the population's blood pressure at that age and sex",
    "ppg": "the network's reading of the PPG (a checkpoint whose answer depends on the waveform)",
    "cuff": "a cuff reading (`calibrate`) carried forward: the signal has not moved it",
    "cuff+tracking": "a cuff reading moved by the change of the pulse since it was taken, for an hour after it: the "
    "pulse arrival time with an ECG (`ecg.<device>`); with `calibration.tracking` ppg, else the PPG's pulse "
    "rate, rise time and amplitude",
}
CALIBRATED_BASES = ("cuff", "cuff+tracking")

REASONS = {  # `reason` → (status, meaning)
    "too_short": (REJECTED, "the window is shorter than the quality gate's minimum"),
    "nan": (REJECTED, "non-finite samples (quality gate), or the model's answer was not finite"),
    "flatline": (REJECTED, "the signal is flat, or holds still too long (quality gate)"),
    "clipping": (REJECTED, "the signal sits at its top or bottom too often (quality gate)"),
    "no_pulse": (REJECTED, "no pulse period found, or one too weak (`sqi` below the gate's minimum)"),
    "backend_unavailable": (REJECTED, "the model's backend gave no answer in time (after its retries)"),
    GAP: (GAP, "no window: the device's stream broke (a lost message, a time jump, NaN samples, a restart)"),
}


def status_of(e: Mapping) -> str:
    """OK, REJECTED or GAP: which column of the nil rules applies to estimate `e`."""
    if e.get("ok") is True:
        return OK
    return GAP if e.get("reason") == GAP else REJECTED


def check_estimate(e: object) -> list[str]:
    """What in `e` breaks the declaration, one line per rule broken; [] for a well-formed estimate."""
    if not isinstance(e, Mapping):
        return [f"an estimate is a map, not {type(e).__name__}"]
    status = status_of(e)
    problems = [f"undeclared key {k!r}" for k in e if k not in FIELD]
    for f in FIELDS:
        rule = f.under(status)
        if f.name not in e:
            if f.present == ALWAYS or (f.present == NOT_OK and rule != ABSENT):
                problems.append(f"{f.name!r} missing ({WHEN[f.present]})")
            continue
        v = e[f.name]
        if rule == ABSENT:
            problems.append(f"{f.name!r} present (status {status})")
        elif v is None:
            if rule == VALUE:
                problems.append(f"{f.name!r} is nil (status {status})")
        elif rule == NIL:
            problems.append(f"{f.name!r} is {v!r}, not nil (status {status})")
        elif type(v) not in TYPES[f.type] or (f.type == "float" and not math.isfinite(v)):
            problems.append(f"{f.name!r} is {v!r} ({type(v).__name__}), not a finite {f.type}")
        elif f.low is not None and v < f.low:
            problems.append(f"{f.name!r} is {v!r}, below {f.low:g}")
        elif f.high is not None and v > f.high:
            problems.append(f"{f.name!r} is {v!r}, above {f.high:g}")
    for group in TOGETHER:
        if 0 < sum(k in e for k in group) < len(group):
            problems.append(f"{', '.join(group)} come together; present: {', '.join(k for k in group if k in e)}")
    device = e.get("device")
    if isinstance(device, str) and not DEVICE_RE.fullmatch(device):
        problems.append(f"'device' {device[:80]!r} is not 1–64 of [A-Za-z0-9_.:-]")
    reason = e.get("reason")
    if isinstance(reason, str) and reason not in REASONS:
        problems.append(f"'reason' {reason!r} is not one of {', '.join(REASONS)}")
    basis = e.get("basis")
    if isinstance(basis, str) and basis not in BASES:
        problems.append(f"'basis' {basis!r} is not one of {', '.join(BASES)}")
    return problems


def example_estimate(
    reason: str | None = None,
    *,
    interval: float | None = None,
    ref: tuple[float, float] | None = None,
    **values: object,
) -> dict:
    """A well-formed estimate map, for tests and examples: ok (120/80 mmHg) without `reason`; a `gap` marker; or a
    window rejected for `reason` (by the quality gate: `sqi` 0, `hr` nil, unless given).

    `interval`: its level (e.g. 0.8), with bounds ±10/±6 mmHg around `sbp`/`dbp` when ok. `ref`: (ref_sbp, ref_dbp).
    `values`: any declared key's value (`device="w-1"`, `epoch=2`, `sbp_lo=…`). Raises ValueError for an undeclared
    key, or a result that breaks the declaration (`check_estimate`): to test what a malformed one does, change a
    well-formed one (`{**example_estimate(), "sbp": "high"}`).
    """
    unknown = [k for k in values if k not in FIELD]
    if unknown:
        raise ValueError(f"not keys of an estimate: {', '.join(unknown)}; declared: {', '.join(NAMES)}")
    ok = reason is None
    sbp, dbp = (values.get("sbp", 120.0), values.get("dbp", 80.0)) if ok else (None, None)
    e: dict = {
        "v": VERSION,
        "device": "dev-1",
        "seq": 0,
        "t": 1_700_000_000.0,
        "window_s": 10.0,
        "sbp": sbp,
        "dbp": dbp,
        "sbp_window": sbp,
        "dbp_window": dbp,
        "ok": ok,
        "sqi": 0.9 if ok else 0.0,
        "hr": 72.0 if ok else None,
        "pat_ms": None,
        "calibrated": False,
        "basis": ("cuff" if values.get("calibrated") else "population") if ok else None,
        "session": 1,
        "model": "example@00000000",
        "latency_ms": 5.0,
    }
    if interval is not None:
        bounds = (sbp - 10.0, sbp + 10.0, dbp - 6.0, dbp + 6.0) if ok else (None,) * 4  # type: ignore[operator]
        e.update(zip(INTERVAL_KEYS, bounds), interval=interval)
    if reason is not None:
        e["reason"] = reason
    if ref is not None:
        e["ref_sbp"], e["ref_dbp"] = float(ref[0]), float(ref[1])
    e.update(values)
    problems = check_estimate(e)
    if problems:
        raise ValueError(f"not a well-formed estimate: {'; '.join(problems)}")
    return {k: e[k] for k in NAMES if k in e}


# --- docs/protocol.md: its estimate tables, generated from the declaration --------------------------------------

BEGIN = "<!-- estimate tables: generated by `python -m p2p_stream.wire.estimate --write docs/protocol.md` -->"
END = "<!-- end of the generated estimate tables -->"


def markdown() -> str:
    """The declaration as docs/protocol.md shows it: keys, nil rules by status, reasons (markers included)."""

    def code(name: str) -> str:
        return f"`{name}`"

    def bounds(f: Field) -> str:
        if f.low is not None and f.high is not None:
            return f" = {f.low:g}" if f.low == f.high else f" {f.low:g}–{f.high:g}"
        return f" ≥ {f.low:g}" if f.low is not None else ""

    lines = [BEGIN, "", "| key | type | unit | present when | meaning |", "|---|---|---|---|---|"]
    lines += [
        f"| {code(f.name)} | {f.type}{bounds(f)} | {f.unit or '—'} | {WHEN[f.present]} | {f.meaning} |" for f in FIELDS
    ]
    lines += [
        "",
        "Nil rules, by status (`ok`: ok true; `rejected`: ok false, any reason but `gap`; `gap`: ok false, the",
        "break marker). *value*: never nil; *nil*: always nil; *absent*: the key is not in the map.",
        "",
    ]
    lines += ["| key | " + " | ".join(STATUSES) + " | when nil |", "|---|" + "---|" * (len(STATUSES) + 1)]
    lines += [f"| {code(f.name)} | " + " | ".join(f.nil) + f" | {f.nil_note or '—'} |" for f in FIELDS]
    lines += ["", "| reason | status | meaning |", "|---|---|---|"]
    lines += [f"| {code(r)} | {status} | {meaning} |" for r, (status, meaning) in REASONS.items()]
    lines += ["", "| basis | what the number rests on |", "|---|---|"]
    lines += [f"| {code(b)} | {meaning} |" for b, meaning in BASES.items()]
    return "\n".join([*lines, "", END])


def documented(text: str) -> str:
    """The generated block of a docs/protocol.md text, from BEGIN to END ("" when it has none)."""
    start, end = text.find(BEGIN), text.find(END)
    return text[start : end + len(END)] if 0 <= start < end else ""


def write_doc(path: Path) -> None:
    """Replace the generated block of `path` with `markdown()`."""
    text = path.read_text()
    old = documented(text)
    if not old:
        raise ValueError(f"{path} has no block from {BEGIN!r} to {END!r}")
    path.write_text(text.replace(old, markdown()))


if __name__ == "__main__":  # python -m p2p_stream.wire.estimate [--write docs/protocol.md]
    if sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        write_doc(Path(sys.argv[2]))
    else:
        print(markdown())
