"""The shared preprocessing: polyphase resampling, band-pass, per-window normalisation, windowing."""

from fractions import Fraction

import numpy as np
import pytest
from scipy import signal

from p2p_stream.ppg import preprocess
from p2p_stream.ppg.preprocess import (
    MAX_RATIO_TERM,
    cut_windows,
    ppg_bandpass,
    ppg_normalize,
    ppg_prepare,
    resample,
    resample_ratio,
)

# The rates sensors and the offline datasets use (PPG-BP 1000, four-wavelength 200, AIST 31.25, PulseDB 125 Hz).
COMMON_HZ = [25.0, 30.0, 31.25, 50.0, 60.0, 64.0, 100.0, 125.0, 128.0, 200.0, 250.0, 256.0, 500.0, 1000.0]


def resample_before_the_bound(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """`resample` as it was: any denominator up to 1000, any numerator, scipy's own filter design each call."""
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(x, dtype=np.float32)
    y = signal.resample_poly(np.asarray(x, np.float64), ratio.numerator, ratio.denominator, axis=-1, padtype="line")
    return y.astype(np.float32)


@pytest.mark.parametrize("fs_in", [100.0, 200.0, 250.0, 1000.0])
def test_resample_keeps_duration_and_frequency(fs_in):
    t = np.arange(int(10 * fs_in)) / fs_in
    x = np.sin(2 * np.pi * 1.2 * t)
    y = resample(x, fs_in, 125.0)
    assert abs(len(y) - 1250) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * 125.0 / len(y)
    assert peak_hz == pytest.approx(1.2, abs=0.11)


def test_resample_has_no_edge_transient():
    # Zero-padding at the edges would pull the first sample of a DC-offset signal towards 0.
    x = 2000 + np.sin(np.linspace(0, 20, 2100))
    y = resample(x, 1000.0, 125.0)
    assert np.abs(y - 2000).max() < 2


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive and finite"):
        resample(np.zeros(10), float("nan"), 125.0)


def test_bandpass_removes_drift_and_high_frequency(rng):
    fs = 125.0
    t = np.arange(1250) / fs
    pulse = np.sin(2 * np.pi * 1.2 * t)
    x = 500 + 3 * t + pulse + 0.5 * np.sin(2 * np.pi * 20 * t)
    y = ppg_bandpass(x, fs)
    assert abs(y.mean()) < 0.05
    spectrum = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / fs)
    assert spectrum[freqs > 15].max() < 0.02 * spectrum.max()
    assert np.corrcoef(y[100:-100], pulse[100:-100])[0, 1] > 0.99


def test_normalize_is_per_window():
    x = np.stack([np.arange(100.0), 1000 + 5 * np.arange(100.0)])
    y = ppg_normalize(x)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(y[0], y[1], atol=1e-5)  # scaling and offset are gone, window by window


def test_prepare_outputs_model_rate():
    x = np.random.default_rng(1).normal(size=(3, 2000))
    assert ppg_prepare(x, 200.0).shape == (3, 1250)


def test_cut_windows_counts_and_hop():
    x = np.arange(1000, dtype=np.float32)
    w = cut_windows(x, 250, 100)
    assert w.shape == (8, 250)
    assert w[1, 0] == 100 and w[-1, -1] == 949
    assert cut_windows(x[:100], 250, 100).shape == (0, 250)


@pytest.mark.parametrize("fs_in", COMMON_HZ)
@pytest.mark.parametrize("fs_out", [125.0, 100.0])
def test_common_rates_resample_exactly_as_before_the_bound(fs_in, fs_out, rng):
    x = 1000 + 50 * rng.normal(size=(3, int(8 * fs_in)))
    assert Fraction(*resample_ratio(fs_in, fs_out)) == Fraction(fs_out / fs_in).limit_denominator(1000)
    np.testing.assert_array_equal(resample(x, fs_in, fs_out), resample_before_the_bound(x, fs_in, fs_out))


def test_an_odd_rate_gets_small_terms_and_stays_close():
    up, down = resample_ratio(20.0119, 125.0)  # once 6246/1000 → a filter of ~125,000 taps on every call
    assert max(up, down) <= MAX_RATIO_TERM
    assert abs(up / down / (125.0 / 20.0119) - 1) < 1e-3
    assert len(preprocess._resample_filter(up, down)) <= 20 * MAX_RATIO_TERM + 1
    # Rates a hair apart give one ratio, so the daemon resamples their windows together.
    assert resample_ratio(25.001, 125.0) == resample_ratio(25.002, 125.0) == resample_ratio(25.0, 125.0) == (5, 1)


def test_the_rate_error_is_within_the_documented_bound():
    fs_in = np.arange(20.0, 1000.0, 0.05)
    ratios = np.array([resample_ratio(f, 125.0) for f in fs_in])
    assert ratios.max() <= MAX_RATIO_TERM
    error = np.abs(ratios[:, 0] / ratios[:, 1] / (125.0 / fs_in) - 1)
    assert error.max() <= 0.00159  # the docstring's 0.159 %
    assert error.max() > 0.0015  # and the bound is tight, not a loose guess


@pytest.mark.parametrize("fs_in", [20.0119, 25.0, 30.0, 873.6, 1000.0])
def test_the_cached_filter_is_scipys_default_design(fs_in, rng):
    up, down = resample_ratio(fs_in, 125.0)
    max_rate = max(up, down)
    scipy_default = signal.firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    np.testing.assert_array_equal(preprocess._resample_filter(up, down), scipy_default)
    x = rng.normal(size=(2, 500))
    np.testing.assert_array_equal(
        signal.resample_poly(x, up, down, axis=-1, padtype="line", window=preprocess._resample_filter(up, down)),
        signal.resample_poly(x, up, down, axis=-1, padtype="line"),
    )
    assert preprocess._resample_filter(up, down) is preprocess._resample_filter(up, down)  # designed once
