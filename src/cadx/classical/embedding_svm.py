"""Classifiers fitted on network embeddings (DMRN: a linear SVM with Platt-scaled probabilities, per fold)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cadx.errors import CadxDataError
from cadx.utils import atomic_write_bytes


class EmbeddingSVM:
    """Standardise + linear ``SVC`` with Platt-scaled probabilities on ``(N, D)`` embeddings.

    Probabilities: ``CalibratedClassifierCV(SVC, method="sigmoid", ensemble=False)`` with a seeded stratified
    ``min(5, smallest class)``-fold split (what ``SVC(probability=True)`` did, deprecated in scikit-learn 1.9);
    with a class of a single item, a softmax of the SVM decision values instead.

    ``predict_proba`` returns ``(N, K)`` over *all* ``num_classes`` classes (columns of classes absent from the
    training set are 0). Training on a single class raises CadxDataError.
    """

    def __init__(self, num_classes: int, c: float = 1.0, seed: int = 0) -> None:
        self.num_classes = int(num_classes)
        self.c = float(c)
        self.seed = int(seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> EmbeddingSVM:
        ok = y >= 0
        x, y = np.asarray(x, np.float64)[ok], np.asarray(y)[ok]
        if np.unique(y).size < 2:
            raise CadxDataError("the SVM needs at least two classes in the training items", field="label")
        svc = SVC(kernel="linear", C=self.c, random_state=self.seed)
        k = int(min(5, np.bincount(y)[np.unique(y)].min()))
        self.calibrated_ = k >= 2
        if self.calibrated_:
            cv = StratifiedKFold(k, shuffle=True, random_state=self.seed)
            est = CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)
        else:
            est = svc
        self.pipeline_: Pipeline = make_pipeline(StandardScaler(), est)
        self.pipeline_.fit(x, y)
        self.classes_ = self.pipeline_.classes_.astype(int)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.calibrated_:
            p = self.pipeline_.predict_proba(x)
        else:
            d = self.pipeline_.decision_function(x)
            d = np.stack([-d, d], 1) if d.ndim == 1 else d
            e = np.exp(d - d.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
        out = np.zeros((p.shape[0], self.num_classes))
        out[:, self.classes_] = p
        return out

    def save(self, path: str | Path) -> Path:
        return atomic_write_bytes(path, pickle.dumps(self))

    @staticmethod
    def load(path: str | Path) -> EmbeddingSVM:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, EmbeddingSVM):
            raise CadxDataError("not a cadx SVM file", path=path)
        return obj
