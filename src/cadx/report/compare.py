"""Paired comparison of runs scored on the same studies (bootstrap p-values, thesis A.4–A.8 style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cadx.evaluation.bootstrap import paired_bootstrap_pvalue
from cadx.evaluation.metrics import accuracy, roc_auc
from cadx.evaluation.multiplicity import bonferroni, format_p, holm
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
    p-values (patients resampled), each with its Holm and Bonferroni adjustment. The family is every p-value of
    the table (AUC and accuracy of every run: ``2 × (runs − 1)`` comparisons at most, NaN not counted) — our choice,
    the most conservative one; the note states it. p-values are printed by :func:`format_p` (``< 0.001``).
    None when fewer than two runs share classes and study ids."""
    if len(runs) < 2:
        return None
    ref = runs[0]
    base = _study_table(ref)
    if base is None:
        return None
    rows: list[tuple[str, int, float, float, float, float]] = []
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
        rows.append((r.name, len(common), d_auc, p_auc, d_acc, p_acc))
    if not rows:
        return None
    raw = np.array([p for row in rows for p in (row[3], row[5])], dtype=np.float64)
    adj_h, adj_b = holm(raw).reshape(-1, 2), bonferroni(raw).reshape(-1, 2)
    m = int(np.isfinite(raw).sum())
    cells = [[name, fmt(n), fmt(d_auc), format_p(p_auc), format_p(adj_h[i, 0]), format_p(adj_b[i, 0]), fmt(d_acc),
              format_p(p_acc), format_p(adj_h[i, 1]), format_p(adj_b[i, 1])]
             for i, (name, n, d_auc, p_auc, d_acc, p_acc) in enumerate(rows)]
    return Table(f"Paired bootstrap comparison with {ref.name} (same studies)",
                 ["Run", "Studies", "ΔAUC", "p (AUC)", "p Holm (AUC)", "p Bonferroni (AUC)", "ΔAcc", "p (Acc)",
                  "p Holm (Acc)", "p Bonferroni (Acc)"], cells,
                 note=f"Δ = run − {ref.name}; two-sided p from {n_resamples} patient resamples. Holm and Bonferroni "
                      f"adjust over all {m} p-values of this table (AUC and accuracy of every run).")
