"""The daemon's tracking, PPG only, on AIST: people at rest over four weeks, a wrist sensor, a cuff per session.

`python -m p2p_stream.offline.aist_tracking --out docs/results/tracking/aist.md` (also in `make results`). The
model is the one the daemon ships (`assets/tracking.json`, fitted on stress_beats_zjx's finger PPG), so every
AIST person is out of sample. Per session, the beat features are found by the daemon's own streaming detector
(`beats/device_beats.py`) in each non-overlapping 8-s row (`load_aist_wrist`'s rows: each its own recording) and
their medians taken over the session. Calibrated on each person's first session (its cuff reading, its features'
medians), scored on the seven later ones: the cuff + the change the PPG-only way predicts, against carrying the
cuff forward. At rest nothing should move: the target (issue 25) is MASE ≤ 1.02, "does no harm".

Scored as if tracking held across sessions (elapsed time 0): what the features' change between two wearings of the
sensor is worth. The daemon tracks only within `HORIZON_S` of a reading, so on these sessions, days apart, it
carries the cuff forward (MASE 1 by construction): this is the measurement that set the horizon.
"""

from __future__ import annotations

import numpy as np

from p2p_stream.beats.device_beats import DeviceBeats
from p2p_stream.model.tracking import Tracker, feature_vector, median_features
from p2p_stream.offline.beat_tracking import mase, write_report
from p2p_stream.offline.datasets.aist_wrist import (
    DBP_COL,
    FIRST_ROW,
    FS_HZ,
    ROW_S,
    SBP_COL,
    find_root,
    read_session,
    session_files,
)

EVERY = 5  # every fifth row: rows that do not overlap (aist_wrist.py)


def session_features(table: np.ndarray) -> np.ndarray:
    """The session's median feature vector (model/tracking.py's order) over its non-overlapping rows."""
    rows = []
    for row in table[FIRST_ROW::EVERY, :250]:
        beats = DeviceBeats()
        beats.add_ppg(row.astype(np.float32), 0.0, FS_HZ)
        vector = feature_vector(beats.features(0.0, ROW_S))
        if vector is not None:
            rows.append(vector)
    baseline = median_features(rows)
    return np.full(4, np.nan) if baseline is None else baseline


def evaluate(data: str = "../shared/data") -> dict:
    tracker = Tracker.load(ppg_only=True)
    sessions: dict[str, list[tuple[int, int, float, float, np.ndarray]]] = {}
    for subject, week, session, path in session_files(find_root(data)):
        table = read_session(path)
        sessions.setdefault(subject, []).append(
            (week, session, float(table[0, SBP_COL]), float(table[0, DBP_COL]), session_features(table))
        )
    err, carry, person, change, features = [], [], [], [], []
    for k, (_, rows) in enumerate(sorted(sessions.items())):
        rows.sort(key=lambda r: (r[0], r[1]))
        _, _, cuff, _, baseline = rows[0]
        for _, _, sbp, _, now in rows[1:]:
            tracked = tracker.track(baseline, now, elapsed_s=0.0)  # the interval's width is not scored here
            delta = 0.0 if tracked is None else tracked.sbp_change
            err.append(cuff + delta - sbp)
            carry.append(cuff - sbp)
            person.append(k)
            change.append(delta)
            features.append(now - baseline)
    err_a, carry_a, person_a = np.array(err), np.array(carry), np.array(person)
    return {
        "persons": len(sessions),
        "sessions": len(err),
        "sbp": mase(err_a, carry_a, person_a),
        "predicted_change": {
            "median_abs": float(np.median(np.abs(change))),
            "p90_abs": float(np.quantile(np.abs(change), 0.9)),
        },
        "feature_change_median_abs": dict(
            zip(("hr_bpm", "rise_ms", "log_amplitude"), np.nanmedian(np.abs(np.array(features))[:, 1:], axis=0))
        ),
    }


def markdown(result: dict) -> str:
    m = result["sbp"]
    f = result["feature_change_median_abs"]
    return "\n".join(
        [
            f"AIST, {result['persons']} persons, {result['sessions']} later sessions, the shipped PPG-only tracking "
            "(stress_beats_zjx's model; AIST out of sample), calibrated on each person's first session.",
            "",
            "| SBP | MASE against carrying the cuff forward | persons better | tracked MAE | carry-forward MAE |",
            "|---|---|---|---|---|",
            f"| PPG only | {m['mase']:.3f} [{m['lo']:.2f}, {m['hi']:.2f}] | {m['better']}/{m['persons']} | "
            f"{m['mae']:.2f} | {m['carry_mae']:.2f} |",
            "",
            f"Predicted change: median |Δ| {result['predicted_change']['median_abs']:.1f} mmHg, 90th percentile "
            f"{result['predicted_change']['p90_abs']:.1f}. Median |feature change| since the first session: pulse "
            f"rate {f['hr_bpm']:.1f} bpm, rise time {f['rise_ms']:.1f} ms, log amplitude {f['log_amplitude']:.2f}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="The shipped PPG-only tracking on AIST (at rest, four weeks).")
    parser.add_argument("--data", default="../shared/data", help="the data folder (default ../shared/data)")
    parser.add_argument("--out", type=Path, help="write the table here (markdown) and the numbers beside it (.json)")
    args = parser.parse_args(argv)
    result = evaluate(args.data)
    write_report(markdown(result), result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
