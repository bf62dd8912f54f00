"""Output files of the point-system runners: CSVs, ``metrics.json``, system YAMLs and ``report.md`` (through
:mod:`cadx.report.studies`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cadx.classical.points import PointSystem, system_to_dict
from cadx.classical.points_ga import TuneResult
from cadx.evaluation.multiplicity import format_p, holm
from cadx.report.studies import Section, markdown_table, write_study_notes
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["comparison_sections", "points_frame", "write_fit_outputs", "write_lidc_outputs", "write_score_outputs"]


def _ci(v: list[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _rate(d: Mapping[str, Any]) -> str:
    lo, hi = d["ci"]
    return f"{d['x']}/{d['n']} ({100 * d['value']:.1f}%) [{100 * lo:.1f}, {100 * hi:.1f}]"


def points_frame(baseline: PointSystem, new: PointSystem | None = None) -> pd.DataFrame:
    """One row per feature: category, feature, rule, fixed, bounds, baseline points (and new points, changed)."""
    rows = []
    new_pts = None if new is None else new.points
    for j, ((cat, feat), f) in enumerate(zip(baseline.feature_keys, baseline.features, strict=True)):
        rule = next(c.rule for c in baseline.categories if c.name == cat)
        r: dict[str, Any] = {"category": cat, "feature": feat, "rule": rule, "fixed": f.fixed,
                             "low": f.bounds[0], "high": f.bounds[1], "baseline": f.points}
        if new_pts is not None:
            r["optimised"] = int(new_pts[j])
            r["changed"] = int(new_pts[j]) != f.points
        rows.append(r)
    return pd.DataFrame(rows)


def comparison_sections(m: Mapping[str, Any], names: Mapping[str, str]) -> list[Section]:
    """Report sections of :func:`cadx.studies.points.study.compare_systems` output; ``names``: tag → title."""
    rows = []
    for tag, s in m["systems"].items():
        rows.append([names.get(tag, tag), _ci(s["auc"]), _rate(s["sensitivity"]), _rate(s["specificity"]), s["fna"]])
    secs: list[Section] = [("AUC of total points and the FNA recommendation",
                            [f"{m['n']} nodules, {m['n_positive']} positive. AUC with 95% patient-bootstrap CI; "
                             "sensitivity/specificity of the FNA recommendation (FNA = positive call) with CIs.", "",
                             *markdown_table(["system", "AUC [95% CI]", "sensitivity", "specificity", "FNA"], rows)])]
    if "tests" in m:
        lines = [f"Paired bootstrap p-value of the AUC difference: {format_p(m['auc_p'])}.", "",
                 "Two-proportion tests (A.7: 'a test for differences between two binomial proportions'): R "
                 "`prop.test` (chi-square with Yates correction, proportions treated as independent) and the exact "
                 "McNemar test of the same nodules (discordant counts baseline-only / new-only).", ""]
        mc_holm = holm([t["mcnemar_p"] for t in m["tests"].values()])
        trows = [[k, t["baseline"], t["new"], format_p(t["prop_test_p"]), format_p(t["mcnemar_p"]), format_p(h),
                  f"{t['discordant'][0]} / {t['discordant'][1]}"]
                 for (k, t), h in zip(m["tests"].items(), mc_holm, strict=True)]
        lines += markdown_table(["proportion", "baseline", "new", "prop.test p", "McNemar p",
                                 "McNemar p (Holm over the proportions)", "discordant"], trows)
        sh = m["shifts"]
        lines += ["", f"Level shifts per nodule: {sh['lower']} lower, {sh['same']} same, {sh['higher']} higher. "
                      f"FNA lost by {sh['lost_fna']} nodules ({sh['lost_fna_benign']} benign), gained by "
                      f"{sh['gained_fna']} ({sh['gained_fna_malignant']} malignant)."]
        rc = m["reclassification"]
        lines += ["", "Reclassification (rows: baseline level, columns: new level):", "",
                  *markdown_table(["baseline \\ new", *rc["columns"]],
                                  [[i, *r] for i, r in zip(rc["index"], rc["data"], strict=True)])]
        secs.append(("Baseline vs new", lines))
    return secs


def _dump_system(path: Path, system: PointSystem) -> None:
    atomic_write_text(path, yaml.safe_dump(system_to_dict(system), sort_keys=False, allow_unicode=True))


def _reclass_csv(out: Path, m: Mapping[str, Any]) -> None:
    if "reclassification" in m:
        rc = m["reclassification"]
        df = pd.DataFrame(rc["data"], index=pd.Index(rc["index"], name="baseline"), columns=rc["columns"])
        atomic_write_text(out / "reclassification.csv", df.to_csv())


def write_score_outputs(out: Path, metrics: Mapping[str, Any], preds: pd.DataFrame,
                        systems: Mapping[str, PointSystem]) -> None:
    """``predictions.csv``, ``metrics.json``, ``reclassification.csv`` (two systems), ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", preds.to_csv(index=False))
    atomic_write_json(out / "metrics.json", metrics)
    _reclass_csv(out, metrics)
    titles = {k: f"{k}: {s.name}" for k, s in systems.items()}
    secs: list[Section] = [(None, [f"Table `{metrics['table']}`; systems: " +
                                   ", ".join(f"{k} = `{s.source}`" for k, s in systems.items()) +
                                   f". Sizes: {'column ' + str(metrics['size_column']) if metrics['size_column'] else 'not given (every nodule meets every size threshold)'}."])]  # noqa: E501
    secs += comparison_sections(metrics, titles)
    write_study_notes(out, "Point system score", secs, filename="report.md")


