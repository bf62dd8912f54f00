"""The ``network`` run kind: per fold, train a registry model (:func:`cadx.training.trainer.fit`), optionally fit
the SVM on its embeddings, fit the decision, score the fold's test items through the prediction path
(:mod:`cadx.runs.inference`) and finish the fold (:func:`cadx.runs.folder.finish_fold`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.classical.svm import EmbeddingSVM
from cadx.config import ExperimentConfig
from cadx.data.splits import Fold
from cadx.data.study import Cohort
from cadx.pipeline.items import ItemStore, build_store
from cadx.report.notes import write_notes
from cadx.runs.executors import Executor
from cadx.runs.folder import (
    evaluate_rows,
    finish_fold,
    record_item_cache,
    run_folds,
    run_seconds,
    run_selection,
    start_run,
    write_run_report,
)
from cadx.runs.inference import Predictor, fold_decision, infer, predict_slices
from cadx.runs.kinds import register_run_kind
from cadx.runs.lock import locks_run_folder
from cadx.training.trainer import fit, fold_seed, training_seed
from cadx.utils import atomic_write_json


def fit_svm(cfg: ExperimentConfig, store: ItemStore, model: Any, train_items: np.ndarray, seed: int,
            path: Path) -> EmbeddingSVM:
    """Fit the per-fold linear SVM on the training items' embeddings (no augmentation; Platt calibration CV
    grouped by patient) and save it to ``path``."""
    y = store.item_labels(train_items)
    items = train_items[y >= 0]
    feats = infer(model, store.images[items], cfg.train.eval_batch_size, features=cfg.eval.svm_features,
                  tta=cfg.eval.tta)
    svm = EmbeddingSVM(C=cfg.eval.svm_c, classes=list(range(len(store.classes))), random_state=seed).fit(
        feats["features"], y[y >= 0], groups=np.asarray(store.patient_ids)[store.study[items]])
    svm.save(path)
    return svm


def run_fold(cfg: ExperimentConfig, cohort: Cohort, store: ItemStore, fold: Fold, fold_dir: Path,
             resume: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one fold, fit its decision (:func:`cadx.runs.inference.fold_decision`), score its test patients
    through the prediction path and write ``predictions*.csv``, ``metrics.json`` and ``DONE``
    (:func:`cadx.runs.folder.finish_fold`)."""
    t0 = time.perf_counter()
    tr, va, te = (store.items_of_studies(fold.indices(cohort, p)) for p in ("train", "val", "test"))
    seed = fold_seed(training_seed(cfg), fold.fold)
    module = fit(cfg, store, tr, va, fold_dir, seed, resume=resume)
    model = module.model
    svm = fit_svm(cfg, store, model, tr, seed, fold_dir / "svm.pkl") if cfg.eval.classifier == "svm" else None
    predictor = Predictor(model, svm, source=str(fold_dir))
    decision = fold_decision(cfg, store, predictor, fold.indices(cohort, "train"), va if va.size else tr, fold.fold)
    slices = predict_slices(cfg, store, te, [predictor], fold.fold)
    studies = finish_fold(cfg, cohort, store, fold, fold_dir, slices, t0,
                          best_epoch=int(getattr(module, "best_epoch", -1)), decision=decision,
                          selection=getattr(module, "selection", None),
                          items={"train_items": int(tr.size), "val_items": int(va.size), "test_items": int(te.size)})
    return slices, studies


def fit_final(cfg: ExperimentConfig, cohort: Cohort, store: ItemStore, final: Path, resume: bool = False) -> None:
    """Train the final model on every item of ``store`` into ``final`` (no validation set: the last epoch is used;
    the SVM too with ``eval.classifier: svm``) and write ``final/metrics.json`` (``decision_fit``: priors = the
    class frequencies of all labelled studies, the Youden threshold on all studies) and ``final/DONE``. Seeded by
    :func:`~cadx.training.trainer.fold_seed` ``(seed, -1)``, so ``cadx train`` and ``cadx cv --final`` (a task
    beside the folds) write the same model. ``resume`` continues from ``final/checkpoint_last.ckpt``; without it
    stale files of an earlier final model are removed first."""
    t0 = time.perf_counter()
    final.mkdir(parents=True, exist_ok=True)
    cfg.save(final / "config.yaml")
    stale = ("DONE", "svm.pkl", "metrics.json") + (() if resume else ("checkpoint_last.ckpt", "checkpoint_best.ckpt"))
    for name in stale:
        (final / name).unlink(missing_ok=True)
    items = np.arange(len(store))
    seed = fold_seed(training_seed(cfg), -1)
    module = fit(cfg, store, items, np.zeros(0, np.int64), final, seed, resume=resume)
    svm = fit_svm(cfg, store, module.model, items, seed, final / "svm.pkl") if cfg.eval.classifier == "svm" else None
    decision = fold_decision(cfg, store, Predictor(module.model, svm, source=str(final)), np.arange(len(cohort)),
                             items, -1)
    atomic_write_json(final / "metrics.json", {"decision_fit": decision})
    atomic_write_json(final / "DONE", {"fold": "final", "studies": len(cohort), "items": len(store),
                                       "seconds": round(time.perf_counter() - t0, 2)})


@register_run_kind("network", "a registry network trained per fold (optionally an SVM on its embeddings)")
@locks_run_folder
def run_network(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
                executor: Executor | None = None) -> dict[str, Any]:
    """Cross-validate the network of ``cfg`` into ``out_dir`` (resume and ``executor`` as
    :func:`cadx.runs.cv.run_cv`)."""
    out_dir, cohort, splits, t0 = start_run(cfg, out_dir, resume)
    store = build_store(cohort, cfg, progress=cfg.train.progress)
    record_item_cache(out_dir, store)
    final = (lambda path: fit_final(cfg, cohort, store, path, resume)) if cfg.cv.final else None
    _, studies = run_folds(splits, out_dir, resume,
                           lambda fold, fold_dir: run_fold(cfg, cohort, store, fold, fold_dir, resume), executor,
                           final=final)
    classes = store.classes if cfg.task.classification else []
    metrics = evaluate_rows(studies, classes, cfg, cfg.eval.bootstrap, cohort.info.get("attribute_ranges"))
    metrics["run"] = {"name": cfg.name, "dataset": cfg.data.dataset, "model": cfg.model.name,
                      "folds": len(splits), "items": len(store), "seconds": run_seconds(out_dir, t0)}
    metrics["selection"] = {**run_selection(out_dir), **(metrics.get("selection") or {})}
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_notes(out_dir, cfg, cohort, store, splits)
    write_run_report([out_dir], out_dir)
    return metrics
