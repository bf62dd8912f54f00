"""Decision rules turning class probabilities into class indices.

- ``argmax``: the most probable class.
- ``prior``: argmax of ``proba / prior`` (thesis A.2 "thresholding with prior class probabilities"); the
  priors are the class frequencies of the training set *before* any resampling. ROC AUC is unchanged.
- ``youden``: binary only, ``proba[:, positive] >= threshold`` with a threshold from :func:`youden_threshold`.
- ``sensitivity``: binary only, the same rule with a threshold from :func:`sensitivity_threshold` (the highest one
  that reaches a target sensitivity).

``positive`` (default 1) is the index of the clinically positive class (``eval.positive``); a row is predicted
``positive`` when its probability of that class reaches the threshold, else the other class.

Thresholds and priors must be fitted on training/validation predictions only, never on the test set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cadx.evaluation.metrics import check_labels, roc_curve_points

__all__ = ["class_priors", "decide", "sensitivity_threshold", "youden_threshold"]

Rule = Literal["argmax", "prior", "youden", "sensitivity"]


def _proba2d(proba: ArrayLike) -> NDArray[np.float64]:
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] < 2 or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"proba must be numeric with shape (N, K>=2), got {p.shape} {p.dtype}")
    if not np.isfinite(p).all():
        raise ValueError("proba contains NaN or inf")
    return p.astype(np.float64, copy=False)


def class_priors(y_train: ArrayLike, n_classes: int) -> NDArray[np.float64]:
    """Class frequencies ``|i| / sum_k |k|`` of training labels, shape ``(K,)``; raises if a class is absent."""
    y = check_labels(y_train, "y_train", n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no training examples")
    return counts / counts.sum()


def decide(proba: ArrayLike, rule: Rule = "argmax", priors: ArrayLike | None = None,
           threshold: float | None = None, positive: int = 1) -> NDArray[np.int64]:
    """Class index per row of ``proba`` ``(N, K)``; returns ``(N,)`` int64.

    ``rule="prior"`` needs ``priors`` ``(K,)`` > 0 (any positive scale; see :func:`class_priors`).
    ``rule="youden"`` needs ``K == 2`` and ``threshold`` (fitted with :func:`youden_threshold` on
    training/validation predictions, never on the test set): class ``positive`` when ``proba[:, positive] >=
    threshold``, else the other class; ``rule="sensitivity"`` the same (threshold from
    :func:`sensitivity_threshold`). Ties in argmax go to the lowest class index.
    """
    p = _proba2d(proba)
    if rule == "argmax":
        return np.argmax(p, axis=1).astype(np.int64)
    if rule == "prior":
        if priors is None:
            raise ValueError("rule='prior' needs priors (training class frequencies)")
        pr = np.asarray(priors, dtype=np.float64)
        if pr.shape != (p.shape[1],) or not (pr > 0).all():
            raise ValueError(f"priors must be {p.shape[1]} positive numbers, got {pr.tolist()}")
        return np.argmax(p / pr, axis=1).astype(np.int64)
    if rule in ("youden", "sensitivity"):
        if p.shape[1] != 2:
            raise ValueError(f"rule={rule!r} is for binary problems (K == 2)")
        if threshold is None:
            raise ValueError(f"rule={rule!r} needs a threshold fitted on training/validation predictions")
        if positive not in (0, 1):
            raise ValueError(f"positive must be 0 or 1, got {positive!r}")
        hit = p[:, positive] >= float(threshold)
        return np.where(hit, positive, 1 - positive).astype(np.int64)
    raise ValueError(f"unknown decision rule {rule!r}; use 'argmax', 'prior', 'youden' or 'sensitivity'")


def youden_threshold(y: ArrayLike, score: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1 for ``score >= threshold``.

    ``y``: 0/1 labels ``(N,)``; ``score``: positive-class score ``(N,)``. Candidates are the distinct
    scores; ties in J go to the highest threshold. Fit on training/validation predictions only — a
    threshold fitted on the test set makes the test metrics optimistic. Raises if a class is absent.
    """
    t = check_labels(y, "y", 2)
    fpr, tpr, thr = roc_curve_points(t, score, pos_label=1)
    j = tpr[1:] - fpr[1:]
    return float(thr[1:][int(np.argmax(j))])


def sensitivity_threshold(y: ArrayLike, score: ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity (``score >= threshold`` among ``y == 1``) reaches ``target``.

    ``y``: 0/1 labels ``(N,)`` (1 = the positive class); ``score`` ``(N,)`` its probability; ``target`` in
    ``(0, 1]``. Candidates are the distinct scores (the ROC points); the highest qualifying one keeps the most
    specificity. Fit on validation predictions only. Raises if a class is absent or ``target`` is out of range.
    """
    if not 0 < float(target) <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    t = check_labels(y, "y", 2)
    _, tpr, thr = roc_curve_points(t, score, pos_label=1)
    ok = np.flatnonzero(tpr[1:] >= float(target) - 1e-12)
    return float(thr[1:][int(ok[0])])
