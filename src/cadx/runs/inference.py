"""Model outputs on stored items → slice-level rows → study-level predictions (aggregation + decision)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.pipeline.items import ItemStore


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def tta_flips(spatial_dims: int) -> list[tuple[int, ...]]:
    """Flip sets of ``eval.tta: flips``: the identity and each single spatial axis flipped (``1 + dims`` views).

    Axes are tensor dims of ``(B, C, *spatial)``; the identity is ``()``."""
    return [(), *[(2 + a,) for a in range(spatial_dims)]]


@torch.no_grad()
def infer(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, features: str | None = None,
          masks: torch.Tensor | None = None, tta: str = "none") -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) over ``images`` ``(N, C, *size)``.

    Returns ``proba`` ``(N, K)`` (softmax of logits, when the model has logits), ``attributes`` ``(N, A)``,
    ``features`` ``(N, D)`` when ``features`` is ``"features"`` or ``"embedding"`` (the last stage embedding), and,
    for segmentation models with ``masks`` given, ``inter``/``pred_sum``/``true_sum`` voxel counts ``(N,)``.
    ``tta="flips"``: probabilities, attributes and features are the mean over :func:`tta_flips` views (the
    segmentation counts always come from the unflipped view).
    """
    dev = device()
    model = model.to(dev).eval()
    views = tta_flips(images.ndim - 2) if tta == "flips" else [()]
    acc: dict[str, list[np.ndarray]] = {}
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(dev)
        outs = [model(x.flip(v) if v else x) for v in views]
        out = outs[0]
        if "logits" in out:
            p = torch.stack([torch.softmax(o["logits"].float(), 1) for o in outs]).mean(0)
            acc.setdefault("proba", []).append(p.cpu().numpy())
        if "attributes" in out:
            a = torch.stack([o["attributes"].float() for o in outs]).mean(0)
            acc.setdefault("attributes", []).append(a.cpu().numpy())
        if features is not None:
            fs = [o["embeddings"][-1] if features == "embedding" and "embeddings" in o else o["features"]
                  for o in outs]
            acc.setdefault("features", []).append(torch.stack([f.float() for f in fs]).mean(0).cpu().numpy())
        if "seg_logits" in out and masks is not None:
            s = out["seg_logits"].float()
            pred = (s.argmax(1, keepdim=True) > 0) if s.shape[1] > 1 else (s > 0)
            t = masks[i:i + batch_size].to(dev) > 0.5
            dims = tuple(range(1, pred.ndim))
            acc.setdefault("inter", []).append((pred & t).sum(dims).cpu().numpy())
            acc.setdefault("pred_sum", []).append(pred.sum(dims).cpu().numpy())
            acc.setdefault("true_sum", []).append(t.sum(dims).cpu().numpy())
    model.cpu()
    return {k: np.concatenate(v) for k, v in acc.items()}


def slice_rows(store: ItemStore, items: np.ndarray, outputs: dict[str, np.ndarray], fold: int) -> pd.DataFrame:
    """One row per item: ``study_id, patient_id, fold, item, slice, y_true, p_<class>..., pred_<a>/true_<a>``
    plus the segmentation counts."""
    st = store.study[items]
    df = pd.DataFrame({
        "study_id": [store.study_ids[s] for s in st],
        "patient_id": [store.patient_ids[s] for s in st],
        "fold": fold,
        "item": items,
        "slice": store.slice_pos[items],
        "y_true": [store.classes[y] if y >= 0 else None for y in store.labels[st]],
    })
    if "proba" in outputs:
        for j, c in enumerate(store.classes):
            df[f"p_{c}"] = outputs["proba"][:, j]
    if "attributes" in outputs:
        for j, a in enumerate(store.attribute_names):
            df[f"pred_{a}"] = outputs["attributes"][:, j]
            df[f"true_{a}"] = store.attributes[st, j]
    for k in ("inter", "pred_sum", "true_sum"):
        if k in outputs:
            df[k] = outputs[k]
    return df


