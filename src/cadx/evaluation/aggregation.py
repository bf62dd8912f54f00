"""Slice/patch-level predictions → one prediction per study (or per any id): the ONE aggregation of cadx.

Methods: ``mean`` probability (DMRN, MTMR-Net), majority ``vote`` (SCNet) and per-class ``max`` probability.

Tie rule (everywhere: cv, predict, evaluate, ensembles, the Lightning validation metric, the studies):

- a row votes for its argmax class, ties between classes going to the lowest class index;
- ``mean`` / ``max``: the predicted class is the argmax of the aggregated probabilities, ties to the lowest index;
- ``vote``: the predicted class has the most votes; a tie in votes goes to the tied class with the higher mean
  probability, and a remaining tie to the lowest class index.

:func:`aggregate_proba` is the array-level core; :func:`aggregate_predictions` applies it to a prediction table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cadx.errors import CadxDataError

__all__ = ["Aggregated", "aggregate_predictions", "aggregate_proba"]

Method = Literal["mean", "vote", "max"]
METHODS: tuple[str, ...] = ("mean", "vote", "max")
_KEEP = ("patient_id", "fold", "y_true")


class Aggregated(NamedTuple):
    """Result of :func:`aggregate_proba` for ``S`` groups (first-appearance order) and ``K`` classes."""

    keys: np.ndarray               # (S,) group ids
    proba: NDArray[np.float64]     # (S, K) aggregated probabilities (vote: vote fractions)
    pred: NDArray[np.int64]        # (S,) predicted class index (the tie rule of the module)
    first: NDArray[np.int64]       # (S,) row index of each group's first row
    size: NDArray[np.int64]        # (S,) rows per group


def aggregate_proba(proba: ArrayLike, groups: ArrayLike, method: str = "mean") -> Aggregated:
    """Aggregate row probabilities ``(N, K)`` over ``groups`` ``(N,)`` (any hashable ids, e.g. study ids).

    ``mean``: mean probability per class; ``vote``: vote fractions (each row votes for its argmax);
    ``max``: per-class maximum (rows no longer sum to 1). Predictions follow the module's tie rule.
    Raises ValueError for an unknown method, shapes that disagree, NaN/inf probabilities or missing ids;
    ``N == 0`` gives ``S == 0``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; use 'mean', 'vote' or 'max'")
    p = np.asarray(proba, dtype=np.float64)
    g = np.asarray(groups)
    if p.ndim != 2 or g.ndim != 1 or p.shape[0] != g.shape[0]:
        raise ValueError(f"proba must be (N, K) and groups (N,), got {p.shape} and {g.shape}")
    if not np.isfinite(p).all():
        raise ValueError("proba contains NaN or inf")
    codes, uniq = pd.factorize(g, sort=False)
    if (codes < 0).any():
        raise ValueError("groups has missing ids")
    keys = np.asarray(uniq)
    s, k = keys.size, p.shape[1]
    size = np.bincount(codes, minlength=s).astype(np.int64)
    first = np.full(s, -1, np.int64)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)       # the smallest row index wins
    sums = np.stack([np.bincount(codes, weights=p[:, j], minlength=s) for j in range(k)], axis=1) \
        if k else np.zeros((s, 0))
    mean = sums / np.maximum(size, 1)[:, None]
    if method == "mean":
        agg = mean
    elif method == "max":
        agg = np.full((s, k), -np.inf)
        np.maximum.at(agg, codes, p)
    else:
        votes = np.zeros((s, k), np.int64)
        np.add.at(votes, (codes, np.argmax(p, axis=1)), 1)
        agg = votes / np.maximum(size, 1)[:, None]
        top = votes == votes.max(axis=1, keepdims=True)
        return Aggregated(keys, agg, np.argmax(np.where(top, mean, -np.inf), axis=1).astype(np.int64), first, size)
    return Aggregated(keys, agg, np.argmax(agg, axis=1).astype(np.int64), first, size)


def aggregate_predictions(df: pd.DataFrame, by: str = "study_id", method: Method = "mean",
                          prob_cols: Sequence[str] | None = None) -> pd.DataFrame:
    """Aggregate rows (slices, patches) sharing ``df[by]`` into one row each, in first-appearance order.

    ``prob_cols``: class probability columns in class order (default: every ``p_<class>`` column).
    - ``mean``: mean probability per class.
    - ``vote``: each row votes for its argmax class; the output probabilities are the vote fractions;
      ``y_pred`` = most votes, ties broken by the higher mean probability (then the lower class index).
    - ``max``: per-class maximum probability (rows no longer sum to 1; argmax still applies).
    Output columns: ``by``, kept ``patient_id``/``fold``/``y_true`` (must be constant within a group, else
    CadxDataError), the probability columns, ``y_pred`` (class name from ``p_<name>``), ``n_rows``,
    and the mean of any ``pred_<attr>``/``true_<attr>``/``dice``/``lesion_voxels`` column.
    """
    if by not in df.columns:
        raise CadxDataError(f"no column {by!r}", field=by)
    if df[by].isna().any():
        raise CadxDataError(f"column {by!r} has missing ids", field=by)
    cols = list(prob_cols) if prob_cols is not None else [c for c in df.columns if c.startswith("p_")]
    if not cols:
        raise CadxDataError("no probability columns (p_<class>)", field="prob_cols")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CadxDataError(f"missing probability columns {missing}", field="prob_cols")
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; use 'mean', 'vote' or 'max'")
    if df[cols].isna().to_numpy().any():
        raise CadxDataError("probability columns contain NaN", field="prob_cols")

    keys = pd.unique(df[by])
    g = df.groupby(by, sort=False)
    out = pd.DataFrame({by: keys})
    for c in _KEEP:
        if c in df.columns:
            nun = g[c].nunique(dropna=False)
            if (nun > 1).any():
                bad = nun[nun > 1].index[:3].tolist()
                raise CadxDataError(f"{c} differs within {by} {bad}", field=c)
            out[c] = g[c].first().reindex(keys).to_numpy()
    agg = aggregate_proba(df[cols].to_numpy(dtype=np.float64), df[by].to_numpy(), method)
    probs, pred = agg.proba, agg.pred
    for j, c in enumerate(cols):
        out[c] = probs[:, j]
    names = [c[2:] if c.startswith("p_") else c for c in cols]
    out["y_pred"] = [names[i] for i in pred]
    out["n_rows"] = agg.size
    extra = [c for c in df.columns
             if c.startswith(("pred_", "true_")) or c in ("dice", "lesion_voxels")]
    if extra:
        means = g[extra].mean().reindex(keys)
        for c in extra:
            out[c] = means[c].to_numpy()
    return out.reset_index(drop=True)
