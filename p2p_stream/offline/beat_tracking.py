"""Calibrated tracking from beat features: does the estimate follow the pressure better than the cuff carried forward?

Scored on stress_beats_zjx (`offline/datasets/stress_beats.py`), the one set where pressure moves a lot within a
person, leave-one-subject-out (recording 801 is person 8: one group). Per recording:

- **Units.** Each block, and each 30-s window of a block (at least `MIN_BEATS` beats), reduced to the median of
  every feature and of the reference SBP/DBP over its beats.
- **Calibration.** On the recording's first baseline (BL) block: the cuff reading is that block's median pressure,
  the features' references their medians there. Scored on every unit after that block.
- **Carry forward** (the yardstick): the cuff reading, unchanged.
- **Tracking**: ``cuff + shrink(w · Δf, τ)``, where Δf is the features' change since calibration, w is fitted by
  least squares on the other persons' units (each recording weighted equally), and ``shrink`` pulls the predicted
  change toward 0 by τ mmHg (a soft threshold: a change the features cannot tell from their noise gives the cuff
  value exactly; τ fitted on the same other persons). ECG+PPG reads pulse arrival time and pulse rate; PPG-only
  the pulse rate, rise time and log amplitude.
- **Two cuff readings**: a second calibration on a later block at a pressure ≥ `SECOND_AT_MMHG` from the first;
  the person's own gain on the population's predicted change, ``g = (λ + Δ̂·Δ) / (λ + Δ̂²)`` (Δ the cuff change
  between the two readings, Δ̂ the population's prediction of it), shrunk toward 1 by λ (fitted on the other
  persons); then ``cuff₂ + shrink(g · w · (f − f₂), τ)``. Scored on the units after the second block, against
  carrying the *second* cuff forward; every eligible second block in turn.

MASE is the tracking's absolute error over carry-forward's, each summed over the same units with every person
weighted equally (`person_weights`); below 1 beats the cuff. Its interval: persons resampled with replacement
(`BOOTSTRAP` draws). "Persons better": those whose own ratio is below 1.

The interval after calibration: ``±(h₀ + k·|predicted change|)``, h₀ and k fitted on the other persons to hold 80 %
of their units; its coverage is measured on the held-out person. (The daemon also widens it with time since the
calibration, toward the ±11 mmHg measured on AIST over four weeks: `model/tracking.py`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2p_stream.model.tracking import FEATURES as FEATURE_ORDER
from p2p_stream.model.tracking import SECOND_AT_MMHG, person_gain, shrink  # the daemon's own, fitted here
from p2p_stream.offline.datasets.stress_beats import Beats

FEATURES = {
    "ecg+ppg": ("pat_ms", "hr_bpm"),
    "ppg": ("hr_bpm", "rise_ms", "log_amplitude"),
}
ALL_FEATURES = FEATURE_ORDER  # the daemon's feature vector: one order for the fit and for what it ships
WINDOW_S = 30.0
MIN_BEATS = 10
TAU_GRID = np.arange(0.0, 12.01, 0.5)  # mmHg
LAMBDA_GRID = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # mmHg²: the second reading's weight against the population
MOVED_MMHG, STILL_MMHG = 10.0, 5.0  # a unit where SBP moved more (less) than this since calibration
BOOTSTRAP = 2000
LEVEL = 0.8
TAU_SWEEP = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)  # mmHg: the dead-band table
KAPPA_SWEEP = (0.0, 1.0, 2.0, 3.0)  # the per-feature dead-band, in units of each feature's still-pressure spread


@dataclass
class Units:
    """Blocks or 30-s windows of every recording: median features and pressure; arrays of one length."""

    recording: np.ndarray  # (n,)
    person: np.ndarray  # (n,)
    block: np.ndarray  # (n,) the block's place in its recording
    label: np.ndarray  # (n,) BL, SB, MA, CP, PE, HB
    features: np.ndarray  # (n, len(ALL_FEATURES))
    bp: np.ndarray  # (n, 2) median SBP, DBP

    def take(self, keep: np.ndarray) -> Units:
        return Units(*(getattr(self, k)[keep] for k in ("recording", "person", "block", "label", "features", "bp")))


def beat_features(beats: Beats) -> np.ndarray:
    """(n, len(ALL_FEATURES)) per beat, in ALL_FEATURES order."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_amplitude = np.log(np.where(beats.amplitude > 0, beats.amplitude, np.nan))
    return np.column_stack([beats.pat_ms, beats.hr_bpm, beats.rise_ms, log_amplitude])


