"""cadx.classical: DMRN HC features (exact dimensions and skimage values), ROI features, SVMs, LASSO/EN attribute
regressors, RFE relatedness and inter-reader ABE — all on small synthetic data with known answers."""

from __future__ import annotations

import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from skimage.feature import hog, local_binary_pattern
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cadx.classical import (
    ROI_FEATURE_NAMES,
    AttributeRegressor,
    EmbeddingSVM,
    HandcraftedFeatures,
    HandcraftedSVM,
    absolute_error,
    attribute_relatedness,
    handcrafted_features,
    hog_features,
    inter_reader_abe,
    lbp_features,
    nested_rfe_importance,
    roi_features,
)
from cadx.classical.svm import calibration_cv
from cadx.errors import CadxDataError

DATA = Path(__file__).parent / "data" / "svm"


def _known_image() -> np.ndarray:
    """192 x 192 uint8 with min 0 and max 255 (so the [0, 255] rescaling inside lbp_features is the identity)."""
    yy, xx = np.mgrid[0:192, 0:192]
    img = (xx + 2 * yy) % 256
    img[40:90, 100:170] = 255 - img[40:90, 100:170]
    img[0, 0], img[0, 1] = 0, 255
    return img.astype(np.uint8)


def test_dimensions_match_dmrn():
    """DMRN: 531-d LBP, 1296-d HOG at the assumed 192 x 192 input.

    LBP: P=8 'nri_uniform' has 8*7 + 3 = 59 codes; (192/64)^2 = 9 patches -> 9 * 59 = 531.
    HOG: 9 orientations x (2 x 2 cells of 16 px) = 36 per 32-px patch; (192/32)^2 = 36 patches -> 36 * 36 = 1296.
    Any other input size is resized to 192 first, so the dimensions do not depend on it.
    """
    rng = np.random.default_rng(0)
    for shape in [(192, 192), (100, 130), (1, 64, 64), (3, 250, 200)]:
        im = rng.random(shape)
        assert lbp_features(im).shape == (531,)
        assert hog_features(im).shape == (1296,)
    feats = handcrafted_features(rng.random((3, 80, 90)))
    assert feats.shape == (3, 1827)
    assert handcrafted_features(np.zeros((0, 50, 50))).shape == (0, 1827)
    # other parametrisations follow the same arithmetic: 6x6 patches x (8 + 2) 'uniform' bins
    assert lbp_features(rng.random((96, 96)), patch=32, method="uniform").shape == (360,)
    with pytest.raises(CadxDataError):
        lbp_features(rng.random((96, 96)), patch=50)


def test_lbp_equals_skimage_per_patch_histograms():
    img = _known_image()
    got = lbp_features(img).reshape(9, 59)
    codes = local_binary_pattern(img, 8, 1, method="nri_uniform")
    for i in range(3):
        for j in range(3):
            tile = codes[64 * i:64 * (i + 1), 64 * j:64 * (j + 1)].astype(int)
            want = np.bincount(tile.ravel(), minlength=59) / 4096
            np.testing.assert_allclose(got[3 * i + j], want, atol=1e-12)
    # a constant image has one LBP code everywhere: every patch histogram is a single 1
    flat = lbp_features(np.full((192, 192), 7.0)).reshape(9, 59)
    assert np.all(flat.max(axis=1) == 1.0) and np.all((flat > 0).sum(axis=1) == 1)


def test_hog_equals_skimage_blocks_and_step_edge():
    img = _known_image()
    full = hog(img / 255.0, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
               block_norm="L2-Hys", feature_vector=False)
    np.testing.assert_allclose(hog_features(img), full[::2, ::2].ravel(), atol=1e-12)
    # vertical step at x = 96: the centred gradient is non-zero only in columns 95 and 96, i.e. the right cells of
    # patch column 2 and the left cells of patch column 3; orientation 0 (bin 0); two equal cells per block ->
    # L2(-Hys) normalised to 1/sqrt(2) each.
    step = np.zeros((192, 192))
    step[:, 96:] = 1.0
    h = hog_features(step).reshape(6, 6, 2, 2, 9)
    want = np.zeros((6, 6, 2, 2, 9))
    want[:, 2, :, 1, 0] = 1 / np.sqrt(2)
    want[:, 3, :, 0, 0] = 1 / np.sqrt(2)
    np.testing.assert_allclose(h, want, atol=1e-9)


