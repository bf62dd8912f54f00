"""Slice/patch-level prediction rows → one row per study (or per any id column).

Methods: ``mean`` probability (DMRN, MTMR-Net), majority ``vote`` (SCNet) and ``max`` probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from cadx.errors import CadxDataError

__all__ = ["aggregate_predictions"]

Method = Literal["mean", "vote", "max"]
_KEEP = ("patient_id", "fold", "y_true")


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
    if method not in ("mean", "vote", "max"):
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

    mean_p = g[cols].mean().reindex(keys).to_numpy(dtype=np.float64)
    if method == "mean":
        probs = mean_p
        pred = np.argmax(probs, axis=1)
    elif method == "max":
        probs = g[cols].max().reindex(keys).to_numpy(dtype=np.float64)
        pred = np.argmax(probs, axis=1)
    else:
        votes = np.argmax(df[cols].to_numpy(dtype=np.float64), axis=1)
        vote_df = pd.DataFrame(np.eye(len(cols))[votes], columns=cols, index=df.index)
        vote_df[by] = df[by].to_numpy()
        probs = vote_df.groupby(by, sort=False)[cols].mean().reindex(keys).to_numpy(dtype=np.float64)
        top = probs == probs.max(axis=1, keepdims=True)
        pred = np.argmax(np.where(top, mean_p, -np.inf), axis=1)
    for j, c in enumerate(cols):
        out[c] = probs[:, j]
    names = [c[2:] if c.startswith("p_") else c for c in cols]
    out["y_pred"] = [names[i] for i in pred]
    out["n_rows"] = g.size().reindex(keys).to_numpy()
    extra = [c for c in df.columns
             if c.startswith(("pred_", "true_")) or c in ("dice", "lesion_voxels")]
    if extra:
        means = g[extra].mean().reindex(keys)
        for c in extra:
            out[c] = means[c].to_numpy()
    return out.reset_index(drop=True)
