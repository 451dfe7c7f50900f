"""Loaders read each dataset as published and yield one common WindowSet; bad input says what is wrong."""

import csv
import shutil

import h5py
import numpy as np
import openpyxl
import pytest

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets import (
    load_dataset,
    load_four_wavelength,
    load_ppg_bp,
    load_pulsedb,
    load_replay_csv,
    read_replay_csv,
    write_replay_csv,
)
from p2p_stream.offline.datasets.replay_csv import Recording

# ---------------------------------------------------------------- PPG-BP (real sample)


def test_ppg_bp_sample_windows_labels_and_duplicates(ppg_bp_sample):
    ws = load_ppg_bp(ppg_bp_sample)
    # 36 files, minus 24_1 (= 23_3), 66_2 (= 66_1) and 403_2 (= 403_1); 231_1 and 231_2 are 4.2 s: two windows each.
    assert len(ws) == 33 + 2
    assert ws.x.shape[1] == 262 and ws.fs == 125.0
    assert not {"24_1", "66_2", "403_2"} & set(ws.record) and {"23_3", "66_1", "403_1"} <= set(ws.record)
    assert set(ws.group[np.isin(ws.subject, ["23", "24"])]) == {"23+24"}
    first = ws.subset(ws.subject == "2")
    assert np.all(first.sbp == 161) and np.all(first.dbp == 89) and first.age[0] == 45 and first.sex[0] == "F"
    assert ws.n_subjects == 12


def test_ppg_bp_accepts_the_parent_folder(tmp_path, ppg_bp_sample):
    shutil.copytree(ppg_bp_sample, tmp_path / "ppg_bp")
    assert len(load_dataset("ppg_bp", tmp_path)) == 35


def test_ppg_bp_resamples_to_other_rates(ppg_bp_sample):
    ws = load_ppg_bp(ppg_bp_sample, fs=100.0, window_s=2.0)
    assert ws.x.shape[1] == 200


def test_ppg_bp_wrong_path(tmp_path):
    with pytest.raises(DatasetError, match="not a PPG-BP folder"):
        load_ppg_bp(tmp_path)


def test_ppg_bp_malformed_segment(tmp_path, ppg_bp_sample):
    shutil.copytree(ppg_bp_sample, tmp_path / "d")
    (tmp_path / "d" / "0_subject" / "2_1.txt").write_text("2438.0\t24x8.0\t2400")
    with pytest.raises(DatasetError, match="2_1.txt: not a list of numbers"):
        load_ppg_bp(tmp_path / "d")


def test_ppg_bp_wrong_sheet(tmp_path, ppg_bp_sample):
    shutil.copytree(ppg_bp_sample, tmp_path / "d")
    (tmp_path / "d" / "PPG-BP dataset.xlsx").write_text("not a workbook")
    with pytest.raises(DatasetError, match="not a readable .xlsx"):
        load_ppg_bp(tmp_path / "d")


def test_ppg_bp_full_shared_set(shared_data):
    ws = load_ppg_bp(shared_data)
    assert ws.n_subjects == 219
    assert len(ws) == 657 - 7 + 2  # seven duplicates dropped, subject 231's two long segments split
    assert 80 <= ws.sbp.min() and ws.sbp.max() <= 182


# ---------------------------------------------------------------- four-wavelength (format fixture)


