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
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cadx.config import ExperimentConfig
from cadx.data.splits import Fold
from cadx.data.study import Cohort
from cadx.runs.inference import device
from cadx.pipeline.seg_items import SegData, build_seg_data, lesion_channel, seg_settings, training_items
from cadx.training.trainer import fit, fold_seed
from cadx.evaluation.overlap import dice, largest_connected_component
from cadx.utils import atomic_write_json, atomic_write_text
from cadx.report.notes import write_notes
from cadx.report.seg_figures import seg_extra, segmentation_notes
from cadx.runs.folder import run_folds, start_run, write_run_report
from cadx.runs.kinds import register_run_kind

__all__ = ["final_masks", "predict_items", "run_segmentation_cv", "study_predictions"]


@torch.no_grad()
def predict_items(models: Sequence[torch.nn.Module], images: torch.Tensor, batch_size: int = 64
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean over ``models`` of ``(seg probabilities (N, S, h, w), class probabilities (N, K) or None)``."""
    dev = device()
    seg_sum: np.ndarray | None = None
    cls_sum: np.ndarray | None = None
    for model in models:
        model = model.to(dev).eval()
        segs, clss = [], []
        for i in range(0, images.shape[0], batch_size):
            out = model(images[i:i + batch_size].to(dev))
            s = out["seg_logits"].float()
            segs.append((torch.sigmoid(s) if s.shape[1] == 1 else torch.softmax(s, 1)).cpu().numpy())
            if "logits" in out:
                clss.append(torch.softmax(out["logits"].float(), 1).cpu().numpy())
        model.cpu()
        seg = np.concatenate(segs)
        seg_sum = seg if seg_sum is None else seg_sum + seg
        if clss:
            c = np.concatenate(clss)
            cls_sum = c if cls_sum is None else cls_sum + c
    assert seg_sum is not None
    n = len(models)
    return seg_sum / n, None if cls_sum is None else cls_sum / n


def final_masks(seg: np.ndarray, shape: tuple[int, ...], lesion: int, largest: bool, connectivity: int
                ) -> np.ndarray:
    """Slice probabilities ``(N, S, h, w)`` → lesion mask of the original ``shape`` (``(Z, H, W)`` with N = Z, or
    ``(H, W)`` with N = 1): bilinear resize of the probabilities, decision, optional largest component."""
    hw = tuple(shape[-2:])
    out = np.zeros((seg.shape[0], *hw), bool)
    for i in range(seg.shape[0]):
        p = torch.from_numpy(np.ascontiguousarray(seg[i:i + 1], dtype=np.float32))
        if tuple(p.shape[2:]) != hw:
            p = F.interpolate(p, size=hw, mode="bilinear", align_corners=False)
        a = p[0].numpy()
        out[i] = a[0] > 0.5 if a.shape[0] == 1 else a.argmax(0) == lesion
    mask = out.reshape(shape)
    if largest and mask.any():
        mask = largest_connected_component(mask, connectivity=min(connectivity, mask.ndim))
    return mask


def study_predictions(cfg: ExperimentConfig, seg: np.ndarray, proba: np.ndarray | None, shape: tuple[int, ...],
                      gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """One study's ``(final mask, row fields, per-slice predicted lesion pixels)``; row: ``dice``,
    ``lesion_voxels``, ``pred_voxels`` (with ``gt``), ``n_slices``, and with ``proba`` the vote
    (``p_<class>`` are filled by the caller from ``vote_rows``)."""
    s = seg_settings(cfg)
    mask = final_masks(seg, shape, lesion_channel(cfg), s.largest_component, s.connectivity)
    per_slice = mask.reshape(seg.shape[0], -1).sum(1)
    row: dict[str, Any] = {"n_slices": int(seg.shape[0]), "pred_voxels": int(mask.sum())}
    if gt is not None:
        row["dice"] = dice(mask, gt)
        row["lesion_voxels"] = int(gt.sum())
    return mask, row, per_slice


def vote_rows(slices: pd.DataFrame, classes: list[str], min_pixels: int) -> pd.DataFrame:
    """Study rows by majority vote over the slices with ≥ ``min_pixels`` predicted lesion pixels (all slices
    when none has); adds ``vote_slices`` and ``vote_fallback``."""
    from cadx.evaluation.aggregation import aggregate_predictions

    cols = [f"p_{c}" for c in classes]
    out = []
    for _, g in slices.groupby("study_id", sort=False):
        use = g[g["pred_pixels"] >= min_pixels]
        fallback = use.empty
        use = g if fallback else use
        keep = [c for c in ("study_id", "patient_id", "fold", "y_true") if c in use.columns]
        agg = aggregate_predictions(use[keep + cols], by="study_id", method="vote", prob_cols=cols)
        agg["vote_slices"] = len(use) if not fallback else 0
        agg["vote_fallback"] = fallback
        out.append(agg.drop(columns=["n_rows"], errors="ignore"))
    return pd.concat(out, ignore_index=True)


def predict_fold(cfg: ExperimentConfig, data: SegData, models: Sequence[torch.nn.Module], studies: np.ndarray,
                 fold: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Predict test ``studies``: ``(study rows, slice rows, {"s<index>": final mask})``."""
    st = data.store
    classes = list(st.classes) if cfg.task.classification else []
    rows, srows, masks = [], [], {}
    for s in studies:
        items = data.study_items(int(s))
        seg, proba = predict_items(models, st.images[items], cfg.train.eval_batch_size)
        gt = data.gt[int(s)]
        mask, row, per_slice = study_predictions(cfg, seg, proba, gt.shape, gt)
        masks[f"s{int(s)}"] = mask
        y = st.labels[int(s)]
        base = {"study_id": st.study_ids[s], "patient_id": st.patient_ids[s], "fold": fold,
                "y_true": st.classes[y] if y >= 0 else None}
        rows.append({**base, **row})
        sl = pd.DataFrame({**base, "item": items, "slice": st.slice_pos[items], "pred_pixels": per_slice,
                           "true_pixels": gt.reshape(len(items), -1).sum(1) if gt.ndim == 3 else [int(gt.sum())]})
        if proba is not None and classes:
            for j, c in enumerate(classes):
                sl[f"p_{c}"] = proba[:, j]
        srows.append(sl)
    studies_df = pd.DataFrame(rows)
    slices_df = pd.concat(srows, ignore_index=True)
    if classes and "p_" + classes[0] in slices_df.columns:
        votes = vote_rows(slices_df, classes, seg_settings(cfg).vote_min_pixels)
        extra = votes.drop(columns=[c for c in ("patient_id", "fold", "y_true") if c in votes.columns])
        studies_df = studies_df.merge(extra, on="study_id", how="left")
    return studies_df, slices_df, masks


def save_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    """Final masks as a compressed npz (written to a temporary name, then renamed)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **masks)  # type: ignore[arg-type]
    tmp.replace(path)


def evaluate_seg(df: pd.DataFrame, classes: list[str], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Dice (all studies) and, with ``classes``, the vote's classification metrics (labelled studies); the
    pooled block also gets a bootstrap CI of the median Dice (``ci.dice_median``)."""
    from cadx.evaluation.bootstrap import bootstrap_ci
    from cadx.evaluation.summary import evaluate_predictions

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
    return out


def run_segmentation_fold(cfg: ExperimentConfig, cohort: Cohort, data: SegData, fold: Fold, fold_dir: Path,
                          resume: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one fold and predict its test studies (files as :func:`cadx.runs.network.run_fold`)."""
    t0 = time.perf_counter()
    st = data.store
    tr_st, va_st, te_st = (fold.indices(cohort, p) for p in ("train", "val", "test"))
    tr = training_items(data, st.items_of_studies(tr_st), seg_settings(cfg))
    va = st.items_of_studies(va_st)
    seed = fold_seed(cfg.seed, fold.fold)
    module = fit(cfg, st, tr, va, fold_dir, seed, resume=resume)
    studies, slices, masks = predict_fold(cfg, data, [module.model], np.asarray(te_st), fold.fold)
    save_masks(fold_dir / "pred_masks.npz", masks)
    atomic_write_text(fold_dir / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(fold_dir / "predictions.csv", studies.to_csv(index=False))
    classes = list(st.classes) if cfg.task.classification else []
    metrics = evaluate_seg(studies, classes, 0, cfg.seed)
    metrics["best_epoch"] = int(getattr(module, "best_epoch", -1))
    atomic_write_json(fold_dir / "metrics.json", metrics)
    n_test = int(st.items_of_studies(te_st).size)
    atomic_write_json(fold_dir / "DONE", {"fold": fold.fold, "best_epoch": metrics["best_epoch"],
                                          "seconds": round(time.perf_counter() - t0, 2), "train_items": int(tr.size),
                                          "val_items": int(va.size), "test_items": n_test})
    return slices, studies


@register_run_kind("segmentation", "slices with masks → volumes, largest component, Dice per volume (U-Net, SCNet)")
def run_segmentation_cv(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Cross-validate a segmentation config into ``out_dir`` (resume as :func:`cadx.runs.cv.run_cv`) and return
    the metrics (``pooled.dice_mean``/``dice_median`` with ``ci``, classification metrics when enabled)."""
    out_dir, cohort, splits, t0 = start_run(cfg, out_dir, resume)
    data = build_seg_data(cohort, cfg, progress=cfg.train.progress)
    _, studies = run_folds(splits, out_dir, resume,
                           lambda fold, fold_dir: run_segmentation_fold(cfg, cohort, data, fold, fold_dir, resume))
    classes = list(data.store.classes) if cfg.task.classification else []
    metrics = evaluate_seg(studies, classes, cfg.eval.bootstrap, cfg.seed)
    metrics["run"] = {"name": cfg.name, "dataset": cfg.data.dataset, "model": cfg.model.name,
                      "folds": len(splits), "items": len(data.store), "input_size": list(cfg.input.size_tuple()),
                      "seconds": round(time.perf_counter() - t0, 2)}
    metrics["extra"] = seg_extra(cfg, cohort, data, studies, metrics, out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_notes(out_dir, cfg, cohort, data.store, splits)
    notes = out_dir / "notes.md"
    atomic_write_text(notes, notes.read_text(encoding="utf-8") + segmentation_notes(cfg, data, metrics))
    write_run_report([out_dir], out_dir)
    return metrics
