"""``check_cohort``: open every image and mask of a cohort in full and report what is wrong, before any training.

Checked per study: the image decodes to the size its header promises (the readers raise on truncated, short
or mis-sized pixel data, mixed series, duplicate positions, non-positive spacing), voxels are finite, spacing
is positive; a mask has the image's spatial shape, integer values among the declared labels (default: a binary
mask, 0 and one foreground value) and is not empty (an empty mask is a warning, an error when ``need_lesion``);
a box has two corners per spatial axis, ordered, inside the image; the label is set (unlabelled studies are an
error unless ``allow_unlabelled``) and not a missing-value marker; attributes are finite numbers. An empty
cohort is an error. Image opening runs in worker processes (spawn-safe: each worker reloads the cohort from its
``(dataset, root, options)`` recipe) or, without a recipe, in threads.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rich.progress import track

from cadx.data.datasets import load_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.utils import progress_console

__all__ = ["MISSING_LABELS", "Problem", "check_cohort", "first_error"]

#: Label strings that mean "no label" (compared case-insensitively after stripping).
MISSING_LABELS = ("", "nan", "na", "n/a", "none", "null")

#: Cohorts smaller than this are checked in the calling process unless ``workers`` is given.
SMALL = 64

#: A cohort recipe a worker process can reload: ``(dataset name, root, adapter options)``.
Recipe = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Problem:
    """One finding: the file (or source) and field at fault, a one-line message, ``error`` or ``warning``."""

    path: str
    field: str
    message: str
    severity: str = "error"
    study_id: str | None = None

    def line(self) -> str:
        msg = " ".join(self.message.split())
        return f"{self.severity}: {self.path}: {self.field}: {msg}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_error(problems: Iterable[Problem]) -> Problem | None:
    return next((p for p in problems if p.severity == "error"), None)


# --- per-study checks (run in workers) ---------------------------------------------------------------------
def _load(handle: LazyImage, field: str) -> tuple[ImageData | None, Problem | None]:
    try:
        return handle.load(), None
    except CadxDataError as e:
        return None, Problem(e.path or handle.source, e.field or field, e.message)
    except MemoryError:
        return None, Problem(handle.source, field, "image too large to decode (MemoryError)")
    except Exception as e:  # a reader bug must still become one line naming the file
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, Problem(handle.source, field, f"cannot read ({type(e).__name__}: {text})")


def _geometry(img: ImageData, source: str) -> list[Problem]:
    out = []
    sp = np.asarray(img.spacing, dtype=float)
    if not np.isfinite(sp).all() or (sp <= 0).any():
        out.append(Problem(source, "spacing", f"spacing {tuple(sp.tolist())} must be finite and positive"))
    if any(s < 1 for s in img.array.shape):
        out.append(Problem(source, "shape", f"image has an empty axis, shape {img.array.shape}"))
    a = img.array
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        n = int(a.size - np.isfinite(a).sum())
        out.append(Problem(source, "voxels", f"{n} voxels are NaN or infinite"))
    elif a.dtype.kind not in "biufc":
        out.append(Problem(source, "dtype", f"voxels are not numbers (dtype {a.dtype})"))
    return out


def _mask_problems(mask: ImageData, img: ImageData | None, source: str, need_lesion: bool,
                   labels: Sequence[int] | None) -> list[Problem]:
    out = _geometry(mask, source)
    if out:
        return out
    if img is not None and mask.spatial_shape != img.spatial_shape:
        return [Problem(source, "mask", f"mask shape {mask.spatial_shape} differs from the image's "
                                        f"{img.spatial_shape}")]
    if mask.channels != 1:
        return [Problem(source, "mask", f"mask has {mask.channels} channels (expected 1)")]
    a = mask.array
    values = np.unique(a)
    if a.dtype.kind == "f" and not np.all(values == np.round(values)):
        return [Problem(source, "mask", f"non-integer mask values {values[values != np.round(values)][:3].tolist()}")]
    vals = [int(v) for v in values]
    if labels is not None:
        bad = sorted(set(vals) - set(int(v) for v in labels) - {0})
        if bad:
            return [Problem(source, "mask", f"mask values {bad[:5]} are not among the declared labels "
                                            f"{sorted(labels)}")]
    else:
        fg = [v for v in vals if v != 0]
        if len(fg) > 1 or any(v < 0 for v in vals):
            return [Problem(source, "mask", f"mask values {vals[:6]} are not binary (0 and one foreground "
                                            f"value); declare label values for a multi-label mask")]
    if len(vals) == 1 and vals[0] == 0:
        sev = "error" if need_lesion else "warning"
        return [Problem(source, "mask", "mask is empty (all zero)" + (" but the task needs a lesion"
                                                                      if need_lesion else ""), sev)]
    return []


def _box_problems(box: Sequence[int], img: ImageData, source: str) -> list[Problem]:
    n = img.spatial_ndim
    if len(box) != 2 * n:
        return [Problem(source, "box", f"box {tuple(box)} has {len(box)} values; a {n}D image needs {2 * n}")]
    start, stop = box[:n], box[n:]
    shape = img.spatial_shape
    if any(a < 0 or a >= b for a, b in zip(start, stop, strict=True)):
        return [Problem(source, "box", f"box {tuple(box)} needs 0 <= start < stop on every axis")]
    if any(b > s for b, s in zip(stop, shape, strict=True)):
        return [Problem(source, "box", f"box {tuple(box)} reaches outside the image of shape {shape}")]
    return []


def check_study(study: Study, need_lesion: bool = False, mask_labels: Sequence[int] | None = None,
                allow_empty_masks: bool = True) -> list[Problem]:
    """Open the study's images and masks in full and check them (see module doc)."""
    out: list[Problem] = []
    first: ImageData | None = None
    for name, handle in study.images.items():
        img, prob = _load(handle, "image")
        if prob is not None:
            out.append(prob)
            continue
        assert img is not None
        out.extend(_geometry(img, handle.source))
        if first is None:
            first = img
        elif img.spatial_shape != first.spatial_shape:
            out.append(Problem(handle.source, f"images.{name}", f"shape {img.spatial_shape} differs from the "
                                                                 f"first image's {first.spatial_shape}"))
    if not study.images:
        out.append(Problem(study.study_id, "images", "study has no image"))
    if need_lesion and not study.masks and not study.boxes:
        out.append(Problem(study.study_id, "mask", "the task needs a lesion mask but the study has none"))
    for handle in study.masks.values():
        m, prob = _load(handle, "mask")
        if prob is not None:
            out.append(prob)
            continue
        assert m is not None
        for p in _mask_problems(m, first, handle.source, need_lesion, mask_labels):
            if p.severity == "warning" and not allow_empty_masks:
                p = Problem(p.path, p.field, p.message + " (allow_empty_masks is false)", "error")
            out.append(p)
    if first is not None:
        src = study.image().source
        for box in study.boxes:
            out.extend(_box_problems(box, first, src))
    return [Problem(p.path, p.field, p.message, p.severity, study.study_id) for p in out]


