"""Classification and regression metrics: pure numpy functions of predictions.

Conventions (all functions):
- ``y_true`` / ``y_pred``: 1-D integer (or bool) arrays of class indices in ``[0, n_classes)``, shape ``(N,)``.
- ``proba``: ``(N, K)`` class probabilities (column ``k`` = class ``k``) or, for binary problems, a 1-D score
  ``(N,)`` for class index 1.
- Binary problems: the positive class is ``positive`` (default index 1; ``eval.positive`` names it, e.g. BreastMNIST's
  ``malignant`` = index 0): ``sensitivity`` = recall of that class, ``specificity`` = recall of the other,
  ``precision`` = PPV, ``npv`` = NPV, and the binary AUC ranks ``proba[:, positive]`` for that class.
- Multi-class problems: one-vs-rest per class, summaries are unweighted (macro) means (DMRN Tables 2–3,
  thesis A.2).
- Wrong shapes, non-integer labels or labels out of range raise ``ValueError``; nothing is reshaped or cast.
- Undefined values (a zero denominator) are ``NaN``; macro means skip NaN classes (like scikit-learn's
  ``zero_division=np.nan``) and are NaN only when every class is undefined.

:func:`roc_auc` is the one AUC of cadx (cv and evaluate metrics, the Lightning validation metric, the studies,
the reports); :mod:`cadx.evaluation.bootstrap` holds its weighted, vectorised twin, tested to agree with it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "abe",
    "accuracy",
    "binary_metrics",
    "check_labels",
    "check_positive",
    "check_proba",
    "confusion_matrix",
    "f1_score",
    "npv",
    "ovr_auc",
    "per_class_metrics",
    "precision",
    "roc_auc",
    "roc_curve_points",
    "sensitivity",
    "specificity",
]


def check_labels(y: ArrayLike, name: str = "y_true", n_classes: int | None = None) -> NDArray[np.int64]:
    """Validate a 1-D array of integer class indices (``>= 0`` and ``< n_classes`` when given)."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} has negative class indices")
    if n_classes is not None and a.size and a.max() >= n_classes:
        raise ValueError(f"{name} has class index {int(a.max())} >= n_classes={n_classes}")
    return a.astype(np.int64, copy=False)


