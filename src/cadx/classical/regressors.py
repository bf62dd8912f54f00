"""LASSO / elastic-net attribute-score regressors (MTMR-Net Table III baselines "LASSO" and "EN").

One independent linear model per attribute (``(N, F)`` features → ``(N, A)`` scores) on handcrafted features or
CNN embeddings. Each attribute is fitted on the rows where its target is finite (NaN = not rated), as
``StandardScaler → LassoCV / ElasticNetCV`` whose penalty (and l1 ratio) is chosen by an *inner* K-fold CV over the
rows passed to :meth:`AttributeRegressor.fit` only — callers pass the training fold, so the test fold never
influences the hyper-parameters. With ``groups`` (e.g. nodule ids of slices) the inner folds are group-disjoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import ElasticNetCV, LassoCV
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cadx.errors import CadxDataError

__all__ = ["AttributeRegressor", "absolute_error"]

# scikit-learn < 1.7 names the grid size ``n_alphas``; later versions take ``alphas=<int>``.
_ALPHAS_KW = "n_alphas" if "n_alphas" in inspect.signature(LassoCV).parameters else "alphas"


class AttributeRegressor(RegressorMixin, BaseEstimator):
    """Per-attribute ``LassoCV`` (``method="lasso"``) or ``ElasticNetCV`` (``method="elasticnet"``) regressors.

    Args:
        method: ``"lasso"`` or ``"elasticnet"``.
        cv: inner folds (reduced to the number of rows/groups available, minimum 2).
        l1_ratio: elastic-net mixing values searched by the inner CV (ignored for LASSO).
        n_alphas: penalty grid size per l1 ratio.
        max_iter: coordinate-descent iterations.
        random_state: seeds the inner fold shuffling and coordinate descent.
    Learned: ``estimators_`` (one fitted pipeline, or a float constant, per attribute), ``alphas_`` (chosen
    penalty per attribute, NaN for constants), ``n_attributes_``, ``n_features_in_``. An attribute with fewer than
    ``cv`` finite targets, or a constant one, is predicted as the mean of its finite training targets (NaN if it
    has none).
    """

    def __init__(self, method: str = "lasso", cv: int = 5, l1_ratio: Sequence[float] = (0.1, 0.5, 0.7, 0.9, 0.95,
                 0.99, 1.0), n_alphas: int = 50, max_iter: int = 5000, random_state: int | None = 0) -> None:
        self.method = method
        self.cv = cv
        self.l1_ratio = l1_ratio
        self.n_alphas = n_alphas
        self.max_iter = max_iter
        self.random_state = random_state

    def _model(self, inner: KFold | list[tuple[np.ndarray, np.ndarray]]) -> LassoCV | ElasticNetCV:
        if self.method == "lasso":
            return LassoCV(**{_ALPHAS_KW: self.n_alphas}, cv=inner, max_iter=self.max_iter,
                           random_state=self.random_state)
        if self.method == "elasticnet":
            return ElasticNetCV(l1_ratio=list(self.l1_ratio), **{_ALPHAS_KW: self.n_alphas}, cv=inner,
                                max_iter=self.max_iter, random_state=self.random_state)
        raise CadxDataError(f"method must be 'lasso' or 'elasticnet', got {self.method!r}", field="method")

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> AttributeRegressor:
        """Fit on features ``X (N, F)`` and targets ``Y (N, A)`` or ``(N,)`` (NaN = missing); ``groups (N,)``."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise CadxDataError(f"need X (N, F) and Y (N, A) with the same N, got {X.shape} and {Y.shape}",
                                field="attributes")
        if not np.all(np.isfinite(X)):
            raise CadxDataError("features contain NaN or infinite values", field="features")
        g = None if groups is None else np.asarray(groups)
        self._model(KFold(2))  # validates ``method`` before any fitting
        self.estimators_: list[Pipeline | float] = []
        self.alphas_ = np.full(Y.shape[1], np.nan)
        for a in range(Y.shape[1]):
            ok = np.isfinite(Y[:, a])
            y = Y[ok, a]
            n_units = int(ok.sum()) if g is None else np.unique(g[ok]).size
            k = min(self.cv, n_units)
            if k < 2 or y.size < self.cv or np.ptp(y) == 0:
                self.estimators_.append(float(y.mean()) if y.size else float("nan"))
                continue
            splitter = (KFold(k, shuffle=True, random_state=self.random_state) if g is None
                        else GroupKFold(k, shuffle=True, random_state=self.random_state))
            inner = list(splitter.split(X[ok], y, None if g is None else g[ok]))
            pipe = Pipeline([("scale", StandardScaler()), ("reg", self._model(inner))]).fit(X[ok], y)
            self.alphas_[a] = float(pipe.named_steps["reg"].alpha_)
            self.estimators_.append(pipe)
        self.n_attributes_ = Y.shape[1]
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted scores ``(N, A)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise CadxDataError(f"expected (N, {self.n_features_in_}) features, got {X.shape}", field="features")
        cols = [np.full(X.shape[0], e) if isinstance(e, float) else e.predict(X) for e in self.estimators_]
        return np.stack(cols, axis=1) if cols else np.zeros((X.shape[0], 0))

    def score(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Negative mean absolute error over the finite targets (higher is better, as scikit-learn expects)."""
        return -float(np.nanmean(absolute_error(np.asarray(Y, dtype=np.float64).reshape(len(X), -1),
                                                self.predict(X))))


def absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-attribute mean absolute error ``(A,)`` over rows where ``y_true`` is finite (NaN if none) — the ABE of
    MTMR-Net Eq. 11 on whatever scale the scores are given in."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise CadxDataError(f"y_true {t.shape} and y_pred {p.shape} differ", field="attributes")
    t, p = (t[:, None], p[:, None]) if t.ndim == 1 else (t, p)
    err = np.abs(t - p)
    err[~np.isfinite(t)] = np.nan
    n = np.isfinite(err).sum(axis=0)
    return np.where(n > 0, np.nansum(err, axis=0) / np.maximum(n, 1), np.nan)
