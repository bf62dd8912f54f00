"""Patient-level bootstrap: percentile confidence intervals and paired p-values (thesis A.4–A.8 style).

A resample draws the *groups* (patients) with replacement and keeps every study of each drawn patient, as
often as the patient was drawn. This is represented as an integer weight per study, so the metrics of
:mod:`cadx.evaluation.metrics` that have a weighted, vectorised twin here (accuracy, roc_auc, sensitivity,
specificity, precision, npv, f1_score, also through ``functools.partial``, e.g. with ``positive=0``) run all
resamples at once; any other ``metric_fn(y_true, y_score_or_pred) -> float`` works through an exact (slower)
per-resample loop.
Resamples whose ``y_true`` holds a single class are skipped (optional) and so are resamples where the
metric is undefined (NaN); both are counted.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cadx.evaluation import metrics as M

__all__ = ["BootstrapCI", "bootstrap_ci", "bootstrap_distribution", "bootstrap_mean_ci",
           "paired_bootstrap_pvalue", "resample_weights"]

MetricFn = Callable[[Any, Any], float]
_CHUNK_CELLS = 4_000_000  # weights per chunk (resamples x studies), bounds memory


class BootstrapCI(tuple):
    """``(point, lo, hi)`` that also carries ``n_valid`` and ``n_skipped`` resample counts."""

    n_valid: int
    n_skipped: int

    def __new__(cls, point: float, lo: float, hi: float, n_valid: int, n_skipped: int) -> BootstrapCI:
        self = super().__new__(cls, (float(point), float(lo), float(hi)))
        self.n_valid = int(n_valid)
        self.n_skipped = int(n_skipped)
        return self

    @property
    def point(self) -> float:
        return self[0]

    @property
    def lo(self) -> float:
        return self[1]

    @property
    def hi(self) -> float:
        return self[2]


def _group_index(groups: ArrayLike | None, n: int) -> tuple[NDArray[np.int64], int]:
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be 1-D with {n} entries, got shape {g.shape}")
    _, inv = np.unique(g, return_inverse=True)
    return inv.astype(np.int64), int(inv.max()) + 1 if n else 0


def resample_weights(group_idx: NDArray[np.int64], n_groups: int, n_resamples: int,
                     rng: np.random.Generator) -> NDArray[np.int64]:
    """``(n_resamples, N)`` weights: how often each study's group was drawn in each resample."""
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    offs = draws + (np.arange(n_resamples) * n_groups)[:, None]
    counts = np.bincount(offs.ravel(), minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    return counts[:, group_idx]


# ---- weighted, vectorised metrics: (y_true (N,), y (N,...) , W (B, N)) -> (B,) ----------------------

def _b_accuracy(t: NDArray, p: Any, W: NDArray) -> NDArray:
    t, p, _ = M._pair(t, p, None)
    return M._div(W @ (t == p).astype(np.float64), W.sum(1))


def _weighted_cm(t: NDArray, p: NDArray, k: int, W: NDArray) -> NDArray:
    onehot = np.zeros((t.size, k * k))
    onehot[np.arange(t.size), t * k + p] = 1.0
    return (W @ onehot).reshape(-1, k, k)


def _b_confusion_metric(name: str) -> Callable[..., NDArray]:
    def fn(t: NDArray, p: Any, W: NDArray, n_classes: int | None = None, positive: int = 1) -> NDArray:
        t, p, k = M._pair(t, p, n_classes)
        vals = M.ovr_from_confusion(_weighted_cm(t, p, k, W))[name]
        return vals[:, M.check_positive(positive, k)] if k == 2 else np.asarray(M._nanmean(vals, axis=1))
    return fn


def _b_auc_1d(pos: NDArray[np.bool_], score: NDArray, W: NDArray) -> NDArray:
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    Wo = W[:, order].astype(np.float64)
    po = pos[order]
    P = np.add.reduceat(Wo * po, starts, axis=1)
    N = np.add.reduceat(Wo * ~po, starts, axis=1)
    below = np.cumsum(N, axis=1) - N
    num = (P * (below + 0.5 * N)).sum(1)
    return M._div(num, P.sum(1) * N.sum(1))


def _b_roc_auc(t: NDArray, proba: Any, W: NDArray, positive: int = 1) -> NDArray:
    t = M.check_labels(t)
    p = M.check_proba(proba, t.size)
    M.check_labels(t, n_classes=p.shape[1])
    if p.shape[1] == 2:
        pos = M.check_positive(positive, 2)
        return _b_auc_1d(t == pos, p[:, pos], W)
    aucs = np.stack([_b_auc_1d(t == c, p[:, c], W) for c in range(p.shape[1])], axis=1)
    return aucs.mean(1)  # NaN when any class is absent, like roc_auc


_BATCHED: dict[Callable[..., Any], Callable[..., NDArray]] = {
    M.accuracy: _b_accuracy,
    M.roc_auc: _b_roc_auc,
    M.sensitivity: _b_confusion_metric("sensitivity"),
    M.specificity: _b_confusion_metric("specificity"),
    M.precision: _b_confusion_metric("precision"),
    M.npv: _b_confusion_metric("npv"),
    M.f1_score: _b_confusion_metric("f1"),
}


def _batched(metric_fn: MetricFn) -> Callable[[NDArray, Any, NDArray], NDArray] | None:
    fn, kw = metric_fn, {}
    if isinstance(metric_fn, functools.partial):
        if metric_fn.args:
            return None
        fn, kw = metric_fn.func, dict(metric_fn.keywords)
    impl = _BATCHED.get(fn)
    if impl is None:
        return None
    return lambda t, s, W: impl(t, s, W, **kw)


def _loop(metric_fn: MetricFn, t: NDArray, s: NDArray, W: NDArray) -> NDArray:
    out = np.empty(W.shape[0])
    ar = np.arange(t.size)
    for b in range(W.shape[0]):
        idx = np.repeat(ar, W[b])
        out[b] = metric_fn(t[idx], s[idx])
    return out


def bootstrap_distribution(metric_fn: MetricFn, y_true: ArrayLike, y_score_or_pred: ArrayLike,
                           groups: ArrayLike | None = None, n_resamples: int = 2000, seed: int = 0,
                           skip_single_class: bool = True) -> NDArray[np.float64]:
    """Metric value of each resample, shape ``(n_resamples,)``; skipped resamples are NaN.

    ``y_true`` ``(N,)``; ``y_score_or_pred`` ``(N,)`` or ``(N, K)`` (whatever ``metric_fn`` takes);
    ``groups`` ``(N,)`` patient ids (None = each row its own group).
    """
    vals, _ = _distribution(metric_fn, y_true, y_score_or_pred, groups, n_resamples, seed,
                            skip_single_class)
    return vals


def _distribution(metric_fn: MetricFn, y_true: ArrayLike, y_score: ArrayLike, groups: ArrayLike | None,
                  n_resamples: int, seed: int, skip_single_class: bool,
                  y_score_b: ArrayLike | None = None) -> tuple[NDArray, NDArray | None]:
    t = np.asarray(y_true)
    s = np.asarray(y_score)
    if t.ndim != 1 or s.shape[:1] != t.shape:
        raise ValueError(f"y_true must be (N,) and scores (N, ...); got {t.shape} and {s.shape}")
    sb = None if y_score_b is None else np.asarray(y_score_b)
    if sb is not None and sb.shape != s.shape:
        raise ValueError(f"pred_a {s.shape} and pred_b {sb.shape} differ in shape")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    gi, ng = _group_index(groups, t.size)
    if t.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    fast = _batched(metric_fn)
    if skip_single_class:
        classes, t_idx = np.unique(t, return_inverse=True)
        onehot = np.zeros((t.size, classes.size))
        onehot[np.arange(t.size), t_idx] = 1.0
    chunk = max(1, _CHUNK_CELLS // max(t.size, 1))
    va, vb = np.full(n_resamples, np.nan), (None if sb is None else np.full(n_resamples, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, n_resamples, chunk):
            b = min(chunk, n_resamples - start)
            W = resample_weights(gi, ng, b, rng)
            ok = np.ones(b, dtype=bool)
            if skip_single_class:
                ok = ((W @ onehot) > 0).sum(1) >= 2
            for arr, sc in ((va, s), (vb, sb)):
                if arr is None or sc is None:
                    continue
                v = fast(t, sc, W[ok]) if fast is not None else _loop(metric_fn, t, sc, W[ok])
                part = np.full(b, np.nan)
                part[ok] = v
                arr[start:start + b] = part
    return va, vb


def _percentiles(vals: NDArray, alpha: float) -> tuple[float, float]:
    if vals.size < 2:
        warnings.warn("bootstrap: fewer than 2 valid resamples; CI is NaN", stacklevel=3)
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(metric_fn: MetricFn, y_true: ArrayLike, y_score_or_pred: ArrayLike,
                 groups: ArrayLike | None = None, n_resamples: int = 2000, alpha: float = 0.05,
                 seed: int = 0, skip_single_class: bool = True) -> BootstrapCI:
    """Point estimate and percentile ``(1 - alpha)`` CI of ``metric_fn`` over patient resamples.

    ``metric_fn(y_true, y_score_or_pred) -> float`` (e.g. ``roc_auc``, ``accuracy``,
    ``partial(sensitivity, n_classes=K)``); ``groups`` ``(N,)`` are patient ids — always pass them when a
    patient has several studies. Returns :class:`BootstrapCI` ``(point, lo, hi)`` with ``n_valid`` and
    ``n_skipped`` (single-class or NaN resamples). Fewer than 2 valid resamples → NaN bounds + warning.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    point = float(metric_fn(np.asarray(y_true), np.asarray(y_score_or_pred)))
    vals, _ = _distribution(metric_fn, y_true, y_score_or_pred, groups, n_resamples, seed, skip_single_class)
    good = vals[np.isfinite(vals)]
    lo, hi = _percentiles(good, alpha)
    return BootstrapCI(point, lo, hi, good.size, n_resamples - good.size)


def bootstrap_mean_ci(values: ArrayLike, groups: ArrayLike | None = None, n_resamples: int = 2000,
                      alpha: float = 0.05, seed: int = 0) -> BootstrapCI:
    """Mean of ``values`` ``(N,)`` (e.g. per-volume Dice) with a patient-level percentile CI.

    Non-finite values raise ValueError (drop studies without a mask before calling).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError("values must be a non-empty 1-D array of finite numbers")
    gi, ng = _group_index(groups, v.size)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // v.size)
    out = []
    for start in range(0, n_resamples, chunk):
        W = resample_weights(gi, ng, min(chunk, n_resamples - start), rng)
        out.append((W @ v) / W.sum(1))
    vals = np.concatenate(out)
    lo, hi = _percentiles(vals, alpha)
    return BootstrapCI(float(v.mean()), lo, hi, vals.size, 0)


def paired_bootstrap_pvalue(metric_fn: MetricFn, y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike,
                            groups: ArrayLike | None = None, n_resamples: int = 2000, seed: int = 0,
                            skip_single_class: bool = True) -> float:
    """Two-sided bootstrap p-value for ``metric(a) - metric(b)`` of two runs on the same studies.

    Both runs are scored on the same patient resamples; with ``d`` the resampled differences,
    ``p = min(1, 2 * min(P(d <= 0), P(d >= 0)))`` (ml-stat-util's two-tailed rule made symmetric).
    Identical predictions give p = 1. Resamples undefined for either run are skipped.
    """
    a, b = _distribution(metric_fn, y_true, pred_a, groups, n_resamples, seed, skip_single_class,
                         y_score_b=pred_b)
    assert b is not None
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 1:
        warnings.warn("paired_bootstrap_pvalue: no valid resamples; p is NaN", stacklevel=2)
        return float("nan")
    d = a[ok] - b[ok]
    return float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
