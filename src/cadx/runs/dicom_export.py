"""``export_dicom``: predict one DICOM series with a trained run and write the answer as DICOM — ``seg.dcm`` (the
predicted mask as a DICOM SEG; segmentation runs) and ``sr.dcm`` (the finding as a TID 1500 SR) — so a PACS can
store it beside the images (``cadx export-dicom RUN --study SERIES_DIR --out DIR``).

The prediction is the one prediction path: :func:`cadx.runs.predict.predict_study` (which hands segmentation runs
to :func:`cadx.runs.seg_predict.predict_segmentation`); the mask it writes is read back and referenced to the
source images in the reader's slice order (:func:`cadx.dicom.seg.source_order`).

What goes into the SR (choices, stated because the issue leaves them open):

* classification runs: finding = the predicted class, probability = the model's probability of that class;
  attributes = the model's attribute scores when it predicts them;
* segmentation runs without classification: finding ``lesion`` (mask non-empty) or ``no lesion``; no probability
  (the run has none — none is invented); attributes ``lesion_voxels``, ``slices_with_lesion``,
  ``lesion_volume_mm3`` (voxels × voxel volume from the series' spacing);
* model name = ``model.name`` of the run's config; model version = ``<run folder name>-<first 8 hex digits of the
  sha256 of the config.yaml used>`` (changes whenever the run's configuration does);
* the operating-point wording (:func:`operating_point_wording`) is the viewer's sentence
  (:mod:`cadx.report.wording`, so a reader sees the same words in ``cadx serve`` and in the SR) plus the run's
  decision rule and its pooled CV AUC with its bootstrap CI from ``metrics.json`` — never a bare class name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cadx.data.readers import read_image
from cadx.data.readers_dicom import list_dicom_series
from cadx.dicom.seg import check_sources, source_order, write_seg
from cadx.dicom.sr import write_sr
from cadx.errors import CadxDataError
from cadx.report.wording import cv_figures, wording
from cadx.runs.folder import model_dirs, run_config
from cadx.runs.predict import predict_study
from cadx.utils import atomic_write_json

__all__ = ["export_dicom", "load_series", "model_identity", "operating_point_wording"]


def load_series(folder: str | Path, series_uid: str | None = None) -> tuple[list[Path], list[Dataset]]:
    """The files and datasets (pixels included) of the one DICOM series under ``folder`` (or ``series_uid``).

    Several series without ``series_uid``, an unknown ``series_uid`` or no DICOM files → CadxDataError naming the
    folder and the field (SeriesInstanceUID / path)."""
    folder = Path(folder)
    groups = list_dicom_series(folder)
    if not groups:
        # the reader groups files by SeriesInstanceUID; de-identified files with a blank one land in no group
        raise CadxDataError("no DICOM series with a SeriesInstanceUID found (de-identified files with blank UIDs: "
                            "cadx.dicom.identifiers.write_completed_series)", path=folder, field="path")
    if series_uid is None:
        if len(groups) > 1:
            raise CadxDataError(f"{len(groups)} series in the folder; pick one ({', '.join(sorted(groups))})",
                                path=folder, field="SeriesInstanceUID")
        series_uid = next(iter(groups))
    if series_uid not in groups:
        raise CadxDataError(f"series {series_uid} not found", path=folder, field="SeriesInstanceUID")
    files = groups[series_uid]
    return files, [pydicom.dcmread(f) for f in files]


def model_identity(run_dir: str | Path, fold: int | None = None, allow_partial: bool = False) -> tuple[str, str]:
    """``(model name, model version)`` of a run: ``model.name`` and ``<run folder name>-<sha256(config.yaml)[:8]>``
    of the config the predicting models were trained with."""
    run_dir = Path(run_dir)
    dirs = model_dirs(run_dir, fold, allow_partial)
    cfg = run_config(run_dir, dirs)
    cfg_file = dirs[0] / "config.yaml" if (dirs[0] / "config.yaml").is_file() else run_dir / "config.yaml"
    digest = hashlib.sha256(cfg_file.read_bytes()).hexdigest()[:8]
    return str(cfg.model.name), f"{run_dir.resolve().name}-{digest}"


def _ci(pooled: dict[str, Any], key: str) -> str:
    value = pooled.get(key)
    if value is None or not np.isfinite(float(value)):
        return ""
    ci = (pooled.get("ci") or {}).get(key)
    if ci and len(ci) == 2 and all(v is not None and np.isfinite(float(v)) for v in ci):
        return f"{float(value):.2f} [{float(ci[0]):.2f}, {float(ci[1]):.2f}]"
    return f"{float(value):.2f}"


def operating_point_wording(result: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """One sentence for the SR (pure function of ``predict_study``'s ``result`` and the run's ``metrics.json``).

    Classification: the viewer's sentence (:func:`cadx.report.wording.wording`: the positive class's probability
    and the CV sensitivity of a positive call, or the CV specificity of a negative one, with CIs), then the
    decision rule and the CV AUC: ``"malignant — model probability 0.82 (CV sensitivity 0.71 [0.60, 0.80] at
    this run's operating point, 120 studies); youden rule, threshold 0.43; CV AUC 0.80 [0.72, 0.87] (pooled, 95 %
    bootstrap CI)"``. The positive class is ``metrics["positive"]`` (default: the second class).
    Segmentation: ``"lesion — 1234 voxels on 5 slices; CV Dice 0.61 [0.48, 0.73] (mean per study, 95 % bootstrap
    CI)"`` or ``"no lesion — empty predicted mask; ..."``.
    """
    pooled = (metrics or {}).get("pooled") or {}
    if "prediction" in result and "probabilities" in result:
        probs = {str(k): float(v) for k, v in result["probabilities"].items()}
        classes = list(probs)
        positive = (metrics or {}).get("positive")
        positive = str(positive) if len(classes) == 2 and str(positive) in classes else None
        text = wording(str(result["prediction"]), probs, cv_figures(metrics or {}, classes, positive))
        dec = result.get("decision") or {}
        extra = f", threshold {float(dec['threshold']):.2f}" if dec.get("threshold") is not None else ""
        text += f"; {dec.get('rule', 'argmax')} rule{extra}"
        if auc := _ci(pooled, "auc"):
            text += f"; CV AUC {auc} (pooled, 95 % bootstrap CI)"
        return text
    n = int(result.get("lesion_voxels", 0))
    text = (f"lesion — {n} voxels on {int(result.get('slices_with_lesion', 0))} slices" if n
            else "no lesion — empty predicted mask")
    if d := _ci(pooled, "dice_mean"):
        text += f"; CV Dice {d} (mean per study, 95 % bootstrap CI)"
    return text


def _mask_zyx(path: str | Path, n_slices: int) -> np.ndarray:
    """The predicted mask file as bool ``(Z, Y, X)`` (a 2D PNG mask 0/255 becomes ``(1, Y, X)``)."""
    arr = np.asarray(read_image(path).array)[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] != n_slices:
        raise CadxDataError(f"mask has {arr.shape[0]} slices, the series {n_slices}", path=path, field="mask")
    return arr > 0


def export_dicom(run_dir: str | Path, study: str | Path, out: str | Path, *, fold: int | None = None,
                 allow_partial: bool = False, series_uid: str | None = None,
                 uid_seed: str | None = None) -> dict[str, Any]:
    """Predict the DICOM series folder ``study`` with the run and write ``out/seg.dcm`` (segmentation runs),
    ``out/sr.dcm`` and ``out/export.json``; returns that JSON's dict: ``{"study", "run", "model_name",
    "model_version", "prediction" (predict_study's result), "wording", "StudyInstanceUID",
    "source_series_uid", "seg": {"path", "SeriesInstanceUID", "SOPInstanceUID", "frames"} | None,
    "sr": {"path", "SeriesInstanceUID", "SOPInstanceUID"}}``.

    Source images with blank UIDs, several series, a mask whose slice count differs from the series → one-line
    CadxDataError naming the folder and the field. ``uid_seed`` makes the new UIDs deterministic.
    """
    run_dir, study, out = Path(run_dir), Path(study), Path(out)
    files, datasets = load_series(study, series_uid)
    check_sources(datasets, str(study))
    out.mkdir(parents=True, exist_ok=True)
    result = predict_study(run_dir, study, out_dir=out, fold=fold, allow_partial=allow_partial)
    name, version = model_identity(run_dir, fold, allow_partial)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    wording = operating_point_wording(result, metrics)
    ordered = [datasets[i] for i in source_order(datasets)]
    seg = None
    summary: dict[str, Any] = {"study": str(study), "run": str(run_dir), "model_name": name,
                               "model_version": version, "prediction": result, "wording": wording,
                               "StudyInstanceUID": str(ordered[0].StudyInstanceUID),
                               "source_series_uid": str(ordered[0].SeriesInstanceUID), "seg": None}
    if "mask" in result:
        mask = _mask_zyx(result["mask"], len(ordered))
        seg = write_seg(datasets, mask, algorithm_name=name, algorithm_version=version,
                        uid_seed=uid_seed, where=str(study))
        seg.save_as(out / "seg.dcm", enforce_file_format=True)
        summary["seg"] = {"path": str(out / "seg.dcm"), "SeriesInstanceUID": str(seg.SeriesInstanceUID),
                          "SOPInstanceUID": str(seg.SOPInstanceUID), "frames": int(seg.NumberOfFrames)}
    if "prediction" in result and "probabilities" in result:
        finding = str(result["prediction"])
        probability: float | None = float(result["probabilities"][finding])
        attrs = {str(k): float(v) for k, v in (result.get("attributes") or {}).items()}
    else:
        n = int(result.get("lesion_voxels", 0))
        finding, probability = ("lesion" if n else "no lesion"), None
        img_spacing = [float(v) for v in ordered[0].PixelSpacing] if "PixelSpacing" in ordered[0] else [1.0, 1.0]
        z_sp = _z_spacing(ordered)
        attrs = {"lesion_voxels": float(n), "slices_with_lesion": float(result.get("slices_with_lesion", 0)),
                 "lesion_volume_mm3": float(n) * img_spacing[0] * img_spacing[1] * z_sp}
    sr = write_sr(datasets, finding=finding, probability=probability, model_name=name, model_version=version,
                  attributes=attrs, operating_point=wording, seg=seg, uid_seed=uid_seed, where=str(study))
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    summary["sr"] = {"path": str(out / "sr.dcm"), "SeriesInstanceUID": str(sr.SeriesInstanceUID),
                     "SOPInstanceUID": str(sr.SOPInstanceUID)}
    summary["source_files"] = len(files)
    atomic_write_json(out / "export.json", summary)
    return summary


def _z_spacing(ordered: list[Dataset]) -> float:
    """Slice gap in mm between the first two sorted images (their positions), else SliceThickness, else 1."""
    if len(ordered) > 1 and all("ImagePositionPatient" in d for d in ordered[:2]):
        a, b = (np.asarray([float(v) for v in d.ImagePositionPatient]) for d in ordered[:2])
        return float(np.linalg.norm(b - a))
    return float(ordered[0].get("SliceThickness", 1.0) or 1.0)
