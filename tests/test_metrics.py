"""Metrics cross-checked against scikit-learn (classification) and MONAI (Dice, largest component)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from cadx.evaluation import metrics as M
from cadx.evaluation.overlap import dice, dice_per_volume, largest_connected_component


@pytest.fixture(params=[0, 1, 2])
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return np.random.default_rng(request.param)


def _multiclass(rng: np.random.Generator, n: int = 200, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, np.round(p, 2)  # rounding creates ties


def test_accuracy_and_confusion_match_sklearn(rng: np.random.Generator) -> None:
    y, p = _multiclass(rng)
    pred = p.argmax(1)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, 4), skm.confusion_matrix(y, pred, labels=range(4)))
    # absent class kept when n_classes is given
    assert M.confusion_matrix(np.array([0, 1]), np.array([1, 1]), 3).shape == (3, 3)


def test_per_class_metrics_match_sklearn(rng: np.random.Generator) -> None:
    y, p = _multiclass(rng)
    pred = p.argmax(1)
    r = M.per_class_metrics(y, pred, 4)
    kw = {"labels": list(range(4)), "zero_division": np.nan}
    np.testing.assert_allclose(r["per_class"]["sensitivity"], skm.recall_score(y, pred, average=None, **kw))
    np.testing.assert_allclose(r["per_class"]["precision"], skm.precision_score(y, pred, average=None, **kw))
    np.testing.assert_allclose(r["per_class"]["f1"], skm.f1_score(y, pred, average=None, **kw))
    spec = [skm.recall_score(y != c, pred != c) for c in range(4)]
    np.testing.assert_allclose(r["per_class"]["specificity"], spec)
    assert r["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r["macro"]["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert r["macro"]["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert r["support"] == np.bincount(y, minlength=4).tolist()
    assert M.f1_score(y, pred, n_classes=4) == pytest.approx(r["macro"]["f1"])
    assert M.specificity(y, pred, n_classes=4) == pytest.approx(np.mean(spec))


def test_dmrn_macro_f1_is_mean_of_class_f1() -> None:
    """cadx's metrics on a confusion matrix consistent with the DMRN paper (229 patients: ACA 54, NAA 35, GN 58,
    AM 33, PCC 49; its Table 3 per-class sensitivities and precisions fix every diagonal and row/column sum) give
    Table 3's per-class values and Table 2's macro ones (F1 89.96 = mean of the class F1s), as scikit-learn does."""
    cm = np.array([[50, 0, 0, 0, 4], [0, 33, 1, 0, 1], [0, 11, 47, 0, 0], [0, 0, 0, 33, 0], [6, 0, 1, 0, 42]])
    y = np.repeat(np.repeat(np.arange(5), 5), cm.ravel())  # true class of every patient
    pred = np.repeat(np.tile(np.arange(5), 5), cm.ravel())
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, 5), cm)
    r = M.per_class_metrics(y, pred, 5)
    table3 = {"sensitivity": [92.59, 94.29, 81.03, 100.00, 85.71], "specificity": [96.57, 94.33, 98.83, 100.00, 97.22],
              "precision": [89.29, 75.00, 95.92, 100.00, 89.36], "f1": [90.91, 83.54, 87.85, 100.00, 87.50]}
    for name, want in table3.items():
        np.testing.assert_allclose(np.round(100 * np.asarray(r["per_class"][name]), 2), want, err_msg=name)
    # Table 2 (its specificity, 97.34, is not the mean of Table 3's, 97.39, so it is left out)
    table2 = {"sensitivity": 90.73, "precision": 89.91, "f1": 89.96}
    assert {k: round(100 * r["macro"][k], 2) for k in table2} == table2
    assert round(100 * M.accuracy(y, pred), 2) == 89.52
    assert r["macro"]["f1"] == pytest.approx(np.mean(r["per_class"]["f1"]))
    assert M.f1_score(y, pred, n_classes=5) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_allclose(r["per_class"]["f1"], skm.f1_score(y, pred, average=None))


def test_zero_division_is_nan_and_skipped_in_macro() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0])  # class 1 never predicted
    r = M.per_class_metrics(y, pred, 3)  # class 2 absent and never predicted
    assert np.isnan(r["per_class"]["precision"][1])
    assert np.isnan(r["per_class"]["sensitivity"][2])
    assert r["macro"]["precision"] == pytest.approx(
        skm.precision_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=np.nan))


def test_binary_metrics_positive_class_is_one(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, 100)
    pred = rng.integers(0, 2, 100)
    b = M.binary_metrics(y, pred)
    assert b["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert b["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert b["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert b["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert M.sensitivity(y, pred) == pytest.approx(b["sensitivity"])


def test_roc_auc_binary_and_multiclass_match_sklearn(rng: np.random.Generator) -> None:
    y, p = _multiclass(rng, k=2)
    assert M.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert M.roc_auc(y, p[:, 1]) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    y, p = _multiclass(rng, k=5)
    p = p / p.sum(1, keepdims=True)
    assert M.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    per = [skm.roc_auc_score(y == c, p[:, c]) for c in range(5)]
    np.testing.assert_allclose(M.ovr_auc(y, p), per)


def test_roc_auc_one_class_is_nan_with_warning() -> None:
    with pytest.warns(UserWarning, match="one class"):
        assert np.isnan(M.roc_auc(np.zeros(5, int), np.linspace(0, 1, 5)))
    y = np.array([0, 1, 0, 1])
    p = np.full((4, 3), 1 / 3)
    with pytest.warns(UserWarning, match="classes"):
        assert np.isnan(M.roc_auc(y, p))


def test_roc_auc_prior_scaling_invariance_per_class(rng: np.random.Generator) -> None:
    y, p = _multiclass(rng, k=3)
    np.testing.assert_allclose(M.ovr_auc(y, p / np.array([0.2, 0.5, 0.3])), M.ovr_auc(y, p))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="1-D"):
        M.accuracy(np.zeros((3, 1), int), np.zeros((3, 1), int))
    with pytest.raises(ValueError, match="integer"):
        M.accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="differ"):
        M.accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="rows"):
        M.roc_auc(np.array([0, 1]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=">= n_classes"):
        M.roc_auc(np.array([0, 2]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        M.roc_auc(np.array([0, 1]), np.zeros((2, 2, 1)))


def test_roc_curve_points_match_sklearn(rng: np.random.Generator) -> None:
    y, p = _multiclass(rng, k=3)
    fpr, tpr, thr = M.roc_curve_points(y, p[:, 2], pos_label=2)
    f2, t2, th2 = skm.roc_curve(y, p[:, 2], pos_label=2, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y == 2, p[:, 2]))
    with pytest.raises(ValueError):
        M.roc_curve_points(np.zeros(3, int), np.ones(3))


def test_abe_on_original_scale(rng: np.random.Generator) -> None:
    t = rng.random((50, 3))
    p = rng.random((50, 3))
    ranges = np.array([[1, 5], [1, 6], [0, 1]])
    got = M.abe(p, t, ranges)
    for j, (lo, hi) in enumerate(ranges):
        ref = skm.mean_absolute_error(lo + t[:, j] * (hi - lo), lo + p[:, j] * (hi - lo))
        assert got[j] == pytest.approx(ref)
        assert M.abe(p[:, j], t[:, j], (lo, hi)) == pytest.approx(ref)
    assert M.abe(p[:, 0], t[:, 0]) == pytest.approx(skm.mean_absolute_error(t[:, 0], p[:, 0]))
    t[0, 0] = np.nan  # missing annotation is left out
    assert M.abe(p[:, 0], t[:, 0]) == pytest.approx(skm.mean_absolute_error(t[1:, 0], p[1:, 0]))
    with pytest.raises(ValueError):
        M.abe(p, t[:, :2])
    with pytest.raises(ValueError):
        M.abe(p, t, (1, 5))


def test_dice_matches_monai_and_empty_rule(rng: np.random.Generator) -> None:
    import torch
    from monai.metrics import compute_dice

    pred = rng.random((6, 16, 16)) > 0.6
    gt = rng.random((6, 16, 16)) > 0.5
    ref = compute_dice(torch.from_numpy(pred[None, None]).float(), torch.from_numpy(gt[None, None]).float())
    assert dice(pred, gt) == pytest.approx(float(ref))
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0  # both empty → empty_value (default 1.0)
    assert dice(empty, empty, empty_value=0.0) == 0.0
    assert dice(empty, ~empty) == 0.0 and dice(~empty, empty) == 0.0  # one empty → 0
    ref_empty = compute_dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), ignore_empty=False)
    assert float(ref_empty) == dice(empty, empty)
    with pytest.raises(ValueError, match="shape"):
        dice(pred, gt[:3])
    with pytest.raises(ValueError, match="binary"):
        dice(rng.random((4, 4)), empty)


def test_dice_per_volume_mean_median() -> None:
    a = np.zeros((3, 4, 4), bool)
    b = a.copy()
    b[0, :2] = True
    vols = [(b, b), (a, a), (a, b), (b, np.ones_like(b))]
    r = dice_per_volume([v[0] for v in vols], [v[1] for v in vols])
    expect = [1.0, 1.0, 0.0, 2 * 8 / (8 + 48)]
    np.testing.assert_allclose(r["per_volume"], expect)
    assert r["mean"] == pytest.approx(np.mean(expect))
    assert r["median"] == pytest.approx(np.median(expect))
    assert r["n_empty_gt"] == 1


def test_largest_connected_component_matches_monai(rng: np.random.Generator) -> None:
    from monai.transforms import KeepLargestConnectedComponent

    m = rng.random((8, 12, 12)) > 0.7
    for conn in (1, 3):
        ours = largest_connected_component(m, connectivity=conn)
        ref = KeepLargestConnectedComponent(connectivity=conn)(m[None].astype(np.float32))
        np.testing.assert_array_equal(ours, np.asarray(ref[0]).astype(bool))
    # diagonal neighbours are separate with connectivity 1 (6-neighbourhood in 3-D)
    d = np.zeros((3, 3, 3), bool)
    d[0, 0, 0] = d[1, 1, 1] = d[2, 2, 2] = d[2, 2, 1] = True
    assert largest_connected_component(d, 1).sum() == 2
    assert largest_connected_component(d, 3).sum() == 4
    assert not largest_connected_component(np.zeros((3, 3), bool)).any()


def test_no_warning_for_defined_auc() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8])) == 1.0


def test_roc_auc_with_heavy_ties_matches_sklearn(rng: np.random.Generator) -> None:
    """The one AUC of cadx (cv, evaluate, the validation metric, reports) on scores with many ties: binary on a
    4-level score, and a multi-class vote-fraction table (studies of 6 slices) as the vote aggregation produces."""
    y = rng.integers(0, 2, 120)
    s = np.clip(y + rng.integers(-1, 3, 120), 0, 3).astype(float)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert M.roc_auc(y, np.stack([1 - s / 3, s / 3], 1)) == pytest.approx(skm.roc_auc_score(y, s))
    y3 = np.arange(90) % 3
    votes = rng.multinomial(4, [1 / 3, 1 / 3, 1 / 3], 90)
    votes[np.arange(90), y3] += 2
    frac = votes / votes.sum(1, keepdims=True)
    assert M.roc_auc(y3, frac) == pytest.approx(skm.roc_auc_score(y3, frac, multi_class="ovr", average="macro"))