def test_roi_features_hand_values():
    img = np.array([[1.0, 2, 3], [4, 5, 6]])
    f = roi_features(img, np.ones_like(img), spacing=(2.0, 0.5))
    assert list(f) == list(ROI_FEATURE_NAMES)
    assert f["size_voxels"] == 6 and f["size_mm"] == pytest.approx(6.0)
    assert f["equivalent_diameter_mm"] == pytest.approx(2 * np.sqrt(6 / np.pi))
    assert f["mean"] == 3.5 and f["std"] == pytest.approx(np.sqrt(35 / 12))
    assert f["p50"] == 3.5 and f["skewness"] == pytest.approx(0.0)
    assert f["kurtosis"] == pytest.approx(-1.268571, abs=1e-6)  # Fisher kurtosis of 1..6
    # vertical stripes 0/1 (4x4), 2 grey levels: counts over 0°, 45°, 90°, 135° = 24 + 18 + 24 + 18 = 84 pair
    # entries (symmetric), 60 of them between different levels -> contrast 60/84; P = [[12, 30], [30, 12]] / 84.
    stripes = np.tile([0.0, 1.0], (4, 2))
    g = roi_features(stripes, np.ones_like(stripes), levels=2)
    assert g["glcm_contrast"] == pytest.approx(60 / 84)
    assert g["glcm_dissimilarity"] == pytest.approx(60 / 84)
    assert g["glcm_homogeneity"] == pytest.approx((24 + 30) / 84)
    assert g["glcm_energy"] == pytest.approx(np.sqrt(2 * 12**2 + 2 * 30**2) / 84)
    # outside-mask pixels do not enter: a mask on the left 2 columns sees 0|1 pairs only horizontally
    vol = np.zeros((5, 6, 6))
    m = np.zeros_like(vol)
    m[1:4, 1:5, 1:5] = 1
    f3 = roi_features(vol + 3.0, m)
    assert f3["size_voxels"] == 48 and f3["std"] == 0 and f3["skewness"] == 0
    assert f3["equivalent_diameter_mm"] == pytest.approx(2 * np.cbrt(3 * 48 / (4 * np.pi)))
    with pytest.raises(CadxDataError):
        roi_features(img, np.zeros_like(img))


def _stripes(n: int, vertical: bool, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:48]
    base = np.sin((xx if vertical else yy) * 0.8)
    return np.stack([base + 0.3 * rng.normal(size=base.shape) for _ in range(n)])


def test_handcrafted_svm_separates_textures_deterministically():
    rng = np.random.default_rng(1)
    x = np.concatenate([_stripes(12, False, rng), _stripes(12, True, rng)])
    y = np.repeat([0, 1], 12)
    tr = np.r_[0:8, 12:20]
    te = np.setdiff1d(np.arange(24), tr)
    svm = HandcraftedSVM(random_state=3).fit(x[tr], y[tr])
    p = svm.predict_proba(x[te])
    assert p.shape == (8, 2) and np.allclose(p.sum(axis=1), 1)
    assert (svm.predict(x[te]) == y[te]).all()
    feats = handcrafted_features(x)
    np.testing.assert_array_equal(HandcraftedFeatures().fit_transform(x[:3]), feats[:3])
    pre = HandcraftedSVM(random_state=3, precomputed=True).fit(feats[tr], y[tr])
    np.testing.assert_allclose(pre.predict_proba(feats[te]), p, atol=1e-12)
    again = clone(pre).fit(feats[tr], y[tr])
    np.testing.assert_array_equal(again.predict_proba(feats[te]), pre.predict_proba(feats[te]))
    rbf = HandcraftedSVM(kernel="rbf", precomputed=True, classes=[0, 1, 2]).fit(feats[tr], y[tr])
    pr = rbf.predict_proba(feats[te])
    assert pr.shape == (8, 3) and np.all(pr[:, 2] == 0)


