"""What preparing each crop alone does to the answers (issue 17, deliverable 1): the shipped model on every window of
the three datasets, its crops cut from the window prepared whole (before) and each crop prepared alone (now, what
lets the daemon compute a crop once), side by side in one run.

    python benchmarks/crop_prep_accuracy.py [--data ../shared/data] [--window-s 10] [--out runs/crop_prep.json]

Reports per dataset: the published estimate's MAE and its interval's coverage and width (what a user gets), and
the network's own answer (prior + deviation, the part the head shrinks; MAE and ME ± SD against the cuff), with the
mean change between the two preparations. The shipped network was trained on all three sets (bar one demo
subject), so its own scores are in-sample for both arms alike: this measures the change, not generalisation (the
out-of-dataset figures are `make results`'). PPG-BP's segments are 2.1 s and AIST's rows 8 s, so their windows are
at most that long whatever --window-s says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2p_stream.model.estimator import Estimator, run_network  # noqa: E402
from p2p_stream.offline.datasets import load_dataset  # noqa: E402
from p2p_stream.offline.datasets.pool import POOL  # noqa: E402

SEGMENT_S = {"ppg_bp": 2.1, "aist_wrist": 8.0}  # the longest window each set's rows give (PPG-BP: its segments)


def meta_features(age: np.ndarray, sex: np.ndarray) -> np.ndarray:
    from p2p_stream.model.demographics import parse_meta

    return parse_meta(
        [{"age": float(a), "sex": s} if np.isfinite(a) else {"sex": s} for a, s in zip(age, sex)], len(age)
    )


def arm(est: Estimator, x: np.ndarray, meta: np.ndarray, age: np.ndarray, sex: np.ndarray, ref: np.ndarray) -> dict:
    """One preparation's inputs → its scores against the cuff `ref` (N, 2)."""
    deviation, features = run_network(est.model, x, meta, est.label_stats, est.crop)
    published, half, trust = est.head.estimate(deviation, features, age, sex)
    network = est.head.prior.predict(age, sex) + deviation
    err_pub, err_net = published - ref, network - ref
    covered = np.abs(err_pub) <= half
    return {
        "published_mae": np.abs(err_pub).mean(axis=0).round(3).tolist(),
        "coverage": covered.mean(axis=0).round(4).tolist(),
        "halfwidth": half.mean(axis=0).round(3).tolist(),
        "trust": round(float(trust.mean()), 4),
        "network_mae": np.abs(err_net).mean(axis=0).round(3).tolist(),
        "network_me": err_net.mean(axis=0).round(3).tolist(),
        "network_sd": err_net.std(axis=0).round(3).tolist(),
        "_deviation": deviation,
        "_half": half,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--window-s", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("runs/crop_prep.json"))
    args = p.parse_args()
    est = Estimator.load()
    results = {"model": est.name, "window_s": args.window_s, "datasets": {}}
    started = time.perf_counter()
    for name in POOL:
        window_s = min(SEGMENT_S.get(name, args.window_s), args.window_s)
        ws = load_dataset(name, args.data, fs=est.fs, window_s=window_s)
        checks, whole = est.assess_batch(ws.x, ws.fs)
        ok = np.flatnonzero(np.array([q.ok for q in checks]) & np.isfinite(ws.sbp) & np.isfinite(ws.dbp))
        ref = np.stack([ws.sbp[ok], ws.dbp[ok]], axis=1).astype(np.float64)
        age, sex = ws.age[ok].astype(np.float64), ws.sex[ok]
        meta = meta_features(age, sex)
        crops = np.stack(est.crop_inputs(list(ws.x[ok]), [ws.fs] * len(ok)))
        before = arm(est, whole[ok], meta, age, sex, ref)
        now = arm(est, crops, meta, age, sex, ref)
        change = {
            "deviation_mean_abs": np.abs(now.pop("_deviation") - before.pop("_deviation"))
            .mean(axis=0)
            .round(3)
            .tolist(),
            "halfwidth_mean_abs": np.abs(now.pop("_half") - before.pop("_half")).mean(axis=0).round(3).tolist(),
        }
        results["datasets"][name] = {
            "window_s": window_s,
            "windows": len(ok),
            "subjects": len(np.unique(ws.subject[ok])),
            "crops_per_window": int(crops.shape[1]),
            "window_prepared_whole": before,
            "each_crop_alone": now,
            "change": change,
        }
        print(f"{name}: {len(ok)} windows of {window_s} s", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict) -> str:
    rows = [
        "| dataset | windows (subjects) | preparation | published MAE SBP/DBP | coverage SBP/DBP | half-width | "
        "network MAE SBP/DBP | network ME ± SD SBP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in results["datasets"].items():
        for label, key in (("window whole", "window_prepared_whole"), ("each crop alone", "each_crop_alone")):
            a = d[key]
            rows.append(
                f"| {name} ({d['window_s']:g} s) | {d['windows']} ({d['subjects']}) | {label} | "
                f"{a['published_mae'][0]:.2f} / {a['published_mae'][1]:.2f} | "
                f"{a['coverage'][0]:.3f} / {a['coverage'][1]:.3f} | "
                f"{a['halfwidth'][0]:.1f} / {a['halfwidth'][1]:.1f} | "
                f"{a['network_mae'][0]:.2f} / {a['network_mae'][1]:.2f} | "
                f"{a['network_me'][0]:+.2f} ± {a['network_sd'][0]:.2f} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
