"""The one segmentation prediction, as CV, ``cadx evaluate`` and ``cadx predict`` apply it: fold models →
slice probabilities (:func:`predict_items`) → the study's original grid, decided, largest component
(:func:`final_masks`) → :class:`VolumePrediction` (:func:`predict_volume`); the slice vote (:func:`vote_rows`).

Split out of :mod:`cadx.runs.segmentation` (the run kind, which imports it back) so that ``cadx predict`` loads it
without the training stack (Lightning, the data check, the report writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cadx.config import ExperimentConfig
from cadx.errors import CadxDataError
from cadx.evaluation.aggregation import aggregate_predictions
from cadx.evaluation.overlap import dice, largest_connected_component
from cadx.pipeline.seg_items import lesion_channel, seg_settings
from cadx.runs.inference import device, tta_flips
from cadx.runs.onnx_backend import MODEL_FILE, load_onnx_module
from cadx.training.checkpoint import load_module

__all__ = ["VolumePrediction", "final_masks", "load_models", "predict_items", "predict_volume", "vote_rows"]


def load_models(model_dirs: Sequence[Path], in_channels: int, backend: str = "torch"
                ) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """The ``checkpoint_best.ckpt`` models of ``model_dirs`` and the last one's spec; CadxDataError naming the
    checkpoint when a model does not take ``in_channels`` input channels. ``backend="onnx"``: the ``model.onnx``
    of an export's model folders, run by onnxruntime (:class:`cadx.runs.onnx_backend.OnnxModule`)."""
    models: list[torch.nn.Module] = []
    spec: dict[str, Any] = {}
    for d in model_dirs:
        ckpt = Path(d) / (MODEL_FILE if backend == "onnx" else "checkpoint_best.ckpt")
        model, spec = load_onnx_module(ckpt) if backend == "onnx" else load_module(ckpt)
        if int(spec["in_channels"]) != in_channels:
            raise CadxDataError(f"the model takes {spec['in_channels']} channel(s), the input has {in_channels}",
                                path=ckpt, field="in_channels")
        models.append(model)
    return models, spec


@torch.no_grad()
def predict_items(models: Sequence[torch.nn.Module], images: torch.Tensor, batch_size: int = 64, tta: str = "none"
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean over ``models`` of ``(seg probabilities (N, S, h, w), class probabilities (N, K) or None)``.

    ``tta="flips"`` (``eval.tta``): each model's probabilities are also the mean over the views of
    :func:`cadx.runs.inference.tta_flips` (identity, each in-plane axis flipped), every segmentation view flipped
    back onto the input's grid before averaging; probabilities, not logits, are averaged."""
    dev = device()
    views = tta_flips(images.ndim - 2) if tta == "flips" else [()]
    seg_sum: np.ndarray | None = None
    cls_sum: np.ndarray | None = None
    for model in models:
        model = model.to(dev).eval()
        segs, clss = [], []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(dev)
            seg_views, cls_views = [], []
            for v in views:
                out = model(x.flip(v) if v else x)
                s = out["seg_logits"].float()
                p = torch.sigmoid(s) if s.shape[1] == 1 else torch.softmax(s, 1)
                seg_views.append(p.flip(v) if v else p)
                if "logits" in out:
                    cls_views.append(torch.softmax(out["logits"].float(), 1))
            segs.append(torch.stack(seg_views).mean(0).cpu().numpy())
            if cls_views:
                clss.append(torch.stack(cls_views).mean(0).cpu().numpy())
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


@dataclass
class VolumePrediction:
    """One study's segmentation: ``mask`` (bool, the study's original grid ``(Z, H, W)`` or ``(H, W)``),
    ``row`` (``n_slices``, ``pred_voxels``; with a ground truth ``dice`` and ``lesion_voxels``),
    ``pred_pixels`` ``(N,)`` lesion pixels of each item's slice in the final mask, ``proba`` ``(N, K)`` class
    probabilities per item (None without a classification head)."""

    mask: np.ndarray
    row: dict[str, Any]
    pred_pixels: np.ndarray
    proba: np.ndarray | None


def predict_volume(cfg: ExperimentConfig, models: Sequence[torch.nn.Module], images: torch.Tensor,
                   shape: tuple[int, ...], gt: np.ndarray | None = None) -> VolumePrediction:
    """THE segmentation prediction of one study (CV, ``cadx evaluate`` and ``cadx predict`` all call it).

    ``images`` ``(N, C, h, w)``: every item of the study in slice order (:func:`cadx.pipeline.seg_items.image_items`);
    ``shape``: the original spatial shape. Probabilities are averaged over ``models`` (and the ``eval.tta``
    views), resized back to ``shape``, decided and post-processed (:func:`final_masks` with the config's
    ``largest_component``/``connectivity``);
    ``dice`` = :func:`cadx.evaluation.dice` of the whole volume against ``gt`` (both empty → 1.0, one empty → 0.0).
    """
    s = seg_settings(cfg)
    seg, proba = predict_items(models, images, cfg.train.eval_batch_size, cfg.eval.tta)
    mask = final_masks(seg, shape, lesion_channel(cfg), s.largest_component, s.connectivity)
    row: dict[str, Any] = {"n_slices": int(seg.shape[0]), "pred_voxels": int(mask.sum())}
    if gt is not None:
        if gt.shape != mask.shape:
            raise CadxDataError(f"ground-truth mask shape {gt.shape} differs from the image's {mask.shape}",
                                field="mask")
        row["dice"] = dice(mask, gt)
        row["lesion_voxels"] = int(gt.sum())
    return VolumePrediction(mask, row, mask.reshape(seg.shape[0], -1).sum(1), proba)


def vote_rows(slices: pd.DataFrame, classes: list[str], min_pixels: int) -> pd.DataFrame:
    """Study rows by majority vote over the slices with ≥ ``min_pixels`` predicted lesion pixels (all slices
    when none has); adds ``vote_slices`` and ``vote_fallback``."""
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
