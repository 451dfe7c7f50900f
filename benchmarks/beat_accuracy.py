"""Benchmark: how close the streaming detectors come to beats known exactly (constructed signals), per rate and noise.

    python benchmarks/beat_accuracy.py [--out docs/perf/beat_accuracy.json]

For each sampling rate and noise level: 60 s of constructed ECG and PPG (`p2p_stream/beats/constructed.py`; the
arrival time drifting 180 → 340 ms so every lag is met), fed in 0.2-s messages to `DeviceBeats` as the daemon feeds
them. Reported: the feet and R peaks found (of those constructed, the first and last beat aside), the largest and
the median error of each, and of the arrival time per beat (foot − its R peak). Deterministic (seeded): the figures
are the detectors', not the machine's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from p2p_stream.beats.constructed import constructed
from p2p_stream.beats.device_beats import DeviceBeats

RATES = (31.25, 62.5, 125.0, 250.0, 500.0)
NOISES = (0.01, 0.05)


def measure(fs: float, noise: float) -> dict:
    n = int(60.0 / 0.8) - 1
    t, ecg, ppg, r, feet = constructed(fs, 60.0, np.linspace(0.18, 0.34, n + 1)[: len(np.arange(0.5, 59.0, 0.8))],
                                       noise=noise)  # fmt: skip
    beats = DeviceBeats()
    chunk = max(1, int(round(0.2 * fs)))
    for i in range(0, len(t), chunk):
        beats.add_ppg(ppg[i : i + chunk], t[i], fs)
        beats.add_ecg(ecg[i : i + chunk], t[i], fs)
    beats.detect()
    found_feet = np.array([b.foot_t for b in beats.beats])
    found_r = np.asarray(beats.r_peaks)
    inner_f, inner_r = feet[2:-1], r[2:-1]
    foot_err = found_feet[np.abs(found_feet[:, None] - inner_f).argmin(0)] - inner_f
    r_err = found_r[np.abs(found_r[:, None] - inner_r).argmin(0)] - inner_r
    pat_err = foot_err - r_err
    ms = lambda e: (round(float(np.max(np.abs(e))) * 1000, 2), round(float(np.median(np.abs(e))) * 1000, 2))  # noqa: E731
    return {
        "fs": fs, "noise": noise, "beats": len(inner_f),
        "feet_found": int(np.sum(np.abs(foot_err) < 0.05)), "r_found": int(np.sum(np.abs(r_err) < 0.05)),
        "extra_feet": int(len(found_feet) - len(feet)), "extra_r": int(len(found_r) - len(r)),
        "foot_ms_max_median": ms(foot_err), "r_ms_max_median": ms(r_err), "pat_ms_max_median": ms(pat_err),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    rows = [measure(fs, noise) for noise in NOISES for fs in RATES]
    print("| fs (Hz) | noise | beats | feet found | R found | foot error max / median (ms) | R error | arrival time "
          "error |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for m in rows:
        print(f"| {m['fs']:g} | {m['noise']:g} | {m['beats']} | {m['feet_found']} ({m['extra_feet']:+d}) | "
              f"{m['r_found']} ({m['extra_r']:+d}) | {m['foot_ms_max_median'][0]} / {m['foot_ms_max_median'][1]} | "
              f"{m['r_ms_max_median'][0]} / {m['r_ms_max_median'][1]} | "
              f"{m['pat_ms_max_median'][0]} / {m['pat_ms_max_median'][1]} |")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
