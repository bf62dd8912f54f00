"""A scalar covariate (e.g. a nodule's diameter) as a reference classifier and fused with a network's score.

LIDC readers' malignancy ratings follow nodule size closely: on the shared nodules the diameter alone ranks
malignant above benign with AUC ≈ 0.91, above the CNNs measured here. An image model's study therefore needs the
covariate's own row and the fusion beside it. Everything is fitted on each fold's training studies only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from cadx.errors import CadxDataError

__all__ = ["covariate_fusion"]


def covariate_fusion(p_model: np.ndarray, covariate: np.ndarray, y: np.ndarray,
                     folds: Sequence[tuple[np.ndarray, np.ndarray]], *, log: bool = True,
                     weight: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities from a covariate alone and fused with a model: ``(p_cov, p_fused)``, each ``(N,)``.

    ``p_model`` ``(N,)``: the model's positive-class probability of each study (its CV test prediction);
    ``covariate`` ``(N,)``, > 0 when ``log``; ``y`` ``(N,)`` in {0, 1}; ``folds``: (train, test) index arrays.
    Per fold, a class-balanced logistic regression on ``log(covariate)`` is fitted to the training studies (no
    model output is used for fitting: the network's training-fold outputs are overconfident) and predicts the test
    studies; ``p_fused = weight · p_model + (1 − weight) · p_cov`` with a fixed, untuned ``weight`` (0.5: equal
    trust — a choice, not fitted, so the fusion has no access to test labels). Studies in no test fold stay NaN.
    """
    p_model = np.asarray(p_model, dtype=np.float64).ravel()
    x = np.asarray(covariate, dtype=np.float64).ravel()
    y = np.asarray(y).ravel()
    if not (len(p_model) == len(x) == len(y)):
        raise CadxDataError(f"lengths differ: p_model {len(p_model)}, covariate {len(x)}, y {len(y)}",
                            field="covariate")
    if not 0.0 <= weight <= 1.0:
        raise CadxDataError(f"weight must be in [0, 1], got {weight}", field="weight")
    if log:
        if (x <= 0).any() or not np.isfinite(x).all():
            raise CadxDataError("covariate must be finite and > 0 for log=True", field="covariate")
        x = np.log(x)
    p_cov = np.full(len(x), np.nan)
    for tr, te in folds:
        if len(np.unique(y[tr])) < 2:
            raise CadxDataError("a training fold holds one class only", field="y")
        lr = LogisticRegression(class_weight="balanced").fit(x[tr, None], y[tr])
        p_cov[te] = lr.predict_proba(x[te, None])[:, 1]
    return p_cov, weight * p_model + (1.0 - weight) * p_cov
