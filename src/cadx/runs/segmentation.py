"""Volume-level segmentation (+ classification) cross-validation: ``run_segmentation_cv(cfg, out_dir, resume)``.

Selected by the config's ``segmentation`` section (with ``task.segmentation: true``; :func:`cadx.runs.run_cv`
dispatches here). Per fold: slice items (:mod:`cadx.pipeline.seg_items`), A.3 sampling of the training slices, the
engine's :func:`~cadx.training.trainer.fit` with the config's objective (``dice``/``seg_ce``/``scnet`` parts), then per
test study:

1. the model's ``seg_logits`` of every slice → probabilities (sigmoid for S = 1, softmax otherwise), bilinearly
   resized back to the study's original in-plane size and stacked into the volume;
2. lesion = probability > 0.5 (S = 1) or argmax = the lesion channel (S ≥ 2; SCNet LGG: tumour, not tissue);
3. optionally only the **largest connected component** in 3D (``connectivity`` 1 = 6-neighbourhood, A.3);
4. ``dice`` = :func:`cadx.evaluation.dice` of the volume against the original mask (both empty → 1.0, one empty →
   0.0), ``lesion_voxels`` = ground-truth voxels, ``pred_voxels``;
5. with classification: a **majority vote over the slices whose final mask has ≥ ``vote_min_pixels`` lesion
   pixels** (SCNet §III: "only by the classification results of slices with tumor judged by the network");
   when no slice does, every slice votes (``vote_fallback`` = True). Probabilities = vote fractions, ties →
   higher mean probability (:func:`cadx.evaluation.aggregation.aggregate_predictions`, ``vote``).

Outputs follow the engine's run folder (``predictions.csv``, ``predictions_slices.csv``, ``metrics.json``,
``notes.md``, ``fold_<k>/``) plus ``fold_<k>/pred_masks.npz`` (final masks of the test studies) and
``figures/`` (Dice vs lesion size, overlays) listed in ``metrics.json`` ``extra``.

Steps 1–4 are :func:`predict_volume`, the ONE segmentation prediction: ``cadx evaluate``
(:func:`cadx.runs.evaluate.evaluate_run`, through :func:`predict_fold`) and ``cadx predict``
(:func:`cadx.runs.seg_predict.predict_segmentation`) call it too, so a study gets the same mask and Dice everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.config import ExperimentConfig
from cadx.data.splits import Fold
from cadx.data.study import Cohort
from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.seg_summary import lesion_split
from cadx.evaluation.summary import evaluate_predictions
from cadx.pipeline.seg_items import SegData, build_seg_data, seg_settings, training_items
from cadx.report.notes import write_notes
from cadx.report.seg_figures import seg_extra, segmentation_notes
from cadx.runs.executors import Executor
from cadx.runs.folder import (
    fold_selection,
    record_item_cache,
    run_folds,
    run_seconds,
    run_selection,
    start_run,
    write_run_report,
)
from cadx.runs.kinds import register_run_kind
from cadx.runs.lock import locks_run_folder
from cadx.runs.seg_inference import (
    VolumePrediction,
    final_masks,
    load_models,
    predict_items,
    predict_volume,
    vote_rows,
)
from cadx.training.trainer import fit, fold_seed, training_seed
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["VolumePrediction", "evaluate_seg", "final_masks", "load_models", "noise_column", "noise_dice",
           "predict_fold", "predict_items", "predict_volume", "run_segmentation_cv", "save_masks", "vote_rows"]


def predict_fold(cfg: ExperimentConfig, data: SegData, models: Sequence[torch.nn.Module], studies: np.ndarray,
                 fold: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Predict ``studies`` (indices into ``data``) with ``models`` (:func:`predict_volume` per study; labels
    under ``fold``): ``(study rows, slice rows, {"s<index>": final mask})``. With a classification head the
    study's class is the lesion-slice vote (:func:`vote_rows`)."""
    st = data.store
    classes = list(st.classes) if cfg.task.classification else []
    rows, srows, masks = [], [], {}
    for s in studies:
        items = data.study_items(int(s))
        gt = data.gt[int(s)]
        vp = predict_volume(cfg, models, st.images[items], gt.shape, gt)
        masks[f"s{int(s)}"] = vp.mask
        y = st.labels[int(s)]
        base = {"study_id": st.study_ids[s], "patient_id": st.patient_ids[s], "fold": fold,
                "y_true": st.classes[y] if y >= 0 else None}
        rows.append({**base, **vp.row})
        sl = pd.DataFrame({**base, "item": items, "slice": st.slice_pos[items], "pred_pixels": vp.pred_pixels,
                           "true_pixels": gt.reshape(len(items), -1).sum(1) if gt.ndim == 3 else [int(gt.sum())]})
        if vp.proba is not None and classes:
            for j, c in enumerate(classes):
                sl[f"p_{c}"] = vp.proba[:, j]
        srows.append(sl)
    studies_df = pd.DataFrame(rows)
    slices_df = pd.concat(srows, ignore_index=True)
    if classes and "p_" + classes[0] in slices_df.columns:
        votes = vote_rows(slices_df, classes, seg_settings(cfg).vote_min_pixels)
        extra = votes.drop(columns=[c for c in ("patient_id", "fold", "y_true") if c in votes.columns])
        studies_df = studies_df.merge(extra, on="study_id", how="left")
    return studies_df, slices_df, masks


