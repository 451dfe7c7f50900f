"""Converter: any dataset the project reads → the contract's replay CSV, one device per subject, cuff or ABP references.

    p2p convert --dataset ppg_bp --data ../shared/data --subjects 2,3 --fs 250 --out demo.csv

A subject's windows (non-overlapping, in order) are joined into one recording, each a segment of its own (a gap in
`t` marks each join, so replay breaks the daemon's run there); each sample carries its window's
reference (the subject's cuff reading, or for PulseDB the segment's ABP-derived SBP/DBP). Datasets that give the
subject's age and sex (PPG-BP) also get `age` and `sex` columns, which replay sends as the ingest `meta`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from p2p_stream.errors import ConfigError, P2PError
from p2p_stream.offline.datasets import WindowSet, load_dataset, write_replay_csv
from p2p_stream.offline.datasets.replay_csv import Recording
from p2p_stream.tools.common import command, parent_parser, setup_logging

# Window lengths that make each dataset's windows its natural records, so joining them loses nothing.
NATIVE_WINDOW_S = {"ppg_bp": 2.1, "four_wavelength": 10.0, "pulsedb": 10.0, "replay_csv": 10.0}


def subject_age_sex(age: np.ndarray, sex: np.ndarray) -> tuple[float, str]:
    """One subject's age and sex from its windows' (NaN / "" when unknown).

    A replay device has one of each; should a dataset's segments of one subject disagree, the age is their
    median and a contested sex is left unknown rather than guessed.
    """
    ages = age[np.isfinite(age)]
    sexes = {s for s in sex.tolist() if s in ("M", "F")}
    return (float(np.median(ages)) if ages.size else np.nan), (sexes.pop() if len(sexes) == 1 else "")


def recordings_from_windows(ws: WindowSet, prefix: str) -> list[Recording]:
    """One recording per subject: its windows back to back, each sample labelled with its window's reference."""
    recordings = []
    for subject in dict.fromkeys(ws.subject.tolist()):  # first-seen order
        rows = np.flatnonzero(ws.subject == subject)
        n = ws.x.shape[1]
        age, sex = subject_age_sex(ws.age[rows].astype(np.float64), ws.sex[rows].astype(str))
        recordings.append(
            Recording(
                device=f"{prefix}{subject}",
                fs=ws.fs,
                ppg=ws.x[rows].reshape(-1).astype(np.float64),
                sbp_ref=np.repeat(ws.sbp[rows].astype(np.float64), n),
                dbp_ref=np.repeat(ws.dbp[rows].astype(np.float64), n),
                age=age,
                sex=sex,
                starts=tuple(range(0, rows.size * n, n)),  # each window recorded apart: a join between them
            )
        )
    return recordings


def convert(
    dataset: str, path: str, out: Path, fs: float, subjects: list[str] | None = None, channel: str | None = None
) -> list[Recording]:
    options: dict = {"fs": fs, "window_s": NATIVE_WINDOW_S[dataset]}
    if channel:
        options["channel"] = channel
    ws = load_dataset(dataset, path, **options)
    if subjects:
        missing = sorted(set(subjects) - set(ws.subject.tolist()))
        if missing:
            raise P2PError(
                f"subjects {missing} are not in {ws.source}; give some of {sorted(set(ws.subject.tolist()))[:10]}"
            )
        ws = ws.subset(np.isin(ws.subject, subjects))
    recordings = recordings_from_windows(ws, prefix=f"{dataset.replace('_', '')}-")
    write_replay_csv(out, recordings)
    return recordings


@command
def main(argv: list[str] | None = None, prog: str = "make_replay.py") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[parent_parser()]
    )
    p.add_argument("--dataset", required=True, choices=sorted(NATIVE_WINDOW_S))
    p.add_argument("--data", required=True, help="dataset path (a folder, or the .mat/.csv file)")
    p.add_argument("--out", type=Path, required=True, help="replay CSV to write")
    p.add_argument("--fs", type=float, default=125.0, help="sampling rate of the written recording, Hz")
    p.add_argument("--subjects", help="comma-separated subject ids (default: all)")
    p.add_argument("--channel", help="four_wavelength channel")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.fs <= 0:
        raise ConfigError(f"--fs must be > 0 Hz, got {args.fs}")
    subjects = args.subjects.split(",") if args.subjects else None
    recs = convert(args.dataset, args.data, args.out, args.fs, subjects, args.channel)
    seconds = sum(r.ppg.size / r.fs for r in recs)
    print(f"wrote {args.out}: {len(recs)} devices, {seconds:.1f} s of PPG at {args.fs:g} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
