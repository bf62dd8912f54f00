"""The DEAP genetic algorithm for integer points (thesis A.7 notebook): AUC fitness, bounds, fixed features,
seeding, recovery of known generating weights, and hyper-parameter choice by grouped inner CV."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from cadx.classical.points_ga import GAParams, integer_auc, optimise_points, param_grid, tune_and_fit
from cadx.errors import CadxConfigError

TRUE = np.array([0, 1, 2, 3, 0, 3, 1, 2, 0, 0, 2, 0, 2, 3])  # 4 choose-one categories of 4, 4, 3, 3 features
FIXED = np.zeros(14, dtype=bool)
FIXED[[0, 4, 8, 11]] = True  # zero-point reference feature of each category


def _synthetic(n: int = 3000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([np.eye(k)[rng.integers(0, k, n)] for k in (4, 4, 3, 3)], axis=1)
    t = X @ TRUE
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * (t - 6)))).astype(int)
    return X, y


def _flat_baseline() -> np.ndarray:
    b = np.ones(14, dtype=np.int64)
    b[FIXED] = 0
    return b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_auc_equals_sklearn_with_ties_and_negative_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = rng.integers(-7, 12, 500)
    assert integer_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(integer_auc(np.zeros(5), np.arange(5)))


def test_ga_recovers_known_generating_weights() -> None:
    X, y = _synthetic()
    low, high = np.zeros(14, dtype=np.int64), np.full(14, 3)
    r = optimise_points(X, y, _flat_baseline(), low, high, FIXED, GAParams(population=60, generations=40), seed=0)
    true_auc = integer_auc(y, X @ TRUE)
    assert r.baseline_auc == pytest.approx(roc_auc_score(y, X @ _flat_baseline()))
    assert r.auc >= r.baseline_auc + 0.1  # flat 0.816 → 0.938
    assert r.auc == pytest.approx(roc_auc_score(y, X @ r.points), abs=1e-12)
    assert r.auc >= true_auc - 0.015
    assert ((r.points >= low) & (r.points <= high)).all()
    assert (r.points[FIXED] == 0).all()
    assert spearmanr(r.points, TRUE).statistic > 0.9
    assert int((r.points == TRUE).sum()) >= 12  # 12 of the 14 generating weights exactly
    assert len(r.log) == 41 and r.log[-1]["max"] == pytest.approx(r.auc)


def test_same_seed_same_result_and_global_random_state_restored() -> None:
    X, y = _synthetic(800, seed=3)
    args = (X, y, _flat_baseline(), np.zeros(14, dtype=np.int64), np.full(14, 3), FIXED,
            GAParams(population=20, generations=10))
    random.seed(123)
    before = random.getstate()
    a = optimise_points(*args, seed=5)
    assert random.getstate() == before
    b = optimise_points(*args, seed=5)
    np.testing.assert_array_equal(a.points, b.points)
    assert a.auc == b.auc and a.log == b.log


def test_fixed_features_and_bounds_are_kept_even_when_they_hurt() -> None:
    X, y = _synthetic(1500, seed=4)
    base = _flat_baseline()
    fixed = FIXED.copy()
    fixed[3] = True  # the most predictive feature frozen at 1 point
    low, high = np.zeros(14, dtype=np.int64), np.full(14, 2)
    low[5] = 1  # per-feature bounds
    r = optimise_points(X, y, base, low, high, fixed, GAParams(population=30, generations=15), seed=0)
    assert r.points[3] == 1 and (r.points[FIXED] == 0).all()
    assert ((r.points >= low) & (r.points <= high)).all() and r.points[5] >= 1
    assert r.auc >= r.baseline_auc


def test_degenerate_runs_return_the_baseline() -> None:
    X, y = _synthetic(300, seed=5)
    base = _flat_baseline()
    r = optimise_points(X, y, base, np.zeros(14), np.full(14, 3), np.ones(14, dtype=bool))
    np.testing.assert_array_equal(r.points, base)
    assert r.auc == r.baseline_auc
    r0 = optimise_points(X, y, base, np.zeros(14), np.full(14, 3), FIXED,
                         GAParams(population=5, generations=0, init_indpb=0.0))
    np.testing.assert_array_equal(r0.points, base)  # the notebook's start: all copies of the baseline
    with pytest.raises(ValueError, match="outside bounds"):
        optimise_points(X, y, np.full(14, 5), np.zeros(14), np.full(14, 3))


def test_param_grid_and_its_errors() -> None:
    g = param_grid(GAParams(), population=[10, 20], generations=[3])
    assert [(p.population, p.generations) for p in g] == [(10, 3), (20, 3)]
    with pytest.raises(CadxConfigError, match="unknown parameter"):
        param_grid(colour=["red"])
    with pytest.raises(CadxConfigError, match="cxpb"):
        GAParams(cxpb=1.5)


def test_tune_and_fit_chooses_on_inner_folds_and_refits() -> None:
    X, y = _synthetic(900, seed=6)
    groups = np.repeat(np.arange(300), 3)  # 3 rows per patient
    grid = param_grid(GAParams(population=20), generations=[0, 15], init_indpb=[0.0])
    res = tune_and_fit(X, y, groups, _flat_baseline(), np.zeros(14), np.full(14, 3), FIXED, grid, folds=3, seed=0)
    assert [r["generations"] for r in res.cv] == [0, 15]
    assert all(len(r["fold_aucs"]) == 3 for r in res.cv)
    # 0 generations keeps the flat baseline: its CV AUC is the baseline's mean fold AUC; evolving beats it here
    assert res.cv[1]["cv_auc"] > res.cv[0]["cv_auc"] and res.best.generations == 15
    again = tune_and_fit(X, y, groups, _flat_baseline(), np.zeros(14), np.full(14, 3), FIXED, grid, folds=3, seed=0)
    np.testing.assert_array_equal(res.fit.points, again.fit.points)
    single = tune_and_fit(X, y, None, _flat_baseline(), np.zeros(14), np.full(14, 3), FIXED, grid[:1])
    assert np.isnan(single.cv[0]["cv_auc"]) and single.best == grid[0]
