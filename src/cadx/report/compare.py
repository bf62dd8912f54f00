"""Paired comparison of runs scored on the same studies (bootstrap p-values, thesis A.4–A.8 style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cadx.evaluation.bootstrap import paired_bootstrap_pvalue
from cadx.evaluation.metrics import accuracy, roc_auc
from cadx.evaluation.summary import class_key
from cadx.report.runs import RunData
from cadx.report.tables import Table, fmt

__all__ = ["paired_table"]


def _study_table(run: RunData) -> pd.DataFrame | None:
    df = run.predictions
    cols = [f"p_{c}" for c in run.classes]
    need = {"study_id", "patient_id", "y_true", *cols}
    if df is None or not run.classes or not need <= set(df.columns) or df["study_id"].duplicated().any():
        return None
    df = df[df["y_true"].notna()].copy()
    df["_y"] = df["y_true"].map(class_key).map({c: i for i, c in enumerate(run.classes)})
    if df["_y"].isna().any():
        return None
    if "y_pred" in df.columns:
        df["_pred"] = df["y_pred"].map(class_key).map({c: i for i, c in enumerate(run.classes)})
    else:
        df["_pred"] = df[cols].to_numpy().argmax(1)
    if df["_pred"].isna().any():
        return None
    return df.set_index(df["study_id"].astype(str))


def paired_table(runs: Sequence[RunData], n_resamples: int = 2000, seed: int = 0) -> Table | None:
    """Each run against the first one on their common studies: ΔAUC, ΔAcc and two-sided paired bootstrap
    p-values (patients resampled). None when fewer than two runs share classes and study ids."""
    if len(runs) < 2:
        return None
    ref = runs[0]
    base = _study_table(ref)
    if base is None:
        return None
    rows = []
    for r in runs[1:]:
        other = _study_table(r)
        if other is None or r.classes != ref.classes:
            continue
        common = base.index.intersection(other.index)
        if len(common) < 10:
            continue
        a, b = base.loc[common], other.loc[common]
        if not (a["_y"].to_numpy() == b["_y"].to_numpy()).all():
            continue
        y = a["_y"].to_numpy(dtype=np.int64)
        groups = a["patient_id"].astype(str).to_numpy()
        cols = [f"p_{c}" for c in ref.classes]
        pa, pb = a[cols].to_numpy(float), b[cols].to_numpy(float)
        da, db = a["_pred"].to_numpy(np.int64), b["_pred"].to_numpy(np.int64)
        if np.unique(y).size < len(ref.classes):
            continue
        d_auc = roc_auc(y, pb) - roc_auc(y, pa)
        d_acc = accuracy(y, db) - accuracy(y, da)
        p_auc = paired_bootstrap_pvalue(roc_auc, y, pb, pa, groups, n_resamples, seed)
        p_acc = paired_bootstrap_pvalue(accuracy, y, db, da, groups, n_resamples, seed)
        rows.append([r.name, fmt(len(common)), fmt(d_auc), fmt(p_auc), fmt(d_acc), fmt(p_acc)])
    if not rows:
        return None
    return Table(f"Paired bootstrap comparison with {ref.name} (same studies)",
                 ["Run", "Studies", "ΔAUC", "p (AUC)", "ΔAcc", "p (Acc)"], rows,
                 note=f"Δ = run − {ref.name}; two-sided p from {n_resamples} patient resamples.")
