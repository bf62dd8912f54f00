"""DMRN's hand-crafted baseline ``hc_svm`` (LBP 531 + HOG 1296 → linear SVM) as a standard run folder.

Not a network, so it is not trained by ``cadx.runs``: :func:`run_hc_svm` takes the same experiment config
(``model.name: hc_svm``; ``model.kwargs``: ``kernel`` linear|rbf, ``C``, ``lbp_patch``, ``hog_patch``, ``size``),
builds the same input items as the engine (``build_store``: the same slices of the same lesion boxes), uses the
folder's ``splits.json`` when present (else makes it like the engine does), fits
:class:`cadx.classical.HandcraftedSVM` on the training slices of each fold, predicts the test slices, averages
them per study and writes what ``cadx cv`` writes (``config.yaml``, ``splits.json``, ``fold_<k>/{predictions.csv,
predictions_slices.csv, metrics.json, DONE}``, ``predictions.csv``, ``metrics.json``, ``notes.md``), so
``cadx report`` renders it beside the networks. Choice: the DMRN paper does not state the SVM kernel for HC; we
use a linear SVM (like its DMRN classifier), ``C = 1``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from cadx.classical import HandcraftedSVM, handcrafted_features
from cadx.config import ExperimentConfig
from cadx.data.splits import Fold
from cadx.errors import CadxConfigError
from cadx.models import MODELS
from cadx.models.handcrafted import HC_NAME, HCSVMOptions
from cadx.pipeline.items import build_store
from cadx.report.notes import write_notes
from cadx.runs.executors import Executor
from cadx.runs.folder import (
    evaluate_rows,
    finish_fold,
    record_item_cache,
    run_folds,
    run_seconds,
    start_run,
    write_run_report,
)
from cadx.runs.inference import slice_rows
from cadx.runs.kinds import register_run_kind
from cadx.runs.lock import locks_run_folder
from cadx.training.trainer import fold_seed, training_seed
from cadx.utils import atomic_write_json, atomic_write_text


def hc_options(kwargs: Mapping[str, Any]) -> HCSVMOptions:
    """``model.kwargs`` of an ``hc_svm`` config, validated (:class:`cadx.models.handcrafted.HCSVMOptions`)."""
    return cast(HCSVMOptions, MODELS.options(HC_NAME, kwargs, options_key="model.kwargs"))


def hc_features(images: np.ndarray, kwargs: Mapping[str, Any]) -> np.ndarray:
    """``(N, 1827)`` LBP+HOG rows of ``(N, C, H, W)`` items (channels averaged); ``kwargs`` = ``model.kwargs``."""
    o = hc_options(kwargs)
    return handcrafted_features(images, o.lbp_patch, o.hog_patch, o.size)


@register_run_kind("handcrafted", "LBP + HOG features → SVM per fold (DMRN's HC baseline, model.name: hc_svm)")
@locks_run_folder
def run_hc_svm(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
               executor: Executor | None = None) -> dict[str, Any]:
    """Cross-validate the HC + SVM baseline of ``cfg`` into ``out_dir``; returns the pooled metrics dict."""
    if cfg.model.name != HC_NAME:
        raise CadxConfigError(f"run_hc_svm needs model.name={HC_NAME}, got {cfg.model.name!r}")
    opts = hc_options(cfg.model.kwargs)
    if cfg.input.kind == "volume3d":
        raise CadxConfigError("hc_svm works on 2D items (input.kind slices2d/roi2d/image2d)")
    out, cohort, splits, t0 = start_run(cfg, out_dir, resume)
    store = build_store(cohort, cfg, progress=False)
    record_item_cache(out, store)
    feats = hc_features(store.images.numpy(), cfg.model.kwargs)
    classes = list(store.classes)

    def one_fold(fold: Fold, fdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        tf = time.perf_counter()
        tr, te = (store.items_of_studies(fold.indices(cohort, p)) for p in ("train", "test"))
        y = store.item_labels(tr)
        tr = tr[y >= 0]
        svm = HandcraftedSVM(kernel=opts.kernel, C=opts.C, classes=list(range(len(classes))),
                             random_state=fold_seed(training_seed(cfg), fold.fold), precomputed=True)
        svm.fit(feats[tr], store.item_labels(tr), groups=np.asarray(store.patient_ids)[store.study[tr]])
        slices = slice_rows(store, te, {"proba": svm.predict_proba(feats[te])}, fold.fold)
        studies = finish_fold(cfg, cohort, store, fold, fdir, slices, tf, best_epoch=-1,
                              items={"train_items": int(tr.size), "val_items": 0, "test_items": int(te.size)})
        return slices, studies

    _, studies_df = run_folds(splits, out, resume, one_fold, executor)
    metrics = evaluate_rows(studies_df, classes, cfg, cfg.eval.bootstrap, cohort.info.get("attribute_ranges"))
    metrics["run"] = {"name": cfg.name, "dataset": cfg.data.dataset, "model": HC_NAME, "folds": len(splits),
                      "items": len(store), "seconds": run_seconds(out, t0)}
    atomic_write_json(out / "metrics.json", metrics)
    notes = write_notes(out, cfg, cohort, store, splits)
    atomic_write_text(notes, notes.read_text(encoding="utf-8") + (
        "\n\n## hc_svm\n\nNo network: LBP (531) + HOG (1296) features of every input slice (resized to "
        f"{opts.size} px) → StandardScaler → SVC(kernel="
        f"{opts.kernel}, C={opts.C}) with Platt-scaled "
        "probabilities, fitted per fold on the training slices (the epoch/optimiser lines above do not apply). "
        "The kernel is our choice (not stated in the DMRN paper).\n"))
    write_run_report([out], out)
    return metrics


__all__ = ["HC_NAME", "hc_features", "hc_options", "run_hc_svm"]
