"""Decision rules: argmax, prior-corrected (A.2) and Youden's J (checked against sklearn's roc_curve)."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm

from cadx.evaluation.metrics import roc_auc
from cadx.evaluation.thresholds import class_priors, decide, youden_threshold


def test_argmax_and_prior_rule() -> None:
    p = np.array([[0.6, 0.4], [0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_array_equal(decide(p), [0, 0, 1])
    # training set 90% class 0: dividing by priors favours the minority class
    np.testing.assert_array_equal(decide(p, "prior", priors=[0.9, 0.1]), [1, 1, 1])
    np.testing.assert_array_equal(decide(p, "prior", priors=[9, 1]), [1, 1, 1])  # scale-free
    np.testing.assert_array_equal(decide(p, "prior", priors=[0.5, 0.5]), decide(p))


def test_prior_rule_improves_balanced_accuracy_and_keeps_auc() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    priors = np.array([0.8, 0.15, 0.05])  # imbalanced training set → biased posteriors
    lik = np.exp(rng.normal(size=(600, 3)) + 1.2 * np.eye(3)[y])
    post = lik * priors
    post /= post.sum(1, keepdims=True)
    plain = skm.balanced_accuracy_score(y, decide(post))
    corrected = skm.balanced_accuracy_score(y, decide(post, "prior", priors=priors))
    assert corrected > plain + 0.1
    # dividing a class's scores by a positive constant leaves its one-vs-rest AUC unchanged (A.2)
    assert roc_auc(y, post / priors) == pytest.approx(skm.roc_auc_score(y, post, multi_class="ovr"))
    assert class_priors(np.array([0, 0, 0, 1]), 2).tolist() == [0.75, 0.25]
    with pytest.raises(ValueError, match="no training"):
        class_priors(np.array([0, 0]), 2)


def test_youden_threshold_matches_sklearn_roc_curve() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 2)
    fpr, tpr, thr = skm.roc_curve(y, s)
    j = tpr - fpr
    best = thr[np.flatnonzero(j == j.max())].max()
    t = youden_threshold(y, s)
    assert t == pytest.approx(best)
    pred = decide(np.stack([1 - s, s], 1), "youden", threshold=t)
    sens = skm.recall_score(y, pred)
    spec = skm.recall_score(1 - y, 1 - pred)
    assert sens + spec - 1 == pytest.approx(j.max())


def test_rule_errors() -> None:
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="priors"):
        decide(p, "prior")
    with pytest.raises(ValueError, match="positive"):
        decide(p, "prior", priors=[0.5, 0.5, 0])
    with pytest.raises(ValueError, match="binary"):
        decide(p, "youden", threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        decide(p[:, :2], "youden")
    with pytest.raises(ValueError, match="unknown"):
        decide(p, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        decide(np.ones(3))