def test_embedding_svm():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 1, (30, 16)), rng.normal(0, 1, (30, 16)) + 3.0, rng.normal(0, 1, (5, 16))])
    y = np.r_[np.zeros(30, int), np.ones(30, int), -np.ones(5, int)]  # the last 5 are unlabelled
    a = EmbeddingSVM(C=0.5, random_state=7).fit(emb, y)
    b = EmbeddingSVM(C=0.5, random_state=7).fit(emb, y)
    np.testing.assert_array_equal(a.predict_proba(emb), b.predict_proba(emb))
    assert a.n_features_in_ == 16 and list(a.classes_) == [0, 1]
    assert (a.predict(emb[:60]) == y[:60]).mean() == 1.0
    assert ((a.decision_function(emb[:60]) > 0) == (y[:60] == 1)).all()
    with pytest.raises(CadxDataError):
        EmbeddingSVM().fit(emb[:30], y[:30])
    with pytest.raises(CadxDataError):
        a.predict_proba(emb[:, :5])


def _two_blobs(n: int = 40, d: int = 4, shift: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    x[y == 1] += shift
    return x, y


def _sklearn_platt(x: np.ndarray, y: np.ndarray, c: float, seed: int, cv: object) -> np.ndarray:
    """The same model written directly in scikit-learn: scaler → Platt-calibrated linear SVC (ensemble=False)."""
    svc = SVC(kernel="linear", C=c, random_state=seed)
    cal = CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)
    return make_pipeline(StandardScaler(), cal).fit(x, y).predict_proba(x)


def test_embedding_svm_equals_scikit_learn_platt_pipeline():
    x, y = _two_blobs()
    svm = EmbeddingSVM(C=0.5, classes=[0, 1, 2], random_state=1).fit(x, y)
    want = _sklearn_platt(x, y, 0.5, 1, StratifiedKFold(5, shuffle=True, random_state=1))
    p = svm.predict_proba(x)
    assert p.shape == (40, 3) and np.all(p[:, 2] == 0) and svm.calibrated_
    np.testing.assert_allclose(p[:, :2], want, atol=1e-12)
    np.testing.assert_array_equal(svm.classes_, [0, 1, 2])
    np.testing.assert_array_equal(svm.predict(x), np.argmax(want, 1))
    # three classes, one with 3 rows: a 3-fold calibration CV, as scikit-learn with StratifiedKFold(3)
    x3 = np.concatenate([x, np.random.default_rng(2).normal(size=(3, 4)) - 2.0])
    y3 = np.r_[y, 2, 2, 2]
    p3 = EmbeddingSVM(random_state=4).fit(x3, y3).predict_proba(x3)
    np.testing.assert_allclose(p3, _sklearn_platt(x3, y3, 1.0, 4, StratifiedKFold(3, shuffle=True, random_state=4)),
                               atol=1e-12)
    # the scikit-learn contract: parameters round-trip, clone refits to the same model
    assert svm.get_params() == {"C": 0.5, "classes": [0, 1, 2], "random_state": 1}
    np.testing.assert_array_equal(clone(svm).fit(x, y).predict_proba(x), p)


