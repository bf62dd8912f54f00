"""SVM classifiers: the DMRN HC baseline on LBP+HOG features, and the DMRN inference SVM on CNN embeddings.

Both are scikit-learn estimators (constructor stores parameters, ``fit`` returns ``self``, learned state ends with
``_``) wrapping ``StandardScaler → SVC`` with Platt-scaled probabilities. ``SVC(probability=True)`` is deprecated
since scikit-learn 1.9; its documented replacement is used instead: ``CalibratedClassifierCV(SVC(), method="sigmoid",
ensemble=False)`` (one SVC fitted on all training rows, sigmoid fitted on its out-of-fold decision values from a
stratified 5-fold CV — fewer folds when a class has fewer than 5 rows — shuffled with ``random_state``), so a fit is
deterministic for a seed. Every class needs at least two training rows.

Standardisation: a linear SVM's margin (and so ``C``) depends on the feature scales; CNN embedding dimensions (after
ReLU/BN/pooling) and the concatenated LBP histograms (values ≤ 1) vs HOG (L2-Hys ≤ 0.2) differ by orders of
magnitude, so every feature is z-scored on the training set. The scaler is part of the fitted pipeline, so the test
fold never influences it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cadx.classical.features import HC_SIZE, handcrafted_features
from cadx.errors import CadxDataError

__all__ = ["EmbeddingSVM", "HandcraftedFeatures", "HandcraftedSVM"]


class HandcraftedFeatures(TransformerMixin, BaseEstimator):
    """Stateless transformer: images ``(N, H, W)``/``(N, C, H, W)`` → DMRN HC features ``(N, 1827)``."""

    def __init__(self, lbp_patch: int = 64, hog_patch: int = 32, size: int = HC_SIZE) -> None:
        self.lbp_patch = lbp_patch
        self.hog_patch = hog_patch
        self.size = size

    def fit(self, images: np.ndarray, y: Any = None) -> HandcraftedFeatures:
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return handcrafted_features(images, self.lbp_patch, self.hog_patch, self.size)


class _ProbaSVM(ClassifierMixin, BaseEstimator):
    """Shared fit/predict of a ``StandardScaler + SVC`` on feature rows; labels < 0 (missing) are dropped.

    ``classes`` (optional) fixes the columns of :meth:`predict_proba` (e.g. all class ids of a cohort): a class
    absent from a training fold gets probability 0 instead of shifting the columns.
    """

    kernel = "linear"
    C = 1.0
    gamma: float | str = "scale"
    classes: Sequence[Any] | None = None
    random_state: int | None = 0

    def _features(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fit_features(self, feats: np.ndarray, y: np.ndarray) -> _ProbaSVM:
        y = np.asarray(y)
        if feats.shape[0] != y.shape[0]:
            raise CadxDataError(f"{feats.shape[0]} samples but {y.shape[0]} labels", field="label")
        keep = y >= 0 if np.issubdtype(y.dtype, np.number) else np.ones(len(y), dtype=bool)
        feats, y = feats[keep], y[keep]
        if np.unique(y).size < 2:
            raise CadxDataError("the SVM needs at least two classes in the training data", field="label")
        n_cv = min(5, int(np.unique(y, return_counts=True)[1].min()))
        if n_cv < 2:
            raise CadxDataError("Platt scaling needs at least two training samples of every class", field="label")
        svc = SVC(kernel=self.kernel, C=self.C, gamma=self.gamma, random_state=self.random_state)
        platt = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False,
                                       cv=StratifiedKFold(n_cv, shuffle=True, random_state=self.random_state))
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("svc", platt)]).fit(feats, y)
        fitted = self.pipeline_.classes_
        if self.classes is not None:
            self.classes_ = np.asarray(self.classes)
            missing = set(fitted.tolist()) - set(self.classes_.tolist())
            if missing:
                raise CadxDataError(f"training labels {sorted(missing)} not in classes", field="label")
        else:
            self.classes_ = fitted
        self._cols_ = np.array([self.classes_.tolist().index(c) for c in fitted.tolist()])
        self.n_features_in_ = feats.shape[1]
        return self

    def _proba_features(self, feats: np.ndarray) -> np.ndarray:
        if feats.shape[1] != self.n_features_in_:
            raise CadxDataError(f"expected {self.n_features_in_} features, got {feats.shape[1]}", field="features")
        p = self.pipeline_.predict_proba(feats)
        out = np.zeros((feats.shape[0], len(self.classes_)))
        out[:, self._cols_] = p
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, len(classes_))`` (rows sum to 1)."""
        return self._proba_features(self._features(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class label per row, ``(N,)`` (argmax of :meth:`predict_proba`, consistent with it)."""
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """The SVC's decision values on the scaled features (``(N,)`` binary, ``(N, K)`` one-vs-rest)."""
        scaled = self.pipeline_.named_steps["scale"].transform(self._features(x))
        return self.svc_.decision_function(scaled)

    @property
    def svc_(self) -> SVC:
        """The SVC fitted on all training rows (the one whose outputs are Platt-calibrated)."""
        return self.pipeline_.named_steps["svc"].calibrated_classifiers_[0].estimator


class HandcraftedSVM(_ProbaSVM):
    """DMRN HC baseline: LBP (531) + HOG (1296) features → ``StandardScaler`` → ``SVC(probability=True)``.

    ``fit(images (N, H, W) | (N, C, H, W), y (N,))``; ``predict_proba(images) -> (N, K)``. With
    ``precomputed=True`` the inputs are already :func:`handcrafted_features` rows ``(N, 1827)`` (compute them
    once per cohort when cross-validating).
    """

    def __init__(self, kernel: str = "linear", C: float = 1.0, gamma: float | str = "scale",
                 classes: Sequence[Any] | None = None, random_state: int | None = 0, precomputed: bool = False,
                 lbp_patch: int = 64, hog_patch: int = 32, size: int = HC_SIZE) -> None:
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.classes = classes
        self.random_state = random_state
        self.precomputed = precomputed
        self.lbp_patch = lbp_patch
        self.hog_patch = hog_patch
        self.size = size

    def _features(self, x: np.ndarray) -> np.ndarray:
        if self.precomputed:
            f = np.asarray(x, dtype=np.float64)
            if f.ndim != 2:
                raise CadxDataError(f"precomputed features must be (N, D), got {f.shape}", field="features")
            return f
        return handcrafted_features(x, self.lbp_patch, self.hog_patch, self.size)

    def fit(self, images: np.ndarray, y: np.ndarray) -> HandcraftedSVM:
        if self.kernel not in ("linear", "rbf"):
            raise CadxDataError(f"kernel must be 'linear' or 'rbf', got {self.kernel!r}", field="kernel")
        self._fit_features(self._features(images), y)
        return self


class EmbeddingSVM(_ProbaSVM):
    """DMRN inference classifier: ``StandardScaler`` → linear ``SVC(probability=True)`` on embeddings ``(N, D)``.

    ``fit(emb (N, D), y (N,))`` (labels < 0 = unlabelled, ignored); ``predict_proba(emb) -> (N, K)``.
    """

    def __init__(self, C: float = 1.0, classes: Sequence[Any] | None = None, random_state: int | None = 0) -> None:
        self.C = C
        self.classes = classes
        self.random_state = random_state

    def _features(self, x: np.ndarray) -> np.ndarray:
        f = np.asarray(x, dtype=np.float64)
        if f.ndim != 2 or not np.all(np.isfinite(f)):
            raise CadxDataError(f"embeddings must be finite (N, D), got shape {f.shape}", field="features")
        return f

    def fit(self, emb: np.ndarray, y: np.ndarray) -> EmbeddingSVM:
        self._fit_features(self._features(emb), y)
        return self
