"""Ensembles of finished runs: the mean of their study-level class probabilities (and attribute scores) on the
same test studies.

Seed ensembles (one recipe trained with several seeds) and model ensembles (DMRN + a 3D CNN) are evaluated like a
run: ``predictions.csv``, ``metrics.json`` (pooled and per-fold metrics with patient-bootstrap CIs), ``notes.md``
and a report, so ``cadx report`` can put the ensemble beside its members. Nothing is fitted: equal weights. The
decision goes through the prediction path's :func:`~cadx.runs.inference.decide_rows`: when every member was run
with the same ``eval.decision`` and saved its fitted parameters (``fold_<k>/metrics.json`` ``decision_fit``), the
studies of fold ``k`` are decided with the members' fold-``k`` parameters combined as a fold ensemble's
(:func:`~cadx.runs.inference.combine_decisions`: mean priors, mean Youden threshold); otherwise by the argmax of the
mean probabilities (ties to the lowest class index), and ``metrics.json`` ``run.decision`` says so.
Multi-task members (MTMR-Net: ``pred_<attribute>`` / ``true_<attribute>`` columns in every member) also give the
mean attribute scores, scored by ABE on the members' original rating scale (their ``metrics.json``
``pooled.abe_range``, else their cohort's ``attribute_ranges``; as stored when neither is available).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import ExperimentConfig, load_config
from cadx.errors import CadxDataError, CadxError
from cadx.evaluation.calibration import calibration_metrics
from cadx.evaluation.summary import evaluate_predictions
from cadx.runs.folder import load_cohort, write_run_report
from cadx.runs.inference import Decision, combine_decisions, decide_rows
from cadx.runs.seg_ensemble import ensemble_segmentation
from cadx.utils import atomic_write_json, atomic_write_text, read_json

__all__ = ["ensemble_decisions", "ensemble_runs", "mean_attributes", "mean_probabilities"]


def mean_probabilities(tables: Sequence[pd.DataFrame], sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ``p_<class>`` of study-level prediction tables over the same studies (rows in the first table's order).

    Every table needs ``study_id``, ``patient_id``, ``fold``, ``y_true`` and the same ``p_*`` columns; the
    studies, patients, folds and labels must agree (a CadxDataError names the first table that differs).
    Returns ``study_id, patient_id, fold, y_true, p_*``; other columns (attributes, ``y_pred``) are dropped.
    """
    if not tables:
        raise CadxDataError("an ensemble needs at least one run", field="runs")
    names = list(sources or [f"table {i}" for i in range(len(tables))])
    keys = ["study_id", "patient_id", "fold", "y_true"]
    first = tables[0]
    pcols = [c for c in first.columns if c.startswith("p_")]
    if not pcols:
        raise CadxDataError("no p_<class> columns", path=names[0], field="p_<class>")
    base = first[keys].astype(str).set_index("study_id")
    acc = np.zeros((len(first), len(pcols)))
    for t, name in zip(tables, names, strict=True):
        missing = [c for c in keys + pcols if c not in t.columns]
        if missing:
            raise CadxDataError(f"missing columns {missing}", path=name, field=missing[0])
        other = t[keys].astype(str).set_index("study_id")
        if set(other.index) != set(base.index) or len(other) != len(base):
            raise CadxDataError("its test studies differ from the first run's (ensembles need the same splits)",
                                path=name, field="study_id")
        if not other.loc[base.index].equals(base):
            raise CadxDataError("patient, fold or label of a study differs from the first run's", path=name,
                                field="fold")
        acc += t.set_index(t["study_id"].astype(str)).loc[base.index, pcols].to_numpy(float)
    out = first[keys].copy()
    out[pcols] = acc / len(tables)
    return out


