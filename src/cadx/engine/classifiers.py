"""Classifiers fitted on network embeddings (DMRN: a linear SVM with Platt-scaled probabilities, per fold)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from cadx.errors import CadxDataError
from cadx.utils import atomic_write_bytes


class EmbeddingSVM:
    """Standardise + linear ``SVC(probability=True, random_state=seed)`` on ``(N, D)`` embeddings.

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
        self.pipeline_: Pipeline = make_pipeline(
            StandardScaler(), SVC(kernel="linear", C=self.c, probability=True, random_state=self.seed))
        self.pipeline_.fit(x, y)
        self.classes_ = self.pipeline_.classes_.astype(int)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.pipeline_.predict_proba(np.asarray(x, np.float64))
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
