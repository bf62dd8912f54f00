"""Test metrics of an *unfinished* run from a fold's ``checkpoint_last.ckpt`` (a time-boxed measurement).

When a CPU budget stops a run before its last scheduled epoch, :func:`evaluate_checkpoint` evaluates the weights
it has: the same steps as ``cadx.runs.network.run_fold`` (per-fold SVM on the training items when
``eval.classifier: svm``, slice → study aggregation, decision rule, patient bootstrap CIs), written to
``<run>/partial/`` with the epoch count, so it is never mistaken for a finished run's ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cadx.config import load_config
from cadx.data.splits import Splits
from cadx.evaluation.summary import evaluate_predictions
from cadx.pipeline.items import build_store
from cadx.runs.folder import load_cohort
from cadx.runs.inference import Predictor, fold_decision, predict_rows
from cadx.runs.network import fit_svm
from cadx.training.trainer import fold_seed, load_module
from cadx.utils import atomic_write_json, atomic_write_text


def evaluate_checkpoint(run_dir: str | Path, fold: int = 0, checkpoint: str = "checkpoint_last.ckpt",
                        n_bootstrap: int | None = None) -> dict[str, Any]:
    """Evaluate ``run_dir/fold_<fold>/<checkpoint>`` on that fold's test patients; returns the metrics dict
    (``pooled`` with CIs, plus ``partial``: epochs trained / scheduled, seconds)."""
    t0 = time.perf_counter()
    run = Path(run_dir)
    cfg = load_config(run / "config.yaml")
    cohort = load_cohort(cfg, run)
    f = Splits.load(run / "splits.json").folds[fold]
    store = build_store(cohort, cfg, progress=False)
    ckpt = run / f"fold_{f.fold}" / checkpoint
    model, _ = load_module(ckpt)
    epochs_done = int(torch.load(ckpt, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    tr, va, te = (store.items_of_studies(f.indices(cohort, p)) for p in ("train", "val", "test"))
    seed = fold_seed(cfg.seed, f.fold)
    out = run / "partial"
    svm = fit_svm(cfg, store, model, tr, seed, out / "svm.pkl") if cfg.eval.classifier == "svm" else None
    classes = list(store.classes)
    pr = Predictor(model, svm, source=str(ckpt.parent))   # the prediction path, decision fitted as in run_fold
    dec = fold_decision(cfg, store, pr, f.indices(cohort, "train"), va if va.size else tr, f.fold)
    studies = predict_rows(cfg, store, te, [pr], f.fold, dec).studies
    atomic_write_text(out / "predictions.csv", studies.to_csv(index=False))
    metrics = evaluate_predictions(studies[studies["y_true"].notna()], classes,
                                   n_bootstrap=cfg.eval.bootstrap if n_bootstrap is None else n_bootstrap,
                                   seed=cfg.seed, decision="given")
    metrics["partial"] = {"checkpoint": f"fold_{f.fold}/{checkpoint}", "epochs_trained": epochs_done,
                          "epochs_scheduled": cfg.train.epochs, "model": cfg.model.name,
                          "eval_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


__all__ = ["evaluate_checkpoint"]
