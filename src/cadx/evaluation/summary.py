"""``evaluate_predictions``: every metric of a predictions table, pooled and per fold, with bootstrap CIs.

The table follows docs/contracts.md (predictions.csv): ``study_id, patient_id, fold, y_true`` (class
name), ``p_<class>`` per class, optional ``y_pred``, ``pred_<attr>``/``true_<attr>``, ``dice``,
``lesion_voxels``. One row per study (aggregate slice rows first with ``aggregate_predictions``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cadx.errors import CadxDataError
from cadx.evaluation import metrics as M
from cadx.evaluation.bootstrap import bootstrap_ci, bootstrap_mean_ci
from cadx.evaluation.thresholds import decide

__all__ = ["class_key", "evaluate_predictions", "positive_index"]

_CI_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "f1")


def class_key(v: Any) -> str:
    """Class name of a table cell: ``str(v)``, except integral floats ``1.0`` → ``"1"`` (CSV round trips of
    numeric class names through a column that also held NaN)."""
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    s = str(v)
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        return s[:-2]
    return s


def positive_index(positive: int | str | None, classes: Sequence[str]) -> int:
    """Index of the binary positive class: ``None`` → 1; a class name → its index; an integer 0/1 → itself (a class
    name wins over an index for numeric class names). Multi-class tasks have none (macro means): ``None`` → 1
    (unused), anything else is an error. A bad value is a CadxDataError naming ``eval.positive`` and the classes."""
    names = [str(c) for c in classes]
    if positive is None:
        return 1
    if len(names) != 2:
        raise CadxDataError(f"{positive!r} set for a task with {len(names)} classes {names}; a positive class is for "
                            "binary tasks (multi-class metrics are macro means)", field="eval.positive")
    if str(positive) in names:
        return names.index(str(positive))
    if isinstance(positive, int | np.integer) and 0 <= int(positive) < 2:
        return int(positive)
    raise CadxDataError(f"{positive!r} is neither a class name nor an index of the classes {names}",
                        field="eval.positive")


def _labels(df: pd.DataFrame, classes: Sequence[str], col: str = "y_true") -> np.ndarray:
    names = [str(c) for c in classes]
    lookup = {n: i for i, n in enumerate(names)}
    if col not in df.columns:
        raise CadxDataError(f"no {col} column", field=col)
    vals = df[col]
    if vals.isna().any():
        raise CadxDataError(f"{int(vals.isna().sum())} rows have no {col}", field=col)
    keys = [class_key(v) for v in vals]
    bad = sorted({k for k in keys if k not in lookup})
    if bad:
        raise CadxDataError(f"unknown classes {bad[:5]} (expected {names})", field=col)
    return np.array([lookup[k] for k in keys], dtype=np.int64)


def _priors(priors: Sequence[float] | Mapping[str, float] | None, classes: Sequence[str]) -> Any:
    if isinstance(priors, Mapping):
        try:
            return np.array([float(priors[str(c)]) for c in classes])
        except KeyError as e:
            raise CadxDataError(f"priors has no entry for class {e}", field="priors") from None
    return priors


def _predict(df: pd.DataFrame, proba: np.ndarray, classes: Sequence[str], decision: str,
             priors: Any, threshold: float | None, positive: int = 1) -> np.ndarray:
    if decision == "given":
        if "y_pred" not in df.columns:
            raise CadxDataError("decision='given' needs a y_pred column", field="y_pred")
        return _labels(df, classes, "y_pred")
    return decide(proba, decision, priors=priors, threshold=threshold, positive=positive)  # type: ignore[arg-type]


def _classification(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                    groups: np.ndarray, n_bootstrap: int, alpha: float, seed: int,
                    positive: int = 1) -> dict[str, Any]:
    k = len(classes)
    pcm = M.per_class_metrics(y, pred, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aucs = M.ovr_auc(y, proba)
        auc = M.roc_auc(y, proba, positive=positive) if k == 2 else M.roc_auc(y, proba)
    pos = M.check_positive(positive, k) if k == 2 else None
    headline = {m: (pcm["per_class"][m][pos] if pos is not None else pcm["macro"][m])
                for m in ("sensitivity", "specificity", "precision", "f1")}
    headline["npv"] = M.npv(y, pred, k, positive=positive)
    out: dict[str, Any] = {"accuracy": pcm["accuracy"], "auc": auc, **headline}
    out["per_class"] = {
        str(c): {"sensitivity": pcm["per_class"]["sensitivity"][i],
                 "specificity": pcm["per_class"]["specificity"][i],
                 "precision": pcm["per_class"]["precision"][i], "f1": pcm["per_class"]["f1"][i],
                 "auc": float(aucs[i]), "support": pcm["support"][i]}
        for i, c in enumerate(classes)}
    out["classes"] = [str(c) for c in classes]
    if pos is not None:
        out["positive"] = str(classes[pos])
    out["confusion_matrix"] = M.confusion_matrix(y, pred, k).tolist()
    ci: dict[str, list[float]] = {}
    skipped: dict[str, int] = {}
    if n_bootstrap > 0:
        fns: dict[str, tuple[Any, np.ndarray]] = {
            "accuracy": (M.accuracy, pred),
            "auc": (functools.partial(M.roc_auc, positive=positive) if k == 2 else M.roc_auc, proba),
            "sensitivity": (functools.partial(M.sensitivity, n_classes=k, positive=positive), pred),
            "specificity": (functools.partial(M.specificity, n_classes=k, positive=positive), pred),
            "f1": (functools.partial(M.f1_score, n_classes=k, positive=positive), pred)}
        for name in _CI_METRICS:
            fn, arg = fns[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = bootstrap_ci(fn, y, arg, groups=groups, n_resamples=n_bootstrap, alpha=alpha, seed=seed)
            ci[name] = [r.lo, r.hi]
            skipped[name] = r.n_skipped
    out["ci"] = ci
    out["bootstrap_skipped"] = skipped
    return out


def _block(df: pd.DataFrame, classes: Sequence[str], proba: np.ndarray | None, y: np.ndarray | None,
           pred: np.ndarray | None, n_bootstrap: int, alpha: float, seed: int,
           attribute_ranges: Mapping[str, Sequence[float]] | None, positive: int = 1) -> dict[str, Any]:
    groups = df["patient_id"].astype(str).to_numpy()
    out: dict[str, Any] = {"n_studies": len(df), "n_patients": int(pd.unique(groups).size)}
    if classes and y is not None and proba is not None and pred is not None:
        out.update(_classification(y, proba, pred, classes, groups, n_bootstrap, alpha, seed, positive))
    else:
        out["ci"] = {}
    attrs = [c[5:] for c in df.columns if c.startswith("pred_") and f"true_{c[5:]}" in df.columns]
    if attrs:
        ranges = attribute_ranges or {}
        out["abe"] = {a: M.abe(df[f"pred_{a}"].to_numpy(float), df[f"true_{a}"].to_numpy(float),
                               ranges.get(a)) for a in attrs}
        out["abe_scale"] = {a: ("original" if a in ranges else "as stored") for a in attrs}
        if any(a in ranges for a in attrs):  # so that an ensemble of runs scores ABE on the same scale
            out["abe_range"] = {a: [float(v) for v in ranges[a]] for a in attrs if a in ranges}
    if "dice" in df.columns:
        d = df["dice"].to_numpy(dtype=np.float64)
        ok = np.isfinite(d)
        out["n_dice"] = int(ok.sum())
        out["dice_mean"] = float(d[ok].mean()) if ok.any() else float("nan")
        out["dice_median"] = float(np.median(d[ok])) if ok.any() else float("nan")
        if n_bootstrap > 0 and ok.sum() >= 2:
            r = bootstrap_mean_ci(d[ok], groups[ok], n_resamples=n_bootstrap, alpha=alpha, seed=seed)
            out["ci"]["dice_mean"] = [r.lo, r.hi]
    return out


def evaluate_predictions(df: pd.DataFrame, classes: Sequence[str], *, n_bootstrap: int = 2000, seed: int = 0,
                         decision: str = "argmax", priors: Sequence[float] | Mapping[str, float] | None = None,
                         threshold: float | None = None,
                         attribute_ranges: Mapping[str, Sequence[float]] | None = None,
                         alpha: float = 0.05, positive: int | str | None = None) -> dict[str, Any]:
    """Metrics of a study-level predictions table, pooled over folds and per fold.

    ``classes``: class names in index order (``p_<class>`` columns must exist); empty for a
    segmentation-only table. ``decision``: ``argmax`` | ``prior`` (``priors`` = training class
    frequencies, sequence or {class: p}) | ``youden`` (``threshold`` fitted on validation data) |
    ``given`` (use the table's ``y_pred`` column, e.g. after vote aggregation).
    ``attribute_ranges`` {attr: [lo, hi]} maps [0,1] attribute scores back for ABE.
    Binary: sensitivity/specificity/precision (PPV)/NPV/F1 and the AUC of the class ``positive`` (index or class
    name, ``eval.positive``; default index 1), a ``threshold`` applies to its probability; multi-class: macro means
    (``positive`` ignored).
    CIs: percentile bootstrap over patients (``n_bootstrap`` resamples, 0 = none), same seed for all.

    Returns ``{"pooled": block, "folds": {str(k): block}, "n_studies", "n_patients", "classes",
    "decision", "bootstrap"}``; a block has ``n_studies, n_patients, accuracy, auc, sensitivity,
    specificity, precision, npv, f1, per_class, classes, positive (binary), confusion_matrix, ci {metric: [lo, hi]},
    bootstrap_skipped`` and, when present, ``abe``, ``abe_scale``, ``abe_range`` (the ``attribute_ranges`` used),
    ``dice_mean``, ``dice_median``,
    ``n_dice``. Undefined values are NaN (``null`` in JSON).
    """
    for c in ("study_id", "patient_id"):
        if c not in df.columns:
            raise CadxDataError(f"predictions table has no {c!r} column", field=c)
    if df["study_id"].duplicated().any():
        raise CadxDataError("study_id is duplicated; aggregate slice rows first", field="study_id")
    classes = [str(c) for c in classes]
    proba = y = pred = None
    pos_idx = 1
    pri = _priors(priors, classes)
    if classes:
        if len(classes) < 2:
            raise CadxDataError("need at least two classes", field="classes")
        cols = [f"p_{c}" for c in classes]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise CadxDataError(f"missing probability columns {missing}", field="p_<class>")
        proba = df[cols].to_numpy(dtype=np.float64)
        if not np.isfinite(proba).all():
            raise CadxDataError("probability columns contain NaN/inf", field="p_<class>")
        y = _labels(df, classes)
        pos_idx = positive_index(positive, classes)
        pred = _predict(df, proba, classes, decision, pri, threshold, pos_idx)
    args = (n_bootstrap, alpha, seed, attribute_ranges, pos_idx)
    result: dict[str, Any] = {"pooled": _block(df, classes, proba, y, pred, *args), "folds": {}}
    if "fold" in df.columns:
        for k in sorted(pd.unique(df["fold"])):
            m = (df["fold"] == k).to_numpy()
            sub = df.loc[m]
            result["folds"][str(k)] = _block(
                sub, classes, None if proba is None else proba[m], None if y is None else y[m],
                None if pred is None else pred[m], *args)
    result["n_studies"] = result["pooled"]["n_studies"]
    result["n_patients"] = result["pooled"]["n_patients"]
    result["classes"] = classes
    if len(classes) == 2:
        result["positive"] = classes[pos_idx]
    result["decision"] = {"rule": decision, "threshold": threshold,
                          "priors": None if pri is None else [float(v) for v in np.asarray(pri)]}
    result["bootstrap"] = {"n_resamples": n_bootstrap, "alpha": alpha, "seed": seed, "unit": "patient"}
    return result
