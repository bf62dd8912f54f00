"""Attribute ↔ malignancy relatedness by recursive feature elimination (MTMR-Net Table IV) and the inter-reader
absolute error (the IB row of MTMR-Net Table III).

MTMR-Net Sec. IV-D: a logistic regression predicts the label from the (predicted) attributes; RFE removes the least
important attribute step by step and, at each step, "kept the correlation coefficients and its important ratio of
the removed feature", giving "the final importance for each attribute in a nested manner". Implemented as:

* attributes are z-scored on the training rows, so |coefficients| are comparable;
* step ``s`` (``s = 1..A-1``) fits LR on the ``A-s+1`` remaining attributes; the removed one is the smallest
  ``|w|`` (sklearn ``RFE(step=1)``), its *important ratio* ``r_s = |w_removed| / sum |w_remaining|``;
* nested importance: the attribute removed at step ``s`` gets ``r_s * prod_{t<s} (1 - r_t)`` (the share left over
  by the earlier steps) and the last survivor gets the remainder ``prod_t (1 - r_t)``. The relatedness values of
  one fit sum to 1, as Table IV's do (0.251 + 0.007 + ... + 0.067 = 0.99), and "above average" means > 1/A.

Relatedness is reported as mean ± std over cross-validation folds (each fit on a fold's training rows), ``rank``
orders the mean relatedness (1 = most related), ``rfe_rank`` is sklearn's ``ranking_`` averaged over folds
(1 = survived elimination, A = removed first). Multi-class labels use the L1 norm of the coefficients over classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_selection import RFE
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from cadx.errors import CadxDataError

__all__ = ["attribute_relatedness", "inter_reader_abe", "nested_rfe_importance"]


def _abs_coef(est: LogisticRegression) -> np.ndarray:
    """Per-feature importance ``(F,)``: ``|coef|`` (binary) or its L1 norm over classes."""
    return np.abs(np.atleast_2d(est.coef_)).sum(axis=0)


def nested_rfe_importance(X: np.ndarray, y: np.ndarray, C: float = 1.0,
                          random_state: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """One RFE run: ``(relatedness (A,), ranking (A,))`` for features ``X (N, A)`` and labels ``y (N,)``.

    ``X`` is z-scored here (constant columns stay 0 and are eliminated first). ``A == 1`` gives ``([1.], [1])``.
    """
    X = StandardScaler().fit_transform(np.asarray(X, dtype=np.float64))
    n_feat = X.shape[1]
    steps: list[np.ndarray] = []

    def getter(est: LogisticRegression) -> np.ndarray:
        imp = _abs_coef(est)
        steps.append(imp)
        return imp

    lr = LogisticRegression(C=C, max_iter=2000, random_state=random_state)
    rfe = RFE(lr, n_features_to_select=1, step=1, importance_getter=getter).fit(X, y)
    ranking = np.asarray(rfe.ranking_)
    remaining = np.ones(n_feat, dtype=bool)
    rel = np.zeros(n_feat)
    left = 1.0
    for s, imp in enumerate(steps):
        removed = int(np.flatnonzero(ranking == n_feat - s)[0])
        idx = np.flatnonzero(remaining)
        total = float(imp.sum())
        ratio = float(imp[np.searchsorted(idx, removed)]) / total if total > 0 else 1.0 / idx.size
        rel[removed] = left * ratio
        left *= 1.0 - ratio
        remaining[removed] = False
    rel[remaining] = left
    return rel, ranking


def _folds(y: np.ndarray, folds: int | Sequence[Any], groups: np.ndarray | None,
           seed: int) -> list[np.ndarray]:
    """Training-row index arrays of each fold."""
    if isinstance(folds, int):
        if folds < 2:
            return [np.arange(y.size)]
        if groups is not None:
            cv: Any = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
            return [tr for tr, _ in cv.split(np.zeros(y.size), y, groups)]
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return [tr for tr, _ in cv.split(np.zeros(y.size), y)]
    out = []
    for f in folds:
        tr = f[0] if isinstance(f, tuple) else f
        tr = np.asarray(tr)
        out.append(np.flatnonzero(tr) if tr.dtype == bool else tr.astype(np.int64))
    return out


def attribute_relatedness(attributes: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None,
                          folds: int | Sequence[Any] = 5, groups: np.ndarray | None = None, seed: int = 0,
                          C: float = 1.0) -> pd.DataFrame:
    """MTMR-Net Table IV: RFE relatedness of each attribute to the label, mean ± std over folds.

    Args:
        attributes: ``(N, A)`` attribute scores (predicted or true); rows with any NaN are dropped.
        y: ``(N,)`` class labels (ints < 0 = unlabelled, dropped).
        names: ``A`` attribute names (default ``a0..``).
        folds: number of stratified folds (``StratifiedGroupKFold`` when ``groups`` is given, e.g. patient ids;
            ``1`` = one fit on all rows), or explicit folds: a list of training index arrays (or boolean masks,
            or ``(train, test)`` tuples, whose test part is unused).
        groups: ``(N,)`` group ids for patient-level folds.
        seed: fold shuffling and LR seed.
    Returns a DataFrame indexed by attribute with columns ``relatedness_mean``, ``relatedness_std`` (population
    std over folds; 0 with one fold), ``rank`` (1 = highest mean relatedness), ``rfe_rank_mean``, ``above_average``
    (mean relatedness > 1/A), ``n_folds``.
    """
    X = np.asarray(attributes, dtype=np.float64)
    yy = np.asarray(y)
    if X.ndim != 2 or yy.shape != (X.shape[0],):
        raise CadxDataError(f"need attributes (N, A) and y (N,), got {X.shape} and {yy.shape}", field="attributes")
    names = [f"a{i}" for i in range(X.shape[1])] if names is None else list(names)
    if len(names) != X.shape[1]:
        raise CadxDataError(f"{len(names)} names for {X.shape[1]} attributes", field="attributes")
    g = None if groups is None else np.asarray(groups)
    keep = np.all(np.isfinite(X), axis=1)
    if np.issubdtype(yy.dtype, np.number):
        keep &= yy >= 0
    idx_keep = np.flatnonzero(keep)
    if isinstance(folds, int):
        train_sets = [idx_keep[tr] for tr in _folds(yy[keep], folds, None if g is None else g[keep], seed)]
    else:
        train_sets = [np.intersect1d(tr, idx_keep) for tr in _folds(yy, folds, g, seed)]
    rels, ranks = [], []
    for tr in train_sets:
        if np.unique(yy[tr]).size < 2:
            raise CadxDataError("a fold's training rows hold fewer than two classes", field="label")
        r, k = nested_rfe_importance(X[tr], yy[tr], C=C, random_state=seed)
        rels.append(r)
        ranks.append(k)
    rel = np.asarray(rels)
    mean = rel.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(1, len(names) + 1)
    return pd.DataFrame({
        "relatedness_mean": mean, "relatedness_std": rel.std(axis=0), "rank": rank,
        "rfe_rank_mean": np.asarray(ranks, dtype=np.float64).mean(axis=0),
        "above_average": mean > 1.0 / len(names), "n_folds": len(train_sets),
    }, index=pd.Index(names, name="attribute"))


def inter_reader_abe(ratings: dict[str, np.ndarray]) -> dict[str, float]:
    """Inter-observer absolute error per attribute (MTMR-Net Table III, row IB).

    ``ratings[attr]`` is ``(N, R)``: nodule × reader scores, NaN where a reader did not rate the nodule. The value is
    the mean of ``|s_i - s_j|`` over *all* pairs of readers who both rated the same nodule, pooled over nodules
    (a nodule with 4 readers contributes 6 pairs); NaN when no nodule has two ratings.
    """
    out: dict[str, float] = {}
    for attr, arr in ratings.items():
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2:
            raise CadxDataError(f"ratings must be (N, R), got {a.shape}", field=attr)
        total, count = 0.0, 0
        for i, j in combinations(range(a.shape[1]), 2):
            d = np.abs(a[:, i] - a[:, j])
            ok = np.isfinite(d)
            total += float(d[ok].sum())
            count += int(ok.sum())
        out[attr] = total / count if count else float("nan")
    return out
