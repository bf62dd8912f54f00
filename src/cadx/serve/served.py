"""The runs a server serves: what each one is (classifier, segmentation or detection), its fingerprint (the cache
key: recomputed only when it changes) and how a study is predicted with it — always through the run's one
prediction path (:func:`cadx.runs.predict.predict_study` for classifiers and segmentation runs, whose masks come
from :func:`cadx.runs.seg_predict.predict_segmentation`; :func:`cadx.runs.detection.predict_study` for detectors).

Choices (stated in docs/serve.md):

* The worklist's model is the first classifier run given (else the first segmentation run with classification);
  later classifier runs are predicted and cached too (every run's answer is in ``GET /api/studies/{id}`` under
  ``runs``) but the row shows the first one. A run whose classes differ from the first classified run's is not
  served: its message is shown on the page and logged, the others are served.
* Detection runs have no ``final/`` model: every finished fold's detector predicts the study and the boxes of all
  folds are merged by the run's own merge-NMS (``detection.nms_iou``/``nms_ratio``). A 3D box is drawn on its
  centre slice.
* Grad-CAM (:func:`cadx.explain.gradcam.grad_cam`) uses the first model folder of the run (``final/`` or
  ``fold_0``), on exactly the items the prediction path built, for the predicted class; each item's map is put back
  on the image through the crop it was resized from (``StudyPreprocessor.items(regions=...)``); overlapping items
  keep the maximum. Pixels no item covers are NaN (transparent).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.data.image import LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Study
from cadx.errors import CadxConfigError, CadxDataError, CadxError
from cadx.evaluation.summary import positive_index
from cadx.explain.gradcam import grad_cam
from cadx.models import create_model
from cadx.pipeline.det_items import build_det_study
from cadx.pipeline.preprocess import StudyPreprocessor, resize, study_number
from cadx.report.wording import CvFigures, cv_figures
from cadx.runs.detection import merge_nms
from cadx.runs.detection import predict_study as detect_study
from cadx.runs.folder import done_folds, model_dirs, run_config
from cadx.runs.inference import Predictor, load_predictor
from cadx.runs.kinds import kind_of
from cadx.runs.predict import predict_study
from cadx.utils import read_json

__all__ = ["ServedRun", "StudyInput", "array_from_npz", "array_to_npz", "gradcam_map", "load_runs",
           "predict_with_run"]

_MODEL_FILES = ("checkpoint_best.ckpt", "checkpoint_best.pt", "svm.pkl", "metrics.json", "DONE", "config.yaml")


@dataclass(frozen=True)
class StudyInput:
    """What the prediction path needs of a study: the image (file or DICOM folder), an optional mask file and
    box (voxel indices, array order, stop-exclusive) for ROI inputs, and covariates (manifest attributes)."""

    path: str
    mask: str | None = None
    box: tuple[int, ...] | None = None
    covariates: dict[str, float] = field(default_factory=dict)


@dataclass
class ServedRun:
    """One served run. ``kind``: classifier | segmentation | detection; ``classes`` its class names (empty for a
    detector or a segmentation run without classification); ``cv`` its pooled CV figures for the wording."""

    index: int
    path: Path
    name: str
    run_id: str
    kind: str
    classes: list[str]
    cv: CvFigures
    cfg: ExperimentConfig
    #: the loaded models of a classifier run and the fingerprint they were loaded at (reloaded when it changes)
    _loaded: tuple[str, list[Any]] | None = field(default=None, repr=False, compare=False)

    def _models(self, load: Callable[[], list[Any]]) -> list[Any]:
        fp = self.fingerprint()
        if self._loaded is None or self._loaded[0] != fp:
            self._loaded = (fp, load())
        return self._loaded[1]

    def predictors(self) -> list[Predictor]:
        """The run's models in :func:`~cadx.runs.folder.model_dirs` order, loaded once per fingerprint."""
        return self._models(lambda: [load_predictor(d) for d in model_dirs(self.path, None, False)])

    def detectors(self) -> list[torch.nn.Module]:
        """A detection run's fold models (``fold_<k>/checkpoint_best.pt`` of the finished folds, eval mode), loaded
        once per fingerprint."""
        def load() -> list[Any]:
            out = []
            for d in done_folds(self.path):
                ck = torch.load(d / "checkpoint_best.pt", map_location="cpu", weights_only=False)
                model = create_model(ck["model"], 0, int(ck["in_channels"]), 2, **dict(ck["kwargs"]))
                model.load_state_dict(ck["state_dict"])
                out.append(model.eval())
            return out
        return self._models(load)

    @property
    def predicts_class(self) -> bool:
        return bool(self.classes) and self.kind in ("classifier", "segmentation")

    def fingerprint(self) -> str:
        """sha256 of ``config.yaml``'s bytes and, for every model file of the run (checkpoints, svm.pkl, metrics,
        DONE, per-fold configs of ``final/`` and ``fold_<k>/``), its relative path, size and mtime (ns). A retrained
        or replaced checkpoint changes it; reading the run does not."""
        h = hashlib.sha256()
        cfg = self.path / "config.yaml"
        h.update(cfg.read_bytes() if cfg.is_file() else b"")
        dirs = sorted(d for d in self.path.iterdir() if d.is_dir() and (d.name == "final" or
                                                                      d.name.startswith("fold_")))
        for d in dirs:
            for name in _MODEL_FILES:
                f = d / name
                if f.is_file():
                    st = f.stat()
                    h.update(f"{d.name}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()


def _run_id(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]


def _kind(cfg: ExperimentConfig) -> str:
    """classifier | segmentation | detection from :func:`cadx.runs.kinds.kind_of` (network and handcrafted runs
    are classifiers)."""
    k = kind_of(cfg)
    return k if k in ("segmentation", "detection") else "classifier"


def load_runs(paths: list[Path]) -> tuple[list[ServedRun], list[str]]:
    """The servable runs among ``paths`` and one message per refused run (unreadable config or metrics, no
    trained model, classes that differ from the first classified run's). Raises CadxConfigError only when no run
    is left."""
    runs: list[ServedRun] = []
    messages: list[str] = []
    first: ServedRun | None = None
    for i, p in enumerate(paths):
        p = Path(p)
        try:
            cfg = load_config(p / "config.yaml")
            kind = _kind(cfg)
            if kind == "detection":
                if not done_folds(p):
                    raise CadxDataError("no finished fold (fold_<k>/DONE)", path=p)
            else:
                model_dirs(p)
            metrics = read_json(p / "metrics.json") if (p / "metrics.json").is_file() else {}
            classes = [str(c) for c in (metrics.get("classes") or (metrics.get("pooled") or {}).get("classes")
                                        or [])]
            if kind == "detection" or (kind == "segmentation" and not cfg.task.classification):
                classes = []
            positive = classes[positive_index(cfg.eval.positive, classes)] if len(classes) == 2 else None
        except CadxError as e:
            messages.append(f"run {p.name}: not served: {e}")
            continue
        run = ServedRun(i, p, cfg.name or p.name, _run_id(p), kind, classes, cv_figures(metrics, classes, positive),
                        cfg)
        if run.predicts_class and first is not None and classes != first.classes:
            messages.append(f"run {p.name}: not served: its classes {classes} differ from run {first.name}'s "
                            f"{first.classes} (field classes)")
            continue
        if run.predicts_class and first is None:
            first = run
        runs.append(run)
    if not runs:
        raise CadxConfigError("cadx serve: no servable run: " + "; ".join(messages))
    return runs, messages


def array_to_npz(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, a=arr)
    return buf.getvalue()


def array_from_npz(data: bytes) -> np.ndarray:
    with np.load(io.BytesIO(data)) as z:
        return np.asarray(z["a"])


def _display_shape(arr: np.ndarray) -> tuple[int, ...]:
    """Spatial shape as the viewer shows it: (Z, Y, X) for volumes, (Y, X) for 2D images."""
    return tuple(int(v) for v in arr.shape[1:])


def predict_with_run(run: ServedRun, study: StudyInput, work_dir: Path) -> tuple[dict[str, Any],
                                                                                   dict[str, np.ndarray]]:
    """Predict one study with one run: ``(result, overlays)``.

    ``result``: classifier/segmentation runs → :func:`cadx.runs.predict.predict_study`'s dict (probabilities,
    prediction, decision, attributes; a segmentation run also lesion_voxels and the mask path); detection runs →
    ``{"boxes": [{"slice", "x0", "y0", "x1", "y1", "score"}]}`` (pixels, stop-exclusive, best first).
    ``overlays``: ``{"mask": uint8 (Z, Y, X) | (Y, X)}`` for segmentation runs. Raises CadxError on bad input.
    """
    if run.kind == "detection":
        return {"boxes": _detect(run, study)}, {}
    box = list(study.box) if study.box else None
    out = predict_study(run.path, study.path, mask=study.mask, box=box, out_dir=work_dir,
                        covariates=study.covariates or None,
                        predictors=run.predictors() if run.kind == "classifier" else None)
    overlays: dict[str, np.ndarray] = {}
    if run.kind == "segmentation" and out.get("mask"):
        m = np.asarray(read_image(out["mask"]).array)
        overlays["mask"] = (m[0] > 0).astype(np.uint8)
    return out, overlays


def _detect(run: ServedRun, study: StudyInput) -> list[dict[str, float]]:
    cfg = run.cfg
    det = cfg.detection
    if det is None:  # pragma: no cover - kind says detection
        raise CadxConfigError(f"run {run.name}: no detection section")
    img = read_image(study.path)
    # the detector's prediction ignores a study's lesions (they serve training and FROC): an empty mask says "none
    # known" without reading the study's own annotation
    empty = LazyImage.from_array(np.zeros((1, *np.asarray(img.array).shape[1:]), np.uint8), img.spacing)
    st = Study(study.path, study.path, images={"image": LazyImage(lambda: img, study.path)}, masks={"mask": empty})
    rows = []
    for model in run.detectors():
        dst = build_det_study(st, det, cfg.input, int(getattr(model, "cell_size", 1)))
        with torch.no_grad():
            df = detect_study(model, dst, det)
        rows.extend(df[["z0", "y0", "x0", "z1", "y1", "x1", "score"]].to_numpy(float).tolist())
    if not rows:
        return []
    a = np.asarray(rows, float)
    boxes, scores = merge_nms(a[:, :6], a[:, 6], det.nms_iou, det.nms_ratio)
    three_d = np.asarray(img.array).ndim == 4
    out = [{"slice": int((b[0] + b[3]) // 2) if three_d else 0, "y0": float(b[1]), "x0": float(b[2]),
            "y1": float(b[4]), "x1": float(b[5]), "score": float(s)} for b, s in zip(boxes, scores, strict=True)]
    return sorted(out, key=lambda b: -b["score"])


def gradcam_map(run: ServedRun, study: StudyInput, predicted: str | None) -> np.ndarray:
    """Grad-CAM of ``predicted`` (default: the model's argmax) on the image grid: ``(Z, Y, X)`` or ``(Y, X)``
    float in [0, 1], NaN where no item looked (see the module docstring)."""
    if run.kind != "classifier":
        raise CadxConfigError(f"run {run.name}: Grad-CAM needs a classifier run, this one is a {run.kind} run")
    dirs = model_dirs(run.path)
    cfg = run_config(run.path, dirs)
    pred = load_predictor(dirs[0])
    img = read_image(study.path)
    mask = None
    if study.mask:
        m = np.asarray(read_image(study.mask).array)
        mask = (m[:1] > 0) if m.ndim == img.array.ndim else (m[None] > 0)
    st = Study(study.path, study.path, images={"image": LazyImage(lambda: img, study.path)},
               attributes=dict(study.covariates))
    pre = StudyPreprocessor(cfg.input)
    regions: list[tuple[int, list[int], list[int]]] = []
    cov = {n: study_number(st, n) for n in cfg.input.covariate_channels}
    items, _, _ = pre.items(img, mask, [tuple(study.box)] if study.box else [],
                            study_number(st, cfg.input.diameter_attribute), source=study.path, covariates=cov,
                            regions=regions)
    if not items:
        raise CadxDataError("no input item could be made", path=study.path, field="image")
    x = torch.from_numpy(np.stack(items).astype(np.float32))
    classes = [str(c) for c in pred.spec.get("classes", run.classes)]
    target = classes.index(predicted) if predicted in classes else None
    cams = grad_cam(pred.model, x, target=target)
    shape = _display_shape(np.asarray(img.array))
    heat = np.full(shape, np.nan, np.float32)
    for cam, (z, starts, stops) in zip(cams, regions, strict=True):
        _paste(heat, cam, z, starts, stops)
    return heat


def _paste(heat: np.ndarray, cam: np.ndarray, z: int, starts: list[int], stops: list[int]) -> None:
    """Resize ``cam`` to the crop ``starts..stops`` and write it (max with what is there) into ``heat`` — into
    slice ``z`` for 2D items of a volume, the whole grid otherwise; the parts of the crop outside the image
    (padding) are dropped."""
    size = [max(1, b - a) for a, b in zip(starts, stops, strict=True)]
    big = resize(cam[None].astype(np.float32), size)[0]
    target = heat[z] if (z >= 0 and heat.ndim == len(starts) + 1) else heat
    src, dst = [], []
    for a, n, lim in zip(starts, size, target.shape, strict=True):
        lo, hi = max(a, 0), min(a + n, lim)
        if hi <= lo:
            return
        dst.append(slice(lo, hi))
        src.append(slice(lo - a, hi - a))
    cur = target[tuple(dst)]
    target[tuple(dst)] = np.fmax(cur, big[tuple(src)])
