"""Probability of malignancy → risk level DL2–DL5 → management recommendation (thesis A.6, modelled on ACR
TI-RADS TR2–TR5), and the sensitivity/specificity of the recommendation.

* :func:`risk_levels`: ``cut_points`` ``(c3, c4, c5)`` increasing in (0, 1): ``p < c3`` → 2, ``c3 ≤ p < c4`` → 3,
  ``c4 ≤ p < c5`` → 4, ``p ≥ c5`` → 5 (a probability equal to a cut-point goes to the higher level). The thesis
  does not print its cut-points, so they are the caller's choice.
* :func:`recommend`: ``FNA`` when the level has an FNA size threshold and ``size ≥`` it, else ``follow-up`` when
  the level has a follow-up threshold and ``size ≥`` it, else ``none``. Defaults are ACR TI-RADS (cm; the thesis:
  "the same as in ACR TI-RADS"): FNA TR3 ≥ 2.5, TR4 ≥ 1.5, TR5 ≥ 1.0; follow-up TR3 ≥ 1.5, TR4 ≥ 1.0, TR5 ≥ 0.5;
  DL2 never gets either.
* :func:`recommendation_metrics`: as Table 2 of the paper, FNA sensitivity/specificity (positive call = FNA) and
  follow-up sensitivity/specificity (positive call = FNA **or** follow-up), with patient-bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.metrics import sensitivity, specificity

__all__ = ["ACR_FNA_CM", "ACR_FOLLOW_UP_CM", "level_table", "recommend", "recommendation_metrics", "risk_levels"]

#: ACR TI-RADS size thresholds (cm) per level: FNA and follow-up.
ACR_FNA_CM: dict[int, float] = {3: 2.5, 4: 1.5, 5: 1.0}
ACR_FOLLOW_UP_CM: dict[int, float] = {3: 1.5, 4: 1.0, 5: 0.5}
RECOMMENDATIONS = ("none", "follow-up", "FNA")


def risk_levels(proba: ArrayLike, cut_points: Sequence[float]) -> NDArray[np.int64]:
    """Levels 2–5 ``(N,)`` of probabilities ``(N,)`` in [0, 1] (module docstring). Raises ValueError for
    cut-points that are not 3 increasing values in (0, 1) or a probability outside [0, 1] / NaN."""
    c = np.asarray(cut_points, dtype=np.float64)
    if c.shape != (3,) or not ((c > 0) & (c < 1)).all() or not (np.diff(c) > 0).all():
        raise ValueError(f"cut_points must be 3 increasing values in (0, 1), got {list(cut_points)}")
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("proba must be a 1-D array of probabilities in [0, 1]")
    return (2 + np.searchsorted(c, p, side="right")).astype(np.int64)


def recommend(levels: ArrayLike, size_cm: ArrayLike, fna_cm: Mapping[int, float] | None = None,
              follow_up_cm: Mapping[int, float] | None = None) -> NDArray[np.str_]:
    """``"FNA"`` / ``"follow-up"`` / ``"none"`` per case from its level ``(N,)`` and size in cm ``(N,)``.
    Thresholds default to ACR TI-RADS (:data:`ACR_FNA_CM`, :data:`ACR_FOLLOW_UP_CM`). Raises ValueError for a
    missing (NaN) or negative size."""
    lv = np.asarray(levels, dtype=np.int64)
    sz = np.asarray(size_cm, dtype=np.float64)
    if lv.shape != sz.shape or lv.ndim != 1:
        raise ValueError(f"levels {lv.shape} and size_cm {sz.shape} must be 1-D of the same length")
    if not np.isfinite(sz).all() or (sz < 0).any():
        raise ValueError("size_cm must be finite and non-negative for every case")
    fna = dict(ACR_FNA_CM if fna_cm is None else fna_cm)
    fu = dict(ACR_FOLLOW_UP_CM if follow_up_cm is None else follow_up_cm)
    fna_min = np.array([fna.get(int(v), np.inf) for v in lv], dtype=np.float64)
    fu_min = np.array([fu.get(int(v), np.inf) for v in lv], dtype=np.float64)
    return np.where(sz >= fna_min, "FNA", np.where(sz >= fu_min, "follow-up", "none"))


def level_table(y_true: ArrayLike, levels: ArrayLike, recommendation: ArrayLike | None = None) -> pd.DataFrame:
    """Per level 2–5: ``level`` (``DL<k>``), ``cases``, ``malignant``, ``malignancy_rate`` (NaN when empty) and,
    with ``recommendation``, the count of each recommendation. ``y_true`` 0/1 ``(N,)``."""
    y = np.asarray(y_true, dtype=np.int64)
    lv = np.asarray(levels, dtype=np.int64)
    rec = None if recommendation is None else np.asarray(recommendation).astype(str)
    rows: list[dict[str, Any]] = []
    for k in (2, 3, 4, 5):
        m = lv == k
        row: dict[str, Any] = {"level": f"DL{k}", "cases": int(m.sum()), "malignant": int(y[m].sum()),
                               "malignancy_rate": float(y[m].mean()) if m.any() else float("nan")}
        if rec is not None:
            row.update({r: int((rec[m] == r).sum()) for r in RECOMMENDATIONS})
        rows.append(row)
    return pd.DataFrame(rows)


def recommendation_metrics(y_true: ArrayLike, recommendation: ArrayLike, groups: ArrayLike | None = None,
                           n_resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{"fna": {...}, "follow_up": {...}}`` each with ``sensitivity``/``specificity`` ``[value, lo, hi]`` (95 %
    patient-bootstrap CI over ``groups``) and the counts ``tp, positives, tn, negatives``. ``y_true`` 0/1."""
    y = np.asarray(y_true, dtype=np.int64)
    rec = np.asarray(recommendation).astype(str)
    bad = sorted(set(rec.tolist()) - set(RECOMMENDATIONS))
    if bad or rec.shape != y.shape:
        raise ValueError(f"recommendation must be one of {RECOMMENDATIONS} per case, got {bad or rec.shape}")
    out: dict[str, dict[str, Any]] = {}
    for name, call in (("fna", rec == "FNA"), ("follow_up", rec != "none")):
        pred = call.astype(np.int64)
        block: dict[str, Any] = {"tp": int((pred & y).sum()), "positives": int(y.sum()),
                                 "tn": int(((1 - pred) & (1 - y)).sum()), "negatives": int((1 - y).sum())}
        for m, fn in (("sensitivity", sensitivity), ("specificity", specificity)):
            ci = bootstrap_ci(partial(fn, n_classes=2), y, pred, groups=groups, n_resamples=n_resamples,
                              seed=seed)
            block[m] = [ci[0], ci[1], ci[2]]
        out[name] = block
    return out