def check_proba(proba: ArrayLike, n: int, name: str = "proba") -> NDArray[np.float64]:
    """Validate scores: ``(N,)`` (binary positive-class score) or ``(N, K)`` with ``K >= 2``; returns 2-D.

    A 1-D score ``s`` becomes the two columns ``(-s, s)`` so that column 1 ranks exactly like ``s``.
    """
    p = np.asarray(proba)
    if not np.issubdtype(p.dtype, np.number) or p.dtype == bool:
        raise ValueError(f"{name} must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    if p.ndim == 1:
        p = np.stack([-p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N,) or (N, K>=2), got {np.shape(proba)}")
    if p.shape[0] != n:
        raise ValueError(f"{name} has {p.shape[0]} rows but y_true has {n}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or inf")
    return p


def _pair(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None) -> tuple[NDArray, NDArray, int]:
    t = check_labels(y_true, "y_true", n_classes)
    p = check_labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    if n_classes is None:
        n_classes = max(2, int(max(t.max(initial=0), p.max(initial=0))) + 1)
    if n_classes < 2:
        raise ValueError("n_classes must be >= 2")
    return t, p, n_classes


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of correct predictions; NaN for empty input."""
    t, p, _ = _pair(y_true, y_pred, None)
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> NDArray[np.int64]:
    """``(K, K)`` counts, rows = true class, columns = predicted class (scikit-learn layout).

    ``n_classes`` defaults to ``max(label) + 1`` (at least 2); pass it to keep absent classes.
    """
    t, p, k = _pair(y_true, y_pred, n_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _div(num: NDArray, den: NDArray) -> NDArray[np.float64]:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def ovr_from_confusion(cm: NDArray) -> dict[str, NDArray[np.float64]]:
    """One-vs-rest rates from confusion matrices ``(..., K, K)``; each value has shape ``(..., K)``.

    Works on integer counts or on (bootstrap) weights. Keys: sensitivity, specificity, precision, npv
    (TN/(TN+FN)), f1, support (true count per class).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(-1)
    predicted = cm.sum(-2)
    total = cm.sum((-2, -1))[..., None]
    fn = support - tp
    fp = predicted - tp
    tn = total - tp - fn - fp
    return {
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "precision": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "support": support,
    }


def _nanmean(a: NDArray, axis: int = -1) -> NDArray[np.float64] | float:
    a = np.asarray(a, dtype=np.float64)
    cnt = np.sum(np.isfinite(a), axis=axis)
    s = np.nansum(a, axis=axis)
    out = _div(s, cnt)
    return float(out) if out.ndim == 0 else out


def per_class_metrics(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> dict[str, Any]:
    """One-vs-rest sensitivity, specificity, precision, F1 per class, their macro means and accuracy.

    Returns ``{"accuracy": float, "per_class": {metric: list[float] (K,)}, "support": list[int] (K,),
    "macro": {metric: float}}`` (DMRN Tables 2–3; macro F1 = mean of per-class F1, not F1 of the means).
    A class with a zero denominator is NaN for that metric and left out of the macro mean.
    """
    t, p, k = _pair(y_true, y_pred, n_classes)
    cm = confusion_matrix(t, p, k)
    ovr = ovr_from_confusion(cm)
    names = ("sensitivity", "specificity", "precision", "f1")
    return {
        "accuracy": accuracy(t, p),
        "per_class": {m: ovr[m].tolist() for m in names},
        "support": ovr["support"].astype(int).tolist(),
        "macro": {m: _nanmean(ovr[m]) for m in names},
    }


def check_positive(positive: int, k: int) -> int:
    """The binary positive class index: 0 or 1 (ValueError otherwise); ignored (returned as is) when ``k > 2``."""
    if k == 2 and positive not in (0, 1):
        raise ValueError(f"positive must be class index 0 or 1 for a binary problem, got {positive!r}")
    return int(positive)


def _summary_metric(name: str, y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None,
                    positive: int = 1) -> float:
    t, p, k = _pair(y_true, y_pred, n_classes)
    vals = ovr_from_confusion(confusion_matrix(t, p, k))[name]
    return float(vals[check_positive(positive, k)]) if k == 2 else float(_nanmean(vals))


def sensitivity(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None, positive: int = 1) -> float:
    """Binary: recall of class ``positive``. Multi-class: macro mean of one-vs-rest recalls. NaN when undefined."""
    return _summary_metric("sensitivity", y_true, y_pred, n_classes, positive)


def specificity(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None, positive: int = 1) -> float:
    """Binary: TN/(TN+FP) for class ``positive``. Multi-class: macro mean of one-vs-rest specificities."""
    return _summary_metric("specificity", y_true, y_pred, n_classes, positive)


def precision(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None, positive: int = 1) -> float:
    """Binary: precision (PPV) of class ``positive``. Multi-class: macro mean. NaN when nothing is predicted
    positive."""
    return _summary_metric("precision", y_true, y_pred, n_classes, positive)


def npv(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None, positive: int = 1) -> float:
    """Binary: negative predictive value TN/(TN+FN) for class ``positive``. Multi-class: macro mean of the
    one-vs-rest NPVs. NaN when nothing is predicted negative."""
    return _summary_metric("npv", y_true, y_pred, n_classes, positive)


def f1_score(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None, positive: int = 1) -> float:
    """Binary: F1 = 2TP/(2TP+FP+FN) of class ``positive``. Multi-class: macro mean of per-class F1."""
    return _summary_metric("f1", y_true, y_pred, n_classes, positive)


def binary_metrics(y_true: ArrayLike, y_pred: ArrayLike, positive: int = 1) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision (PPV), NPV, F1 of class ``positive`` for 0/1 labels."""
    t, p, _ = _pair(y_true, y_pred, 2)
    pos = check_positive(positive, 2)
    ovr = ovr_from_confusion(confusion_matrix(t, p, 2))
    out = {"accuracy": accuracy(t, p)}
    out.update({m: float(ovr[m][pos]) for m in ("sensitivity", "specificity", "precision", "npv", "f1")})
    return out


def _auc_1d(pos: NDArray[np.bool_], score: NDArray[np.float64]) -> float:
    """Mann–Whitney AUC (ties count 1/2); NaN when one class is absent."""
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # SciPy stats (0.5 s to import): deferred so cadx predict does not load it

    r = rankdata(score)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ovr_auc(y_true: ArrayLike, proba: ArrayLike) -> NDArray[np.float64]:
    """One-vs-rest ROC AUC per class, shape ``(K,)``; NaN (no warning) for a class that is absent or alone."""
    t = check_labels(y_true)
    p = check_proba(proba, t.size)
    k = p.shape[1]
    check_labels(t, n_classes=k)
    return np.array([_auc_1d(t == c, p[:, c]) for c in range(k)])


def roc_auc(y_true: ArrayLike, proba: ArrayLike, positive: int = 1) -> float:
    """ROC AUC (trapezoid rule, equal to scikit-learn's ``roc_auc_score``).

    Binary (``proba`` ``(N, 2)`` or a 1-D score of class 1): AUC of ``proba[:, positive]`` for class ``positive``
    (for probabilities that sum to 1 the same number for either class; it differs for other scores).
    Multi-class ``(N, K)``: unweighted mean of the K one-vs-rest AUCs (thesis A.2; sklearn
    ``multi_class="ovr", average="macro"``). Returns NaN with a ``UserWarning`` when only one class is
    present (binary) or when any class is absent from ``y_true`` (multi-class: its AUC is undefined).
    """
    t = check_labels(y_true)
    p = check_proba(proba, t.size)
    k = p.shape[1]
    check_labels(t, n_classes=k)
    if k == 2:
        pos = check_positive(positive, 2)
        val = _auc_1d(t == pos, p[:, pos])
        if np.isnan(val):
            warnings.warn("roc_auc: only one class present in y_true; AUC is undefined (NaN)", stacklevel=2)
        return val
    aucs = ovr_auc(t, p)
    if np.isnan(aucs).any():
        missing = [int(c) for c in np.flatnonzero(np.isnan(aucs))]
        warnings.warn(f"roc_auc: classes {missing} have no one-vs-rest AUC (absent or alone); AUC is NaN",
                      stacklevel=2)
        return float("nan")
    return float(aucs.mean())


def roc_curve_points(y_true: ArrayLike, score: ArrayLike, pos_label: int = 1
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve of a 1-D ``score`` ``(N,)`` for ``y_true == pos_label``: ``(fpr, tpr, thresholds)``.

    Points at every distinct score (descending), starting at ``(0, 0)`` with threshold ``+inf`` — the same
    points as scikit-learn's ``roc_curve(..., drop_intermediate=False)``. Raises ValueError if one class
    is absent. For one-vs-rest curves pass ``proba[:, k]`` and ``pos_label=k``.
    """
    t = check_labels(y_true)
    s = np.asarray(score)
    if s.ndim != 1 or s.shape[0] != t.size:
        raise ValueError(f"score must be 1-D with {t.size} entries, got shape {s.shape}")
    s = s.astype(np.float64)
    pos = t == pos_label
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve_points needs both positive and negative samples")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, pos_sorted = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tps = np.cumsum(pos_sorted)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def abe(pred: ArrayLike, true: ArrayLike, ranges: ArrayLike | None = None) -> float | NDArray[np.float64]:
    """MTMR-Net absolute distance error (paper 003, Eq. 11): ``mean_i |pred_i - true_i|``.

    ``pred``/``true``: ``(N,)`` one attribute or ``(N, A)`` attributes (same shape). Table III reports it
    "on the original unscaled data": when the scores were rescaled to [0, 1], pass ``ranges`` = ``(lo, hi)``
    (1-D input) or ``(A, 2)`` rows ``(lo, hi)`` and both arrays are mapped back by ``lo + x * (hi - lo)``
    before the error is taken. Rows whose ``true`` value is NaN (missing annotation) are left out;
    NaN in ``pred`` raises. Returns a float for 1-D input, ``(A,)`` for 2-D; NaN when nothing is left.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim not in (1, 2):
        raise ValueError(f"pred {p.shape} and true {t.shape} must have the same shape (N,) or (N, A)")
    if np.isnan(p).any():
        raise ValueError("pred contains NaN")
    if ranges is not None:
        r = np.asarray(ranges, dtype=np.float64)
        want = (2,) if p.ndim == 1 else (p.shape[1], 2)
        if r.shape != want:
            raise ValueError(f"ranges must have shape {want}, got {r.shape}")
        lo, hi = (r[0], r[1]) if p.ndim == 1 else (r[:, 0], r[:, 1])
        p = lo + p * (hi - lo)
        t = lo + t * (hi - lo)
    err = np.abs(p - t)
    ok = ~np.isnan(t)
    n = ok.sum(0)
    s = np.where(ok, err, 0.0).sum(0)
    out = _div(s, n)
    return float(out) if out.ndim == 0 else out