def units_of(beats: Beats, window_s: float | None = None) -> Units:
    """Blocks (`window_s` None) or consecutive `window_s` windows within each block, each of ≥ MIN_BEATS beats."""
    f = beat_features(beats)
    rows: dict[str, list] = {"recording": [], "person": [], "block": [], "label": [], "features": [], "bp": []}
    key = np.stack([beats.recording, beats.block], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(key[1:] != key[:-1], axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], len(beats)], strict=True):
        t = beats.t_s[a:b]
        cuts = [np.arange(b - a)] if window_s is None else _windows(t - t[0], window_s)
        for idx in cuts:
            if len(idx) < MIN_BEATS:
                continue
            i = a + idx
            rows["recording"].append(beats.recording[a])
            rows["person"].append(beats.person[a])
            rows["block"].append(beats.block[a])
            rows["label"].append(beats.label[a])
            rows["features"].append(np.nanmedian(f[i], axis=0))
            rows["bp"].append([np.median(beats.sbp[i]), np.median(beats.dbp[i])])
    return Units(**{k: np.asarray(v) for k, v in rows.items()})


def _windows(t: np.ndarray, window_s: float) -> list[np.ndarray]:
    slot = np.floor(t / window_s).astype(int)
    return [np.flatnonzero(slot == s) for s in np.unique(slot)]


@dataclass
class Changes:
    """Every scored unit's change since its recording's calibration: what the models are fitted and scored on."""

    units: Units  # the scored units (after the calibration block)
    cuff: np.ndarray  # (n, 2) the calibration's pressure
    df: np.ndarray  # (n, len(ALL_FEATURES)) feature change since calibration
    dbp: np.ndarray  # (n, 2) true pressure change since calibration


def changes_since_first_baseline(blocks: Units, units: Units) -> Changes:
    """Calibrate each recording on its first BL block (from `blocks`) and take the `units` after that block."""
    keep, cuff, ref = [], [], []
    for r in np.unique(units.recording):
        mine = blocks.recording == r
        baseline = np.flatnonzero(mine & (blocks.label == "BL"))
        if not len(baseline):
            continue
        first = baseline[np.argmin(blocks.block[baseline])]
        later = np.flatnonzero((units.recording == r) & (units.block > blocks.block[first]))
        keep.append(later)
        cuff.append(np.repeat(blocks.bp[first][None], len(later), axis=0))
        ref.append(np.repeat(blocks.features[first][None], len(later), axis=0))
    idx = np.concatenate(keep)
    scored = units.take(idx)
    cuff_all, ref_all = np.concatenate(cuff), np.concatenate(ref)
    return Changes(scored, cuff_all, scored.features - ref_all, scored.bp - cuff_all)


