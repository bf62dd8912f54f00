"""Lesion boxes for detection (thesis A.8): one box per connected mask component, in the paper's convention.

The DBT annotations of A.8 are a 2D box drawn on a lesion's **central slice** plus a slice span. A
:class:`LesionBox` keeps exactly that: the in-plane box ``(y0, x0, y1, x1)`` (voxel indices, stop-exclusive,
array order) on the central slice ``z``, and the component's slice extent ``[z0, z1)``. A 2D image is the case
``z = z0 = 0, z1 = 1``.

Coordinates are continuous pixel coordinates where pixel ``i`` covers ``[i, i + 1)``, so a box's centre is
``((y0 + y1) / 2, (x0 + x1) / 2)`` and its diagonal ``hypot(y1 - y0, x1 - x0)``.

Choices (the paper annotates by hand, cadx derives boxes from masks; stated here and tested):

* central slice = ``(z0 + z1 - 1) // 2`` of the component's slice extent (the lower middle slice for an even
  extent); the in-plane box is the component's footprint **on that slice** (not over all its slices), as a
  reader would draw it there. A 3D-connected component has voxels on every slice of its extent, so the footprint
  is never empty.
* components are found with full connectivity (8 in 2D, 26 in 3D) by default, like scikit-image's ``label``;
  ``connectivity=1`` gives 4 / 6.
* the positive-slice span of training (:func:`slice_span`) is the paper's ``sqrt`` of the box's mean side in
  pixels, rounded to the nearest integer and at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cadx.data.study import Study
from cadx.errors import CadxDataError

__all__ = ["LesionBox", "box_lesions", "mask_lesions", "positive_slices", "slice_span", "study_lesions"]


@dataclass(frozen=True)
class LesionBox:
    """One lesion: in-plane box ``(y0, x0, y1, x1)`` (stop-exclusive) on the central slice ``z``; slice extent
    ``[z0, z1)`` (2D: ``z = z0 = 0``, ``z1 = 1``)."""

    y0: int
    x0: int
    y1: int
    x1: int
    z: int = 0
    z0: int = 0
    z1: int = 1

    def __post_init__(self) -> None:
        if not (self.y0 < self.y1 and self.x0 < self.x1 and self.z0 <= self.z < self.z1):
            raise CadxDataError(f"lesion box {self.as_tuple()} needs y0 < y1, x0 < x1, z0 <= z < z1", field="box")

    def as_tuple(self) -> tuple[int, ...]:
        return (self.y0, self.x0, self.y1, self.x1, self.z, self.z0, self.z1)

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def center(self) -> tuple[float, float]:
        """``(y, x)`` centre in continuous pixel coordinates."""
        return (self.y0 + self.y1) / 2.0, (self.x0 + self.x1) / 2.0

    @property
    def diagonal(self) -> float:
        return math.hypot(self.height, self.width)


def _spatial(mask: np.ndarray) -> np.ndarray:
    """``(Y, X)`` or ``(Z, Y, X)`` from a mask that may carry a leading channel axis of size 1."""
    m = np.asarray(mask)
    if m.ndim in (3, 4) and m.shape[0] == 1:
        m = m[0]
    if m.ndim not in (2, 3):
        raise CadxDataError(f"mask must be (Y, X) or (Z, Y, X) (optionally with one channel), got {m.shape}",
                            field="mask")
    return m


def mask_lesions(mask: np.ndarray, connectivity: int | None = None, min_voxels: int = 1) -> list[LesionBox]:
    """One :class:`LesionBox` per connected component of ``mask > 0``, ordered by first voxel (label order).

    ``mask``: ``(Y, X)``, ``(Z, Y, X)``, or either with a leading channel of size 1 (a ``(1, Y, X)`` array is
    read as a 2D mask with a channel, not a one-slice volume). ``connectivity``: 1 … ndim (default ndim = full).
    ``min_voxels``: components smaller than this are not lesions (default 1 = keep all). Empty mask → ``[]``.
    """
    m = _spatial(mask) > 0
    nd = m.ndim
    conn = nd if connectivity is None else int(connectivity)
    if not 1 <= conn <= nd:
        raise CadxDataError(f"connectivity must be 1..{nd}, got {connectivity}", field="connectivity")
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(nd, conn))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    out: list[LesionBox] = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or sizes[lab] < min_voxels:
            continue
        if nd == 2:
            out.append(LesionBox(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
            continue
        z0, z1 = sl[0].start, sl[0].stop
        zc = (z0 + z1 - 1) // 2
        plane = labels[zc, sl[1], sl[2]] == lab
        ys, xs = np.nonzero(plane)
        y0, x0 = sl[1].start + int(ys.min()), sl[2].start + int(xs.min())
        out.append(LesionBox(y0, x0, sl[1].start + int(ys.max()) + 1, sl[2].start + int(xs.max()) + 1,
                             zc, z0, z1))
    return out


def box_lesions(boxes: Sequence[Sequence[int]]) -> list[LesionBox]:
    """Study boxes (``(y0, x0, y1, x1)`` or ``(z0, y0, x0, z1, y1, x1)``, as the manifest reader parses its
    ``box`` column / corner columns) → lesions: a 3D box's central slice is ``(z0 + z1 - 1) // 2`` and its
    in-plane box is the box's own (the box is all that is known)."""
    out = []
    for b in boxes:
        t = tuple(int(v) for v in b)
        if len(t) == 4:
            out.append(LesionBox(*t))
        elif len(t) == 6:
            z0, y0, x0, z1, y1, x1 = t
            out.append(LesionBox(y0, x0, y1, x1, (z0 + z1 - 1) // 2, z0, z1))
        else:
            raise CadxDataError(f"box {t} has {len(t)} values; need 4 (2D) or 6 (3D)", field="box")
    return out


def study_lesions(study: Study, mask_name: str | None = None, connectivity: int | None = None,
                  min_voxels: int = 1) -> list[LesionBox]:
    """A study's lesions: its ``boxes`` when it has any (a manifest ``box``), else the components of its mask
    (:func:`mask_lesions`); an empty mask = a negative study (``[]``). A study with neither boxes nor mask
    raises CadxDataError naming the study (field ``mask``): unannotated is not the same as negative."""
    if study.boxes:
        return box_lesions(study.boxes)
    handle = study.mask(mask_name)
    if handle is None:
        raise CadxDataError(f"study {study.study_id}: no box and no mask, so its lesions are unknown",
                            path=study.image().source, field="mask")
    return mask_lesions(handle.load().array, connectivity, min_voxels)


def slice_span(height: float, width: float) -> int:
    """The paper's positive-slice count for a box: ``round(sqrt((height + width) / 2))``, at least 1
    (A.8: "the square root of the average dimension in pixels of the box")."""
    return max(1, round(math.sqrt((float(height) + float(width)) / 2.0)))


def positive_slices(lesion: LesionBox, n_slices: int, factor: float = 1.0) -> np.ndarray:
    """Slice indices treated as positive for ``lesion`` in a volume of ``n_slices``: ``span =
    max(1, round(factor · slice_span))`` slices centred on ``lesion.z`` (``z - span // 2 … z - span // 2 + span -
    1``), clipped to the volume. ``factor = 0.5`` is the paper's halved span for validation."""
    span = max(1, round(factor * slice_span(lesion.height, lesion.width)))
    lo = lesion.z - span // 2
    z = np.arange(lo, lo + span)
    return z[(z >= 0) & (z < n_slices)]
