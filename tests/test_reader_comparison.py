"""Model vs readers (thesis A.6): leave-one-reader-out references, hand-computed metrics, weighted AUC vs sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cadx.evaluation.readers import compare_readers, loro_reference, weighted_auc

NAN = np.nan
# 4 cases × 3 readers (NaN = not read); references worked out by hand in the comments of test_loro_reference.
RATINGS = np.array([[5, 4, 1],
                    [1, 2, 2],
                    [3, 5, NAN],
                    [2, NAN, 4]], dtype=float)
SCORE = np.array([0.9, 0.1, 0.6, 0.4])


def test_loro_reference_by_hand() -> None:
    # reader 1: others' medians 2.5 (excl.), 2 (neg), 5 (pos), 4 (pos)
    # reader 2: 3 (excl.), 1.5 (neg), 3 (excl.), 3 (excl.)
    # reader 3: 4.5 (pos), 1.5 (neg), 4 (pos), 2 (neg)
    ref = loro_reference(RATINGS)
    assert ref.tolist() == [[-1, -1, 1], [0, 0, 0], [1, -1, 1], [1, -1, 0]]
    # demanding two other readers drops the cases where only one other rating exists
    ref2 = loro_reference(RATINGS, min_others=2)
    assert ref2.tolist() == [[-1, -1, 1], [0, 0, 0], [-1, -1, 1], [-1, -1, -1]]
    with pytest.raises(ValueError):
        loro_reference(RATINGS, positive_min=3, negative_max=3)


def test_compare_readers_hand_computed() -> None:
    res = compare_readers(RATINGS, SCORE, model_pred=SCORE >= 0.5, n_resamples=200, seed=0)
    t = res.table.set_index("row")
    # reader 1 on cases 2 (neg, rating 1), 3 (pos, 3), 4 (pos, 2): AUC 1, sens (≥ 4) 0/2, spec 1/1
    assert t.loc["reader 1", ["cases", "positives"]].tolist() == [3, 2]
    assert t.loc["reader 1", "auc"] == 1.0
    assert t.loc["reader 1", "sensitivity"] == 0.0 and t.loc["reader 1", "specificity"] == 1.0
    # reader 2 has only one (negative) usable case: AUC and sensitivity undefined, specificity 1
    assert np.isnan(t.loc["reader 2", "auc"]) and np.isnan(t.loc["reader 2", "sensitivity"])
    assert t.loc["reader 2", "specificity"] == 1.0
    # reader 3 on cases 1 (pos, rating 1), 2 (neg, 2), 4 (neg, 4): AUC 0, sens 0/1, spec 1/2
    assert t.loc["reader 3", "auc"] == 0.0 and t.loc["reader 3", "specificity"] == 0.5
    assert t.loc["mean of readers", "auc"] == pytest.approx(0.5)
    assert t.loc["mean of readers", "specificity"] == pytest.approx((1 + 1 + 0.5) / 3)
    # the model on the same references: AUC 1 (reader 1 and 3), sens 1/2 and 1/1, spec 1 everywhere
    assert t.loc["model vs ref. of reader 1", "sensitivity"] == 0.5
    assert t.loc["model vs ref. of reader 3", "auc"] == 1.0
    assert t.loc["model (mean over the references)", "auc"] == 1.0
    assert t.loc["model (mean over the references)", "sensitivity"] == pytest.approx(0.75)
    assert res.summary["auc"]["model_minus_readers"] == pytest.approx(0.5)
    assert res.summary["specificity"]["model_minus_readers"] == pytest.approx(1 - 2.5 / 3)


def test_auc_matches_sklearn_and_weighted_auc() -> None:
    rng = np.random.default_rng(3)
    pos = rng.random(60) < 0.4
    score = np.round(rng.random(60), 1)  # ties
    assert weighted_auc(pos, score, np.ones((1, 60)))[0] == pytest.approx(roc_auc_score(pos, score))
    w = rng.integers(0, 3, size=(4, 60))
    for row in w:
        assert weighted_auc(pos, score, row[None])[0] == pytest.approx(roc_auc_score(pos, score, sample_weight=row))
    # a reader's AUC in the table is sklearn's AUC of their ratings on their cases
    ratings = rng.integers(1, 6, size=(80, 4)).astype(float)
    ratings[rng.random((80, 4)) < 0.2] = np.nan
    model = rng.random(80)
    res = compare_readers(ratings, model, n_resamples=100)
    ref = loro_reference(ratings)
    t = res.table.set_index("row")
    for j in range(4):
        u = np.isfinite(ratings[:, j]) & (ref[:, j] >= 0)
        assert t.loc[f"reader {j + 1}", "auc"] == pytest.approx(roc_auc_score(ref[u, j], ratings[u, j]))
        assert t.loc[f"model vs ref. of reader {j + 1}", "auc"] == pytest.approx(roc_auc_score(ref[u, j], model[u]))


def test_bootstrap_is_seeded_and_paired() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(1, 6, size=50).astype(float)
    same = np.repeat(base[:, None], 3, axis=1)           # three readers who agree with each other
    model = (base - 1) / 4                               # and a model ranking the cases exactly like them
    res = compare_readers(same, model, model_pred=base >= 4, groups=np.arange(50) // 2, n_resamples=300)
    for m in ("auc", "sensitivity", "specificity"):
        assert res.summary[m]["model_minus_readers"] == 0.0
        assert res.summary[m]["p_value"] == 1.0 and res.summary[m]["ci"] == [0.0, 0.0]
    a = compare_readers(RATINGS, SCORE, n_resamples=200, seed=5).table
    b = compare_readers(RATINGS, SCORE, n_resamples=200, seed=5).table
    assert a.equals(b)
    lo, hi = a.set_index("row").loc["reader 1", ["specificity_lo", "specificity_hi"]]
    assert lo <= 1.0 <= hi


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="do not match"):
        compare_readers(RATINGS, SCORE[:3])
    with pytest.raises(ValueError, match="finite"):
        compare_readers(RATINGS, np.array([0.1, NAN, 0.2, 0.3]))
