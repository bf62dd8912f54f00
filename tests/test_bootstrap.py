"""Patient-level bootstrap: vectorised path equals the per-resample loop (sklearn metrics), CIs, p-values."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sklearn.metrics as skm

from cadx.evaluation import metrics as M
from cadx.evaluation.bootstrap import (
    _batched,
    _group_index,
    _loop,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_mean_ci,
    paired_bootstrap_pvalue,
    resample_weights,
)


def _data(n: int = 120, k: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n) + np.eye(k)[y] * 0.3
    p = np.round(p / p.sum(1, keepdims=True), 2)
    groups = np.array([f"pt{i // 3}" for i in range(n)])  # 3 studies per patient
    return y, p, groups


def _sk_auc(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return skm.roc_auc_score(y, p[:, 1])
    return float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(p.shape[1])]))


@pytest.mark.parametrize("k", [2, 3])
def test_weighted_metrics_equal_sklearn_on_expanded_resamples(k: int) -> None:
    y, p, groups = _data(k=k)
    pred = p.argmax(1)
    gi, ng = _group_index(groups, y.size)
    W = resample_weights(gi, ng, 15, np.random.default_rng(3))
    assert W.sum(1).tolist() == [y.size] * 15  # 3 studies x n/3 patients drawn
    sk = {
        M.roc_auc: (_sk_auc, p),
        M.accuracy: (skm.accuracy_score, pred),
        functools.partial(M.sensitivity, n_classes=k): (
            lambda a, b: skm.recall_score(a, b, average="binary" if k == 2 else "macro",
                                          labels=range(k) if k > 2 else None, zero_division=np.nan), pred),
        functools.partial(M.f1_score, n_classes=k): (
            lambda a, b: skm.f1_score(a, b, average="binary" if k == 2 else "macro",
                                      labels=range(k) if k > 2 else None, zero_division=np.nan), pred),
    }
    for fn, (ref, arg) in sk.items():
        fast = _batched(fn)
        assert fast is not None
        got = fast(y, arg, W)
        np.testing.assert_allclose(got, _loop(ref, y, arg, W), rtol=1e-12, atol=1e-12)


def test_specificity_batched_equals_loop() -> None:
    y, p, groups = _data(k=3)
    pred = p.argmax(1)
    gi, ng = _group_index(groups, y.size)
    W = resample_weights(gi, ng, 10, np.random.default_rng(1))
    fn = functools.partial(M.specificity, n_classes=3)
    np.testing.assert_allclose(_batched(fn)(y, pred, W), _loop(fn, y, pred, W))


def test_ci_contains_point_and_is_reproducible() -> None:
    y, p, groups = _data(n=300)
    r = bootstrap_ci(M.roc_auc, y, p, groups=groups, n_resamples=300, seed=7)
    point, lo, hi = r
    assert point == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert lo < point < hi and hi - lo < 0.3
    assert r.n_valid + r.n_skipped == 300
    assert tuple(bootstrap_ci(M.roc_auc, y, p, groups=groups, n_resamples=300, seed=7)) == tuple(r)
    assert tuple(bootstrap_ci(M.roc_auc, y, p, groups=groups, n_resamples=300, seed=8)) != tuple(r)


def test_patient_resampling_widens_ci_for_clustered_data() -> None:
    # every patient has 10 identical studies: study-level resampling underestimates the variance
    rng = np.random.default_rng(0)
    yp = rng.integers(0, 2, 30)
    pp = np.clip(yp * 0.2 + rng.random(30) * 0.8, 0, 1)
    y, s, g = np.repeat(yp, 10), np.repeat(pp, 10), np.repeat(np.arange(30), 10)
    by_patient = bootstrap_ci(M.roc_auc, y, s, groups=g, n_resamples=400, seed=0)
    by_study = bootstrap_ci(M.roc_auc, y, s, n_resamples=400, seed=0)
    assert (by_patient.hi - by_patient.lo) > 1.5 * (by_study.hi - by_study.lo)


def test_single_class_resamples_are_skipped_and_counted() -> None:
    y = np.array([0] * 9 + [1])
    s = np.linspace(0, 1, 10)
    vals = bootstrap_distribution(M.roc_auc, y, s, n_resamples=200, seed=0)
    # P(no positive in 10 draws) = 0.9**10 ~ 0.35
    skipped = int(np.isnan(vals).sum())
    assert 40 < skipped < 110
    r = bootstrap_ci(M.roc_auc, y, s, n_resamples=200, seed=0)
    assert r.n_skipped == skipped
    assert r.lo <= r.point <= r.hi == 1.0


def test_generic_metric_fallback_loop() -> None:
    y, p, groups = _data(n=60)
    r = bootstrap_ci(lambda a, b: skm.balanced_accuracy_score(a, b.argmax(1)), y, p, groups=groups,
                     n_resamples=50, seed=0)
    assert r.n_valid == 50
    assert r.lo <= r.point <= r.hi


def test_bootstrap_mean_ci() -> None:
    v = np.random.default_rng(0).random(40)
    r = bootstrap_mean_ci(v, groups=np.arange(40) // 2, n_resamples=300)
    assert r.point == pytest.approx(v.mean()) and r.lo < r.point < r.hi
    with pytest.raises(ValueError):
        bootstrap_mean_ci(np.array([0.5, np.nan]))


def test_paired_pvalue() -> None:
    y, p, groups = _data(n=200)
    rng = np.random.default_rng(1)
    noisy = np.clip(p + rng.normal(0, 0.6, p.shape), 0, None)
    assert paired_bootstrap_pvalue(M.roc_auc, y, p, p, groups, 200, seed=0) == 1.0
    strong = paired_bootstrap_pvalue(M.roc_auc, y, p, noisy, groups, 300, seed=0)
    assert strong < 0.05
    # symmetric in the two runs
    assert paired_bootstrap_pvalue(M.roc_auc, y, noisy, p, groups, 300, seed=0) == pytest.approx(strong)
    with pytest.raises(ValueError):
        paired_bootstrap_pvalue(M.roc_auc, y, p, p[:10], groups, 10)


def test_bad_groups_raise() -> None:
    y, p, _ = _data(n=20)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(M.roc_auc, y, p, groups=np.arange(5), n_resamples=10)


def test_auc_2000_resamples_of_1000_studies() -> None:
    """The vectorised path at full size (its speed is a benchmark's business, not a timed test's)."""
    y, p, groups = _data(n=1000)
    r = bootstrap_ci(M.roc_auc, y, p, groups=groups, n_resamples=2000, seed=0)
    assert r.n_valid == 2000 and r.lo < M.roc_auc(y, p) < r.hi
