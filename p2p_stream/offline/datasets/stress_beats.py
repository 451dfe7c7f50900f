"""Dataset: beat-by-beat blood pressure with ECG R peaks and PPG fiducials through stress tasks (stress_beats_zjx).

25 recordings of 24 adults (github.com/zjx1805/CufflessCentralBloodPressureMonitoring, MIT; SOURCE.md beside the
data): per-beat fiducials already extracted at 1 kHz, not waveforms, from ECG, a finger arterial pressure monitor
(the reference: beat max = SBP, min = DBP) and PPG at up to four sites, in labelled blocks — BL baseline, SB slow
breathing, MA mental arithmetic, CP cold pressor, PE and HB (undefined in the source). Recording 801 is a second
session of person 8: `Beats.person` keeps them in one group for subject-wise splits.

Per beat: the R peak's time, SBP and DBP, and for one PPG site (`site`, finger by default) the pulse arrival time
(`pat_ms` = PPG foot by the intersecting tangent − R peak, the dataset's own definition), the pulse rate from the
R-R interval, the pulse amplitude (PPG max − min, arbitrary units) and the rise time (PPG max − foot).

Cleaning (median-based, as SOURCE.md advises), each rule's drops counted in `Beats.dropped`, in this order:

- ``bp``: SBP outside 60–250 or DBP outside 30–150 mmHg, or DBP ≥ SBP;
- ``no_r``: no R peak;
- ``no_foot``: no foot (or no max) at the site;
- ``rr``: the first beat of a block (no R-R interval), or an R-R interval giving a rate outside 35–200 bpm (a missed
  or extra R peak);
- ``pat``: a pulse arrival time further than `PAT_MADS` median absolute deviations from the recording's median at
  that site (no fixed floor: the ear's arrival time is ~120 ms, the finger's ~250 ms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2p_stream.errors import DatasetError

FS_HZ = 1000.0  # every `…Loc` is a sample index at 1 kHz
SITES = ("finger", "ear", "toe", "feet")
SBP_RANGE, DBP_RANGE = (60.0, 250.0), (30.0, 150.0)  # mmHg; outside is an artefact of the finger monitor
HR_RANGE_BPM = (35.0, 200.0)
PAT_MADS = 5.0
SAME_PERSON = {801: 8}  # recording → the person it is a second session of
_FILE = re.compile(r"^Subject(\d+)Data\.mat$")


@dataclass
class Beats:
    """Every kept beat of every recording, in recording, block and time order; arrays of one length."""

    site: str
    recording: np.ndarray  # (n,) int: the recording's number (`subjectIndex`)
    person: np.ndarray  # (n,) int: the person (801 → 8)
    block: np.ndarray  # (n,) int: the block's place in its recording, from 0
    label: np.ndarray  # (n,) str: BL, SB, MA, CP, PE, HB
    t_s: np.ndarray  # (n,) R peak, s from the recording's start
    sbp: np.ndarray  # (n,) mmHg
    dbp: np.ndarray  # (n,) mmHg
    pat_ms: np.ndarray  # (n,) PPG foot − R peak, ms
    hr_bpm: np.ndarray  # (n,) from the R-R interval before the beat
    amplitude: np.ndarray  # (n,) PPG max − min, the sensor's units
    rise_ms: np.ndarray  # (n,) PPG max − foot, ms
    dropped: dict[str, int] = field(default_factory=dict)  # cleaning rule → beats it dropped
    blocks_total: int = 0  # blocks read, those left empty by the rules included

    def __len__(self) -> int:
        return len(self.sbp)


def find_root(path: str | Path) -> Path:
    """The folder of `Subject<N>Data.mat` files: `path` itself, its `subjects/`, or `stress_beats_zjx/subjects/`."""
    path = Path(path)
    for candidate in (path, path / "subjects", path / "stress_beats_zjx" / "subjects"):
        if candidate.is_dir() and any(_FILE.match(p.name) for p in candidate.iterdir()):
            return candidate
    raise DatasetError(f"{path}: no Subject<N>Data.mat files in it, in subjects/ or in stress_beats_zjx/subjects/")


def load_stress_beats(path: str | Path, site: str = "finger") -> Beats:
    """Every recording under `path` (`find_root`), cleaned by the rules above, at PPG `site`."""
    if site not in SITES:
        raise ValueError(f"unknown PPG site {site!r}; valid: {', '.join(SITES)}")
    root = find_root(path)
    files = sorted((int(_FILE.match(p.name).group(1)), p) for p in root.iterdir() if _FILE.match(p.name))
    parts: list[dict[str, np.ndarray]] = []
    dropped = dict.fromkeys(("bp", "no_r", "no_foot", "rr", "pat"), 0)
    blocks_total = 0
    for number, file in files:
        recording, blocks = _read(file, site)
        if recording != number:
            raise DatasetError(f"{file}: its subjectIndex is {recording}, not the {number} of its name")
        blocks_total += len(blocks)
        parts.append(_clean(recording, blocks, dropped))
    if not parts:
        raise DatasetError(f"{root}: no recordings")
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Beats(site=site, dropped=dropped, blocks_total=blocks_total, **columns)


def _read(file: Path, site: str) -> tuple[int, list[tuple[str, dict[str, np.ndarray]]]]:
    """A recording's number and its blocks: (label, {field: per-beat array in samples or mmHg})."""
    from scipy.io import loadmat  # here: only offline work reads .mat files

    try:
        m = loadmat(file, squeeze_me=True, struct_as_record=False)["mResults"]
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise DatasetError(f"{file}: not a stress_beats_zjx recording ({exc})") from exc
    labels = [str(x) for x in np.atleast_1d(m.Result.eventList)]
    blocks = []
    for k, label in enumerate(labels, start=1):
        event = getattr(m.Analysis, f"Event{k}", None)
        if event is None:
            raise DatasetError(f"{file}: block {k} ({label}) is listed but has no Event{k}")
        names = set(event._fieldnames)
        ppg = f"PPG{site}" if f"PPG{site}FootLoc" in names or site != "finger" else "PPGClip"  # GUI Test2's name

        def column(name: str, names: set[str] = names, event=event) -> np.ndarray:
            return np.atleast_1d(np.asarray(getattr(event, name), dtype=np.float64)) if name in names else None

        n = len(column("BPMax"))
        missing = np.full(n, np.nan)
        blocks.append((label, {
            "sbp": column("BPMax"),
            "dbp": column("BPMin"),
            "r": column("ECGMaxLoc") if "ECGMaxLoc" in names else missing,
            "foot": column(f"{ppg}FootLoc") if f"{ppg}FootLoc" in names else missing,
            "max_loc": column(f"{ppg}MaxLoc") if f"{ppg}MaxLoc" in names else missing,
            "max": column(f"{ppg}Max") if f"{ppg}Max" in names else missing,
            "min": column(f"{ppg}Min") if f"{ppg}Min" in names else missing,
        }))  # fmt: skip
    return int(m.Result.subjectIndex), blocks


