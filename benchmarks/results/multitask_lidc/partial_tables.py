"""Reader comparison and risk-level tables from the FINISHED folds of the multitask run (deadline fallback).

Usage (from the repo root): .venv/bin/python benchmarks/results/multitask_lidc/partial_tables.py RUN_DIR
RUN_DIR = the study's multitask run folder (runs/multitask_lidc/multitask). Copies each finished fold's
predictions.csv here (predictions_fold<k>.csv), writes cases.csv (predictions + the 4 readers' malignancy ratings +
diameter) and tables.md, all computed with the same functions the study uses (cadx.evaluation.readers / risk).
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.metrics import roc_auc
from cadx.evaluation.readers import compare_readers
from cadx.evaluation.risk import level_table, recommend, recommendation_metrics, risk_levels
from cadx.report.studies import markdown_table
from cadx.runs.folder import load_cohort
from cadx.studies.multitask.variants import load_study_config

HERE = Path(__file__).resolve().parent


def main() -> None:
    run = Path(sys.argv[1])
    cfg = load_study_config("configs/papers/multitask_lidc.yaml")
    st = cfg.study
    frames = []
    for fd in sorted(run.glob("fold_*")):
        if (fd / "DONE").is_file():
            df = pd.read_csv(fd / "predictions.csv", dtype={"study_id": str, "patient_id": str})
            df.to_csv(HERE / f"predictions_{fd.name}.csv", index=False)
            frames.append(df)
    pred = pd.concat(frames, ignore_index=True)
    cohort = load_cohort(cfg.experiment, run)
    by_id = {s.study_id: s for s in cohort.studies}
    cases = pred[["study_id", "patient_id", "fold", "y_true"]].copy()
    cases["y"] = (cases["y_true"] == "malignant").astype(int)
    cases["p_multitask"] = pred["p_malignant"].astype(float)
    cases["pred_multitask"] = (pred["y_pred"] == "malignant").astype(int)
    for j in range(4):
        cases[f"rating_{j + 1}"] = [by_id[s].metadata["ratings"]["malignancy"][j] for s in cases["study_id"]]
    cases["size_cm"] = [by_id[s].metadata[st.risk.size_field] * st.risk.size_scale for s in cases["study_id"]]
    y, p, g = cases["y"].to_numpy(), cases["p_multitask"].to_numpy(), cases["patient_id"].to_numpy()
    auc = bootstrap_ci(roc_auc, y, p, groups=g, n_resamples=st.bootstrap, seed=st.seed)
    ratings = cases[[f"rating_{j + 1}" for j in range(4)]].to_numpy(float)
    ref = st.reference
    rc = compare_readers(ratings, p, model_pred=cases["pred_multitask"].to_numpy(), groups=g,
                         positive_min=ref.positive_min, negative_max=ref.negative_max, min_others=ref.min_others,
                         reader_threshold=st.reader_threshold, n_resamples=st.bootstrap, seed=st.seed)
    rc.table.to_csv(HERE / "reader_comparison.csv", index=False)
    cases["level"] = risk_levels(p, st.risk.cut_points)
    cases["recommendation"] = recommend(cases["level"].to_numpy(), cases["size_cm"].to_numpy(), st.risk.fna_cm,
                                        st.risk.follow_up_cm)
    lt = level_table(y, cases["level"], cases["recommendation"])
    rm = recommendation_metrics(y, cases["recommendation"], groups=g, n_resamples=st.bootstrap, seed=st.seed)
    cases.to_csv(HERE / "cases.csv", index=False)

    def f(v, lo=None, hi=None):
        return "n/a" if not np.isfinite(v) else (f"{v:.3f}" if lo is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]")

    lines = [f"Folds used: {sorted(set(cases['fold']))} ({len(cases)} nodules, {len(set(g))} patients)", "",
             f"Multi-task malignancy AUC on these folds: {f(*auc)} (patient bootstrap, {st.bootstrap})", "",
             "Reader comparison (leave-one-reader-out; p model - mean of readers: AUC "
             f"{rc.summary['auc']['p_value']:.3f}, sensitivity {rc.summary['sensitivity']['p_value']:.3f}, "
             f"specificity {rc.summary['specificity']['p_value']:.3f}; differences "
             f"AUC {rc.summary['auc']['model_minus_readers']:.3f} {np.round(rc.summary['auc']['ci'], 3).tolist()}, "
             f"sens {rc.summary['sensitivity']['model_minus_readers']:.3f}, "
             f"spec {rc.summary['specificity']['model_minus_readers']:.3f})", ""]
    lines += markdown_table(["reader", "cases", "malignant", "AUC [CI]", "sensitivity [CI]", "specificity [CI]"],
                            [[r["row"], r["cases"], r["positives"], f(r["auc"], r["auc_lo"], r["auc_hi"]),
                              f(r["sensitivity"], r["sensitivity_lo"], r["sensitivity_hi"]),
                              f(r["specificity"], r["specificity_lo"], r["specificity_hi"])]
                             for r in rc.table.to_dict("records")])
    lines += ["", f"Risk levels (cut-points {st.risk.cut_points}; size = diameter_mm x 0.1 cm; FNA >= "
                  f"{st.risk.fna_cm}, follow-up >= {st.risk.follow_up_cm})", ""]
    lines += markdown_table(list(lt.columns), lt.to_numpy().tolist())
    lines += ["", "Recommendation vs malignancy (FNA = FNA recommended; follow_up = FNA or follow-up)", ""]
    lines += markdown_table(["recommendation", "sensitivity [CI]", "TP/malignant", "specificity [CI]", "TN/benign"],
                            [[k, f(*b["sensitivity"]), f"{b['tp']}/{b['positives']}", f(*b["specificity"]),
                              f"{b['tn']}/{b['negatives']}"] for k, b in rm.items()])
    (HERE / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
