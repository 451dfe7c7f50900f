"""Sensor augmentation: each change it makes is the one its docstring names, and only that."""

import numpy as np
from helpers import simulated_ppg

from p2p_stream.offline.augment import AugmentConfig, random_crop, sensor_augment
from p2p_stream.ppg.preprocess import PreprocessConfig, ppg_prepare
from p2p_stream.ppg.quality import ppg_quality

FS = 125.0
OFF = AugmentConfig(stretch=0.0, rate_p=0.0, lowpass_p=0.0, wander=0.0, noise=0.0, spike_p=0.0)


def prepared(n: int = 8, seconds: float = 2.1) -> np.ndarray:
    return np.stack([ppg_prepare(simulated_ppg(60 + 5 * k, seconds, FS, seed=k), FS)[0] for k in range(n)])


def test_with_every_change_off_it_is_a_normalised_crop(rng):
    x = prepared()
    out = sensor_augment(x, 250, FS, np.random.default_rng(1), OFF)
    crops = random_crop(x, 250, np.random.default_rng(1))
    assert out.shape == (8, 250)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1, atol=1e-3)
    # Each row is one stretch of its source (crop start drawn uniformly, not on the integer grid: compare shapes).
    for row, src in zip(out, x):
        best = max(np.corrcoef(row, src[s : s + 250])[0, 1] for s in range(len(src) - 250 + 1))
        assert best > 0.995
    assert crops.shape == (8, 250)


def test_low_pass_and_lower_rate_take_out_high_frequencies_and_keep_the_pulse():
    x = prepared(seconds=4.0)

    def high_share(y: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(y, axis=1)) ** 2
        freq = np.fft.rfftfreq(y.shape[1], 1 / FS)
        return float(power[:, freq > 6].sum() / power.sum())

    plain = sensor_augment(x, 400, FS, np.random.default_rng(2), OFF)
    filtered = sensor_augment(x, 400, FS, np.random.default_rng(2), AugmentConfig(**{**OFF.__dict__, "lowpass_p": 1.0}))
    slow = sensor_augment(x, 400, FS, np.random.default_rng(2), AugmentConfig(**{**OFF.__dict__, "rate_p": 1.0}))
    assert high_share(filtered) < 0.5 * high_share(plain)
    assert high_share(slow) < high_share(plain)
    for k, row in enumerate(slow):  # still a pulse, at the same rate
        q = ppg_quality(row, FS, preprocess=PreprocessConfig())
        assert q.ok and abs(q.hr_bpm - (60 + 5 * k)) < 3


def test_the_same_seed_gives_the_same_sensors():
    x = prepared()
    a = sensor_augment(x, 250, FS, np.random.default_rng(7))
    b = sensor_augment(x, 250, FS, np.random.default_rng(7))
    c = sensor_augment(x, 250, FS, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