def _clean(recording: int, blocks: list, dropped: dict[str, int]) -> dict[str, np.ndarray]:
    """The recording's beats that pass the rules, as columns; `dropped` counts the others by rule."""
    rows: list[dict[str, np.ndarray]] = []
    for k, (label, b) in enumerate(blocks):
        sbp, dbp, r = b["sbp"], b["dbp"], b["r"]
        rr = np.diff(r, prepend=np.nan)  # samples at 1 kHz = ms
        with np.errstate(divide="ignore", invalid="ignore"):  # a repeated R peak: an infinite rate, dropped below
            hr = 60_000.0 / rr
        keep = np.ones(len(sbp), dtype=bool)
        for rule, bad in (
            ("bp", ~((SBP_RANGE[0] <= sbp) & (sbp <= SBP_RANGE[1]) & (DBP_RANGE[0] <= dbp) & (dbp <= DBP_RANGE[1])
                     & (dbp < sbp))),
            ("no_r", ~np.isfinite(r)),
            ("no_foot", ~(np.isfinite(b["foot"]) & np.isfinite(b["max_loc"]))),
            ("rr", ~((HR_RANGE_BPM[0] <= hr) & (hr <= HR_RANGE_BPM[1]))),
        ):  # fmt: skip
            dropped[rule] += int((keep & bad).sum())
            keep &= ~bad
        rows.append({
            "block": np.full(int(keep.sum()), k), "label": np.full(int(keep.sum()), label, dtype=object),
            "t_s": r[keep] / FS_HZ, "sbp": sbp[keep], "dbp": dbp[keep], "pat_ms": (b["foot"] - r)[keep],
            "hr_bpm": hr[keep], "amplitude": (b["max"] - b["min"])[keep], "rise_ms": (b["max_loc"] - b["foot"])[keep],
        })  # fmt: skip
    out = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
    pat = out["pat_ms"]
    if len(pat):  # the recording's own median and spread at this site
        median = np.median(pat)
        mad = np.median(np.abs(pat - median)) or 1.0
        good = np.abs(pat - median) <= PAT_MADS * 1.4826 * mad
        dropped["pat"] += int((~good).sum())
        out = {key: value[good] for key, value in out.items()}
    n = len(out["sbp"])
    out["recording"] = np.full(n, recording)
    out["person"] = np.full(n, SAME_PERSON.get(recording, recording))
    out["label"] = out["label"].astype(str)
    return out