def person_weights(person: np.ndarray) -> np.ndarray:
    """Each unit 1/(its person's units): every person counts once, however many units they have."""
    _, inverse, counts = np.unique(person, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def columns(names: tuple[str, ...]) -> list[int]:
    return [ALL_FEATURES.index(n) for n in names]


@dataclass
class Fit:
    """A tracking model for one target: ``shrink(coef · Δf, tau)``."""

    features: tuple[str, ...]
    coef: np.ndarray  # (len(features),) mmHg per feature unit
    tau: float  # mmHg
    h0: float = 0.0  # the interval: ±(h0 + k·|predicted change|)
    k: float = 0.0

    def change(self, df: np.ndarray) -> np.ndarray:
        """(n, len(ALL_FEATURES)) feature changes → (n,) predicted pressure change, mmHg."""
        x = np.nan_to_num(df[:, columns(self.features)])
        return shrink(x @ self.coef, self.tau)


def fit(c: Changes, target: int, features: tuple[str, ...], rows: np.ndarray) -> Fit:
    """Least squares on `rows` (each person weighted equally), then τ and the interval on the same rows."""
    x = np.nan_to_num(c.df[rows][:, columns(features)])
    y = c.dbp[rows, target]
    w = person_weights(c.units.person[rows])
    sw = np.sqrt(w)[:, None]
    coef = np.linalg.lstsq(x * sw, y * sw[:, 0], rcond=None)[0]
    raw = x @ coef
    errors = [np.sum(w * np.abs(shrink(raw, tau) - y)) for tau in TAU_GRID]
    tau = float(TAU_GRID[int(np.argmin(errors))])
    model = Fit(features, coef, tau)
    model.h0, model.k = _interval(np.abs(model.change(c.df[rows]) - y), np.abs(model.change(c.df[rows])), w)
    return model


def _interval(err: np.ndarray, size: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """The narrowest h0 + k·size (k on a grid) holding `LEVEL` of the weighted errors."""
    best = None
    for k in np.arange(0.0, 1.51, 0.1):
        need = err - k * size
        order = np.argsort(need)
        share = np.cumsum(w[order]) / w.sum()
        h0 = max(0.0, float(need[order][np.searchsorted(share, LEVEL)]))
        width = np.sum(w * (h0 + k * size))
        if best is None or width < best[0]:
            best = (width, h0, float(k))
    return best[1], best[2]


def leave_one_subject_out(
    c: Changes, target: int, features: tuple[str, ...], tau: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each person's units estimated by a model fitted on the others: (predicted change, interval half-width).
    `tau` fixes the dead-band instead of fitting it."""
    pred, half = np.zeros(len(c.dbp)), np.full(len(c.dbp), np.nan)
    for p in np.unique(c.units.person):
        out = c.units.person == p
        model = fit(c, target, features, ~out)
        if tau is not None:
            model.tau = tau
        pred[out] = model.change(c.df[out])
        half[out] = model.h0 + model.k * np.abs(pred[out])
    return pred, half


def feature_dead_band(c: Changes, features: tuple[str, ...], kappa: float) -> np.ndarray:
    """Leave-one-subject-out SBP change with a dead-band per feature instead of on the prediction: each feature's
    change shrunk toward 0 by κ times its spread where pressure held still (1.4826 × the median |Δf| of the other
    persons' units that moved < `STILL_MMHG`), then least squares on the shrunk changes. A feature that has not moved
    beyond its own noise moves nothing."""
    x, y = np.nan_to_num(c.df[:, columns(features)]), c.dbp[:, 0]
    pred = np.zeros(len(y))
    for p in np.unique(c.units.person):
        out = c.units.person == p
        still = ~out & (np.abs(y) < STILL_MMHG)
        xs = shrink(x, kappa * 1.4826 * np.median(np.abs(x[still]), axis=0))
        sw = np.sqrt(person_weights(c.units.person[~out]))
        coef = np.linalg.lstsq(xs[~out] * sw[:, None], y[~out] * sw, rcond=None)[0]
        pred[out] = xs[out] @ coef
    return pred


def mase(err: np.ndarray, carry: np.ndarray, person: np.ndarray, rows: np.ndarray | None = None) -> dict:
    """Tracking over carry-forward, each person weighted equally, with a person-bootstrap interval."""
    rows = np.ones(len(err), bool) if rows is None else rows
    e, cf, p = np.abs(err[rows]), np.abs(carry[rows]), person[rows]
    persons = np.unique(p)
    per_e = np.array([e[p == q].mean() for q in persons])
    per_c = np.array([cf[p == q].mean() for q in persons])
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(persons), size=(BOOTSTRAP, len(persons)))
    boot = per_e[draws].sum(1) / np.maximum(per_c[draws].sum(1), 1e-9)
    return {
        "mase": float(per_e.sum() / per_c.sum()),
        "lo": float(np.quantile(boot, 0.025)),
        "hi": float(np.quantile(boot, 0.975)),
        "mae": float(per_e.mean()),
        "carry_mae": float(per_c.mean()),
        "persons": int(len(persons)),
        "better": int(np.sum(per_e < per_c)),
        "units": int(rows.sum()),
    }


@dataclass
class TwoPoint:
    """Units scored after a second cuff reading: their error under each way and under carrying it forward."""

    person: np.ndarray  # (n,)
    error: np.ndarray  # (n,) two-point tracking − truth
    carry: np.ndarray  # (n,) second cuff − truth
    half: np.ndarray  # (n,) the interval's half-width


def _second_readings(blocks: Units, units: Units, target: int, model: Fit, lam: float, rows: np.ndarray):
    """For each recording among `rows`' persons: every eligible second reading, and the units after it."""
    for r in np.unique(units.recording[rows]):
        mine = np.flatnonzero(blocks.recording == r)
        baseline = mine[blocks.label[mine] == "BL"]
        if not len(baseline):
            continue
        first = baseline[np.argmin(blocks.block[baseline])]
        for second in mine[blocks.block[mine] > blocks.block[first]]:
            observed = blocks.bp[second, target] - blocks.bp[first, target]
            if abs(blocks.bp[second, 0] - blocks.bp[first, 0]) < SECOND_AT_MMHG:
                continue
            after = np.flatnonzero((units.recording == r) & (units.block > blocks.block[second]))
            if not len(after):
                continue
            predicted = float(np.nan_to_num(blocks.features[second] - blocks.features[first])[columns(model.features)]
                              @ model.coef)  # fmt: skip
            g = person_gain(predicted, observed, lam)
            x = np.nan_to_num(units.features[after] - blocks.features[second])[:, columns(model.features)]
            change = shrink(g * (x @ model.coef), model.tau)
            yield after, blocks.bp[second, target], change, g


def two_point(blocks: Units, units: Units, c_blocks: Changes, target: int, features: tuple[str, ...]) -> TwoPoint:
    """Leave-one-subject-out: the population model, λ and the interval from the other persons, the gain from the
    person's own two readings (`c_blocks`: the block changes the population model is fitted on)."""
    out = {"person": [], "error": [], "carry": [], "half": []}
    for p in np.unique(c_blocks.units.person):
        others = c_blocks.units.person != p
        model = fit(c_blocks, target, features, others)
        train = np.isin(units.person, np.unique(c_blocks.units.person[others]))
        lam = min(LAMBDA_GRID, key=lambda x: _weighted_mae(*_two_point_rows(blocks, units, target, model, x, train)))
        err, size, person = _two_point_rows(blocks, units, target, model, lam, train)
        h0, k = _interval(np.abs(err), size, person_weights(person))
        for after, cuff, change, _g in _second_readings(blocks, units, target, model, lam, units.person == p):
            truth = units.bp[after, target]
            out["person"].append(np.full(len(after), p))
            out["error"].append(cuff + change - truth)
            out["carry"].append(np.full(len(after), cuff) - truth)
            out["half"].append(h0 + k * np.abs(change))
    return TwoPoint(**{k: np.concatenate(v) for k, v in out.items()})


def _weighted_mae(err: np.ndarray, _size: np.ndarray, person: np.ndarray) -> float:
    return float(np.sum(person_weights(person) * np.abs(err)))


def _two_point_rows(blocks: Units, units: Units, target: int, model: Fit, lam: float, rows: np.ndarray):
    """(errors, |predicted change|, persons) of the two-point way over `rows`' recordings."""
    err, size, person = [], [], []
    for after, cuff, change, _g in _second_readings(blocks, units, target, model, lam, rows):
        err.append(cuff + change - units.bp[after, target])
        size.append(np.abs(change))
        person.append(units.person[after])
    return np.concatenate(err), np.concatenate(size), np.concatenate(person)


ROWS = ("all", "moved", "still", "SB", "MA", "CP", "BL", "PE")  # where each way is scored
WAYS = ("ecg+ppg", "ppg")


def _rows(c: Changes) -> dict[str, np.ndarray]:
    moved = np.abs(c.dbp[:, 0])
    out = {"all": np.ones(len(moved), bool), "moved": moved > MOVED_MMHG, "still": moved < STILL_MMHG}
    out.update({label: c.units.label == label for label in ROWS[3:]})
    return out


def score(beats: Beats) -> dict:
    """Every table of docs/results.md's tracking section: {kind: {target: {way: {row: mase dict}}}}."""
    blocks = units_of(beats)
    c_blocks = changes_since_first_baseline(blocks, blocks)
    result: dict = {"persons": int(len(np.unique(beats.person))), "recordings": int(len(np.unique(beats.recording)))}
    for kind, units in (("blocks", blocks), ("windows", units_of(beats, WINDOW_S))):
        c = c_blocks if kind == "blocks" else changes_since_first_baseline(blocks, units)
        rows = _rows(c)
        result[kind] = {}
        for t, target in enumerate(("sbp", "dbp")):
            carry = c.dbp[:, t]
            table: dict = {}
            for way in WAYS:
                pred, half = leave_one_subject_out(c, t, FEATURES[way])
                err = c.dbp[:, t] - pred
                table[way] = {name: mase(err, carry, c.units.person, keep) for name, keep in rows.items() if keep.any()}
                table[way]["all"]["coverage"] = float(np.mean(np.abs(err) <= half))
                tp = two_point(blocks, units, c_blocks, t, FEATURES[way])
                table[f"two-point {way}"] = {"all": mase(tp.error, tp.carry, tp.person)}
                table[f"two-point {way}"]["all"]["coverage"] = float(np.mean(np.abs(tp.error) <= tp.half))
            result[kind][target] = table
        result[kind]["dead_band"] = {}  # SBP, ECG+PPG: what a wider dead-band trades
        for tau in TAU_SWEEP:
            err = c.dbp[:, 0] - leave_one_subject_out(c, 0, FEATURES["ecg+ppg"], tau)[0]
            result[kind]["dead_band"][f"{tau:g}"] = {
                name: mase(err, c.dbp[:, 0], c.units.person, rows[name]) for name in ("all", "moved", "still")
            }
        result[kind]["feature_dead_band"] = {}
        for kappa in KAPPA_SWEEP:
            err = c.dbp[:, 0] - feature_dead_band(c, FEATURES["ecg+ppg"], kappa)
            result[kind]["feature_dead_band"][f"{kappa:g}"] = {
                name: mase(err, c.dbp[:, 0], c.units.person, rows[name]) for name in ("all", "moved", "still")
            }
    return result


def shipped(beats: Beats) -> dict:
    """The daemon's tracking model (`model/tracking.py` reads it): SBP fitted on every person; DBP carried forward
    (nothing beat the cuff for DBP after one reading, leave-one-subject-out)."""
    blocks = units_of(beats)
    c = changes_since_first_baseline(blocks, blocks)
    models = {}
    for way in WAYS:
        m = fit(c, 0, FEATURES[way], np.ones(len(c.dbp), bool))
        every = np.ones(len(blocks.bp), bool)
        lam = min(LAMBDA_GRID, key=lambda lam: _weighted_mae(*_two_point_rows(blocks, blocks, 0, m, lam, every)))
        models[way] = {
            "features": list(m.features),
            "coef": [round(float(x), 6) for x in m.coef],
            "tau": m.tau,
            "halfwidth": [round(m.h0, 3), round(m.k, 3)],
            "second_reading_lambda": lam,
        }
    return {"sbp": models, "dbp": None}


def markdown(result: dict) -> str:
    """The tables, one per (unit, target)."""
    lines = [
        f"{result['persons']} persons ({result['recordings']} recordings), leave-one-subject-out. MASE = the way's "
        "absolute error over carrying the cuff forward, every person weighted equally (below 1 beats the cuff); "
        "[95 % person-bootstrap interval]; persons better / persons scored.",
        "",
    ]
    names = {"all": "all later", "moved": f"SBP moved > {MOVED_MMHG:.0f}", "still": f"SBP moved < {STILL_MMHG:.0f}"}
    for kind in ("blocks", "windows"):
        for target in ("sbp", "dbp"):
            table = result[kind][target]
            unit = "blocks" if kind == "blocks" else f"{WINDOW_S:.0f}-s windows"
            carry = table["ecg+ppg"]["all"]["carry_mae"]
            lines += [f"**{target.upper()}, {unit}** (carry-forward MAE {carry:.2f} mmHg)",
                      "", "| way | " + " | ".join(names.get(r, r) for r in ROWS) + " | 80 % interval holds |",
                      "|---|" + "---|" * (len(ROWS) + 1)]  # fmt: skip
            for way, rows in table.items():
                cells = []
                for r in ROWS:
                    m = rows.get(r)
                    cells.append("" if m is None else f"{m['mase']:.3f} [{m['lo']:.2f}, {m['hi']:.2f}] "
                                 f"{m['better']}/{m['persons']}")  # fmt: skip
                lines.append(f"| {way} | " + " | ".join(cells) + f" | {rows['all']['coverage']:.0%} |")
            lines.append("")
    for kind in ("blocks", "windows"):
        lines += [f"**The dead-band's trade, SBP, ECG+PPG, {kind}**: MASE with the predicted change shrunk by τ mmHg "
                  "toward 0 (τ fixed instead of fitted)", "",
                  "| τ (mmHg) | all later | SBP moved > 10 | SBP moved < 5 |",
                  "|---|---|---|---|"]  # fmt: skip
        for tau, m in result[kind]["dead_band"].items():
            lines.append(f"| {tau} | " + " | ".join(f"{m[r]['mase']:.3f}" for r in ("all", "moved", "still")) + " |")
        lines.append("")
        lines += [f"**A dead-band per feature, SBP, ECG+PPG, {kind}**: each feature's change shrunk by κ times its "
                  "spread where pressure held still (`feature_dead_band`)", "",
                  "| κ | all later | SBP moved > 10 | SBP moved < 5 |", "|---|---|---|---|"]  # fmt: skip
        for kappa, m in result[kind]["feature_dead_band"].items():
            lines.append(f"| {kappa} | " + " | ".join(f"{m[r]['mase']:.3f}" for r in ("all", "moved", "still")) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(text: str, result: dict, out) -> None:
    """Print the tables; with `out` (a Path), write them there and the numbers beside it (.json)."""
    import json

    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    from p2p_stream.offline.datasets.stress_beats import load_stress_beats

    parser = argparse.ArgumentParser(description="Calibrated tracking on stress_beats_zjx, leave-one-subject-out.")
    parser.add_argument("--data", default="../shared/data", help="the data folder (default ../shared/data)")
    parser.add_argument("--out", type=Path, help="write the tables here (markdown) and the numbers beside it (.json)")
    parser.add_argument("--ship", type=Path, help="write the tracking model fitted on every person here (json)")
    args = parser.parse_args(argv)
    beats = load_stress_beats(args.data)
    result = score(beats)
    write_report(markdown(result), result, args.out)
    if args.ship:
        model = shipped(beats)
        model["fitted_on"] = (f"stress_beats_zjx, {result['persons']} persons, finger PPG; "
                              "python -m p2p_stream.offline.beat_tracking --ship")  # fmt: skip
        args.ship.write_text(json.dumps(model, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
