"""SVM classifiers: the DMRN HC baseline on LBP+HOG features, and the DMRN inference SVM on CNN embeddings (the
one the engine fits per fold and saves as ``svm.pkl``).

Both are scikit-learn estimators (constructor stores parameters, ``fit`` returns ``self``, learned state ends with
``_``, ``random_state``, ``classes_``, ``predict_proba``) wrapping ``StandardScaler → SVC`` with Platt-scaled
probabilities. ``SVC(probability=True)`` is deprecated since scikit-learn 1.9; its documented replacement is used
instead: ``CalibratedClassifierCV(SVC(), method="sigmoid", ensemble=False)`` (one SVC fitted on all training rows,
sigmoid fitted on its out-of-fold decision values from a stratified ≤5-fold CV shuffled with ``random_state``), so
a fit is deterministic for a seed. ``fit(..., groups=patient_ids)`` makes that internal CV patient-grouped
(:func:`calibration_cv`): the rows of one patient (slices) never sit on both sides of a calibration split.

Standardisation: a linear SVM's margin (and so ``C``) depends on the feature scales; CNN embedding dimensions (after
ReLU/BN/pooling) and the concatenated LBP histograms (values ≤ 1) vs HOG (L2-Hys ≤ 0.2) differ by orders of
magnitude, so every feature is z-scored on the training set. The scaler is part of the fitted pipeline, so the test
fold never influences it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cadx.classical.features import HC_SIZE, handcrafted_features
from cadx.classical.svm_file import read_svm
from cadx.errors import CadxDataError
from cadx.utils import atomic_write_bytes

__all__ = ["EmbeddingSVM", "HandcraftedFeatures", "HandcraftedSVM", "calibration_cv"]


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


def calibration_cv(y: np.ndarray, groups: np.ndarray | None, random_state: int | None
                   ) -> StratifiedKFold | list[tuple[np.ndarray, np.ndarray]] | None:
    """The internal CV that fits the Platt sigmoid on out-of-fold SVM decision values, or None (too few rows).

    Without ``groups``: ``StratifiedKFold(k, shuffle=True, random_state)``, ``k = min(5, rows of the smallest
    class)``. With ``groups`` (``(N,)`` patient ids): the splits of ``StratifiedGroupKFold(k, shuffle=True,
    random_state)`` with ``k = min(5, patients of the class with fewest patients)``, so no patient has rows on both
    sides of a calibration split (several slices of one patient would otherwise make the held-out decision
    values, and so the sigmoid, over-confident). None when ``k < 2``.
    """
    if groups is None:
        k = min(5, int(np.unique(y, return_counts=True)[1].min()))
        return StratifiedKFold(k, shuffle=True, random_state=random_state) if k >= 2 else None
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise CadxDataError(f"{groups.shape[0]} groups but {y.shape[0]} labels", field="groups")
    k = min(5, min(np.unique(groups[y == c]).size for c in np.unique(y)))
    if k < 2:
        return None
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=random_state).split(y, y, groups))


class _ProbaSVM(ClassifierMixin, BaseEstimator):
    """Shared fit/predict/save/load of a ``StandardScaler + SVC`` on feature rows; labels < 0 (missing) dropped.

    ``classes`` (optional) fixes the columns of :meth:`predict_proba` (e.g. all class ids of a cohort): a class
    absent from a training fold gets probability 0 instead of shifting the columns.

    Probabilities: Platt scaling through :func:`calibration_cv` (``calibrated_ = True``). When it has fewer than 2
    folds (a class with a single training row, or a single patient when ``groups`` are given) there is nothing to
    calibrate on: ``calibrated_ = False`` and the probabilities are a softmax of the SVC decision values
    (binary: of ``(-d, d)``), which keeps the ranking but is not calibrated.
    """

    kernel = "linear"
    C = 1.0
    gamma: float | str = "scale"
    classes: Sequence[Any] | None = None
    random_state: int | None = 0

    def _features(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fit_features(self, feats: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> _ProbaSVM:
        y = np.asarray(y)
        if feats.shape[0] != y.shape[0]:
            raise CadxDataError(f"{feats.shape[0]} samples but {y.shape[0]} labels", field="label")
        if groups is not None and len(groups) != y.shape[0]:
            raise CadxDataError(f"{len(groups)} groups but {y.shape[0]} labels", field="groups")
        keep = y >= 0 if np.issubdtype(y.dtype, np.number) else np.ones(len(y), dtype=bool)
        feats, y = feats[keep], y[keep]
        groups = None if groups is None else np.asarray(groups)[keep]
        if np.unique(y).size < 2:
            raise CadxDataError("the SVM needs at least two classes in the training data", field="label")
        svc = SVC(kernel=self.kernel, C=self.C, gamma=self.gamma, random_state=self.random_state)
        cv = calibration_cv(y, groups, self.random_state)
        self.calibrated_ = cv is not None
        last = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=cv) if cv is not None else svc
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("svc", last)]).fit(feats, y)
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
        if self.calibrated_:
            p = self.pipeline_.predict_proba(feats)
        else:
            d = self.pipeline_.decision_function(feats)
            d = np.stack([-d, d], 1) if d.ndim == 1 else d
            e = np.exp(d - d.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
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
        scaled = self.pipeline_[0].transform(self._features(x))
        return self.svc_.decision_function(scaled)

    @property
    def svc_(self) -> SVC:
        """The SVC fitted on all training rows (the one whose outputs are Platt-calibrated)."""
        last = self.pipeline_[-1]
        return last.calibrated_classifiers_[0].estimator if isinstance(last, CalibratedClassifierCV) else last

    def save(self, path: str | Path) -> Path:
        """Pickle the fitted estimator to ``path`` (atomic write; a run folder's ``svm.pkl``)."""
        return atomic_write_bytes(path, pickle.dumps(self))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read an estimator saved by :meth:`save`, or an ``svm.pkl`` written by the engine's earlier
        ``EmbeddingSVM(num_classes, c, seed)`` (``cadx.engine.classifiers`` / ``cadx.classical.embedding_svm``),
        converted to this class with the same fitted pipeline (same probabilities). Other content → CadxDataError.
        """
        obj = read_svm(path, expected=None)
        if not isinstance(obj, cls):
            raise CadxDataError(f"not a cadx {cls.__name__} file (holds a {type(obj).__name__})", path=path)
        return obj


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

    def fit(self, images: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> HandcraftedSVM:
        """Fit on images (or feature rows); ``groups`` ``(N,)`` patient ids make the Platt calibration CV
        patient-grouped (:func:`calibration_cv`)."""
        if self.kernel not in ("linear", "rbf"):
            raise CadxDataError(f"kernel must be 'linear' or 'rbf', got {self.kernel!r}", field="kernel")
        self._fit_features(self._features(images), y, groups)
        return self


class EmbeddingSVM(_ProbaSVM):
    """DMRN inference classifier: ``StandardScaler`` → linear ``SVC`` with Platt-scaled probabilities on network
    embeddings ``(N, D)`` (the engine's ``eval.classifier: svm``, saved per fold as ``svm.pkl``).

    ``fit(emb (N, D), y (N,), groups (N,) | None)`` (labels < 0 = unlabelled, ignored; ``groups`` = patient id
    per row, for a patient-grouped calibration CV); ``predict_proba(emb) -> (N, len(classes_))``.
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

    def fit(self, emb: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> EmbeddingSVM:
        self._fit_features(self._features(emb), y, groups)
        return self


class _LegacyEmbeddingSVM:
    """What an ``svm.pkl`` of the engine's earlier ``EmbeddingSVM(num_classes, c, seed)`` unpickles to (its
    ``__dict__``: ``num_classes, c, seed, pipeline_, classes_`` and, from the calibrated version on,
    ``calibrated_``; the first version's pipeline ended in ``SVC(probability=True)``)."""

    num_classes: int
    c: float
    seed: int
    pipeline_: Pipeline
    classes_: np.ndarray

    def convert(self) -> EmbeddingSVM:
        new = EmbeddingSVM(C=self.c, classes=list(range(self.num_classes)), random_state=self.seed)
        new.pipeline_ = self.pipeline_
        new.calibrated_ = bool(self.__dict__.get("calibrated_", True))
        new.classes_ = np.arange(self.num_classes)
        new._cols_ = np.asarray(self.classes_, dtype=np.int64)
        new.n_features_in_ = int(self.pipeline_.n_features_in_)
        return new