def write_four_wavelength(root, n_subjects=3, seconds=20, fs=200):
    root.mkdir()
    book = openpyxl.Workbook()
    book.active.append(["ID", "SBP(mmHg)", "DBP(mmHg)", "Age", "Height(cm)", "Weight(kg)", "Gender"])
    t = np.arange(seconds * fs) / fs
    for i in range(1, n_subjects + 1):
        book.active.append([i, 100 + i, 60 + i, 22, 170, 60, "male" if i % 2 else "female"])
        with (root / f"bp_dataset_{i}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["green_channel", "red_channel", "ir_channel"])
            for k in range(len(t)):
                w.writerow([20000 + k % 7, int(40000 + 500 * np.sin(2 * np.pi * 1.1 * t[k])), 15000])
    book.save(root / "Subjects Information.xlsx")
    return root


def test_four_wavelength_channel_windows_and_labels(tmp_path):
    root = write_four_wavelength(tmp_path / "fw")
    ws = load_four_wavelength(root, channel="red_channel", window_s=10)
    assert len(ws) == 3 * 2 and ws.x.shape[1] == 1250
    assert list(ws.sbp[::2]) == [101, 102, 103]
    assert list(ws.sex[::2]) == ["M", "F", "M"]
    green = load_four_wavelength(root, channel="green_channel", window_s=10)
    assert not np.allclose(green.x, ws.x)


def test_four_wavelength_unknown_channel(tmp_path):
    root = write_four_wavelength(tmp_path / "fw", n_subjects=1)
    with pytest.raises(DatasetError, match="unknown channel 'blue'"):
        load_four_wavelength(root, channel="blue")


def test_four_wavelength_real(shared_data):
    ws = load_four_wavelength(shared_data, channel="red_channel")
    assert ws.n_subjects == 78 and len(ws) == 78 * 6


# ---------------------------------------------------------------- PulseDB (fixture in the v7.3 layout)


def write_pulsedb(path, n=4, seed=0):
    """A PulseDB subset as h5py sees MATLAB v7.3: transposed arrays, cell strings as references into #refs#."""
    rng = np.random.default_rng(seed)
    t = np.arange(1250) / 125.0
    signals = np.zeros((1250, 3, n))
    for i in range(n):
        signals[:, 1, i] = np.sin(2 * np.pi * (1 + 0.1 * i) * t) + 0.01 * rng.normal(size=1250)
        signals[:, 2, i] = 80 + 40 * np.sin(2 * np.pi * t)
    subjects = ["p000123", "p000123", "p000456", "3001"]
    genders = ["M", "M", "F", "F"]
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        subset = f.create_group("Subset")

        def numeric(name, values):
            d = subset.create_dataset(name, data=np.asarray(values, dtype=np.float64).reshape(1, n))
            d.attrs["MATLAB_class"] = np.bytes_("double")

        def cell(name, strings):
            ref_list = []
            for i, s in enumerate(strings):
                d = refs.create_dataset(
                    f"{name}{i}", data=np.array([ord(c) for c in s], dtype=np.uint16).reshape(-1, 1)
                )
                d.attrs["MATLAB_class"] = np.bytes_("char")
                ref_list.append(d.ref)
            d = subset.create_dataset(name, data=np.array(ref_list, dtype=h5py.ref_dtype).reshape(1, n))
            d.attrs["MATLAB_class"] = np.bytes_("cell")

        sig = subset.create_dataset("Signals", data=signals)
        sig.attrs["MATLAB_class"] = np.bytes_("double")
        numeric("SBP", [120, 121, 140, 100][:n])
        numeric("DBP", [70, 71, 90, 60][:n])
        numeric("Age", [54, 54, 61, 33][:n])
        cell("Subject", subjects[:n])
        cell("Gender", genders[:n])
    return path


def test_pulsedb_reads_v73_layout(tmp_path):
    ws = load_pulsedb(write_pulsedb(tmp_path / "VitalDB_Train_Subset.mat"))
    assert ws.x.shape == (4, 1250)
    assert list(ws.subject) == ["p000123", "p000123", "p000456", "3001"]
    assert list(ws.sex) == ["M", "M", "F", "F"]
    assert list(ws.sbp) == [120, 121, 140, 100] and ws.age[2] == 61
    # Channel 1 is PPG: the fourth segment is a 1.3 Hz sine.
    spectrum = np.abs(np.fft.rfft(ws.x[3]))
    assert np.argmax(spectrum) * 125 / 1250 == pytest.approx(1.3, abs=0.11)


def test_pulsedb_limit_and_resample(tmp_path):
    ws = load_pulsedb(write_pulsedb(tmp_path / "s.mat"), fs=100.0, limit=2, window_s=5.0)
    assert ws.x.shape == (4, 500)  # 2 segments × two 5 s windows at 100 Hz


def test_pulsedb_not_hdf5(tmp_path):
    bad = tmp_path / "x.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, not v7.3")
    with pytest.raises(DatasetError, match="not a MATLAB v7.3"):
        load_pulsedb(bad)


def test_pulsedb_missing_fields(tmp_path):
    with h5py.File(tmp_path / "y.mat", "w") as f:
        f.create_group("Subset").create_dataset("SBP", data=np.zeros((1, 2)))
    with pytest.raises(DatasetError, match="Subset lacks"):
        load_pulsedb(tmp_path / "y.mat")


# ---------------------------------------------------------------- replay CSV


def test_replay_csv_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    recs = [
        Recording("watch-1", 125.0, rng.normal(size=2500), np.full(2500, 120.0), np.full(2500, 80.0)),
        Recording("clip:2", 200.0, rng.normal(size=4000), np.full(4000, np.nan), np.full(4000, np.nan)),
    ]
    path = tmp_path / "r.csv"
    write_replay_csv(path, recs)
    back = read_replay_csv(path)
    assert [r.device for r in back] == ["watch-1", "clip:2"]
    assert back[0].fs == pytest.approx(125.0) and back[1].fs == pytest.approx(200.0)
    np.testing.assert_allclose(back[0].ppg, recs[0].ppg, rtol=1e-5)
    assert np.isnan(back[1].sbp_ref).all()
    ws = load_replay_csv(path, window_s=10)
    assert len(ws) == 2 + 2 and set(ws.subject) == {"watch-1", "clip:2"}
    assert ws.sbp[0] == pytest.approx(120.0)


def test_replay_csv_single_column_needs_fs(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("\n".join(str(v) for v in np.sin(np.arange(500) / 10)))
    with pytest.raises(DatasetError, match="--fs"):
        read_replay_csv(path)
    (rec,) = read_replay_csv(path, fs=50.0)
    assert rec.fs == 50.0 and rec.ppg.size == 500


def test_replay_csv_without_device_is_one_device(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("t,ppg\n" + "\n".join(f"{i / 100},{np.sin(i / 10)}" for i in range(300)))
    (rec,) = read_replay_csv(path)
    assert rec.fs == pytest.approx(100.0)


def test_replay_csv_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("device,t,ppg\nd,0.0,1\nd,0.01,oops\n")
    with pytest.raises(DatasetError, match="bad.csv:3: malformed row"):
        read_replay_csv(path)
    path.write_text("device,time,value\nd,0,1\n")
    with pytest.raises(DatasetError, match="header must name 'ppg' and 't'"):
        read_replay_csv(path)
    path.write_text("device,t,ppg\nd,0.0,1\nd,0.0,2\n")
    with pytest.raises(DatasetError, match="t must increase"):
        read_replay_csv(path)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'mimic'"):
        load_dataset("mimic", tmp_path)
