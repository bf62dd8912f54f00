"""Tables and notes of the DMRN study: one Table-2 row per model, the comparison table, the paper's directions
checked (DMRN > ResNet-18, multi-scale helps) and ``notes.md`` through :mod:`cadx.report.studies`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.report.studies import markdown_table, write_study_notes

__all__ = ["findings", "summary_row", "table2", "write_notes"]


def summary_row(model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """One Table-2 row: accuracy, macro AUC, F1, sensitivity, specificity and their 95 % CIs, wall seconds."""
    p = metrics.get("pooled", {})
    ci = p.get("ci", {}) or {}
    row: dict[str, Any] = {"model": model}
    for k in ("accuracy", "auc", "f1", "sensitivity", "specificity"):
        row[k] = p.get(k)
        lo_hi = ci.get(k)
        row[f"{k}_ci"] = None if lo_hi is None else [round(float(v), 4) for v in lo_hi]
    row["seconds"] = metrics.get("run", {}).get("seconds")
    return row


def table2(df: pd.DataFrame) -> dict[str, Any]:
    """The comparison as a metrics.json ``extra`` table (value [95 % CI]; ``–`` when missing)."""
    def cell(v: Any, ci: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) and len(ci) == 2 else "")
    rows = [[r.model, cell(r.accuracy, r.accuracy_ci), cell(r.auc, r.auc_ci), cell(r.f1, r.f1_ci), r.seconds]
            for r in df.itertuples()]
    return {"title": "DMRN Table 2/4 format: models in the same folds (study level, 95% CI)",
            "columns": ["model", "accuracy", "AUC (macro OvR)", "F1", "seconds"], "rows": rows}


def findings(df: pd.DataFrame) -> dict[str, Any]:
    """Directions the paper reports, checked on this study: DMRN > ResNet-18, DMRN > DMRN w.o. MS (accuracy, AUC)."""
    rows = {str(r["model"]): r for r in df.to_dict("records")}
    out: dict[str, Any] = {}
    for other, key in (("resnet18", "dmrn_beats_resnet18"), ("dmrn_noms", "multiscale_helps")):
        if "dmrn" in rows and other in rows:
            a, b = rows["dmrn"], rows[other]
            out[key] = {k: bool(float(a[k]) > float(b[k])) for k in ("accuracy", "auc")
                        if a.get(k) is not None and b.get(k) is not None
                        and np.isfinite(float(a[k])) and np.isfinite(float(b[k]))}
    return out


def write_notes(out: Path, df: pd.DataFrame, base_name: str, network_kwargs: Mapping[str, Any]) -> Path:
    """``out/notes.md``: what ran, the choices, the results table and the findings."""
    setup = [f"- Base config `{base_name}` (each run's resolved config is its `config.yaml`); per-model updates: "
             f"`cadx.studies.dmrn.variants.VARIANTS`; network kwargs for every network: "
             f"{dict(network_kwargs) or 'none'}.",
             "- All models use the same `splits.json` (patient-level folds) and the same input slices; study "
             "probability = mean of its slice probabilities (cnn3d: one 3D box per study).",
             "- Choices (the paper is silent or the CPU budget forces them): width 16 instead of 64 for every "
             "network (VGG-19 width 8, 256-unit FC head), small stems for 32 px inputs; DMRN backbone ResNet-18 "
             "(paper: ImageNet ResNet-101, no pre-training here); DMRN classifier = linear SVM (C = 1) on the "
             "last-stage RPU embedding; HC = LBP+HOG → linear SVM; SDL λ = 3 on in-batch random pairs.",
             "- t-SNE (Fig. 5): study-level test embeddings (`forward_features`, mean over a study's slices) of "
             "each fold's model on its own test patients, pooled over folds."]
    table = markdown_table(["model", "accuracy", "AUC", "F1", "wall s"],
                           [[r.model, r.accuracy, r.auc, r.f1, r.wall_seconds] for r in df.itertuples()])
    return write_study_notes(out, "DMRN study (Bi et al.)", [
        (None, setup), ("Results", table), (None, f"Findings: {findings(df)}")])
