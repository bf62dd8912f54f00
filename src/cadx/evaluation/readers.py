"""Model vs readers (thesis A.6): each reader against the consensus of the *other* readers, the model against the
same references, bootstrap CIs over cases and readers, and the p-value of model vs the mean of the readers.

For users who bring reader scores: pass ``ratings`` ``(N, R)`` — one row per case, one column per reader, any
ordinal score where higher = more suspicious (LIDC malignancy 1–5, TI-RADS points), NaN where a reader did not
read the case — the model's score ``(N,)`` and, for the bootstrap, the patient id of each case::

    res = compare_readers(ratings, p_malignant, model_pred=p_malignant >= t, groups=patient_ids)
    res.table      # one row per reader, their mean, the model against each reader's reference and its mean
    res.summary    # differences model − mean of readers with CIs and two-sided bootstrap p-values

**Reference (leave-one-reader-out)**: for reader ``r`` on case ``i`` the reference is the median of the other
readers' ratings of case ``i``: ``≥ positive_min`` (default 4) → positive, ``≤ negative_max`` (2) → negative,
strictly between (a median of 3, 2.5 or 3.5 on LIDC's 1–5 scale) → the case is excluded for that reader, and so
is a case with fewer than ``min_others`` (1) other ratings. A reader is scored only on the cases they read.
With one other reader the "consensus" is that single reader (LIDC: 337 of 1662 labelled nodules have exactly
2 readers) — raise ``min_others`` to demand more.

**Operating points**: a reader calls a case positive at rating ``≥ reader_threshold`` (4: "moderately
suspicious" or more on LIDC); the model's calls are ``model_pred`` (the caller's threshold, e.g. the Youden
threshold fitted on training folds; default ``model_score ≥ 0.5``).

**Bootstrap**: each resample draws patients (``groups``; cases when None) with replacement *and* reader columns
with replacement; the mean of readers and the model's mean are weighted by how often each reader column was
drawn, on the same case resample, so their difference is paired. Per-reader CIs resample cases only.
p = ``min(1, 2·min(P(d ≤ 0), P(d ≥ 0)))`` over the resampled differences ``d`` (as
:func:`cadx.evaluation.bootstrap.paired_bootstrap_pvalue`).

**LIDC caveat**: the LIDC columns ``_1.._4`` are *not* the same four radiologists across nodules (each site's
readers fill the slots per nodule), so "reader 2" pools different people: a per-column row is a reading slot,
not a person, and resampling columns approximates resampling readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cadx.evaluation.bootstrap import resample_weights
from cadx.evaluation.metrics import roc_auc

__all__ = ["ReaderComparison", "compare_readers", "loro_reference", "weighted_auc"]


def loro_reference(ratings: ArrayLike, positive_min: float = 4.0, negative_max: float = 2.0,
                   min_others: int = 1) -> NDArray[np.int64]:
    """Leave-one-reader-out reference ``(N, R)``: 1 positive, 0 negative, −1 excluded (module docstring).

    ``ratings`` ``(N, R)`` float, NaN = not read. A case's reference for reader ``r`` does not depend on whether
    ``r`` read it (the caller masks unread cases)."""
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"ratings must be (cases, readers), got shape {r.shape}")
    if negative_max >= positive_min:
        raise ValueError(f"negative_max ({negative_max}) must be below positive_min ({positive_min})")
    out = np.full(r.shape, -1, dtype=np.int64)
    for j in range(r.shape[1]):
        others = np.delete(r, j, axis=1)
        n = np.isfinite(others).sum(1)
        ok = n >= max(1, int(min_others))
        med = np.full(r.shape[0], np.nan)
        if ok.any():
            med[ok] = np.nanmedian(others[ok], axis=1)
        out[ok & (med >= positive_min), j] = 1
        out[ok & (med <= negative_max), j] = 0
    return out


def weighted_auc(pos: ArrayLike, score: ArrayLike, weights: ArrayLike) -> NDArray[np.float64]:
    """Mann–Whitney AUC (ties count ½) of ``score`` ``(N,)`` for labels ``pos`` ``(N,)`` under each row of integer
    case weights ``(B, N)`` (bootstrap multiplicities) → ``(B,)``; NaN where a class has zero weight.
    Weights of 1 give the plain AUC (= scikit-learn's ``roc_auc_score``)."""
    p = np.asarray(pos, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if p.shape != s.shape or w.shape[1] != s.size:
        raise ValueError(f"pos {p.shape}, score {s.shape} and weights {w.shape} do not match")
    if s.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(s, kind="mergesort")
    so = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(so)) + 1]
    wo, po = w[:, order], p[order]
    P = np.add.reduceat(wo * po, starts, axis=1)    # positive weight per tied score group
    N = np.add.reduceat(wo * ~po, starts, axis=1)
    below = np.cumsum(N, axis=1) - N
    num = (P * (below + 0.5 * N)).sum(1)
    den = P.sum(1) * N.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _rate(hit: NDArray[np.bool_], among: NDArray[np.bool_], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted fraction of ``hit`` among ``among`` per weight row ``(B, N)`` → ``(B,)`` (NaN when empty)."""
    den = (w * among).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (w * (among & hit)).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def _ci(vals: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    v = vals[np.isfinite(vals)]
    if v.size < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _p_two_sided(d: NDArray[np.float64]) -> float:
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan")
    return min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))


@dataclass
class ReaderComparison:
    """``table``: rows ``reader <r>`` (r = column, 1-based), ``mean of readers``, ``model vs ref. of reader <r>``,
    ``model (mean over the references)``; columns ``row, cases, positives, auc, auc_lo, auc_hi, sensitivity,
    sensitivity_lo, sensitivity_hi, specificity, specificity_lo, specificity_hi``. ``summary``: per metric the
    model − readers difference, its CI and p-value, plus the settings used."""

    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def compare_readers(ratings: ArrayLike, model_score: ArrayLike, model_pred: ArrayLike | None = None,
                    groups: ArrayLike | None = None, *, positive_min: float = 4.0, negative_max: float = 2.0,
                    min_others: int = 1, reader_threshold: float = 4.0, n_resamples: int = 2000,
                    alpha: float = 0.05, seed: int = 0, reader_names: list[str] | None = None
                    ) -> ReaderComparison:
    """Score every reader and the model against the leave-one-reader-out references (module docstring).

    ``ratings`` ``(N, R)`` (NaN = not read); ``model_score`` ``(N,)`` finite; ``model_pred`` ``(N,)`` 0/1 (None =
    ``model_score ≥ 0.5``); ``groups`` ``(N,)`` patient ids for the case bootstrap. A reader column with no usable
    case gets NaN metrics and is left out of the means. Raises ValueError on mismatched shapes or a non-finite
    model score."""
    r = np.asarray(ratings, dtype=np.float64)
    s = np.asarray(model_score, dtype=np.float64)
    if r.ndim != 2 or s.shape != (r.shape[0],):
        raise ValueError(f"ratings {r.shape} and model_score {s.shape} do not match (need (N, R) and (N,))")
    if not np.isfinite(s).all():
        raise ValueError("model_score must be finite for every case")
    mp = (s >= 0.5) if model_pred is None else np.asarray(model_pred).astype(bool)
    if mp.shape != s.shape:
        raise ValueError(f"model_pred {mp.shape} does not match model_score {s.shape}")
    n, n_read = r.shape
    names = reader_names or [f"reader {j + 1}" for j in range(n_read)]
    ref = loro_reference(r, positive_min, negative_max, min_others)
    use = np.isfinite(r) & (ref >= 0)                         # (N, R) cases scored for each reader
    calls = np.where(np.isfinite(r), r >= reader_threshold, False)

    rng = np.random.default_rng(seed)
    g = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    W = resample_weights(g.astype(np.int64), int(g.max()) + 1 if n else 0, n_resamples, rng).astype(np.float64)
    V = np.stack([np.bincount(row, minlength=n_read) for row in rng.integers(0, n_read, (n_resamples, n_read))])

    metrics = ("auc", "sensitivity", "specificity")
    point: dict[str, NDArray[np.float64]] = {f"{w}_{m}": np.full(n_read, np.nan) for w in ("r", "m") for m in metrics}
    boot: dict[str, NDArray[np.float64]] = {k: np.full((n_resamples, n_read), np.nan) for k in point}
    one = np.ones((1, n))
    for j in range(n_read):
        u = use[:, j]
        if not u.any():
            continue
        pos = ref[:, j] == 1
        for who, score, call in (("r", r[:, j], calls[:, j]), ("m", s, mp)):
            if pos[u].any() and (~pos[u]).any():
                point[f"{who}_auc"][j] = roc_auc(pos[u].astype(int), score[u])
            point[f"{who}_sensitivity"][j] = _rate(call, u & pos, one)[0]
            point[f"{who}_specificity"][j] = _rate(~call, u & ~pos, one)[0]
            boot[f"{who}_auc"][:, j] = weighted_auc(pos[u], score[u], W[:, u])
            boot[f"{who}_sensitivity"][:, j] = _rate(call, u & pos, W)
            boot[f"{who}_specificity"][:, j] = _rate(~call, u & ~pos, W)

    def mean_over_readers(vals: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
        ok = np.isfinite(vals)
        ww = w * ok
        den = ww.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (np.where(ok, vals, 0.0) * ww).sum(1) / np.where(den > 0, den, 1.0), np.nan)

    rows: list[dict[str, Any]] = []

    def add(label: str, j: int | None, who: str) -> None:
        row: dict[str, Any] = {"row": label}
        if j is None:
            ok = use.any(0)
            row["cases"] = int(use[:, ok].any(1).sum())
            row["positives"] = int((use & (ref == 1)).any(1).sum())
        else:
            row["cases"] = int(use[:, j].sum())
            row["positives"] = int((use[:, j] & (ref[:, j] == 1)).sum())
        for m in metrics:
            key = f"{who}_{m}"
            if j is None:
                row[m] = float(np.nanmean(point[key])) if np.isfinite(point[key]).any() else float("nan")
                vals = mean_over_readers(boot[key], V.astype(np.float64))
            else:
                row[m], vals = float(point[key][j]), boot[key][:, j]
            row[f"{m}_lo"], row[f"{m}_hi"] = _ci(vals, alpha)
        rows.append(row)

    for j in range(n_read):
        add(names[j], j, "r")
    add("mean of readers", None, "r")
    for j in range(n_read):
        add(f"model vs ref. of {names[j]}", j, "m")
    add("model (mean over the references)", None, "m")

    summary: dict[str, Any] = {"positive_min": positive_min, "negative_max": negative_max,
                               "min_others": int(min_others), "reader_threshold": reader_threshold,
                               "n_resamples": int(n_resamples), "seed": int(seed), "alpha": alpha,
                               "cases": int(use.any(1).sum()), "readers": int(n_read)}
    Vf = V.astype(np.float64)
    for m in metrics:
        d_point = float(np.nanmean(point[f"m_{m}"]) - np.nanmean(point[f"r_{m}"])) \
            if np.isfinite(point[f"m_{m}"]).any() and np.isfinite(point[f"r_{m}"]).any() else float("nan")
        d = mean_over_readers(boot[f"m_{m}"], Vf) - mean_over_readers(boot[f"r_{m}"], Vf)
        lo, hi = _ci(d, alpha)
        summary[m] = {"model_minus_readers": d_point, "ci": [lo, hi], "p_value": _p_two_sided(d),
                      "valid_resamples": int(np.isfinite(d).sum())}
    return ReaderComparison(pd.DataFrame(rows), summary)
