"""AIST wrist PPG: rows read as published, one cuff label per session, sessions kept apart, pulse rate as labelled."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets import load_dataset
from p2p_stream.offline.datasets.aist_wrist import ROW_HOP_SAMPLES, load_aist_wrist
from p2p_stream.ppg.quality import ppg_quality

SAMPLE = Path(__file__).parent / "data" / "aist_sample"
SESSIONS = ["A1/week1/session1", "A1/week2/session1", "B1/week1/session1", "B1/week2/session1"]


def source_rows(record: str) -> np.ndarray:
    """The bundled processed.csv of one session: (10, 253)."""
    (path,) = (SAMPLE / record).glob("*/processed.csv")
    return np.loadtxt(path, delimiter=",")


def test_sample_windows_are_8_s_at_125_hz_from_non_overlapping_rows():
    ws = load_aist_wrist(SAMPLE)
    assert ws.fs == 125.0 and ws.x.shape == (8, 1000) and ws.source == "aist_wrist"
    # 10 rows 1.993 s apart, row 0 dropped (start-up transient); rows 1 and 6 do not overlap (4 rows on would).
    assert [int((ws.record == r).sum()) for r in SESSIONS] == [2, 2, 2, 2]
    assert np.all(np.isfinite(ws.x))
    assert len(load_aist_wrist(SAMPLE, hop_s=2.0)) == 4 * 9  # 2 s at 125 Hz: every row but the first (1.993 s)


def test_labels_are_the_session_cuff_reading_of_the_source_rows():
    ws = load_aist_wrist(SAMPLE)
    for record in SESSIONS:
        rows = source_rows(record)
        one = ws.subset(ws.record == record)
        assert np.all(rows[:, 251:] == rows[0, 251:])  # one cuff reading per session, on every row
        assert np.all(one.sbp == rows[0, 251]) and np.all(one.dbp == rows[0, 252])
        assert set(one.subject) == set(one.group) == {record.split("/")[0]}
    assert np.all(np.isnan(ws.age)) and set(ws.sex) == {""}


def test_sessions_are_distinct_records():
    ws = load_aist_wrist(SAMPLE)
    assert sorted(set(ws.record)) == SESSIONS
    # week 1 and week 2 of A1 carry different cuff readings: they must not be merged into one record.
    a1 = ws.subset(ws.subject == "A1")
    assert {(r, float(s)) for r, s in zip(a1.record, a1.sbp)} == {
        ("A1/week1/session1", 117.0),
        ("A1/week2/session1", 123.0),
    }


def test_windows_at_the_native_rate_are_the_source_rows_verbatim():
    ws = load_aist_wrist(SAMPLE, fs=31.25, window_s=8.0)
    assert ws.x.shape == (8, 250)
    rows = source_rows("B1/week2/session1")
    np.testing.assert_allclose(ws.x[ws.record == "B1/week2/session1"], rows[[1, 6], :250], rtol=1e-6, atol=1e-3)
    every = load_aist_wrist(SAMPLE, fs=31.25, window_s=8.0, hop_s=2.0)  # 2 s hop: every row but the first
    np.testing.assert_allclose(every.x[every.record == "B1/week2/session1"], rows[1:, :250], rtol=1e-6, atol=1e-3)


def alignment_residual(earlier: np.ndarray, later: np.ndarray, shift: float, margin: int = 40) -> float:
    """RMS gap between `later` and `earlier` read `shift` samples on (cubic spline), as a fraction of `later`'s SD."""
    n = np.arange(margin, len(later) - margin - int(np.ceil(shift)))
    gap = CubicSpline(np.arange(len(earlier)), earlier)(n + shift) - later[n]
    return float(np.sqrt(np.mean(gap**2)) / later[margin:-margin].std())


def test_rows_overlap_by_a_fractional_hop_so_they_are_not_joined():
    """Row i+1 is row i shifted by 62.289 samples: sub-sample alignment fits, whole-sample shifts do not."""
    for record in SESSIONS:
        rows = source_rows(record)[:, :250]
        for earlier, later in zip(rows[:-1], rows[1:]):
            assert alignment_residual(earlier, later, ROW_HOP_SAMPLES) < 0.01
            assert min(alignment_residual(earlier, later, 62), alignment_residual(earlier, later, 63)) > 0.05


def test_max_windows_per_session_keeps_evenly_spaced_windows():
    every = load_aist_wrist(SAMPLE, fs=31.25, hop_s=2.0)
    few = load_aist_wrist(SAMPLE, fs=31.25, hop_s=2.0, max_windows_per_session=3)
    assert [int((few.record == r).sum()) for r in SESSIONS] == [3, 3, 3, 3]
    for record in SESSIONS:
        np.testing.assert_array_equal(few.x[few.record == record], every.x[every.record == record][[0, 4, 8]])


def test_pulse_rate_follows_the_dataset_hr_column():
    """HR is one value per session and runs a median 3 bpm below the PPG's own rate (full set; B1 week 1: 7 bpm)."""
    ws = load_aist_wrist(SAMPLE)
    labelled, measured = [], []
    for record in SESSIONS:
        hr = source_rows(record)[0, 250]
        rates = []
        for window in ws.x[ws.record == record]:
            q = ppg_quality(window, ws.fs)
            assert q.ok, (record, q)
            rates.append(q.hr_bpm)
        assert max(rates) - min(rates) < 6, (record, rates)  # steady within a session (A1 week 2: 71 → 76)
        assert abs(np.median(rates) - hr) < 10, (record, rates, hr)
        labelled.append(hr)
        measured.append(np.median(rates))
    assert np.array_equal(np.argsort(labelled), np.argsort(measured))  # 48 < 56 < 71 < 74 bpm, in the same order


def test_accepts_the_parent_folder(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "aist_wrist_ppg")
    assert load_dataset("aist_wrist", tmp_path).fingerprint() == load_aist_wrist(SAMPLE).fingerprint()


def test_wrong_folder(tmp_path):
    with pytest.raises(DatasetError, match="not an AIST wrist PPG folder"):
        load_aist_wrist(tmp_path)


def test_malformed_session_file(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "d")
    (path,) = (tmp_path / "d" / "A1" / "week1" / "session1").glob("*/processed.csv")
    path.write_text("1.0,2.0,3.0\n")
    with pytest.raises(DatasetError, match=r"processed.csv: expected rows of 253 columns"):
        load_aist_wrist(tmp_path / "d")


def test_window_longer_than_a_row_is_refused():
    with pytest.raises(DatasetError, match=r"rows are 8 s long .* window_s must be ≤ 8, got 10"):
        load_aist_wrist(SAMPLE, window_s=10.0)


def test_full_dataset(shared_data):
    root = shared_data / "aist_wrist_ppg"
    if not root.is_dir():
        pytest.skip("../shared/data/aist_wrist_ppg is not on this machine")
    ws = load_dataset("aist_wrist", shared_data)
    assert ws.n_subjects == 11 and len(set(ws.record)) == 88
    assert ws.sbp.min() == 89 and ws.sbp.max() == 133
    assert all((ws.subject == s).sum() > 0 for s in ["A1", "A4", "B3", "C4"])
