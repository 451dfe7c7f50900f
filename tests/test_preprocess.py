"""The shared preprocessing: polyphase resampling, band-pass, per-window normalisation, windowing."""

import numpy as np
import pytest

from p2p_stream.ppg.preprocess import cut_windows, ppg_bandpass, ppg_normalize, ppg_prepare, resample


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
