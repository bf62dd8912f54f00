"""Paired fp32 vs bf16 comparison from the predictions CSVs beside this file (recomputes README.md's table).

Classification pairs (``<name>_fp32.csv`` / ``<name>_bf16.csv``, cadx study predictions with ``y_true`` and
``p_<positive>``): test AUC of each (:func:`cadx.evaluation.metrics.roc_auc`), ΔAUC = bf16 − fp32 with a two-sided
paired bootstrap p over patients (:func:`cadx.evaluation.bootstrap.paired_bootstrap_pvalue`, 2000 resamples,
seed 0) and the 95 % patient-bootstrap CI of ΔAUC. Segmentation pairs (``dice`` column, one row per volume): mean
Dice of each, mean of the per-patient differences with its 95 % bootstrap CI (patients resampled) and the
Wilcoxon signed-rank p (scipy, two-sided, zero differences dropped: ``zero_method="wilcox"``). A reference row
compares two fp32 training seeds of the same recipe (the seed-to-seed noise a precision change should be read
against).

    .venv/bin/python benchmarks/results/bf16_accuracy/paired.py        # prints the table, writes paired.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from cadx.evaluation.bootstrap import bootstrap_mean_ci, paired_bootstrap_pvalue, resample_weights
from cadx.evaluation.metrics import roc_auc

HERE = Path(__file__).resolve().parent
#: pair name → (positive class or None for segmentation)
PAIRS: dict[str, str | None] = {"breastmnist_s0": "malignant", "breastmnist_s1": "malignant",
                                "breastmnist_s2": "malignant", "lgg64_unet_fold0": None,
                                "adrenalmnist3d_s0": "adrenal_mass", "dmrn_adrenalmnist3d_amd_guard": "adrenal_mass"}
#: seed-noise reference: the same fp32 recipe with two training seeds (file a, file b, positive class)
REFERENCE: dict[str, tuple[str, str, str]] = {
    "reference_fp32_seed0_vs_seed1": ("breastmnist_s0_fp32", "breastmnist_s1_fp32", "malignant")}


def _auc_delta_ci(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, groups: np.ndarray, n: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """95 % percentile CI of AUC(b) − AUC(a) over patient resamples (the same resamples for a and b)."""
    _, gi = np.unique(groups, return_inverse=True)
    w = resample_weights(gi.astype(np.int64), int(gi.max()) + 1, n, np.random.default_rng(seed))
    d = []
    for row in w:
        idx = np.repeat(np.arange(y.size), row.astype(int))
        if np.unique(y[idx]).size < 2:
            continue
        d.append(roc_auc(y[idx], pb[idx]) - roc_auc(y[idx], pa[idx]))
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def classification(name: str, positive: str, files: tuple[str, str] | None = None) -> dict[str, Any]:
    """ΔAUC of ``<name>_bf16`` − ``<name>_fp32`` (or ``files[1]`` − ``files[0]``) on the same studies."""
    fa, fb = files or (f"{name}_fp32", f"{name}_bf16")
    a = pd.read_csv(HERE / f"{fa}.csv").set_index("study_id")
    b = pd.read_csv(HERE / f"{fb}.csv").set_index("study_id").loc[a.index]
    assert (a["y_true"].astype(str) == b["y_true"].astype(str)).all(), f"{name}: different labels"
    y = (a["y_true"].astype(str) == positive).to_numpy(np.int64)
    col = f"p_{positive}"
    pa, pb = a[col].to_numpy(float), b[col].to_numpy(float)
    groups = a["patient_id"].astype(str).to_numpy()
    auc_a, auc_b = roc_auc(y, pa), roc_auc(y, pb)
    p = paired_bootstrap_pvalue(roc_auc, y, pb, pa, groups, 2000, 0)
    lo, hi = _auc_delta_ci(y, pa, pb, groups)
    return {"pair": name, "metric": "test AUC", "n": int(y.size), "fp32": auc_a, "bf16": auc_b,
            "delta": auc_b - auc_a, "delta_ci": [lo, hi], "p": p, "test": "paired patient bootstrap"}


def segmentation(name: str) -> dict[str, Any]:
    a = pd.read_csv(HERE / f"{name}_fp32.csv").groupby("patient_id")["dice"].mean()
    b = pd.read_csv(HERE / f"{name}_bf16.csv").groupby("patient_id")["dice"].mean().loc[a.index]
    d = (b - a).to_numpy(float)
    ci = bootstrap_mean_ci(d, None, 2000, seed=0)
    p = float(wilcoxon(b.to_numpy(), a.to_numpy()).pvalue) if np.any(d != 0) else 1.0
    return {"pair": name, "metric": "Dice per patient", "n": int(d.size), "fp32": float(a.mean()),
            "bf16": float(b.mean()), "delta": float(d.mean()), "delta_ci": [ci[1], ci[2]], "p": p,
            "test": "Wilcoxon signed-rank"}


def main() -> list[dict[str, Any]]:
    rows = []
    for name, positive in PAIRS.items():
        if not (HERE / f"{name}_fp32.csv").is_file() or not (HERE / f"{name}_bf16.csv").is_file():
            print(f"{name}: a predictions file is missing, skipped")
            continue
        rows.append(classification(name, positive) if positive is not None else segmentation(name))
    for name, (fa, fb, positive) in REFERENCE.items():
        if (HERE / f"{fa}.csv").is_file() and (HERE / f"{fb}.csv").is_file():
            rows.append({**classification(name, positive, (fa, fb)), "note": f"{fb} − {fa}"})
    print("| pair | metric | n | fp32 | bf16 | Δ (bf16 − fp32) [95 % CI] | p |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pair']} | {r['metric']} | {r['n']} | {r['fp32']:.3f} | {r['bf16']:.3f} | "
              f"{r['delta']:+.3f} [{r['delta_ci'][0]:+.3f}, {r['delta_ci'][1]:+.3f}] | {r['p']:.3f} ({r['test']}) |")
    (HERE / "paired.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