def study_rows(slices: pd.DataFrame, classes: Sequence[str], method: str) -> pd.DataFrame:
    """Aggregate item rows per study (``aggregate_predictions``); per-study Dice from summed voxel counts (both masks
    empty → 1.0, the rule of :func:`cadx.evaluation.dice`)."""
    from cadx.evaluation.aggregation import aggregate_predictions

    seg = [c for c in ("inter", "pred_sum", "true_sum") if c in slices.columns]
    base = slices.drop(columns=[*seg, "item", "slice"], errors="ignore")
    if any(c.startswith("p_") for c in base.columns):
        out = aggregate_predictions(base, by="study_id", method=method,  # type: ignore[arg-type]
                                    prob_cols=[f"p_{c}" for c in classes])
    else:
        g = base.groupby("study_id", sort=False)
        out = g.first().reset_index()[[c for c in ("study_id", "patient_id", "fold", "y_true") if c in base]]
        extra = [c for c in base.columns if c.startswith(("pred_", "true_"))]
        if extra:
            out[extra] = g[extra].mean().reindex(out["study_id"]).to_numpy()
    if seg:
        sums = slices.groupby("study_id", sort=False)[seg].sum().reindex(out["study_id"])
        den = (sums["pred_sum"] + sums["true_sum"]).to_numpy(float)
        from cadx.evaluation.overlap import dice

        both_empty = dice(np.zeros(0, bool), np.zeros(0, bool))  # the documented rule: both empty → 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            out["dice"] = np.where(den > 0, 2 * sums["inter"].to_numpy(float) / den, both_empty)
        out["lesion_voxels"] = sums["true_sum"].to_numpy()
    return out


def decide_rows(df: pd.DataFrame, classes: Sequence[str], rule: str, train_y: np.ndarray | None = None,
                fit_df: pd.DataFrame | None = None, priors: Sequence[float] | None = None,
                threshold: float | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Set ``y_pred`` by ``rule`` (argmax | prior with training class frequencies | youden with a threshold fitted
    on ``fit_df`` — training or validation studies, never the test set). Under argmax an existing ``y_pred`` (from
    the aggregation, e.g. a majority vote) is kept. Given ``priors``/``threshold`` are used as they are.
    Returns the table and the decision parameters used."""
    from cadx.evaluation.thresholds import class_priors, decide, youden_threshold

    cols = [f"p_{c}" for c in classes]
    if not classes or cols[0] not in df.columns:
        return df, {"rule": rule}
    info: dict[str, Any] = {"rule": rule}
    if rule == "argmax" and "y_pred" in df.columns:
        return df, info
    proba = df[cols].to_numpy(float)
    if rule == "prior":
        pri = np.asarray(priors) if priors is not None else \
            class_priors(train_y, len(classes)) if train_y is not None else None
        info["priors"] = None if pri is None else [float(v) for v in pri]
        pred = decide(proba, "prior", priors=pri)
    elif rule == "youden":
        thr = 0.5 if threshold is None else float(threshold)
        if threshold is None and fit_df is not None and len(fit_df) and len(classes) == 2:
            lut = {c: i for i, c in enumerate(classes)}
            y = fit_df["y_true"].map(lut).to_numpy()
            ok = ~pd.isna(y)
            if ok.any() and np.unique(y[ok].astype(int)).size == 2:
                thr = youden_threshold(y[ok].astype(int), fit_df.loc[ok, cols[1]].to_numpy(float))
        info["threshold"] = float(thr)
        pred = decide(proba, "youden", threshold=thr)
    else:
        pred = decide(proba, "argmax")
    df = df.copy()
    df["y_pred"] = [classes[i] for i in pred]
    return df, info


def ensemble_proba(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean of several models' outputs (probabilities, attributes, counts) item by item."""
    keys = set.intersection(*(set(t) for t in tables))
    return {k: np.mean([t[k] for t in tables], axis=0) for k in keys if k != "features"}
