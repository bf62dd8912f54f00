"""``train_final``: one model on every labelled study of a cohort (``cadx train``), decided like a fold's, so
``cadx predict`` / ``cadx export`` use ``final/`` instead of the fold ensemble.

Kept apart from :mod:`cadx.runs.predict` so that predicting does not import the training stack (Lightning).
"""

from __future__ import annotations

from pathlib import Path

from cadx.config import ExperimentConfig
from cadx.pipeline.items import build_store
from cadx.runs.folder import check_data, load_cohort, record_item_cache
from cadx.runs.lock import locks_run_folder
from cadx.runs.network import fit_final

__all__ = ["train_final"]


@locks_run_folder
def train_final(cfg: ExperimentConfig, out_dir: str | Path) -> Path:
    """Train one model on every labelled study of the cohort into ``out_dir/final`` and return that folder
    (:func:`cadx.runs.network.fit_final`: no validation set, the last epoch is used; with ``eval.classifier: svm``
    the SVM is fitted on all items too; ``decision_fit`` fitted like a fold's on all studies). ``cadx cv --final``
    trains the same model as a task beside the folds. ``out_dir/config.yaml`` is written unless the folder
    already holds a run (then ``final/config.yaml`` only).
    """
    out_dir = Path(out_dir)
    final = out_dir / "final"
    final.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "config.yaml").is_file():
        cfg.save(out_dir / "config.yaml")
    cohort = load_cohort(cfg, out_dir)
    check_data(cfg, cohort, final)
    store = build_store(cohort, cfg, progress=cfg.train.progress)
    record_item_cache(final, store)
    fit_final(cfg, cohort, store, final)
    return final
