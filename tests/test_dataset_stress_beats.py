"""The stress_beats_zjx loader (issue 25, deliverable 1): beats by recording, block and person, the dataset's own
fiducials, cleaning rules that say what each drops. The shipped sample (one recording, tests/data) always; the whole
set where ../shared/data is on the machine, checked against the figures its SOURCE.md states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets.stress_beats import load_stress_beats

SAMPLE = Path(__file__).parent / "data" / "stress_beats_sample"


def test_the_sample_recording_is_read_with_its_blocks_and_its_finger_ppg_under_its_other_name():
    b = load_stress_beats(SAMPLE)
    assert set(b.recording) == {101} and set(b.person) == {101}
    assert b.blocks_total == 10  # BL CP BL MA BL SB BL HB BL BL
    assert list(dict.fromkeys(b.label)) == ["BL", "CP", "MA", "SB", "HB"]
    assert np.all(np.diff(b.t_s[b.block == 0]) > 0)  # in time order within a block
    assert 150 < np.median(b.pat_ms) < 400 and 40 < np.median(b.hr_bpm) < 150  # finger arrival time, pulse rate
    assert np.all(b.dbp < b.sbp) and np.all(b.rise_ms > 0)
    kept = len(b)
    assert kept + sum(b.dropped.values()) > kept > 0  # some beats dropped, each under a rule
    cp = np.median(b.sbp[b.label == "CP"]) - np.median(b.sbp[(b.label == "BL") & (b.block == 0)])
    assert cp > 5  # the cold pressor raises the pressure


def test_an_unknown_site_or_folder_says_what_would_be_right(tmp_path):
    with pytest.raises(ValueError, match="unknown PPG site 'wrist'; valid: finger, ear, toe, feet"):
        load_stress_beats(SAMPLE, site="wrist")
    with pytest.raises(DatasetError, match="no Subject<N>Data.mat files"):
        load_stress_beats(tmp_path)


def test_the_whole_set_is_what_its_source_says(shared_data):
    b = load_stress_beats(shared_data)
    assert len(set(b.recording)) == 25 and len(set(b.person)) == 24  # 801 is person 8
    blocks = {}
    for recording, block, label in zip(b.recording, b.block, b.label):
        blocks[(recording, block)] = label
    counts = {label: list(blocks.values()).count(label) for label in set(blocks.values())}
    assert counts == {"BL": 89, "SB": 24, "MA": 25, "CP": 21, "PE": 47, "HB": 2}  # SOURCE.md's block counts
    # Mean change of the block median SBP from each recording's first baseline (SOURCE.md: SB −4.7, MA +10.4,
    # CP +19.1 mmHg).
    change: dict[str, list[float]] = {}
    for recording in set(b.recording):
        mine = b.recording == recording
        medians = [(b.label[mine & (b.block == k)][0], np.median(b.sbp[mine & (b.block == k)]))
                   for k in sorted(set(b.block[mine]))]  # fmt: skip
        base = next(s for label, s in medians if label == "BL")
        for label, s in medians:
            change.setdefault(label, []).append(s - base)
    assert np.mean(change["SB"]) < -2 and 5 < np.mean(change["MA"]) < 15 and 15 < np.mean(change["CP"]) < 25
    assert 0.05 < b.dropped["no_foot"] / (len(b) + sum(b.dropped.values())) < 0.2  # ~11 % of finger beats
    ear = load_stress_beats(shared_data, site="ear")
    assert 80 < np.median(ear.pat_ms) < 180 < np.median(b.pat_ms)  # the ear's arrival time is the shorter
