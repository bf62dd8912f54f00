"""Resampling, class-balanced batches, Siamese partners and the A.2 imbalance generators (hand counts)."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.samplers import (
    ClassBalancedBatchSampler,
    EpochIndexSampler,
    imbalance_counts,
    linear_imbalance,
    oversample_indices,
    pair_partners,
    random_pairs,
    step_imbalance,
    undersample_indices,
)

Y = np.array([0] * 10 + [1] * 4 + [2] * 2)  # counts 10, 4, 2


def test_oversample_full_and_partial() -> None:
    idx = oversample_indices(Y, np.random.default_rng(0))
    assert np.bincount(Y[idx]).tolist() == [10, 10, 10]
    assert set(range(16)) <= set(idx.tolist())  # every original kept
    part = oversample_indices(Y, np.random.default_rng(0), ratio=0.5)
    assert np.bincount(Y[part]).tolist() == [10, 5, 5]  # each class ≥ 0.5 × 10 → ρ' = 2
    unl = oversample_indices(np.array([0, 0, 0, 1, -1]), np.random.default_rng(0))
    assert sorted(unl.tolist()).count(4) == 1 and np.bincount(np.array([0, 0, 0, 1, -1])[unl] + 1).tolist() == \
        [1, 3, 3]


def test_undersample_full_and_partial() -> None:
    idx = undersample_indices(Y, np.random.default_rng(0))
    assert np.bincount(Y[idx]).tolist() == [2, 2, 2] and len(set(idx.tolist())) == 6
    part = undersample_indices(Y, np.random.default_rng(0), ratio=0.25)
    assert np.bincount(Y[part]).tolist() == [8, 4, 2]  # cap = 2 / 0.25 = 8 → ρ' = 4
    with pytest.raises(CadxConfigError):
        undersample_indices(Y, np.random.default_rng(0), ratio=0)


def test_epoch_index_sampler_redraws_per_epoch() -> None:
    s = EpochIndexSampler(lambda rng: oversample_indices(Y, rng), seed=3)
    assert len(s) == 30
    e0 = list(s)
    e1 = list(s)  # iteration advanced the epoch → a new draw
    assert sorted(np.bincount(Y[e0]).tolist()) == [10, 10, 10] and e0 != e1
    s.set_epoch(0)
    assert list(s) == e0
    again = EpochIndexSampler(lambda rng: oversample_indices(Y, rng), seed=3)
    again.set_epoch(1)
    assert list(again) == e1
    loader = DataLoader(list(range(16)), batch_size=30, sampler=s)
    assert sorted(next(iter(loader)).tolist()) != list(range(16))


def test_class_balanced_batches() -> None:
    s = ClassBalancedBatchSampler(Y, batch_size=6, seed=0, num_batches=5)
    batches = list(s)
    assert len(batches) == len(s) == 5
    for b in batches:
        assert np.bincount(Y[b], minlength=3).tolist() == [2, 2, 2]
    # class 2 has two members: within a batch pair both appear; no repeat before exhaustion in class 0
    first_c0 = [i for b in batches[:5] for i in b if Y[i] == 0]
    assert len(set(first_c0)) == 10
    s.set_epoch(0)
    assert list(s) == batches
    s.set_epoch(1)
    assert list(s) != batches
    odd = ClassBalancedBatchSampler(Y, batch_size=4, seed=1, num_batches=30)
    counts = np.bincount(np.concatenate([Y[b] for b in odd]), minlength=3)
    assert counts.sum() == 120 and counts.min() == 40 and counts.max() == 40  # 4 = 1 each + 1 random
    assert len(ClassBalancedBatchSampler(Y, batch_size=5)) == 4  # ceil(16 / 5)


def test_random_pairs_never_self() -> None:
    p = random_pairs(50, np.random.default_rng(0))
    assert p.shape == (50,) and (p != np.arange(50)).all() and p.min() >= 0 and p.max() < 50
    with pytest.raises(CadxDataError):
        random_pairs(1, np.random.default_rng(0))


def test_pair_partners_balanced_classes() -> None:
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    rng = np.random.default_rng(0)
    p = np.concatenate([pair_partners(y, rng) for _ in range(10)])
    own = np.tile(np.arange(1000), 10)
    assert (p != own).all()
    share = np.bincount(y[p], minlength=3) / p.size
    assert np.allclose(share, 1 / 3, atol=0.02)  # partner class uniform over classes, not over images
    unbalanced = pair_partners(y, rng, balanced=False)
    assert np.bincount(y[unbalanced], minlength=3)[0] > 800
    # a class with one member: its only item must be paired with another class
    lone = np.array([0, 1, 1, 1])
    pl = np.stack([pair_partners(lone, np.random.default_rng(s)) for s in range(20)])
    assert (pl[:, 0] != 0).all() and (pl != np.arange(4)).all()
    with pytest.raises(CadxDataError):
        pair_partners(np.array([0, 1, -1]), rng)


def test_step_imbalance_counts_mednist_like() -> None:
    y = np.repeat(np.arange(6), 2000)  # 6 classes × 2000, balanced
    idx = step_imbalance(y, rho=10, mu=0.5, rng=np.random.default_rng(0))
    counts = np.bincount(y[idx], minlength=6)
    assert sorted(counts.tolist()) == [200, 200, 200, 2000, 2000, 2000] and idx.size == 6600
    assert len(set(idx.tolist())) == idx.size  # no duplicates
    lowest = step_imbalance(y, rho=10, mu=0.5, rng=np.random.default_rng(0), minority="lowest")
    assert np.bincount(y[lowest]).tolist() == [200, 200, 200, 2000, 2000, 2000]
    explicit = step_imbalance(y, 4, 1 / 3, np.random.default_rng(0), minority=[5, 2])
    assert np.bincount(y[explicit]).tolist() == [2000, 2000, 500, 2000, 2000, 500]
    # minority classes are re-randomised with the seed
    picks = {tuple(np.flatnonzero(np.bincount(y[step_imbalance(y, 10, 0.5, np.random.default_rng(s))]) == 200))
             for s in range(8)}
    assert len(picks) > 1


def test_step_imbalance_nested_across_rho() -> None:
    y = np.repeat(np.arange(4), 100)
    a = step_imbalance(y, 2, 0.5, np.random.default_rng(5), minority="lowest")
    b = step_imbalance(y, 10, 0.5, np.random.default_rng(5), minority="lowest")
    assert set(b.tolist()) < set(a.tolist())
    assert np.bincount(y[b]).tolist() == [10, 10, 100, 100]


def test_linear_imbalance_counts() -> None:
    y = np.repeat(np.arange(6), 2000)
    idx = linear_imbalance(y, rho=10, rng=np.random.default_rng(0), minority="lowest")
    assert np.bincount(y[idx]).tolist() == [200, 560, 920, 1280, 1640, 2000]
    rnd = linear_imbalance(y, rho=10, rng=np.random.default_rng(1))
    assert sorted(np.bincount(y[rnd]).tolist()) == [200, 560, 920, 1280, 1640, 2000]
    # MNIST-like extreme: base 5000, rho 5000 → one example in the smallest class
    assert imbalance_counts("linear", 10, 5000, 5000)[0] == 1
    assert imbalance_counts("step", 10, 5000, 10, 0.5).tolist() == [500] * 5 + [5000] * 5


def test_imbalance_bad_parameters() -> None:
    y = np.repeat(np.arange(3), 10)
    with pytest.raises(CadxConfigError):
        step_imbalance(y, rho=0.5, mu=0.5, rng=np.random.default_rng(0))
    with pytest.raises(CadxConfigError):
        step_imbalance(y, rho=2, mu=0.1, rng=np.random.default_rng(0))  # round(0.3) = 0 minority classes
    with pytest.raises(CadxDataError):
        step_imbalance(y, rho=2, mu=0.5, rng=np.random.default_rng(0), base=20)
    with pytest.raises(CadxDataError):
        oversample_indices(np.zeros((2, 2), dtype=int), np.random.default_rng(0))


def test_class_balanced_remainder_never_doubles_in_a_batch() -> None:
    y = np.repeat(np.arange(3), 5)
    for b in ClassBalancedBatchSampler(y, batch_size=5, seed=2, num_batches=12):  # 5 = 1 each + 2 extras
        assert sorted(np.bincount(y[b], minlength=3).tolist()) == [1, 2, 2]
