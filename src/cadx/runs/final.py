"""``train_final``: one model on every labelled study of a cohort (``cadx train``), decided like a fold's, so
``cadx predict`` / ``cadx export`` use ``final/`` instead of the fold ensemble.

Kept apart from :mod:`cadx.runs.predict` so that predicting does not import the training stack (Lightning).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cadx.config import ExperimentConfig
from cadx.pipeline.items import build_store
from cadx.runs.folder import check_data, load_cohort, record_item_cache
from cadx.runs.inference import Predictor, fold_decision
from cadx.runs.lock import locks_run_folder
from cadx.runs.network import fit_svm
from cadx.training.trainer import fit, fold_seed, training_seed
from cadx.utils import atomic_write_json

__all__ = ["train_final"]


@locks_run_folder
def train_final(cfg: ExperimentConfig, out_dir: str | Path) -> Path:
    """Train one model on every labelled study of the cohort into ``out_dir/final`` (no validation set: the last
    epoch is used) and return that folder. With ``eval.classifier: svm`` the SVM is fitted on all items too.
    The decision parameters (``final/metrics.json`` ``decision_fit``) are fitted like a fold's: priors = the class
    frequencies of all labelled studies; the Youden threshold on all studies (it has no validation set).
    ``out_dir/config.yaml`` is written unless the folder already holds a run (then ``final/config.yaml`` only).
    """
    out_dir = Path(out_dir)
    final = out_dir / "final"
    final.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (out_dir / "config.yaml").is_file():
        cfg.save(out_dir / "config.yaml")
    cfg.save(final / "config.yaml")
    for stale in ("checkpoint_last.ckpt", "checkpoint_best.ckpt", "DONE", "svm.pkl", "metrics.json"):
        (final / stale).unlink(missing_ok=True)
    cohort = load_cohort(cfg, out_dir)
    check_data(cfg, cohort, final)
    store = build_store(cohort, cfg, progress=cfg.train.progress)
    record_item_cache(final, store)
    items = np.arange(len(store))
    seed = fold_seed(training_seed(cfg), -1)
    module = fit(cfg, store, items, np.zeros(0, np.int64), final, seed)
    svm = fit_svm(cfg, store, module.model, items, seed, final / "svm.pkl") if cfg.eval.classifier == "svm" else None
    decision = fold_decision(cfg, store, Predictor(module.model, svm, source=str(final)), np.arange(len(cohort)),
                             items, -1)
    atomic_write_json(final / "metrics.json", {"decision_fit": decision})
    atomic_write_json(final / "DONE", {"fold": "final", "studies": len(cohort), "items": len(store),
                                       "seconds": round(time.perf_counter() - t0, 2)})
    return final
