"""External validation: apply a trained run (fold ensemble or ``final/``) to another cohort."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.datasets import load_dataset
from cadx.runs.folder import evaluate_rows, write_run_report
from cadx.runs.inference import decide_rows, slice_rows, study_rows
from cadx.runs.predict import ensemble_outputs
from cadx.runs.folder import run_config, run_models
from cadx.pipeline.items import build_store
from cadx.training.trainer import load_module
from cadx.errors import CadxDataError
from cadx.utils import atomic_write_json, atomic_write_text, read_json


def external_name(dataset: str, options: dict[str, Any] | None = None) -> str:
    """Folder name of an external evaluation, e.g. ``medmnist-breastmnist`` (safe for file systems)."""
    parts = [dataset, *(f"{v}" for _, v in sorted((options or {}).items()))]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-") or "external"


def fold_decisions(model_dirs: list[Path]) -> tuple[list[float] | None, float | None]:
    """Mean of the fitted decision parameters (training priors, Youden threshold) over the models' folds."""
    pri, thr = [], []
    for d in model_dirs:
        p = d / "metrics.json"
        fit = read_json(p).get("decision_fit", {}) if p.is_file() else {}
        if fit.get("priors"):
            pri.append(fit["priors"])
        if fit.get("threshold") is not None:
            thr.append(fit["threshold"])
    return (np.mean(pri, axis=0).tolist() if pri else None), (float(np.mean(thr)) if thr else None)


def evaluate_run(run_dir: str | Path, dataset: str, root: str | Path, options: dict[str, Any] | None = None,
                 name: str | None = None) -> dict[str, Any]:
    """Predict every study of ``load_dataset(dataset, root, **options)`` with the run's models and write
    ``run_dir/external/<name>/{predictions.csv, predictions_slices.csv, metrics.json}``; returns the ``pooled``
    metrics. The cohort's labels must be among the run's classes (matched by name). The report is refreshed
    when the report module is installed.
    """
    run_dir = Path(run_dir)
    dirs = run_models(run_dir)
    cfg = run_config(run_dir, dirs)
    _, spec = load_module(dirs[0] / "checkpoint_best.ckpt")
    classes = list(spec.get("classes", []))
    cohort = load_dataset(dataset, root, **(options or {}))
    unknown = sorted({s.label for s in cohort if s.label is not None} - set(classes))
    if unknown:
        raise CadxDataError(f"labels {unknown} are not classes of the trained run {classes}", path=root,
                            field="label")
    missing = [a for a in spec.get("attributes", []) if a not in cohort.attribute_names()]
    attrs = [a for a in spec.get("attributes", []) if a not in missing]
    store = build_store(cohort, cfg, classes=classes, attributes=spec.get("attributes", []),
                        progress=cfg.train.progress)
    out, _ = ensemble_outputs(cfg, dirs, store.images, store.masks)
    items = np.arange(len(store))
    slices = slice_rows(store, items, out, -1)
    for a in missing:  # attributes the external cohort does not have: keep predictions, drop the empty truth
        slices = slices.drop(columns=[f"true_{a}"], errors="ignore")
    use = classes if cfg.task.classification else []
    studies = study_rows(slices, use, cfg.eval.aggregation)
    priors, threshold = fold_decisions(dirs)
    studies, decision = decide_rows(studies, use, cfg.eval.decision, priors=priors, threshold=threshold)
    dest = run_dir / "external" / (name or external_name(dataset, options))
    atomic_write_text(dest / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(dest / "predictions.csv", studies.to_csv(index=False))
    metrics = evaluate_rows(studies, use, cfg, cfg.eval.bootstrap, cohort.info.get("attribute_ranges"))
    metrics["external"] = {"dataset": dataset, "root": str(root), "options": dict(options or {}),
                           "models": [str(d.relative_to(run_dir)) for d in dirs], "decision": decision,
                           "attributes_evaluated": attrs}
    atomic_write_json(dest / "metrics.json", metrics)
    write_run_report([run_dir], run_dir)
    return metrics["pooled"]
