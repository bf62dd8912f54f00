"""Multi-task study outputs from the two finished CV runs: AUC comparison, model vs readers, risk levels, notes.

* **AUC**: each variant's pooled out-of-fold AUC with its patient-bootstrap CI (the engine's), and the two-sided
  paired patient-bootstrap p-value of multi- minus single-task AUC on the nodules both scored
  (:func:`cadx.evaluation.bootstrap.paired_bootstrap_pvalue`).
* **Readers** (:func:`cadx.evaluation.readers.compare_readers`): each LIDC reading slot's malignancy rating against
  the median of the other slots (``study.reference``), the multi-task model's out-of-fold probability against the
  same references; the model's calls are the run's own decision (``eval.decision``; ``youden`` = the Youden
  threshold fitted on each fold's training nodules, never on its test nodules).
* **Risk levels** (:mod:`cadx.evaluation.risk`): probability → DL2–DL5 (``study.risk.cut_points``) → FNA /
  follow-up / none with the size thresholds (``study.risk``), against the run's label.

Per-case CSVs (``cases.csv``) hold every number the tables are computed from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.evaluation.bootstrap import paired_bootstrap_pvalue
from cadx.evaluation.metrics import roc_auc
from cadx.evaluation.multiplicity import format_p, holm
from cadx.evaluation.readers import compare_readers
from cadx.evaluation.risk import level_table, recommend, recommendation_metrics, risk_levels
from cadx.report.studies import markdown_table, write_study_notes
from cadx.runs.folder import load_cohort, write_run_report
from cadx.studies.multitask.variants import VARIANTS, StudyConfig, variant_config
from cadx.utils import atomic_write_json, read_json

__all__ = ["auc_comparison", "build_study_outputs", "case_table"]


def _fmt(v: float, lo: float | None = None, hi: float | None = None) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def case_table(out: Path, classes: list[str], variants: tuple[str, ...] = tuple(VARIANTS)) -> pd.DataFrame:
    """One row per nodule scored by every variant in ``variants`` (``multitask`` first): ``study_id, patient_id,
    fold, y`` (1 = ``classes[1]``), ``p_<variant>`` (probability of ``classes[1]``) and ``pred_<variant>`` (the
    run's decision, 0/1)."""
    pos = classes[1]
    frames = []
    for v in variants:
        df = pd.read_csv(out / v / "predictions.csv", dtype={"study_id": str, "patient_id": str})
        keep = df[["study_id", "patient_id", "fold", "y_true"]].copy()
        keep[f"p_{v}"] = df[f"p_{pos}"].astype(float)
        keep[f"pred_{v}"] = (df["y_pred"].astype(str) == pos).astype(int)
        frames.append(keep.set_index("study_id"))
    both = frames[0]
    for v, f in zip(variants[1:], frames[1:], strict=True):
        both = both.join(f[[f"p_{v}", f"pred_{v}"]], how="inner")
    both["y"] = (both["y_true"].astype(str) == pos).astype(int)
    return both.reset_index()[["study_id", "patient_id", "fold", "y", *[f"p_{v}" for v in variants],
                               *[f"pred_{v}" for v in variants]]]


def auc_comparison(cases: pd.DataFrame, results: dict[str, dict[str, Any]], n_resamples: int,
                   seed: int) -> dict[str, Any]:
    """Pooled AUCs (engine CIs), AUCs recomputed on the common nodules, and the paired bootstrap p-value."""
    y = cases["y"].to_numpy(int)
    g = cases["patient_id"].astype(str).to_numpy()
    pm, ps = cases["p_multitask"].to_numpy(float), cases["p_single"].to_numpy(float)
    p = paired_bootstrap_pvalue(roc_auc, y, pm, ps, groups=g, n_resamples=n_resamples, seed=seed)
    rows = {}
    for v in VARIANTS:
        pooled = results[v]["pooled"]
        lo, hi = (pooled.get("ci") or {}).get("auc", [None, None]) or [None, None]
        rows[v] = {"auc": pooled.get("auc"), "ci": [lo, hi], "n_studies": pooled.get("n_studies"),
                   "auc_common": roc_auc(y, cases[f"p_{v}"].to_numpy(float)),
                   "sensitivity": pooled.get("sensitivity"), "specificity": pooled.get("specificity")}
    return {"variants": rows, "common_nodules": len(cases), "p_value": p,
            "auc_difference": rows["multitask"]["auc_common"] - rows["single"]["auc_common"]}


def _ratings(cohort: Any, ids: list[str]) -> np.ndarray | None:
    """Malignancy ratings ``(N, R)`` from ``metadata["ratings"]["malignancy"]`` in ``ids`` order (None if absent)."""
    by_id = {s.study_id: s for s in cohort.studies}
    out = []
    for sid in ids:
        r = by_id[sid].metadata.get("ratings", {}).get("malignancy")
        if r is None:
            return None
        out.append([np.nan if v is None else float(v) for v in r])
    width = {len(r) for r in out}
    return np.array(out, dtype=np.float64) if len(width) == 1 else None


def build_study_outputs(cfg: StudyConfig, out: Path, results: dict[str, dict[str, Any]],
                        seconds: dict[str, float], t0: float | None = None) -> dict[str, Any]:
    """Tables, CSVs, notes and report of the study folder ``out`` from the variants' finished runs."""
    t_start = time.perf_counter() if t0 is None else t0
    st = cfg.study
    exp = variant_config(cfg.experiment, "multitask")
    classes = list(results["multitask"].get("classes") or read_json(out / "multitask" / "metrics.json")["classes"])
    variants = tuple(v for v in VARIANTS if v in results)
    cases = case_table(out, classes, variants)
    cohort = load_cohort(exp, out / "multitask")
    ids = cases["study_id"].tolist()
    groups = cases["patient_id"].astype(str).to_numpy()
    study: dict[str, Any] = {"seconds": dict(seconds), "classes": classes}
    tables: list[dict[str, Any]] = []

    # --- single vs multi-task ------------------------------------------------------------------------------
    if "single" in results:
        auc = auc_comparison(cases, results, st.bootstrap, st.seed)
        title = (f"Malignancy AUC, pooled out-of-fold ({cfg.experiment.cv.folds} patient folds, the same for both); "
                 f"paired patient-bootstrap p = {format_p(auc['p_value'])}")
    else:
        pooled = results["multitask"]["pooled"]
        auc = {"variants": {"multitask": {"auc": pooled.get("auc"), "ci": (pooled.get("ci") or {}).get("auc")
                                          or [None, None], "n_studies": pooled.get("n_studies"),
                                          "sensitivity": pooled.get("sensitivity"),
                                          "specificity": pooled.get("specificity")}}, "p_value": None}
        title = (f"Malignancy AUC, pooled out-of-fold ({cfg.experiment.cv.folds} patient folds); the single-task "
                 "variant was not run")
    study["auc"] = auc
    tables.append({"title": title, "columns": ["variant", "AUC [95 % CI]", "sensitivity", "specificity", "nodules"],
                   "rows": [[VARIANTS[v], _fmt(r["auc"], *r["ci"]), _fmt(r["sensitivity"]),
                             _fmt(r["specificity"]), r["n_studies"]] for v, r in auc["variants"].items()]})

    # --- model vs readers ----------------------------------------------------------------------------------
    ratings = _ratings(cohort, ids)
    if ratings is not None:
        for j in range(ratings.shape[1]):
            cases[f"rating_{j + 1}"] = ratings[:, j]
        ref = st.reference
        rc = compare_readers(ratings, cases["p_multitask"].to_numpy(float),
                             model_pred=cases["pred_multitask"].to_numpy(int), groups=groups,
                             positive_min=ref.positive_min, negative_max=ref.negative_max,
                             min_others=ref.min_others, reader_threshold=st.reader_threshold,
                             n_resamples=st.bootstrap, seed=st.seed)
        rc.table.to_csv(out / "reader_comparison.csv", index=False)
        study["readers"] = rc.summary
        tables.append({
            "title": f"Model vs readers (leave-one-reader-out reference: median of the other readers ≥ "
                     f"{ref.positive_min:g} malignant, ≤ {ref.negative_max:g} benign; readers call malignant at "
                     f"rating ≥ {st.reader_threshold:g}; model at its {exp.eval.decision} decision). Model − mean "
                     f"of readers: AUC p = {format_p(rc.summary['auc']['p_value'])}, sensitivity p = "
                     f"{format_p(rc.summary['sensitivity']['p_value'])}, specificity p = "
                     f"{format_p(rc.summary['specificity']['p_value'])} (Holm over these 3: "
                     + ", ".join(format_p(v) for v in holm([rc.summary[k]['p_value'] for k in
                                                             ("auc", "sensitivity", "specificity")])) + ")",
            "columns": ["reader", "cases", "malignant", "AUC [95 % CI]", "sensitivity [CI]", "specificity [CI]"],
            "rows": [[r["row"], int(r["cases"]), int(r["positives"]), _fmt(r["auc"], r["auc_lo"], r["auc_hi"]),
                      _fmt(r["sensitivity"], r["sensitivity_lo"], r["sensitivity_hi"]),
                      _fmt(r["specificity"], r["specificity_lo"], r["specificity_hi"])]
                     for r in rc.table.to_dict("records")]})

    # --- risk levels ---------------------------------------------------------------------------------------
    risk = st.risk
    by_id = {s.study_id: s for s in cohort.studies}
    size = np.array([float(by_id[s].metadata.get(risk.size_field, np.nan)) for s in ids]) * risk.size_scale
    if np.isfinite(size).all():
        p = cases["p_multitask"].to_numpy(float)
        cases["level"] = risk_levels(p, risk.cut_points)
        cases["size_cm"] = size
        cases["recommendation"] = recommend(cases["level"].to_numpy(), size, risk.fna_cm, risk.follow_up_cm)
        lt = level_table(cases["y"], cases["level"], cases["recommendation"])
        rm = recommendation_metrics(cases["y"], cases["recommendation"], groups=groups, n_resamples=st.bootstrap,
                                    seed=st.seed)
        study["risk"] = {"levels": lt.to_dict("records"), "recommendation": rm}
        tables.append({"title": f"Risk levels: P(malignant) cut-points {risk.cut_points} → DL2–DL5; size "
                                f"{risk.size_field} × {risk.size_scale:g} cm; FNA ≥ {risk.fna_cm} cm, follow-up ≥ "
                                f"{risk.follow_up_cm} cm",
                       "columns": list(lt.columns), "rows": lt.to_numpy().tolist()})
        tables.append({"title": "Recommendation vs malignancy (FNA = FNA recommended; follow-up = FNA or "
                                "follow-up), patient-bootstrap 95 % CI",
                       "columns": ["recommendation", "sensitivity [CI]", "TP/malignant", "specificity [CI]",
                                   "TN/benign"],
                       "rows": [[k, _fmt(*b["sensitivity"]), f"{b['tp']}/{b['positives']}",
                                 _fmt(*b["specificity"]), f"{b['tn']}/{b['negatives']}"] for k, b in rm.items()]})
    cases.to_csv(out / "cases.csv", index=False)

    study["seconds_total"] = round(time.perf_counter() - t_start, 1)
    mt = results["multitask"]
    metrics = {"pooled": mt["pooled"], "folds": mt.get("folds", {}), "classes": classes,
               "bootstrap": mt.get("bootstrap"),
               "run": {**mt.get("run", {}), "name": f"{cfg.name} study", "variants": list(results)},
               "study": study, "extra": {"tables": tables, "figures": []}}
    atomic_write_json(out / "metrics.json", metrics)
    write_notes(cfg, out, study, tables, has_readers=ratings is not None)
    (out / "config.yaml").write_text(cfg.to_yaml())
    write_run_report([out], out)
    return read_json(out / "metrics.json")


def write_notes(cfg: StudyConfig, out: Path, study: dict[str, Any], tables: list[dict[str, Any]],
                has_readers: bool) -> Path:
    """``out/notes.md``: settings, choices where the thesis is silent, the tables and wall times."""
    e = cfg.experiment
    settings = (f"Input {e.input.kind} {e.input.size} px, window {e.input.window}, ROI {e.input.roi}; model "
                f"{e.model.name} {e.model.kwargs}; objective {e.objective}; sampler {e.sampler.kind} "
                f"(ratio {e.sampler.ratio}); optimiser {e.optim.name} lr {e.optim.lr}; {e.train.epochs} epochs, "
                f"batch {e.train.batch_size}; {e.cv.folds}-fold patient-level CV, seed {e.seed}; decision "
                f"{e.eval.decision}. Data options {e.data.options}.")
    choices = [
        "- Attribute heads: rounded median of the readers' ratings, round half up (3.5 → 4); class = rating − 1.",
        "- Malignancy label: the MTMR rule on the readers' mean (< 3 benign, > 3 malignant, = 3 dropped).",
        "- Heads: linear on globally pooled trunk features, softmax (the repo's Conv5×5-valid heads on 160 px "
        "inputs); BatchNorm in the trunk (not in the repo) for 10-epoch training from scratch.",
        "- Nothing was tuned: every setting above is fixed in the config; the model's operating point is the "
        "engine's per-fold decision fitted on that fold's training nodules.",
        "- Reader slots: LIDC columns _1.._4 are not the same four radiologists across nodules; a 'reader' row "
        "is a reading slot and resampling slots only approximates resampling readers.",
        "- Risk cut-points are the config's, not the thesis's (not printed there); the thyroid ACR TI-RADS size "
        "thresholds applied to lung-nodule diameters only demonstrate the machinery.",
    ]
    if study["auc"].get("p_value") is None:
        choices.append("- The single-task variant was not run here: no single- vs multi-task comparison.")
    if not has_readers:
        choices.append("- No per-reader malignancy ratings in this cohort: the reader comparison was skipped.")
    body = []
    for t in tables:
        body += [f"**{t['title']}**", "", *markdown_table(t["columns"], t["rows"]), ""]
    wall = ("Wall time (s): " + ", ".join(f"{k} {v}" for k, v in study["seconds"].items())
            + f"; whole study {study['seconds_total']}.")
    return write_study_notes(out, f"Thesis A.6 multi-task study ({cfg.name})",
                             [(None, settings), ("Choices", choices), ("Tables", body), (None, wall)])

