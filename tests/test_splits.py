"""Splits: subject-disjoint folds keep every group on one side; the seed protocol shows the leak it had."""

import numpy as np
import pytest

from p2p_stream.offline.datasets import load_ppg_bp
from p2p_stream.offline.splits import cross_validation, holdout


@pytest.fixture
def groups(ppg_bp_sample):
    return load_ppg_bp(ppg_bp_sample).group


def sets(groups, rows):
    return set(groups[rows].tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subject_folds_are_disjoint_and_cover_everything(groups, seed):
    splits = cross_validation(groups, folds=4, val_fraction=0.2, seed=seed)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(groups)))  # every window tested exactly once
    for s in splits:
        train, val, test = sets(groups, s.train), sets(groups, s.val), sets(groups, s.test)
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(s.train) + len(s.val) + len(s.test) == len(groups)


def test_shared_segment_subjects_stay_together(groups):
    assert "23+24" in set(groups)
    for seed in range(5):
        for s in cross_validation(groups, folds=3, val_fraction=0.2, seed=seed):
            sides = [bool(set(groups[rows]) & {"23+24"}) for rows in (s.train, s.val, s.test)]
            assert sum(sides) == 1


def test_folds_change_with_seed(groups):
    a = cross_validation(groups, folds=3, val_fraction=0.2, seed=0)
    b = cross_validation(groups, folds=3, val_fraction=0.2, seed=1)
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, b))


def test_holdout_is_subject_disjoint(groups):
    s = holdout(groups, test_fraction=0.25, val_fraction=0.2, seed=0)
    assert not sets(groups, s.test) & (sets(groups, s.train) | sets(groups, s.val))
    assert not sets(groups, s.train) & sets(groups, s.val)


def test_seed_protocol_leaks_subjects_and_reuses_validation(groups):
    # The notebook's split: windows at random, so test subjects are training subjects, and val is test.
    s = holdout(groups, test_fraction=0.2, val_fraction=0.2, seed=0, protocol="seed")
    assert sets(groups, s.test) & sets(groups, s.train)
    assert np.array_equal(s.val, s.test)
    for f in cross_validation(groups, folds=5, val_fraction=0.2, seed=0, protocol="seed"):
        assert np.array_equal(f.val, f.test)
