"""The shipped default model through the public API: loads with no argument, predicts plausibly on real PPG."""

import json

import numpy as np
import pytest
import torch
from helpers import read_segment

from p2p_stream import Estimator
from p2p_stream.errors import CheckpointError
from p2p_stream.model.checkpoint import METADATA, WEIGHTS, sha256_file
from p2p_stream.model.estimator import default_model_path
from p2p_stream.offline.datasets import load_ppg_bp


def test_shipped_model_is_small_and_self_describing(est):
    path = default_model_path()
    assert (path / WEIGHTS).stat().st_size < 3_000_000
    meta = json.loads((path / METADATA).read_text())
    assert meta["weights"]["sha256"] == sha256_file(path / WEIGHTS)
    assert meta["split"]["protocol"] == "lodo"
    assert meta["data"]["datasets"] == ["ppg_bp", "four_wavelength", "aist_wrist"]
    assert est.name.startswith("conv-lstm@") and est.fs == 125.0 and est.uses_demographics
    assert est.window_range_s == (2.0, 120.0) and est.interval_level == 0.8


def test_predictions_on_real_windows_are_physiological(est, ppg_bp_sample):
    ws = load_ppg_bp(ppg_bp_sample)
    out = est.estimate(ws.x, fs=ws.fs)
    pred = est.predict(ws.x, fs=ws.fs)
    assert pred.shape == (len(ws), 2) and pred.dtype == np.float32
    ok = np.array([r is None for r in out.reason])
    assert ok.sum() >= 0.85 * len(ws) and np.isnan(pred[~ok]).all()  # the gate's rejects are NaN, not numbers
    pred = pred[ok]
    assert (pred[:, 0] > 70).all() and (pred[:, 0] < 200).all()
    assert (pred[:, 1] > 35).all() and (pred[:, 1] < pred[:, 0]).all()


def test_predict_resamples_inside(est):
    raw = read_segment("2_1")  # 1 kHz
    at_1k = est.predict(raw, fs=1000.0)
    from p2p_stream.ppg.preprocess import resample

    at_125 = est.predict(resample(raw, 1000.0, 125.0), fs=125.0)
    np.testing.assert_allclose(at_1k, at_125, atol=0.5)


def test_demographics_change_the_estimate(est):
    raw = read_segment("3_1")
    young = est.predict(raw, 1000.0, meta={"age": 25, "sex": "F"})
    old = est.predict(raw, 1000.0, meta={"age": 80, "sex": "M"})
    none = est.predict(raw, 1000.0)
    assert old[0, 0] > young[0, 0] + 3  # SBP rises with age in PPG-BP; the model learned it
    assert np.isfinite(none).all()


def test_long_streaming_windows_work(est):
    # A 10 s window at 125 Hz: three real 2.1 s segments of subject 2 joined, plus more.
    raw = np.concatenate([read_segment(f"2_{k}") for k in (1, 2, 3)] * 2)[:10_000]
    pred = est.predict(raw, fs=1000.0)
    assert pred.shape == (1, 2) and 70 < pred[0, 0] < 200


def test_load_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model.json"):
        Estimator.load(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(CheckpointError, match="CUDA is not available; use 'cpu' or 'auto'"):
        Estimator.load(torch_device="cuda")
    assert Estimator.load(torch_device="auto").model.head[1].weight.device.type == "cpu"


def test_predict_rejects_what_the_gate_rejects_with_the_reason(est):
    good = read_segment("2_1")
    flat = np.full(2100, 512.0)
    short = good[:400]  # 0.4 s at 1 kHz
    holes = good.copy()
    holes[100:200] = np.nan
    out = est.estimate([good, flat, short, holes], fs=1000.0)
    assert out.reason == [None, "flatline", "too_short", "nan"]
    assert np.isfinite(out.bp[0]).all() and np.isnan(out.bp[1:]).all()
    np.testing.assert_array_equal(est.predict([good, flat, short, holes], fs=1000.0), out.bp)


def test_every_ok_estimate_carries_an_interval_around_it(est, ppg_bp_sample):
    ws = load_ppg_bp(ppg_bp_sample)
    out = est.estimate(ws.x, fs=ws.fs)
    ok = np.array([r is None for r in out.reason])
    assert ok.sum() >= 0.85 * len(ws) and out.level == 0.8
    assert (out.lo[ok] < out.bp[ok]).all() and (out.bp[ok] < out.hi[ok]).all()
    width = out.hi[ok] - out.lo[ok]
    assert (width[:, 0] > 5).all() and (width[:, 0] < 120).all()  # mmHg: an honest, not an absurd, interval


def test_the_network_answers_the_same_for_2_5_and_10_s_of_one_person(est):
    # One person's 10 s of finger PPG (subject 2's three segments, back to back at 1 kHz); crops of 2, 5 and 10 s.
    from p2p_stream.model.estimator import run_network

    raw = np.concatenate([read_segment(f"2_{k}") for k in (1, 2, 3)] * 2)[:10_000]
    x = est.prepare(raw, 1000.0)[0]
    dev = {
        s: run_network(est.model, x[None, : int(s * 125)], np.zeros((1, 4), np.float32), est.label_stats, est.crop)[0]
        for s in (2, 5, 10)
    }
    spread = np.ptp(np.concatenate(list(dev.values())), axis=0)
    # The network's own answer, before shrinkage: the same person within a few mmHg whatever the window length,
    # where the old model, trained on 2.1 s and served 10 s, spread people 12 → 17 mmHg apart by length alone.
    assert (spread < 6.0).all(), dev


@pytest.mark.parametrize("age", [70, 70.0, np.int64(70), np.float32(70), "70"])
def test_an_age_of_any_number_type_is_the_same_age(est, age):
    raw = read_segment("3_1")
    as_int = est.predict(raw, 1000.0, meta={"age": 70, "sex": "M"})
    np.testing.assert_allclose(est.predict(raw, 1000.0, meta={"age": age, "sex": "M"}), as_int)
    assert not np.allclose(est.predict(raw, 1000.0, meta={"sex": "M"}), as_int)  # the age did count


@pytest.mark.parametrize("age", ["seventy", 0, -3, 150, float("nan"), True])
def test_an_age_that_is_not_one_is_a_clear_error(est, age):
    with pytest.raises(ValueError, match="age must be"):
        est.predict(read_segment("3_1"), 1000.0, meta={"age": age})


def test_a_window_longer_than_the_checkpoint_takes_gets_no_number(est):
    lo, hi = est.window_range_s
    long = np.tile(read_segment("2_1"), int(hi / 2.1) + 2)  # > 120 s at 1 kHz
    out = est.estimate([long, read_segment("2_1")], fs=1000.0)
    assert out.reason == ["too_long", None] and np.isnan(out.bp[0]).all() and np.isfinite(out.bp[1]).all()


def test_the_old_device_keyword_still_loads_with_a_warning():
    with pytest.warns(DeprecationWarning, match="torch_device"):
        old = Estimator.load(device="cpu")
    assert old.torch_device == "cpu"