def write_fit_outputs(out: Path, metrics: Mapping[str, Any], preds: pd.DataFrame, baseline: PointSystem,
                      optimised: PointSystem, tune: TuneResult) -> None:
    """The files of ``cadx points fit`` (see :func:`cadx.studies.points.study.run_points_fit`)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", preds.to_csv(index=False))
    pf = points_frame(baseline, optimised)
    atomic_write_text(out / "points.csv", pf.to_csv(index=False))
    atomic_write_text(out / "ga_cv.csv", pd.DataFrame(tune.cv).to_csv(index=False))
    atomic_write_text(out / "ga_log.csv", pd.DataFrame(tune.fit.log).to_csv(index=False))
    _dump_system(out / "system_optimised.yaml", optimised)
    atomic_write_json(out / "metrics.json", metrics)
    _reclass_csv(out, metrics)
    changed = pf[pf["changed"]]
    secs: list[Section] = [(None, [
        f"Table `{metrics['table']}`, label `{metrics['label']}`, system `{metrics['system']}`. Training rows: "
        f"{metrics['n_train']} ({metrics['n_train_positive']} positive); test split `{metrics['test_split']}`; "
        f"evaluation: {metrics['evaluation']}.",
        f"GA hyper-parameters chosen by {metrics['folds']}-fold patient-grouped CV on the training rows only "
        f"(`ga_cv.csv`): {tune.best}. Training AUC baseline {metrics['train_auc']['baseline']:.4f} → optimised "
        f"{metrics['train_auc']['optimised']:.4f} (final fit on all training rows; `ga_log.csv`).",
        f"Wall time {metrics['seconds']} s."])]
    point_rows = [[r.category, r.feature, r.fixed, f"[{r.low}, {r.high}]", r.baseline, r.optimised]
                  for r in pf.itertuples()]
    secs.append(("Points (baseline → optimised)", [
        *markdown_table(["category", "feature", "fixed", "bounds", "baseline", "optimised"], point_rows),
        "", f"{len(changed)} of {len(pf)} features changed."]))
    secs += comparison_sections(metrics, {"baseline": "baseline", "optimised": "GA-optimised"})
    write_study_notes(out, "Point system fit (genetic algorithm)", secs, filename="report.md")


def write_lidc_outputs(out: Path, metrics: Mapping[str, Any], table: pd.DataFrame, preds: pd.DataFrame,
                       folds: pd.DataFrame, cv: pd.DataFrame, baseline: PointSystem, optimised: PointSystem,
                       final: TuneResult, fold_points: np.ndarray, fold_of: np.ndarray) -> None:
    """The files of the LIDC study (see :func:`cadx.studies.points.study.run_points_lidc`)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "lidc_table.csv", table.to_csv(index=False))
    atomic_write_text(out / "predictions.csv", preds.to_csv(index=False))
    atomic_write_text(out / "folds.csv", folds.to_csv(index=False))
    atomic_write_text(out / "ga_cv.csv", cv.to_csv(index=False))
    pf = points_frame(baseline, optimised)
    for k in sorted(set(fold_of.tolist())):
        pf[f"fold{k}"] = fold_points[np.flatnonzero(fold_of == k)[0]]
    atomic_write_text(out / "points.csv", pf.to_csv(index=False))
    atomic_write_text(out / "ga_log_final.csv", pd.DataFrame(final.fit.log).to_csv(index=False))
    _dump_system(out / "system_optimised.yaml", optimised)
    atomic_write_json(out / "metrics.json", metrics)
    _reclass_csv(out, metrics["comparison"])
    a, p = metrics["auc"], metrics["p_values"]
    p_holm = dict(zip(p, holm(list(p.values())), strict=True))  # Holm over the paired comparisons made
    rows = [["baseline (equal points)", _ci(a["baseline"]), "–", "–"],
            ["GA-optimised points", _ci(a["ga"]), format_p(p["ga_vs_baseline"]), format_p(p_holm["ga_vs_baseline"])],
            ["logistic regression", _ci(a["logreg"]), format_p(p["logreg_vs_baseline"]),
             format_p(p_holm["logreg_vs_baseline"])]]
    fold_cols = ["fold", "n_test", "n_test_malignant", "auc_baseline", "auc_ga", "auc_logreg", "ga_params"]
    secs: list[Section] = [
        (None, [f"{metrics['n']} LIDC nodules ({metrics['n_malignant']} malignant) from {metrics['n_patients']} "
                f"patients; reader-median malignancy < 3 benign, > 3 malignant, = 3 excluded; attributes = reader "
                f"median rounded half up. {metrics['folds']} patient-level folds (seed {metrics['seed']}); the GA's "
                f"hyper-parameters chosen per fold by inner CV on that fold's training patients only.",
                f"Wall time {metrics['seconds']['total']} s (GA CV {metrics['seconds']['ga_cv']} s)."]),
        ("Pooled out-of-fold AUC", [*markdown_table(["scorer", "AUC [95% CI]", "paired p vs baseline",
                                                     f"p (Holm over {len(p)})"], rows), "",
                                    f"GA vs logistic regression: paired p = {format_p(p['ga_vs_logreg'])} "
                                    f"(Holm {format_p(p_holm.get('ga_vs_logreg'))}; 2000 resamples)."]),
        ("Per fold", markdown_table(fold_cols, folds[fold_cols].itertuples(index=False))),
        ("Final points (GA on all nodules) and per fold", markdown_table(
            list(pf.columns.drop(["rule", "low", "high"])),
            pf.drop(columns=["rule", "low", "high"]).itertuples(index=False))),
    ]
    secs += comparison_sections(metrics["comparison"], {"baseline": "baseline levels", "ga": "GA levels"})
    write_study_notes(out, "LIDC point system: baseline vs GA vs logistic regression", secs, filename="report.md")
