"""Lesion-detection cross-validation (thesis A.8): ``run_detection_cv(cfg, out_dir, resume)``, run kind
``detection`` (selected by a config's ``detection`` section; ``cadx cv CONFIG`` dispatches here).

Per fold (patient-level splits from :mod:`cadx.runs.folder`):

1. **Training** (:func:`train_detector`): the registry model (``model.name``, e.g. ``yolo_dense``) on batches of
   half positive slices (the sqrt(box size) span around each lesion's central slice) and half negatives
   (``detection.negative_ratio``), grid-aligned random crops containing the box
   (:mod:`cadx.pipeline.det_items`), the config's ``objective`` (e.g. ``{det_focal: 1, det_box_mse: 1}``), Adam
   at ``optim.lr``. An epoch is one pass over the training positives. After every epoch the validation
   patients' slices (positive span × ``val_span_factor`` = ½, the paper's halved span, plus as many fixed
   negatives) are predicted whole and scored by the **mean sensitivity at 1/8-2 FP per slice** (the paper
   selects on 2 FP per slice alone, which saturates at 1.0 on small validation sets: see
   ``_val_sensitivity``); the best epoch's weights are kept (``checkpoint_best.pt``), ties → the later epoch (a
   saturated score keeps the longer-trained weights); early stopping after ``train.early_stopping.patience``
   epochs without improvement. Without validation patients the last epoch is kept. ``history.csv``: epoch,
   train_loss, val_mean_sens, seconds.
2. **Inference** (:func:`predict_study`, THE detection prediction): every slice whole (zero-padded to the grid),
   the decoded outputs averaged over ``detection.splits`` equal parts of the volume (the paper's halves:
   :func:`combine_slices`), one box per cell scoring ≥ ``min_score``, foreground filtering, merge-NMS
   (:func:`merge_nms`), boxes mapped back to the original pixels.
3. **FROC** (:mod:`cadx.evaluation.froc`) over the test studies: lesion-based and patient-based sensitivity at
   ``fp_rates`` FPs per image/volume with patient-bootstrap CIs (pooled over folds in ``metrics.json``).

Files: the standard run folder (``config.yaml``, ``splits.json``, ``data_check.json``, ``fingerprint.json``)
plus ``fold_<k>/{checkpoint_best.pt, history.csv, predictions.csv, predictions_slices.csv, lesions.csv,
metrics.json, DONE}`` and pooled ``predictions.csv`` (one row per study), ``predictions_slices.csv`` (**one row
per predicted box**: study_id, patient_id, fold, score, y, x, z, y0, x0, y1, x1, z0, z1, tp, lesion),
``lesions.csv`` (one row per ground-truth lesion), ``metrics.json``, ``figures/froc.png``. A fold interrupted
before its ``DONE`` is retrained from scratch on ``--resume`` (finished folds are kept).

**Swapping the network** (e.g. MONAI's RetinaNet): the run kind takes any registry model (``model.name``) that
exposes ``cell_size`` (input pixels per output cell) and ``anchor`` (px) attributes and returns
``{"det_logits": (B, 5, H / cell_size, W / cell_size)}`` in the :func:`cadx.models.yolo_dense.decode` layout.
A RetinaNet is plugged in by registering (``@register_model``) a wrapper around
``monai.apps.detection.networks.retinanet_network.RetinaNet`` with one square anchor per location on one
feature level whose stride is ``cell_size``, mapping its ``cls_logits`` to channel 0 and its ``box_regression``
to channels 1–4; such a wrapper is **not** shipped (MONAI's full ``RetinaNetDetector`` brings its own matcher,
losses and NMS, which would bypass this run kind's A.8 training and post-processing).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.config import DetectionConfig, ExperimentConfig
from cadx.data.splits import Fold
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation.froc import (
    FrocCurve,
    froc_curve,
    froc_table,
    match_predictions,
    plot_froc,
    sensitivity_at,
)
from cadx.models import create_model
from cadx.models.yolo_dense import decode
from cadx.objectives import build_objective
from cadx.pipeline.det_items import DetStudy, build_det_studies, make_batch, training_items
from cadx.runs.executors import Executor
from cadx.runs.folder import fold_selection, run_folds, run_seconds, run_selection, start_run
from cadx.runs.kinds import register_run_kind
from cadx.runs.lock import locks_run_folder
from cadx.training.trainer import fold_seed, training_seed
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["combine_slices", "evaluate_detections", "iou_matrix", "lesion_table", "merge_nms", "predict_study",
           "run_detection_cv", "train_detector"]


def _det(cfg: ExperimentConfig) -> DetectionConfig:
    if cfg.detection is None:
        raise CadxConfigError(f"{cfg.name}: a detection run needs a 'detection' section")
    return cfg.detection


def _geometry(model: torch.nn.Module) -> tuple[int, float]:
    cell, anchor = getattr(model, "cell_size", None), getattr(model, "anchor", None)
    if cell is None or anchor is None:
        raise CadxConfigError(f"detection: model {type(model).__name__} must expose cell_size and anchor")
    return int(cell), float(anchor)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(N, 6)`` with every box of ``b`` ``(M, 6)``, boxes ``(z0, y0, x0, z1, y1,
    x1)`` in continuous coordinates: ``(N, M)`` (0 for disjoint or empty boxes)."""
    lo = np.maximum(a[:, None, :3], b[None, :, :3])
    hi = np.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    va, vb = np.prod(a[:, 3:] - a[:, :3], axis=-1), np.prod(b[:, 3:] - b[:, :3], axis=-1)
    union = va[:, None] + vb[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def merge_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, max_ratio: float = 10.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """The paper's merge-NMS: repeatedly, the first pair ``(i, j)``, ``i < j`` in descending score order, with
    score ratio ``max / min < max_ratio`` and IoU ``> iou`` is replaced (at ``i``) by its union box with the
    pair's max score, until no pair merges. ``boxes`` ``(N, 6)`` ``(z0, y0, x0, z1, y1, x1)``; returns
    ``(boxes (M, 6), scores (M,))`` sorted by descending score. (The authors' ``postprocess.py`` uses ratio
    ``<=``; the paper's text says "less than"; we follow the text. A score of 0 never merges.)"""
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    bx = np.asarray(boxes, float).reshape(-1, 6)[order]
    sc = np.asarray(scores, float)[order]
    while len(bx) > 1:
        hi, lo = np.maximum(sc[:, None], sc[None]), np.minimum(sc[:, None], sc[None])
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (lo > 0) & (hi / np.where(lo > 0, lo, 1.0) < max_ratio)
        cand = np.triu(ok & (iou_matrix(bx, bx) > iou), k=1)
        if not cand.any():
            break
        i, j = (int(v) for v in np.argwhere(cand)[0])   # row-major = the loop order of the authors' code
        bx[i] = np.r_[np.minimum(bx[i, :3], bx[j, :3]), np.maximum(bx[i, 3:], bx[j, 3:])]
        sc[i] = max(sc[i], sc[j])
        bx, sc = np.delete(bx, j, axis=0), np.delete(sc, j)
    o = np.argsort(-sc, kind="mergesort")
    return bx[o], sc[o]


def combine_slices(decoded: np.ndarray, splits: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's volume combination: slice outputs ``(Z, 5, Gh, Gw)`` (decoded: probability, cy, cx, h, w)
    averaged within ``min(splits, Z)`` consecutive, (nearly) equal parts of the volume (``np.array_split``).
    Returns ``(parts (P, 5, Gh, Gw), bounds (P, 2) = [z0, z1) of each part)``. ``splits = 2`` = "split it into
    halves and combined slice-based predictions for each half by averaging them"."""
    z = decoded.shape[0]
    p = max(1, min(int(splits), z))
    idx = np.array_split(np.arange(z), p)
    parts = np.stack([decoded[i].mean(0) for i in idx])
    bounds = np.array([[int(i[0]), int(i[-1]) + 1] for i in idx], np.int64)
    return parts, bounds


@torch.no_grad()
def _slice_outputs(model: torch.nn.Module, image: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Decoded outputs ``(Z, 5, Gh, Gw)`` of every slice of ``image`` ``(Z, C, H, W)``."""
    cell, anchor = _geometry(model)
    model.eval()
    out = []
    for i in range(0, image.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(image[i:i + batch_size]))
        out.append(decode(model(x)["det_logits"].float(), cell, anchor).numpy())
    return np.concatenate(out)


def predict_study(model: torch.nn.Module, st: DetStudy, det: DetectionConfig) -> pd.DataFrame:
    """THE detection prediction of one study (module docstring, step 2): one row per box, in original pixel
    coordinates: ``score, y, x`` (centre), ``z`` (centre slice = part start + depth / 2, as the authors' code;
    0 for a 2D image), ``y0, x0, y1, x1, z0, z1``."""
    dec = _slice_outputs(model, st.image)
    parts, bounds = combine_slices(dec, det.splits if st.three_d else 1)
    rows = []
    for (pz0, pz1), part in zip(bounds, parts, strict=True):
        fg = st.foreground[pz0:pz1].mean(0)          # fraction of the part's slices where a pixel is foreground
        keep = np.argwhere(part[0] >= det.min_score)
        if not keep.size:
            continue
        for i, j in keep:
            s, cy, cx, h, w = (float(v) for v in part[:, i, j])
            y0, y1 = max(0.0, cy - h / 2), min(float(fg.shape[0]), cy + h / 2)
            x0, x1 = max(0.0, cx - w / 2), min(float(fg.shape[1]), cx + w / 2)
            if y1 <= y0 or x1 <= x0:
                continue
            win = fg[int(y0):max(int(y0) + 1, int(np.ceil(y1))), int(x0):max(int(x0) + 1, int(np.ceil(x1)))]
            if win.size == 0 or float(win.mean()) < det.min_foreground:
                continue
            rows.append((pz0, y0, x0, pz1, y1, x1, s))
    if not rows:
        return pd.DataFrame(columns=["score", "y", "x", "z", "y0", "x0", "y1", "x1", "z0", "z1"])
    a = np.asarray(rows, float)
    boxes, scores = merge_nms(a[:, :6], a[:, 6], det.nms_iou, det.nms_ratio)
    s = st.scale
    df = pd.DataFrame({"score": scores, "z0": boxes[:, 0].astype(int), "z1": boxes[:, 3].astype(int),
                       "y0": boxes[:, 1] / s, "x0": boxes[:, 2] / s, "y1": boxes[:, 4] / s, "x1": boxes[:, 5] / s})
    df["y"] = (df["y0"] + df["y1"]) / 2
    df["x"] = (df["x0"] + df["x1"]) / 2
    df["z"] = (df["z0"] + df["z1"]) / 2 if st.three_d else 0.0
    return df[["score", "y", "x", "z", "y0", "x0", "y1", "x1", "z0", "z1"]]


def lesion_table(studies: Sequence[DetStudy], indices: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Ground-truth lesions of ``studies[indices]``: study_id, patient_id, lesion, y0, x0, y1, x1, z, z0, z1,
    n_slices."""
    rows = [(st.study_id, st.patient_id, k, lb.y0, lb.x0, lb.y1, lb.x1, lb.z, lb.z0, lb.z1, st.n_slices)
            for st in (studies[int(i)] for i in indices) for k, lb in enumerate(st.lesions)]
    return pd.DataFrame(rows, columns=["study_id", "patient_id", "lesion", "y0", "x0", "y1", "x1", "z", "z0", "z1",
                                       "n_slices"])


#: FP-per-slice rates whose mean sensitivity selects the epoch (the competition performance metric of LUNA16).
VAL_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0)


def _val_sensitivity(model: torch.nn.Module, studies: Sequence[DetStudy], pos: np.ndarray, neg: np.ndarray,
                     det: DetectionConfig) -> float:
    """Mean sensitivity at 1/8, 1/4, 1/2, 1 and 2 FP per slice over validation slices, each predicted whole (no
    combination). Our choice: the paper selects on the sensitivity at 2 FP per slice, which reached 1.0 within 1-2
    epochs on every fold's small validation set (BUSI: 15 slices; LGG: 5 patients), so it could not rank later
    epochs; the mean over the lower rates keeps ranking them and still rewards the paper's 2-FP point."""
    preds, les, ids = [], [], []
    for k, ((si, z), is_pos) in enumerate([(r, True) for r in pos] + [(r, False) for r in neg]):
        st = studies[int(si)]
        sid = f"v{k}"
        ids.append(sid)
        dec = _slice_outputs(model, st.image[int(z):int(z) + 1])[0]
        keep = np.argwhere(dec[0] >= det.min_score)
        for i, j in keep:
            preds.append((sid, float(dec[0, i, j]), float(dec[1, i, j]), float(dec[2, i, j])))
        if is_pos:
            for b, (y0, x0, y1, x1) in enumerate(st.scaled_boxes(int(z))):
                les.append((sid, b, y0, x0, y1, x1))
    if not les:
        return float("nan")
    p = pd.DataFrame(preds, columns=["study_id", "score", "y", "x"])
    lt = pd.DataFrame(les, columns=["study_id", "lesion", "y0", "x0", "y1", "x1"])
    c = froc_curve(match_predictions(p, lt, det.distance_px), lt, ids)
    return float(np.mean([sensitivity_at(c.fps, c.sensitivity, r) for r in VAL_FP_RATES]))


def train_detector(cfg: ExperimentConfig, studies: Sequence[DetStudy], train_idx: Sequence[int] | np.ndarray,
                   val_idx: Sequence[int] | np.ndarray, fold_dir: Path, seed: int) -> tuple[torch.nn.Module, int]:
    """Train one fold's detector (module docstring, step 1); returns ``(best model, best epoch)`` and writes
    ``checkpoint_best.pt`` and ``history.csv`` into ``fold_dir``."""
    det = _det(cfg)
    torch.manual_seed(seed)  # the model's initialisation; batches use their own seeded generator below
    in_ch = int(studies[0].image.shape[1])
    model = create_model(cfg.model.name, 0, in_ch, 2, **cfg.model.kwargs)
    cell, anchor = _geometry(model)
    if det.crop % cell:
        raise CadxConfigError(f"detection.crop {det.crop} must be a multiple of the model's cell {cell}")
    objective = build_objective(cfg.objective)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    pos, neg = training_items(studies, train_idx)
    if not len(pos):
        raise CadxDataError("no training study has a lesion", field="mask")
    vpos, vneg = training_items(studies, val_idx, det.val_span_factor)
    rng_v = np.random.default_rng(seed + 1)
    vneg = vneg[rng_v.permutation(len(vneg))[:len(vpos)]] if len(vneg) else vneg
    rng = np.random.default_rng(seed)
    bs = cfg.train.batch_size
    n_pos = max(1, round(bs / (1.0 + det.negative_ratio))) if len(neg) else bs
    history, best, best_epoch, best_state, stale = [], -np.inf, -1, None, 0
    patience = cfg.train.early_stopping.patience
    for epoch in range(cfg.train.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = rng.permutation(len(pos))
        losses = []
        for b in range(0, len(perm), n_pos):
            p_items = pos[perm[b:b + n_pos]]
            n_neg = min(len(neg), bs - len(p_items)) if len(neg) else 0
            n_items = neg[rng.integers(0, len(neg), n_neg)] if n_neg else np.zeros((0, 2), np.int64)
            items = np.concatenate([p_items, n_items])
            flags = np.r_[np.ones(len(p_items), bool), np.zeros(len(n_items), bool)]
            batch = make_batch(studies, items, flags, det.crop, cell, anchor, rng, det.flip)
            loss, _ = objective(model(batch["image"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val = _val_sensitivity(model, studies, vpos, vneg, det) if len(vpos) else float("nan")
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_mean_sens": val,
                        "seconds": round(time.perf_counter() - t0, 2)})
        score = val if np.isfinite(val) else float(epoch)   # no validation: the last epoch
        if score >= best:   # ties -> the later (longer-trained) epoch
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if patience is not None and stale > patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    torch.save({"state_dict": best_state, "model": cfg.model.name, "kwargs": dict(cfg.model.kwargs),
                "in_channels": in_ch, "best_epoch": best_epoch}, fold_dir / "checkpoint_best.pt")
    atomic_write_text(fold_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
    return model, best_epoch


def evaluate_detections(boxes: pd.DataFrame, lesions: pd.DataFrame, studies: pd.DataFrame, det: DetectionConfig,
                        n_bootstrap: int, seed: int) -> tuple[dict[str, Any], dict[str, FrocCurve]]:
    """FROC tables (``lesion`` and ``patient`` units) and curves of matched ``boxes`` (with ``tp``/``lesion``)
    over ``studies`` (study_id, patient_id)."""
    out: dict[str, Any] = {}
    curves: dict[str, FrocCurve] = {}
    ids = studies["study_id"].astype(str).tolist()
    for unit in ("lesion", "patient"):
        out[unit] = froc_table(boxes, lesions, studies, unit=unit, rates=det.fp_rates, n_bootstrap=n_bootstrap,
                               seed=seed)
        curves[unit] = froc_curve(boxes, lesions, ids, unit=unit)
    return out, curves


def _match(boxes: pd.DataFrame, lesions: pd.DataFrame, det: DetectionConfig, three_d: bool) -> pd.DataFrame:
    if three_d:
        return match_predictions(boxes, lesions, det.distance_px, det.z_fraction)
    return match_predictions(boxes.drop(columns=["z"]), lesions.drop(columns=["z"]), det.distance_px)


def run_detection_fold(cfg: ExperimentConfig, cohort: Cohort, studies: Sequence[DetStudy], fold: Fold,
                       fold_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one fold and predict its test studies; returns ``(box rows, study rows)``."""
    t0 = time.perf_counter()
    det = _det(cfg)
    tr, va, te = (fold.indices(cohort, p) for p in ("train", "val", "test"))
    model, best_epoch = train_detector(cfg, studies, tr, va, fold_dir, fold_seed(training_seed(cfg), fold.fold))
    rows, srows = [], []
    for i in te:
        st = studies[int(i)]
        df = predict_study(model, st, det)
        df.insert(0, "study_id", st.study_id)
        df.insert(1, "patient_id", st.patient_id)
        df.insert(2, "fold", fold.fold)
        rows.append(df)
        srows.append({"study_id": st.study_id, "patient_id": st.patient_id, "fold": fold.fold,
                      "n_lesions": len(st.lesions), "n_slices": st.n_slices, "n_boxes": len(df)})
    studies_df = pd.DataFrame(srows)
    lesions = lesion_table(studies, te)
    lesions.insert(2, "fold", fold.fold)
    boxes = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    boxes = _match(boxes, lesions, det, studies[0].three_d)
    atomic_write_text(fold_dir / "lesions.csv", lesions.to_csv(index=False))
    atomic_write_text(fold_dir / "predictions_slices.csv", boxes.to_csv(index=False))
    atomic_write_text(fold_dir / "predictions.csv", studies_df.to_csv(index=False))
    metrics, _ = evaluate_detections(boxes, lesions, studies_df, det, 0, cfg.seed)
    metrics["best_epoch"] = best_epoch
    epoch_rule = ({"split": "validation", "rule": "highest validation mean sensitivity of the slice crops (ties: "
                   "the later epoch)", "value": best_epoch} if len(va) else
                  {"split": "none", "rule": "last epoch (no validation set)", "value": best_epoch})
    metrics["selection"] = fold_selection(cfg, fold, best_epoch, epoch_rule)
    atomic_write_json(fold_dir / "metrics.json", metrics)
    atomic_write_json(fold_dir / "DONE", {"fold": fold.fold, "best_epoch": best_epoch,
                                          "seconds": round(time.perf_counter() - t0, 2), "train_studies": len(tr),
                                          "val_studies": len(va), "test_studies": len(te)})
    return boxes, studies_df


@register_run_kind("detection", "lesion detection (thesis A.8): YOLO-style grid detector per slice, volume "
                                "combination, merge-NMS, FROC")
@locks_run_folder
def run_detection_cv(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
                     executor: Executor | None = None) -> dict[str, Any]:
    """Cross-validate a detection config into ``out_dir`` (resume as :func:`cadx.runs.cv.run_cv`); returns the
    metrics (``lesion`` / ``patient`` FROC tables with CIs, ``folds``, ``run``)."""
    det = _det(cfg)
    out_dir, cohort, splits, t0 = start_run(cfg, out_dir, resume)
    probe = create_model(cfg.model.name, 0, 1, 2, **cfg.model.kwargs)
    cell, _ = _geometry(probe)
    studies = build_det_studies(cohort, det, cfg.input, cell)
    boxes, study_rows = run_folds(splits, out_dir, resume,
                                  lambda fold, fold_dir: run_detection_fold(cfg, cohort, studies, fold, fold_dir),
                                  executor)
    lesions = pd.concat([pd.read_csv(out_dir / f"fold_{f.fold}" / "lesions.csv") for f in splits],
                        ignore_index=True)
    boxes["tp"] = boxes["tp"].astype(bool)
    atomic_write_text(out_dir / "lesions.csv", lesions.to_csv(index=False))
    metrics, curves = evaluate_detections(boxes, lesions, study_rows, det, cfg.eval.bootstrap, cfg.seed)
    metrics["folds"] = {}
    for f in splits:
        m = boxes[boxes["fold"] == f.fold]
        s = study_rows[study_rows["fold"] == f.fold]
        lz = lesions[lesions["fold"] == f.fold]
        metrics["folds"][str(f.fold)], _ = evaluate_detections(m, lz, s, det, 0, cfg.seed)
    fig = plot_froc({f"{cfg.name} ({u})": c for u, c in curves.items()}, out_dir / "figures" / "froc.png",
                    xlabel="mean FPs per volume" if studies[0].three_d else "mean FPs per image")
    metrics["run"] = {"name": cfg.name, "dataset": cfg.data.dataset, "model": cfg.model.name,
                      "objective": cfg.objective, "folds": len(splits), "studies": len(studies),
                      "lesions": len(lesions), "working_size": det.size, "crop": det.crop,
                      "seconds": run_seconds(out_dir, t0), "figure": str(fig.relative_to(out_dir))}
    metrics["selection"] = run_selection(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