def noise_dice(cfg: ExperimentConfig, data: SegData, models: Sequence[torch.nn.Module], studies: np.ndarray,
               sd: float, sigma: float, seed: int) -> np.ndarray:
    """Dice per study of ``studies`` (in order) when Gaussian noise of SD ``sigma * sd`` is added to every item
    of the network input (seeded by ``seed``; the post-processing is :func:`predict_volume`'s)."""
    st = data.store
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for s in studies:
        items = data.study_items(int(s))
        x = st.images[items]
        noisy = x + torch.randn(x.shape, generator=gen, dtype=x.dtype) * float(sigma * sd)
        gt = data.gt[int(s)]
        out.append(predict_volume(cfg, models, noisy, gt.shape, gt).row["dice"])
    return np.asarray(out, np.float64)


def noise_column(sigma: float) -> str:
    """Column of the Dice under test noise ``sigma`` (e.g. ``dice_noise_0.1``)."""
    return f"dice_noise_{sigma:g}"


def save_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    """Final masks as a compressed npz (written to a temporary name, then renamed)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **masks)  # type: ignore[arg-type]
    tmp.replace(path)


def evaluate_seg(df: pd.DataFrame, classes: list[str], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Dice (all studies) and, with ``classes``, the vote's classification metrics (labelled studies); the
    pooled block also gets a bootstrap CI of the median Dice (``ci.dice_median``) and ``lesion_split``
    (:func:`cadx.evaluation.seg_summary.lesion_split`: Dice over lesion-present cases, false-positive rate and
    mean predicted volume over lesion-absent ones, the overall mean) when the rows have ``lesion_voxels`` and
    ``pred_voxels``."""
    seg = evaluate_predictions(df.drop(columns=[c for c in df.columns if c.startswith("p_")] + ["y_pred"],
                                       errors="ignore"), [], n_bootstrap=n_bootstrap, seed=seed)
    out = seg
    if classes:
        lab = df[df["y_true"].notna()]
        out = evaluate_predictions(lab, classes, n_bootstrap=n_bootstrap, seed=seed, decision="given")
        for blk, sblk in [(out["pooled"], seg["pooled"])] + [(out["folds"].get(k, {}), v)
                                                             for k, v in seg["folds"].items()]:
            for k in ("n_dice", "dice_mean", "dice_median"):
                if k in sblk:
                    blk[k] = sblk[k]
            if "dice_mean" in sblk.get("ci", {}):
                blk.setdefault("ci", {})["dice_mean"] = sblk["ci"]["dice_mean"]
        out["n_studies_segmentation"] = seg["n_studies"]
    d = df["dice"].to_numpy(float)
    ok = np.isfinite(d)
    if n_bootstrap > 0 and ok.sum() >= 2:
        r = bootstrap_ci(lambda t, v: float(np.median(v)), d[ok], d[ok],
                         groups=df["patient_id"].astype(str).to_numpy()[ok], n_resamples=n_bootstrap, seed=seed,
                         skip_single_class=False)
        out["pooled"].setdefault("ci", {})["dice_median"] = [r.lo, r.hi]
    if {"lesion_voxels", "pred_voxels"} <= set(df.columns):
        out["pooled"]["lesion_split"] = lesion_split(df, n_bootstrap, seed)
    noisy = [c for c in df.columns if c.startswith("dice_noise_")]
    if noisy:
        groups = df["patient_id"].astype(str).to_numpy()
        block: dict[str, Any] = {}
        for c in noisy:
            v = df[c].to_numpy(float)
            fin = np.isfinite(v)
            entry: dict[str, Any] = {"n": int(fin.sum()), "dice_mean": float(np.mean(v[fin])) if fin.any() else None,
                                     "dice_median": float(np.median(v[fin])) if fin.any() else None}
            if n_bootstrap > 0 and fin.sum() >= 2:
                r = bootstrap_ci(lambda t, x: float(np.mean(x)), v[fin], v[fin], groups=groups[fin],
                                 n_resamples=n_bootstrap, seed=seed, skip_single_class=False)
                entry["ci_dice_mean"] = [r.lo, r.hi]
            block[c.removeprefix("dice_noise_")] = entry
        out["pooled"]["noise"] = block
    return out


