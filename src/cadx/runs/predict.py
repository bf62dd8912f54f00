"""``train_final`` (one model on all studies) and ``predict_study`` (a new DICOM folder / volume / image)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.classical.svm import EmbeddingSVM
from cadx.runs.folder import load_cohort, run_config, run_models
from cadx.runs.network import fit_svm
from cadx.runs.inference import ensemble_proba, infer
from cadx.pipeline.preprocess import StudyPreprocessor
from cadx.pipeline.items import build_store
from cadx.training.trainer import fit, fold_seed, load_module
from cadx.errors import CadxConfigError, CadxDataError
from cadx.utils import atomic_write_json


def train_final(cfg: ExperimentConfig, out_dir: str | Path) -> Path:
    """Train one model on every labelled study of the cohort into ``out_dir/final`` (no validation set: the last
    epoch is used) and return that folder. With ``eval.classifier: svm`` the SVM is fitted on all items too.
    ``out_dir/config.yaml`` is written unless the folder already holds a run (then ``final/config.yaml`` only).
    """
    out_dir = Path(out_dir)
    final = out_dir / "final"
    final.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (out_dir / "config.yaml").is_file():
        cfg.save(out_dir / "config.yaml")
    cfg.save(final / "config.yaml")
    for stale in ("checkpoint_last.ckpt", "checkpoint_best.ckpt", "DONE"):
        (final / stale).unlink(missing_ok=True)
    cohort = load_cohort(cfg, out_dir)
    store = build_store(cohort, cfg, progress=cfg.train.progress)
    items = np.arange(len(store))
    seed = fold_seed(cfg.seed, -1)
    module = fit(cfg, store, items, np.zeros(0, np.int64), final, seed)
    if cfg.eval.classifier == "svm":
        fit_svm(cfg, store, module.model, items, seed, final / "svm.pkl")
    atomic_write_json(final / "DONE", {"fold": "final", "studies": len(cohort), "items": len(store),
                                       "seconds": round(time.perf_counter() - t0, 2)})
    return final


def ensemble_outputs(cfg: ExperimentConfig, model_dirs: list[Path], images: torch.Tensor,
                     masks: torch.Tensor | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Mean over the models in ``model_dirs`` of the item outputs (SVM probabilities where a fold has one)."""
    tables: list[dict[str, np.ndarray]] = []
    spec: dict[str, Any] = {}
    for d in model_dirs:
        model, spec = load_module(d / "checkpoint_best.ckpt")
        if images.shape[1] != spec["in_channels"]:
            raise CadxDataError(f"the model takes {spec['in_channels']} channel(s), the input has {images.shape[1]}",
                                path=d, field="image")
        svm_path = d / "svm.pkl"
        svm = EmbeddingSVM.load(svm_path) if svm_path.is_file() else None
        out = infer(model, images, cfg.train.eval_batch_size,
                    features=cfg.eval.svm_features if svm is not None else None, masks=masks, tta=cfg.eval.tta)
        if svm is not None:
            out["proba"] = svm.predict_proba(out.pop("features"))
        tables.append(out)
    return ensemble_proba(tables), spec


def _aggregate(p: np.ndarray, method: str) -> np.ndarray:
    if method == "max":
        return p.max(0)
    if method == "vote":
        return np.bincount(p.argmax(1), minlength=p.shape[1]) / p.shape[0]
    return p.mean(0)


def predict_study(run_dir: str | Path, path: str | Path, mask: str | Path | None = None,
                  box: tuple[int, ...] | list[int] | None = None, out_dir: str | Path | None = None,
                  covariates: dict[str, float] | None = None) -> dict[str, Any]:
    """Predict one study (DICOM folder, volume or image file) with a trained run.

    ``covariates`` {name: number}: the study's metadata the run's input needs — ``input.diameter_attribute``
    (e.g. ``diameter_mm``) for a diameter-adaptive ROI (else the ROI falls back to the box or whole image) and
    every ``input.covariate_channels`` name (an error names a missing one).

    The run's preprocessing is applied; ROI inputs use ``box`` (voxel indices, array order, stop-exclusive) or the
    bounding box of ``mask`` (a label image), else the whole image (volumes: the central slice for 2D inputs).
    Item outputs are averaged over the fold models (or the ``final/`` model) and aggregated over slices with the
    run's ``eval.aggregation``. Returns ``{"study", "probabilities": {class: p}, "prediction", "attributes"
    (when the model predicts them), "models": n, "items": n}``. A segmentation run (config with a
    ``segmentation`` section) is handed to :func:`cadx.runs.seg_predict.predict_segmentation`, which also
    writes the predicted mask (NIfTI for volumes, PNG for images) into ``out_dir`` (default
    ``<run>/predictions``) and returns its path under ``"mask"``.
    """
    from cadx.data.readers import read_image

    run_dir = Path(run_dir)
    dirs = run_models(run_dir)
    cfg = run_config(run_dir, dirs)
    if cfg.segmentation is not None:
        from cadx.runs.seg_predict import predict_segmentation

        return predict_segmentation(run_dir, path, out_dir)
    img = read_image(path)
    m = None
    if mask is not None:
        marr = read_image(mask).array
        m = (marr[:1] > 0) if marr.ndim == img.array.ndim else (marr[None] > 0)
        if m.shape[1:] != img.array.shape[1:]:
            raise CadxDataError(f"mask shape {m.shape[1:]} differs from the image's {img.array.shape[1:]}",
                                path=mask, field="mask")
    boxes = [tuple(int(v) for v in box)] if box is not None else []
    if boxes and len(boxes[0]) != 2 * (img.array.ndim - 1):
        raise CadxConfigError(f"box needs {2 * (img.array.ndim - 1)} numbers for this image, got {len(boxes[0])}")
    pre = StudyPreprocessor(cfg.input, with_masks=False)
    cov = dict(covariates or {})
    items, _, _ = pre.items(img, m, boxes, diameter_mm=cov.get(cfg.input.diameter_attribute), source=str(path),
                            covariates=cov)
    images = torch.from_numpy(np.stack(items).astype(np.float32))
    out, spec = ensemble_outputs(cfg, dirs, images)
    result: dict[str, Any] = {"study": str(path), "models": len(dirs), "items": int(images.shape[0])}
    classes = spec.get("classes", [])
    if "proba" in out:
        p = _aggregate(out["proba"], cfg.eval.aggregation)
        result["probabilities"] = {c: float(v) for c, v in zip(classes, p, strict=True)}
        result["prediction"] = classes[int(np.argmax(p))]
    if "attributes" in out:
        result["attributes"] = {a: float(v) for a, v in zip(spec.get("attributes", []), out["attributes"].mean(0),
                                                             strict=True)}
    return result