# --- worker plumbing ---------------------------------------------------------------------------------------
_WORKER_COHORT: Cohort | None = None
_WORKER_ARGS: dict[str, Any] = {}


def _init_worker(recipe: Recipe, args: dict[str, Any]) -> None:
    global _WORKER_COHORT, _WORKER_ARGS
    name, root, options = recipe
    _WORKER_COHORT = load_dataset(name, root, **options)
    _WORKER_ARGS = args


def _check_id(study_id: str) -> list[Problem]:
    assert _WORKER_COHORT is not None
    return check_study(_WORKER_COHORT.get(study_id), **_WORKER_ARGS)


def _record_problems(cohort: Cohort, allow_unlabelled: bool) -> list[Problem]:
    """Checks that need no image: labels and attributes (in cohort order)."""
    out: list[Problem] = []
    src = cohort.source
    for col in cohort.info.get("text_columns") or []:
        out.append(Problem(src, col, "column has no numeric value: kept as text metadata, not an attribute (list it "
                                     "in metadata_columns to confirm)", "warning"))
    for s in cohort:
        row = s.metadata.get("row")
        where = f"study {s.study_id!r}" + (f" (row {row})" if row else "")
        label = s.label
        if label is not None and label.strip().lower() in MISSING_LABELS:
            out.append(Problem(src, "label", f"{where}: label {label!r} is a missing-value marker used as a class",
                               study_id=s.study_id))
        elif label is None and not allow_unlabelled:
            out.append(Problem(src, "label", f"{where}: no label (empty/NaN/NA/None); pass --allow-unlabelled "
                                             f"to keep unlabelled studies", study_id=s.study_id))
        elif label is not None and label not in cohort.classes:
            out.append(Problem(src, "label", f"{where}: label {label!r} not among classes {cohort.classes}",
                               study_id=s.study_id))
        for k, v in s.attributes.items():
            if not isinstance(v, int | float) or not math.isfinite(float(v)):
                out.append(Problem(src, k, f"{where}: attribute value {v!r} is not a finite number",
                                   study_id=s.study_id))
    return out


