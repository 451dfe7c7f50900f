"""The quality gate: every rejection reason on real and constructed windows, and physiology on simulated pulses."""

from functools import partial
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from helpers import SAMPLE, read_segment
from helpers import simulated_ppg as simulated

from p2p_stream.ppg import preprocess, quality
from p2p_stream.ppg.preprocess import resample
from p2p_stream.ppg.quality import REASONS, ppg_assess, ppg_assess_windows, ppg_quality

FS = 125.0


def real(name: str) -> np.ndarray:
    """A real PPG-BP segment at the model rate."""
    return resample(read_segment(name), 1000.0, FS).astype(np.float64)


simulated_ppg = partial(simulated, seconds=10.0, fs=FS)  # 10 s at the model rate (helpers.py's pulse shape)


def sheet_hr(subject: int) -> float:
    ws = openpyxl.load_workbook(SAMPLE / "PPG-BP dataset.xlsx", read_only=True).active
    return next(r[8] for r in ws.iter_rows(min_row=3, values_only=True) if r[1] == subject)


@pytest.mark.parametrize("hr", [45.0, 60.0, 75.0, 90.0, 120.0, 160.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_simulated_pulse_passes_with_correct_rate(hr, seed):
    q = ppg_quality(simulated_ppg(hr, seed=seed), FS)
    assert q.ok and q.reason is None
    assert q.hr_bpm == pytest.approx(hr, abs=1.0)
    assert 0.5 <= q.sqi <= 1.0


@pytest.mark.parametrize("name,subject", [("2_1", 2), ("3_1", 3), ("6_2", 6), ("403_1", 403)])
def test_real_segments_pass_with_sheet_heart_rate(name, subject):
    q = ppg_quality(real(name), FS)
    assert q.ok, q
    assert q.hr_bpm == pytest.approx(sheet_hr(subject), abs=10.0)


def test_too_short_real_and_constructed():
    assert ppg_quality(real("2_1")[:200], FS).reason == "too_short"  # 1.6 s of real PPG
    assert ppg_quality(np.ones(10), FS).reason == "too_short"


def test_nan_real_and_constructed():
    x = real("2_1")
    x[100] = np.nan
    assert ppg_quality(x, FS).reason == "nan"
    y = simulated_ppg(70)
    y[5] = np.inf
    assert ppg_quality(y, FS).reason == "nan"


def test_flatline_real_and_constructed():
    x = simulated_ppg(70)
    x[300:400] = x[300]  # 0.8 s of lost contact mid-window
    assert ppg_quality(x, FS).reason == "flatline"
    assert ppg_quality(np.full(1250, 2048.0), FS).reason == "flatline"
    r = real("3_2")
    r[50:130] = np.median(r)  # 0.64 s stuck at mid-level in a real segment
    assert ppg_quality(r, FS).reason == "flatline"


def test_clipping_real_and_constructed():
    # 125_2 touches the 12-bit rail (4095) for most of its systolic peaks.
    assert read_segment("125_2").max() == 4095
    assert ppg_quality(real("125_2"), FS).reason == "clipping"
    x = simulated_ppg(70)
    assert ppg_quality(np.minimum(x, np.percentile(x, 85)), FS).reason == "clipping"


def test_no_pulse_real_and_constructed(rng):
    assert ppg_quality(real("136_1"), FS).reason == "no_pulse"
    noise = rng.normal(size=1250)
    q = ppg_quality(noise, FS)
    assert q.reason == "no_pulse" and q.hr_bpm is None and q.sqi < 0.5


def test_every_reason_the_gate_gives_is_a_wire_name_and_every_wire_name_is_given(rng):
    """REASONS is what goes on the wire: the gate gives no reason outside it, and each of its names is reachable."""
    x = simulated_ppg(70)
    flat, holed = x.copy(), x.copy()
    flat[300:400] = flat[300]
    holed[5] = np.nan
    windows = [x[:100], holed, flat, np.minimum(x, np.percentile(x, 85)), rng.normal(size=1250), x]
    given = {ppg_quality(w, FS).reason for w in windows}
    assert given == set(REASONS) | {None}
    contract = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert all(f"`{reason}`" in contract for reason in REASONS)  # renaming one breaks clients: the doc says so


def test_windows_at_many_rates_are_assessed_as_each_alone(rng, monkeypatch):
    """Batched by the model's input, not by the device's rate: the numbers of `ppg_assess` on each window alone,
    with one gate pass per model-input length, however many rates the windows come at."""
    rates = [25.0, 25.001, 25.002, 24.999, 20.0119, 30.0, 64.0, 125.0, 1000.0]
    windows, fs = [], []
    for k, rate in enumerate(rates):
        for seconds in (8.0, 10.0):
            windows.append(simulated(60 + 5 * k, seconds, rate, seed=k).astype(np.float32))
            fs.append(rate)
    windows.append(read_segment("2_1").astype(np.float32))  # real, 2.1 s at 1 kHz
    fs.append(1000.0)
    nan, flat = windows[0].copy(), simulated(70, 8.0, 125.0, seed=1).astype(np.float32)
    nan[40] = np.nan
    flat[250:500] = flat[250]  # 2 s of lost contact
    windows += [nan, flat, windows[2][:30]]  # rejected: "nan", "flatline", "too_short"
    fs += [25.0, 125.0, 25.0]
    order = rng.permutation(len(windows))  # interleaved, as a batch from many devices comes
    windows, fs = [windows[i] for i in order], [fs[i] for i in order]

    passes = []
    real_assess = quality._assess_resampled
    monkeypatch.setattr(quality, "_assess_resampled", lambda x, *a: passes.append(x.shape) or real_assess(x, *a))
    qualities, inputs = ppg_assess_windows(windows, fs)
    assert len(passes) == len({shape[1] for shape in passes})  # one pass per model-input length
    assert sum(shape[0] for shape in passes) == len(windows)

    for w, rate, q, x in zip(windows, fs, qualities, inputs):
        alone_q, alone_x = real_assess_one(w, rate)
        assert q == alone_q
        np.testing.assert_array_equal(x, alone_x)
    reasons = {q.reason for q in qualities}
    assert None in reasons and {"nan", "flatline", "too_short"} <= reasons


def real_assess_one(window: np.ndarray, fs: float):
    qualities, x = ppg_assess(window[None], fs)
    return qualities[0], x[0]


def test_many_rates_near_one_rate_make_one_gate_pass(monkeypatch):
    rates = 25.0 + np.linspace(-0.01, 0.01, 400)
    windows = [simulated(72, 8.0, 25.0, seed=k).astype(np.float32) for k in range(400)]
    passes, resamples = [], []
    real_assess, real_resample = quality._assess_resampled, preprocess.resample
    monkeypatch.setattr(quality, "_assess_resampled", lambda x, *a: passes.append(x.shape) or real_assess(x, *a))
    # resample_rows (preprocess.py) does the grouping by ratio: its calls to resample are the passes counted
    monkeypatch.setattr(
        preprocess, "resample", lambda x, *a, **k: resamples.append(x.shape) or real_resample(x, *a, **k)
    )
    qualities, inputs = ppg_assess_windows(windows, list(rates))
    assert resamples == [(400, 200)]  # all 400 rates resample by 5/1: together
    assert passes == [(400, 1000)]
    assert all(q.ok for q in qualities) and {x.shape for x in inputs} == {(1000,)}


def test_one_rate_per_window():
    with pytest.raises(ValueError, match="one rate per window"):
        ppg_assess_windows([np.zeros(500)], [25.0, 30.0])