def mean_attributes(tables: Sequence[pd.DataFrame], order: pd.Series, sources: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """Mean ``pred_<a>`` and the common ``true_<a>`` of the attributes every table has, rows in the order of the
    study ids ``order``; an empty frame (no columns) when some table has no attribute. A CadxDataError names the
    first table whose ``true_<a>`` of a study differs from the first table's (beyond 1e-6; NaN = not rated)."""
    names = list(sources or [f"table {i}" for i in range(len(tables))])
    sets = [{c[5:] for c in t.columns if c.startswith("pred_") and f"true_{c[5:]}" in t.columns} for t in tables]
    attrs = [c[5:] for c in tables[0].columns if c.startswith("pred_") and all(c[5:] in s for s in sets)]
    out = pd.DataFrame(index=range(len(order)))
    if not attrs:
        return out
    ids = [str(s) for s in order]
    keyed = [t.set_index(t["study_id"].astype(str)).loc[ids] for t in tables]
    for a in attrs:
        truth = keyed[0][f"true_{a}"].to_numpy(float)
        for t, name in zip(keyed[1:], names[1:], strict=True):
            other = t[f"true_{a}"].to_numpy(float)
            if not np.allclose(truth, other, atol=1e-6, equal_nan=True):
                raise CadxDataError(f"true_{a} of a study differs from the first run's", path=name, field=f"true_{a}")
        out[f"pred_{a}"] = np.mean([t[f"pred_{a}"].to_numpy(float) for t in keyed], axis=0)
        out[f"true_{a}"] = truth
    return out


def ensemble_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, n_bootstrap: int | None = None,
                  seed: int | None = None, report: bool = True) -> dict[str, Any]:
    """Evaluate the equal-weight mean of finished runs' ``predictions.csv`` into ``out_dir``; returns metrics.
    Segmentation runs go to :func:`cadx.runs.seg_ensemble.ensemble_segmentation` (mean slice probabilities).

    ``n_bootstrap``/``seed``: default to the first run's ``eval.bootstrap`` and ``seed`` (its config.yaml).
    """
    t0 = time.perf_counter()
    dirs = [Path(d) for d in run_dirs]
    if dirs and all((d / "config.yaml").is_file() and load_config(d / "config.yaml").task.segmentation for d in dirs):
        return ensemble_segmentation(dirs, out_dir, n_bootstrap, seed, report)
    for d in dirs:
        for f in ("predictions.csv", "metrics.json"):
            if not (d / f).is_file():
                raise CadxDataError(f"no {f} (not a finished run?)", path=d, field=f)
    cfg = load_config(dirs[0] / "config.yaml") if (dirs[0] / "config.yaml").is_file() else None
    nb = n_bootstrap if n_bootstrap is not None else (cfg.eval.bootstrap if cfg else 2000)
    sd = seed if seed is not None else (cfg.seed if cfg else 0)
    classes = [str(c) for c in read_json(dirs[0] / "metrics.json").get("classes") or []]
    tables = [pd.read_csv(d / "predictions.csv", dtype={"study_id": str, "patient_id": str}) for d in dirs]
    df = mean_probabilities(tables, [str(d) for d in dirs])
    attrs = mean_attributes(tables, df["study_id"], [str(d) for d in dirs])
    has_attrs = len(attrs.columns) > 0
    if has_attrs:
        df = pd.concat([df.reset_index(drop=True), attrs], axis=1)
    ranges = _attribute_ranges(dirs[0], cfg) if has_attrs else None
    if not classes:
        classes = [c[2:] for c in df.columns if c.startswith("p_")]
    df = df[df["y_true"].notna()]
    rule, per_fold = ensemble_decisions(dirs, sorted({int(f) for f in df["fold"]}))
    parts = [decide_rows(g, classes, per_fold.get(int(str(f)), {"rule": "argmax"})) for f, g in df.groupby("fold")]
    df = pd.concat(parts).loc[df.index] if parts else df
    positive = cfg.eval.positive if cfg is not None and len(classes) == 2 else None
    metrics = evaluate_predictions(df, classes, n_bootstrap=nb, seed=sd, decision="given", positive=positive,
                                   attribute_ranges=ranges)
    cal = calibration_metrics(df, classes, positive, cfg.eval.calibration_bins if cfg else 10,
                              cfg.eval.calibration_strategy if cfg else "uniform", nb, sd,
                              "members' own (mean of calibrated member probabilities)"
                              if cfg is not None and cfg.eval.calibration != "none" else "none")
    if cal is not None:
        metrics["calibration"] = cal
    members = [{"run": str(d), "auc": read_json(d / "metrics.json").get("pooled", {}).get("auc")} for d in dirs]
    metrics["run"] = {"name": f"ensemble of {len(dirs)} runs", "members": members, "model": "ensemble",
                      "decision": {"rule": rule, "folds": {str(k): v for k, v in per_fold.items()}},
                      "seconds": round(time.perf_counter() - t0, 2)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "predictions.csv", index=False)
    atomic_write_json(out / "metrics.json", metrics)
    lines = [f"# Ensemble of {len(dirs)} runs", "",
             "Equal-weight mean of the members' study-level class probabilities"
             + (" and attribute scores (ABE on the members' rating range)" if has_attrs else "")
             + f" on the same test studies (nothing fitted); decision: {_rule_text(rule)}. Members (pooled AUC):", ""]
    lines += [f"- `{m['run']}`: {m['auc']}" for m in members]
    atomic_write_text(out / "notes.md", "\n".join(lines) + "\n")
    if report:
        write_run_report([out], out)
    return metrics


def _attribute_ranges(run_dir: Path, cfg: ExperimentConfig | None) -> dict[str, Any] | None:
    """The rating ranges the member scored ABE on: its ``metrics.json`` ``pooled.abe_range``; for a run written
    before that was recorded, its cohort's ``attribute_ranges`` (the data must be where its config says; None =
    ABE as stored when it is not)."""
    recorded = (read_json(run_dir / "metrics.json").get("pooled") or {}).get("abe_range")
    if recorded or cfg is None:
        return recorded or None
    try:
        return load_cohort(cfg, run_dir).info.get("attribute_ranges")
    except CadxError:
        return None


def ensemble_decisions(run_dirs: Sequence[Path], folds: Sequence[int]) -> tuple[str, dict[int, Decision]]:
    """``(rule, {fold: decision})`` of an ensemble of runs (see the module docstring). The members' common
    ``eval.decision`` (their ``config.yaml``) with, per fold, their ``fold_<k>`` parameters combined; ``argmax``
    when the rules differ or a member lacks a config or a fold's fitted parameters."""
    rules = {load_config(d / "config.yaml").eval.decision if (d / "config.yaml").is_file() else None
             for d in run_dirs}
    rule = rules.pop() if len(rules) == 1 else None
    if rule is None or rule == "argmax":
        return "argmax", {}
    out: dict[int, Decision] = {}
    for k in folds:
        paths = [d / f"fold_{k}" / "metrics.json" for d in run_dirs]
        if not all(p.is_file() for p in paths):
            return "argmax", {}
        fits = [dict(read_json(p).get("decision_fit") or {}) for p in paths]
        try:
            out[k] = combine_decisions(rule, fits, [str(p.parent) for p in paths])
        except CadxDataError:
            return "argmax", {}
    if rule == "auto":  # the members' resolved rule (youden / sensitivity for binary, argmax for multi-class)
        return (str(next(iter(out.values()))["rule"]) if out else "argmax"), out
    return rule, out


def _rule_text(rule: str) -> str:
    return {"prior": "argmax of the mean divided by the members' mean training priors (per fold)",
            "youden": "the members' mean Youden threshold per fold",
            "sensitivity": "the members' mean target-sensitivity threshold per fold"}.get(rule, "argmax of the mean")