def check_cohort(cohort: Cohort, *, allow_unlabelled: bool = False, need_lesion: bool = False,
                 all_errors: bool = False, workers: int | None = None, progress: bool = False,
                 recipe: Recipe | None = None, mask_labels: Sequence[int] | None = None) -> list[Problem]:
    """Every problem of ``cohort`` (errors and warnings), in cohort order; stops at the first error unless
    ``all_errors``. ``workers`` processes (default: CPUs, at most 8, or 0 = this process below ``SMALL`` studies)
    open the images;
    they need ``recipe`` (``(dataset, root, options)``) to reload the cohort, otherwise threads are used."""
    problems: list[Problem] = []
    if len(cohort) == 0:
        return [Problem(cohort.source, "studies", "cohort has no studies")]
    for p in _record_problems(cohort, allow_unlabelled):
        problems.append(p)
        if not all_errors and p.severity == "error":
            return problems
    allow_empty = bool(cohort.info.get("allow_empty_masks", True))
    args: dict[str, Any] = {"need_lesion": need_lesion, "mask_labels": list(mask_labels) if mask_labels else None,
            "allow_empty_masks": allow_empty}
    n = len(cohort)
    if workers is None:  # small cohorts: starting processes costs more than it saves
        workers = min(8, mp.cpu_count() or 1) if n >= SMALL else 0
    nworkers = workers
    nworkers = max(0, min(nworkers, n))
    ex: Executor | None = None
    results: Iterator[list[Problem]]
    if nworkers <= 1:
        results = (check_study(s, **args) for s in cohort)
    elif recipe is not None:
        ex = ProcessPoolExecutor(nworkers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(recipe, args))
        results = ex.map(_check_id, cohort.study_ids, chunksize=max(1, min(16, n // (4 * nworkers))))
    else:
        ex = ThreadPoolExecutor(nworkers)
        fn: Callable[[Study], list[Problem]] = lambda s: check_study(s, **args)  # noqa: E731
        results = ex.map(fn, cohort)
    try:
        it: Iterable[list[Problem]] = results
        if progress:
            it = track(results, total=n, description=f"check {cohort.name}", console=progress_console(),
                       transient=True)
        for found in it:
            problems.extend(found)
            if not all_errors and first_error(found) is not None:
                break
    finally:
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
    return problems


def summary(cohort: Cohort, problems: Sequence[Problem]) -> str:
    """One line: studies, images, masks checked and the counts of errors and warnings."""
    images = sum(len(s.images) for s in cohort)
    masks = sum(len(s.masks) for s in cohort)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    return (f"{cohort.source}: {len(cohort)} studies, {images} images, {masks} masks checked: {errors} errors, "
            f"{warnings} warnings")


def require_clean(cohort: Cohort, **kw: Any) -> list[Problem]:
    """Run :func:`check_cohort`; raise the first error as CadxDataError (one line), else return the warnings."""
    problems = check_cohort(cohort, **kw)
    bad = first_error(problems)
    if bad is not None:
        raise CadxDataError(bad.message, path=bad.path, field=bad.field)
    return problems
