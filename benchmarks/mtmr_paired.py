"""Paired patient-bootstrap comparisons of MTMR-Net study runs (ΔAUC with 95 % CI and p-value).

Usage: ``.venv/bin/python benchmarks/mtmr_paired.py RUNS_WITH_DIAMETER RUNS_WITHOUT`` where each argument is a study
folder of ``cadx study mtmr`` (subfolders ``mtmr``, ``no_rank``, ``no_reg``). Compares the first
folder's MTMR-Net with its ablations, with the second folder's MTMR-Net and with the nodule diameter alone; writes
the table to stdout. Used for ``benchmarks/results/mtmr/diameter_channel/paired.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cadx.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_pvalue

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc" / "nodules.csv"


def _auc_diff(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s[:, 0]) - roc_auc_score(y, s[:, 1]))


def main(with_d: Path, without: Path) -> None:
    a = pd.read_csv(with_d / "mtmr" / "predictions.csv", dtype={"study_id": str}).set_index("study_id")
    y = (a["y_true"] == "malignant").to_numpy(int)
    g = a["patient_id"].to_numpy()
    n = pd.read_csv(LIDC, dtype={"nodule_id": str}).set_index("nodule_id").loc[a.index]
    others = {f"{with_d.name}/{v}": pd.read_csv(with_d / v / "predictions.csv", dtype={"study_id": str})
              .set_index("study_id").loc[a.index, "p_malignant"].to_numpy() for v in ("no_rank", "no_reg")}
    others[f"{without.name}/mtmr"] = (pd.read_csv(without / "mtmr" / "predictions.csv", dtype={"study_id": str})
                                      .set_index("study_id").loc[a.index, "p_malignant"].to_numpy())
    others["diameter alone (log mm)"] = np.log(n["equiv_diameter_px"] * n["pixel_spacing_mm"]).to_numpy()
    pa = a["p_malignant"].to_numpy()
    print(f"| {with_d.name}/mtmr (AUC {roc_auc_score(y, pa):.3f}) minus | ΔAUC [95 % CI] | p |\n|---|---|---|")
    for name, pb in others.items():
        d, lo, hi = bootstrap_ci(_auc_diff, y, np.c_[pa, pb], groups=g, n_resamples=2000, seed=0)
        p = paired_bootstrap_pvalue(roc_auc_score, y, pa, pb, groups=g, n_resamples=2000, seed=0)
        print(f"| {name} (AUC {roc_auc_score(y, pb):.3f}) | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {p:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
