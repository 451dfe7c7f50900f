"""Splits: subject-disjoint holdout and K-fold by group, and the notebook's random-window split to compare."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold


@dataclass
class Split:
    """Row positions of one fold. In the seed protocol `val` is `test`, as in the notebook."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _val_from_train(train: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gss = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    tr, va = next(gss.split(train, groups=groups[train]))
    return train[tr], train[va]


def _shuffled_group_kfold(groups: np.ndarray, folds: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    # GroupKFold is deterministic by group size; relabel groups at random so folds differ by seed.
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    relabel = dict(zip(unique, rng.permutation(len(unique))))
    return GroupKFold(n_splits=folds).split(groups, groups=np.array([relabel[g] for g in groups]))


def cross_validation(
    groups: np.ndarray, folds: int, val_fraction: float, seed: int, protocol: str = "subject"
) -> list[Split]:
    """K folds; under "subject" no group is in two of train/val/test, under "seed" windows are split at random."""
    index = np.arange(len(groups))
    splits = []
    if protocol == "seed":
        for k, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(index)):
            splits.append(Split(k, train, test, test))
        return splits
    for k, (train, test) in enumerate(_shuffled_group_kfold(groups, folds, seed)):
        tr, va = _val_from_train(train, groups, val_fraction, seed + k)
        splits.append(Split(k, tr, va, test))
    return splits


def holdout(
    groups: np.ndarray, test_fraction: float, val_fraction: float, seed: int, protocol: str = "subject"
) -> Split:
    """One train/val/test split (the shipped model's); "seed" reproduces the notebook's random 80/20 by window."""
    index = np.arange(len(groups))
    if protocol == "seed":
        rng = np.random.default_rng(seed)
        perm = rng.permutation(index)
        n_test = int(round(test_fraction * len(index)))
        return Split(0, np.sort(perm[n_test:]), np.sort(perm[:n_test]), np.sort(perm[:n_test]))
    gss = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(gss.split(index, groups=groups))
    tr, va = _val_from_train(rest, groups, val_fraction, seed + 1)
    return Split(0, tr, va, test)
