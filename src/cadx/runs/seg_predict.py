"""``predict_segmentation``: the lesion mask (and vote) of a new study with a trained segmentation run.

The run's fold models (or ``final/``, or one fold's model) are averaged (probabilities at the input size); the
mask is built by the one segmentation prediction of cross-validation
(:func:`cadx.runs.segmentation.predict_volume`: resize back to the original grid, threshold/argmax, optional largest
component) and written beside the result: ``<stem>_mask.nii.gz`` for a volume (values 0/1, the input's
spacing/origin/direction) or ``<stem>_mask.png`` for a 2D image (values 0/255, like BUSI's masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.data.image import ImageData
from cadx.data.readers import read_image, write_image
from cadx.errors import CadxConfigError
from cadx.pipeline.preprocess import normalize_intensity
from cadx.pipeline.seg_items import image_items, seg_settings
from cadx.runs.finished import model_dirs, run_config, run_models
from cadx.runs.onnx_backend import export_folder, export_model_dirs
from cadx.runs.seg_inference import load_models, predict_volume, vote_rows

__all__ = ["is_segmentation_run", "predict_segmentation"]


def is_segmentation_run(run_dir: str | Path) -> bool:
    """True when the run's config has a ``segmentation`` section (then ``cadx predict`` should call
    :func:`predict_segmentation`)."""
    run_dir = Path(run_dir)
    return run_config(run_dir, run_models(run_dir, allow_partial=True)).segmentation is not None


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".dcm"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def predict_segmentation(run_dir: str | Path, path: str | Path, out_dir: str | Path | None = None,
                         fold: int | None = None, dirs: list[Path] | None = None, backend: str = "torch"
                         ) -> dict[str, Any]:
    """Segment one study (volume or 2D image file, DICOM folder) with a segmentation run.

    ``backend="onnx"``: ``run_dir`` is the run's ONNX export (``cadx export``; or a run holding one in ``onnx/``) and
    its ``model.onnx`` files are run by onnxruntime; the rest is the same.

    ``fold``: predict with that fold's model only (default: ``final/`` when trained, else the mean of the fold
    models; ``dirs`` = those folders when already chosen, e.g. by ``cadx predict --allow-partial``). The mask
    is :func:`cadx.runs.segmentation.predict_volume`'s, as in CV. Writes it into ``out_dir``
    (default: ``<run_dir>/predictions``) and returns ``{"study", "mask" (path), "lesion_voxels",
    "slices_with_lesion", "models", "items"}`` plus, for runs with classification, ``"probabilities"`` (vote
    fractions), ``"prediction"`` and ``"vote_fallback"``.
    """
    run_dir, path = Path(run_dir), Path(path)
    if backend == "onnx":
        run_dir = export_folder(run_dir)
        dirs = export_model_dirs(run_dir, fold) if dirs is None or fold is not None else dirs
    elif dirs is None or fold is not None:  # a fold's model needs only that fold finished
        dirs = model_dirs(run_dir, fold)
    cfg = run_config(run_dir, dirs)
    if cfg.segmentation is None:
        raise CadxConfigError(f"{run_dir}: not a segmentation run (no segmentation section); use predict_study")
    img = read_image(path)
    arr = normalize_intensity(np.asarray(img.array), cfg.input)
    items, _, _, _ = image_items(arr, None, cfg.input, seg_settings(cfg))
    images = torch.from_numpy(np.stack(items).astype(np.float32))
    models, spec = load_models(dirs, int(images.shape[1]), backend)
    vp = predict_volume(cfg, models, images, tuple(arr.shape[1:]))
    mask = vp.mask
    out = Path(out_dir) if out_dir is not None else run_dir / "predictions"
    if mask.ndim == 3:
        dst = out / f"{_stem(path)}_mask.nii.gz"
        write_image(ImageData(mask.astype(np.uint8)[None], img.spacing, img.origin, img.direction), dst)
    else:
        dst = out / f"{_stem(path)}_mask.png"
        write_image(ImageData((mask.astype(np.uint8) * 255)[None], img.spacing), dst)
    result: dict[str, Any] = {"study": str(path), "mask": str(dst), "lesion_voxels": int(mask.sum()),
                              "slices_with_lesion": int((vp.pred_pixels > 0).sum()), "models": len(dirs),
                              "items": int(images.shape[0])}
    classes = list(spec.get("classes", []))
    if vp.proba is not None and classes and cfg.task.classification:
        df = pd.DataFrame({"study_id": str(path), "pred_pixels": vp.pred_pixels,
                           **{f"p_{c}": vp.proba[:, j] for j, c in enumerate(classes)}})
        v = vote_rows(df, classes, seg_settings(cfg).vote_min_pixels).iloc[0]
        result["probabilities"] = {c: float(v[f"p_{c}"]) for c in classes}
        result["prediction"] = str(v["y_pred"])
        result["vote_fallback"] = bool(v["vote_fallback"])
    return result