def test_embedding_svm_calibration_is_patient_grouped():
    rng = np.random.default_rng(0)
    y_pat = rng.integers(0, 2, 40)
    signal = 0.6 * y_pat[:, None] * np.r_[np.ones(3), np.zeros(27)]

    def slices(centres: np.ndarray, per: int) -> np.ndarray:  # near-identical slices of each patient
        return np.repeat(centres, per, 0) + 0.05 * rng.normal(size=(centres.shape[0] * per, 30))

    x = slices(rng.normal(size=(40, 30)) + signal, 8)
    y, groups = np.repeat(y_pat, 8), np.repeat(np.arange(40), 8)
    splits = calibration_cv(y, groups, random_state=3)
    assert isinstance(splits, list) and len(splits) == 5
    for tr, te in splits:
        assert not set(groups[tr]) & set(groups[te])  # no patient on both sides
    grouped = EmbeddingSVM(random_state=3).fit(x, y, groups=groups)
    np.testing.assert_allclose(grouped.predict_proba(x), _sklearn_platt(x, y, 1.0, 3, splits), atol=1e-12)
    leaky = EmbeddingSVM(random_state=3).fit(x, y)
    # on new patients: calibrating on slices of training patients makes the sigmoid wildly over-confident
    y_new = rng.integers(0, 2, 200)
    x_new = rng.normal(size=(200, 30)) + 0.6 * y_new[:, None] * np.r_[np.ones(3), np.zeros(27)]
    ll_grouped = log_loss(y_new, grouped.predict_proba(x_new))
    ll_leaky = log_loss(y_new, leaky.predict_proba(x_new))
    assert ll_grouped < 1.0 < 3.0 < ll_leaky
    # fewest patients in a class decides k; one patient of a class → no calibration possible
    y2 = np.r_[np.zeros(6, int), np.ones(6, int)]
    assert len(calibration_cv(y2, np.r_[0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4], 0)) == 2
    assert calibration_cv(y2, np.r_[0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3], 0) is None
    with pytest.raises(CadxDataError, match="groups"):
        EmbeddingSVM().fit(x, y, groups=groups[:5])


def test_embedding_svm_without_calibration_is_a_softmax_of_the_decision():
    x, y = _two_blobs(21)
    y[:] = 0
    y[-1] = 1  # a single row of class 1: no calibration CV is possible
    svm = EmbeddingSVM(classes=[0, 1], random_state=2).fit(x, y)
    assert not svm.calibrated_
    d = svm.decision_function(x)
    ref = make_pipeline(StandardScaler(), SVC(kernel="linear", random_state=2)).fit(x, y)
    np.testing.assert_allclose(d, ref.decision_function(x), atol=1e-12)
    np.testing.assert_allclose(svm.predict_proba(x)[:, 1], 1 / (1 + np.exp(-2 * d)), atol=1e-12)