def run_segmentation_fold(cfg: ExperimentConfig, cohort: Cohort, data: SegData, fold: Fold, fold_dir: Path,
                          resume: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one fold and predict its test studies (files as :func:`cadx.runs.network.run_fold`)."""
    t0 = time.perf_counter()
    st = data.store
    tr_st, va_st, te_st = (fold.indices(cohort, p) for p in ("train", "val", "test"))
    tr = training_items(data, st.items_of_studies(tr_st), seg_settings(cfg))
    va = st.items_of_studies(va_st)
    seed = fold_seed(training_seed(cfg), fold.fold)
    module = fit(cfg, st, tr, va, fold_dir, seed, resume=resume)
    studies, slices, masks = predict_fold(cfg, data, [module.model], np.asarray(te_st), fold.fold)
    if seg_settings(cfg).test_noise:
        sd = float(st.images[np.unique(tr)].std())
        for j, sigma in enumerate(seg_settings(cfg).test_noise):
            studies[noise_column(sigma)] = noise_dice(cfg, data, [module.model], np.asarray(te_st), sd, sigma,
                                                      seed + 1000 * (j + 1))
    save_masks(fold_dir / "pred_masks.npz", masks)
    atomic_write_text(fold_dir / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(fold_dir / "predictions.csv", studies.to_csv(index=False))
    classes = list(st.classes) if cfg.task.classification else []
    metrics = evaluate_seg(studies, classes, 0, cfg.seed)
    metrics["best_epoch"] = int(getattr(module, "best_epoch", -1))
    metrics["selection"] = fold_selection(cfg, fold, metrics["best_epoch"], getattr(module, "selection", None))
    atomic_write_json(fold_dir / "metrics.json", metrics)
    n_test = int(st.items_of_studies(te_st).size)
    atomic_write_json(fold_dir / "DONE", {"fold": fold.fold, "best_epoch": metrics["best_epoch"],
                                          "seconds": round(time.perf_counter() - t0, 2), "train_items": int(tr.size),
                                          "val_items": int(va.size), "test_items": n_test})
    return slices, studies


@register_run_kind("segmentation", "slices with masks → volumes, largest component, Dice per volume (U-Net, SCNet)")
@locks_run_folder
def run_segmentation_cv(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
                        executor: Executor | None = None) -> dict[str, Any]:
    """Cross-validate a segmentation config into ``out_dir`` (resume as :func:`cadx.runs.cv.run_cv`) and return
    the metrics (``pooled.dice_mean``/``dice_median`` with ``ci``, classification metrics when enabled)."""
    out_dir, cohort, splits, t0 = start_run(cfg, out_dir, resume)
    data = build_seg_data(cohort, cfg, progress=cfg.train.progress)
    record_item_cache(out_dir, data.store)
    _, studies = run_folds(splits, out_dir, resume,
                           lambda fold, fold_dir: run_segmentation_fold(cfg, cohort, data, fold, fold_dir, resume),
                           executor)
    classes = list(data.store.classes) if cfg.task.classification else []
    metrics = evaluate_seg(studies, classes, cfg.eval.bootstrap, cfg.seed)
    metrics["run"] = {"name": cfg.name, "dataset": cfg.data.dataset, "model": cfg.model.name,
                      "folds": len(splits), "items": len(data.store), "input_size": list(cfg.input.size_tuple()),
                      "seconds": run_seconds(out_dir, t0)}
    metrics["extra"] = seg_extra(cfg, cohort, data, studies, metrics, out_dir)
    metrics["selection"] = run_selection(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_notes(out_dir, cfg, cohort, data.store, splits)
    notes = out_dir / "notes.md"
    atomic_write_text(notes, notes.read_text(encoding="utf-8") + segmentation_notes(cfg, data, metrics))
    write_run_report([out_dir], out_dir)
    return metrics
