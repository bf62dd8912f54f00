"""``predict_study``: a new DICOM folder / volume / image through the prediction path of
:mod:`cadx.runs.inference` (``cadx predict``; ``train_final`` is in :mod:`cadx.runs.final`).

Imports only what predicting uses (``tests/test_predict_imports.py``): no Lightning (models come back through
:mod:`cadx.training.checkpoint`), no MONAI package import from the preprocessing (a network built from MONAI blocks
still imports MONAI with the torch backend; the ONNX backend builds no network), no scikit-learn unless the run
classifies with an SVM (its ``svm.pkl`` is unpickled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cadx.config import load_config
from cadx.data.image import LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError
from cadx.pipeline.items import build_store
from cadx.runs.finished import model_dirs, run_config
from cadx.runs.inference import Predictor, load_predictor, predict_rows
from cadx.runs.onnx_backend import export_folder, export_model_dirs
from cadx.runs.seg_predict import predict_segmentation

__all__ = ["predict_study"]


def predict_study(run_dir: str | Path, path: str | Path, mask: str | Path | None = None,
                  box: tuple[int, ...] | list[int] | None = None, out_dir: str | Path | None = None,
                  covariates: dict[str, float] | None = None, fold: int | None = None,
                  allow_partial: bool = False, backend: str = "torch",
                  predictors: list[Predictor] | None = None) -> dict[str, Any]:
    """Predict one study (DICOM folder, volume or image file) with a trained run, exactly as its CV scored studies.

    The file becomes a one-study cohort that goes through the run's preprocessing (:func:`build_store`) and the
    prediction path (:func:`cadx.runs.inference.predict_rows`: item outputs → ``eval.aggregation`` →
    ``eval.decision``). ROI inputs use ``box`` (voxel indices, array order, stop-exclusive) or the bounding box of
    ``mask`` (a label image of the image's shape), else the whole image (volumes: the central slice for 2D inputs).
    ``covariates`` {name: number}: the study's metadata the run's input needs — ``input.diameter_attribute``
    (e.g. ``diameter_mm``) for a diameter-adaptive ROI and every ``input.covariate_channels`` name (an error names a
    missing one).

    Models: ``fold`` = that fold's model with that fold's decision parameters (so the answer equals the fold's row in
    ``predictions.csv`` for a study of its test set); default ``final/`` when trained, else the mean of the fold
    models' outputs decided with the mean of their priors / Youden thresholds
    (:func:`cadx.runs.inference.combine_decisions`).

    ``backend="onnx"``: the same path with the run's ONNX export (``cadx export``; ``run_dir`` is the export folder
    or a run holding one in ``onnx/``) run by onnxruntime; the models are the export's (``fold`` picks one of them),
    the config its ``config.yaml``; a segmentation run's masks come from the same
    :func:`~cadx.runs.seg_predict.predict_segmentation` with the ONNX models.

    ``predictors``: the models of ``dirs`` already loaded (:func:`cadx.runs.inference.load_predictor`, same order
    as :func:`cadx.runs.folder.model_dirs`), for a caller that predicts many studies with one run (``cadx serve``);
    ignored for segmentation runs. Default: loaded from the run folder on every call.

    Returns ``{"study", "probabilities": {class: p} (vote: vote fractions), "prediction", "decision" (rule and
    parameters used), "attributes" (when the model predicts them), "models": n, "items": n}``. A segmentation run
    is handed to :func:`cadx.runs.seg_predict.predict_segmentation` (mask written into ``out_dir``, default
    ``<run>/predictions``; its path under ``"mask"``).
    """
    run_dir = Path(run_dir)
    if backend == "onnx":
        exported = export_folder(run_dir)
        dirs = export_model_dirs(exported, fold)
        cfg = load_config(exported / "config.yaml", check_options=False)   # checked when the run was made
        if cfg.segmentation is not None:
            return predict_segmentation(exported, path, out_dir, fold=fold, dirs=dirs, backend="onnx")
    elif backend == "torch":
        dirs = model_dirs(run_dir, fold, allow_partial)
        cfg = run_config(run_dir, dirs, check_options=False)   # the network checks its own options
    else:
        raise CadxConfigError(f"--backend {backend}: use torch or onnx")
    if cfg.segmentation is not None:
        return predict_segmentation(run_dir, path, out_dir, fold=fold, dirs=dirs)
    img = read_image(path)
    nd = img.array.ndim - 1
    boxes = [tuple(int(v) for v in box)] if box is not None else []
    if boxes and len(boxes[0]) != 2 * nd:
        raise CadxConfigError(f"box needs {2 * nd} numbers for this image, got {len(boxes[0])}")
    masks = {}
    if mask is not None:
        mimg = read_image(mask)
        masks["mask"] = LazyImage(lambda: mimg, str(mask))
    if predictors is None:
        predictors = [load_predictor(d, backend) for d in dirs]
    elif len(predictors) != len(dirs):
        raise CadxConfigError(f"predictors: {len(predictors)} given for the run's {len(dirs)} model folder(s)")
    spec = predictors[0].spec
    classes = [str(c) for c in spec.get("classes", [])]
    attrs = [str(a) for a in spec.get("attributes", [])]
    study = Study(str(path), str(path), images={"image": LazyImage(lambda: img, str(path))},
                  attributes=dict(covariates or {}), masks=masks, boxes=boxes)
    store = build_store(Cohort([study], classes=classes, source=str(path)), cfg, classes=classes, attributes=attrs,
                        progress=False, cache=False)  # one study: nothing to share, no cache entry per prediction
    res = predict_rows(cfg, store, np.arange(len(store)), predictors, -1 if fold is None else int(fold))
    row = res.studies.iloc[0]
    result: dict[str, Any] = {"study": str(path), "models": len(dirs), "items": len(store), "backend": backend}
    if classes and f"p_{classes[0]}" in row:
        result["probabilities"] = {c: float(row[f"p_{c}"]) for c in classes}
        result["prediction"] = str(row["y_pred"])
        result["decision"] = res.decision
    if attrs and f"pred_{attrs[0]}" in row:
        result["attributes"] = {a: float(row[f"pred_{a}"]) for a in attrs}
    return result