def test_svm_save_load_and_legacy_run_files(tmp_path, monkeypatch):
    x, y = _two_blobs()
    svm = EmbeddingSVM(C=0.5, classes=[0, 1, 2], random_state=1).fit(x, y)
    back = EmbeddingSVM.load(svm.save(tmp_path / "fold_0" / "svm.pkl"))
    np.testing.assert_array_equal(back.predict_proba(x), svm.predict_proba(x))
    # svm.pkl written by the engine's former EmbeddingSVM(num_classes=3, c=0.5, seed=1) (classical/embedding_svm)
    # and by its pre-restructure copy (engine/classifiers) with EmbeddingSVM(2, c=1.0, seed=2) on one row of class 1
    old = EmbeddingSVM.load(DATA / "svm_legacy.pkl")
    assert isinstance(old, EmbeddingSVM) and old.get_params() == svm.get_params()
    np.testing.assert_allclose(old.predict_proba(x), svm.predict_proba(x), atol=1e-12)
    np.testing.assert_allclose(old.predict_proba(x[:1]), [[0.78890998, 0.21109002, 0]], atol=1e-8)
    x1, y1 = x[:21], np.r_[np.zeros(20, int), 1]
    old1 = EmbeddingSVM.load(DATA / "svm_legacy_engine_uncalibrated.pkl")
    new1 = EmbeddingSVM(classes=[0, 1], random_state=2).fit(x1, y1)
    assert not old1.calibrated_
    np.testing.assert_allclose(old1.predict_proba(x1), new1.predict_proba(x1), atol=1e-12)
    np.testing.assert_allclose(old1.decision_function(x1), new1.decision_function(x1), atol=1e-12)
    # the first engine version: EmbeddingSVM(3, c, seed) whose pipeline ended in SVC(probability=True)
    engine = types.ModuleType("cadx.engine.classifiers")
    engine.EmbeddingSVM = type("EmbeddingSVM", (), {"__module__": "cadx.engine.classifiers"})
    monkeypatch.setitem(sys.modules, "cadx.engine.classifiers", engine)  # only for pickling it here
    v0 = engine.EmbeddingSVM()
    v0.num_classes, v0.c, v0.seed, v0.classes_ = 3, 1.0, 0, np.array([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) is deprecated in scikit-learn 1.9
        v0.pipeline_ = make_pipeline(StandardScaler(), SVC(kernel="linear", probability=True, random_state=0)).fit(x, y)
    (tmp_path / "v0.pkl").write_bytes(pickle.dumps(v0))
    first = EmbeddingSVM.load(tmp_path / "v0.pkl")
    np.testing.assert_allclose(first.predict_proba(x)[:, :2], v0.pipeline_.predict_proba(x), atol=1e-12)
    np.testing.assert_allclose(first.decision_function(x), v0.pipeline_.decision_function(x), atol=1e-12)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CadxDataError, match=r"junk\.pkl"):
        EmbeddingSVM.load(tmp_path / "junk.pkl")
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CadxDataError, match=r"other\.pkl.*dict"):
        EmbeddingSVM.load(tmp_path / "other.pkl")
    with pytest.raises(CadxDataError, match="EmbeddingSVM"):
        HandcraftedSVM.load(tmp_path / "fold_0" / "svm.pkl")


def test_attribute_regressors_sparse_recovery_and_nan_masking():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 12))
    Y = np.stack([2 * X[:, 0] + 0.05 * rng.normal(size=90), -X[:, 3] + 0.05 * rng.normal(size=90),
                  np.full(90, 4.0)], axis=1)
    Y[::4, 1] = np.nan
    for method in ("lasso", "elasticnet"):
        reg = AttributeRegressor(method, cv=3, n_alphas=20, random_state=0).fit(X[:60], Y[:60])
        coef0 = reg.estimators_[0].named_steps["reg"].coef_
        assert np.argmax(np.abs(coef0)) == 0 and np.abs(coef0[1:]).max() < 0.1 * abs(coef0[0])
        err = absolute_error(Y[60:], reg.predict(X[60:]))
        assert err[0] < 0.1 and err[1] < 0.1 and err[2] == 0.0  # constant attribute -> its mean exactly
        assert np.isnan(reg.alphas_[2]) and np.isfinite(reg.alphas_[:2]).all()
    # NaN rows are simply left out: same model as fitting attribute 1 on its finite rows alone
    reg = AttributeRegressor(cv=3, n_alphas=20).fit(X[:60], Y[:60])
    ok = np.isfinite(Y[:60, 1])
    alone = AttributeRegressor(cv=3, n_alphas=20).fit(X[:60][ok], Y[:60][ok, 1])
    np.testing.assert_allclose(reg.predict(X[60:])[:, 1], alone.predict(X[60:])[:, 0])
    grouped = AttributeRegressor(cv=3, n_alphas=20).fit(X[:60], Y[:60], groups=np.arange(60) // 3)
    assert grouped.predict(X[60:]).shape == (30, 3)
    with pytest.raises(CadxDataError):
        AttributeRegressor("ridge").fit(X, Y)


def test_absolute_error_hand_values():
    t = np.array([[1.0, np.nan], [3.0, 2.0]])
    p = np.array([[2.0, 9.0], [3.5, 1.0]])
    np.testing.assert_allclose(absolute_error(t, p), [0.75, 1.0])


def test_nested_importance_two_features_by_hand():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 2))
    y = (2 * X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=200) > 0).astype(int)
    rel, rank = nested_rfe_importance(X, y)
    w = np.abs(LogisticRegression(max_iter=2000).fit(StandardScaler().fit_transform(X), y).coef_[0])
    r = w[1] / w.sum()  # feature 1 is removed first with ratio r; feature 0 keeps the rest
    np.testing.assert_allclose(rel, [1 - r, r], rtol=1e-6)
    assert list(rank) == [1, 2]


def test_attribute_relatedness_recovers_informative_attributes():
    rng = np.random.default_rng(0)
    n = 240
    X = rng.normal(size=(n, 6))
    y = (3 * X[:, 2] - 1.5 * X[:, 0] + 0.6 * X[:, 4] + 0.3 * rng.normal(size=n) > 0).astype(int)
    names = ["sub", "int", "cal", "sph", "mar", "tex"]
    df = attribute_relatedness(X, y, names, folds=4, groups=np.arange(n) // 2, seed=0)
    assert list(df.index) == names and (df["n_folds"] == 4).all()
    assert df.loc["cal", "rank"] == 1 and df.loc["sub", "rank"] == 2 and df.loc["mar", "rank"] == 3
    assert df.loc["cal", "rfe_rank_mean"] == 1.0 and df.loc["sub", "rfe_rank_mean"] == 2.0
    assert df["relatedness_mean"].sum() == pytest.approx(1.0)
    assert set(df.index[df["above_average"]]) == {"cal", "sub"}
    assert (df["relatedness_std"] >= 0).all()
    # explicit folds (train index arrays / (train, test) tuples) and NaN rows
    Xn = X.copy()
    Xn[0, 1] = np.nan
    df2 = attribute_relatedness(Xn, y, names, folds=[(np.arange(0, 200), np.arange(200, n))])
    assert df2["relatedness_std"].eq(0).all() and df2.loc["cal", "rank"] == 1


def test_inter_reader_abe_all_pairs():
    r = np.array([[1, 2, np.nan, 4], [3, 3, 3, np.nan], [np.nan, 5, np.nan, np.nan]])
    # nodule 0: |1-2|, |1-4|, |2-4| = 1, 3, 2; nodule 1: three zero pairs; nodule 2: one reader -> no pair
    out = inter_reader_abe({"sub": r, "lonely": np.array([[1.0, np.nan], [np.nan, 2.0]])})
    assert out["sub"] == pytest.approx(6 / 6)
    assert np.isnan(out["lonely"])


def test_covariate_fusion_fits_on_training_folds_only() -> None:
    from cadx.classical import covariate_fusion

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    d = np.exp(rng.normal(2.0 + 0.8 * y, 0.4))            # "diameters": malignant larger
    p = rng.uniform(size=50)
    folds = [(np.arange(0, 50, 2), np.arange(1, 50, 2)), (np.arange(1, 49, 2), np.arange(0, 48, 2))]
    p_cov, fused = covariate_fusion(p, d, y, folds)
    ref = LogisticRegression(class_weight="balanced").fit(np.log(d[::2, None]), y[::2])
    np.testing.assert_allclose(p_cov[1::2], ref.predict_proba(np.log(d[1::2, None]))[:, 1])
    assert np.isnan(p_cov[48]) and np.isnan(fused[48])    # in no test fold
    np.testing.assert_allclose(fused[:48], 0.5 * p[:48] + 0.5 * p_cov[:48])
    # monotone in the covariate within a fold: ranks follow the diameters
    te = folds[0][1]
    assert (np.argsort(p_cov[te]) == np.argsort(d[te])).all()
    with pytest.raises(CadxDataError, match="covariate"):
        covariate_fusion(p, -d, y, folds)
    with pytest.raises(CadxDataError, match="weight"):
        covariate_fusion(p, d, y, folds, weight=2.0)
