"""Detection items (thesis A.8): studies → working-resolution slices, lesion boxes, foreground masks, and the
training batches of the YOLO grid (positive-slice sampling, grid-aligned crops that contain the box, targets).

A :class:`DetStudy` holds one study at working resolution: ``image`` ``(Z, C, H', W')`` float32 (a 2D image is
``Z = 1``), resized so that the longer original side becomes ``size`` px (scale ``s = size / max(H, W)``, both
axes alike, so boxes keep their shape) and zero-padded bottom/right to a multiple of the model's cell;
``foreground`` ``(Z, H', W')`` bool; ``lesions`` in **original** pixel coordinates (:mod:`cadx.data.boxes`).
Intensities: ``input.normalize`` / ``input.window`` per channel and per study (:func:`normalize_intensity`).
The foreground mask is computed per working slice (:func:`foreground_mask` of the normalised, resized slice:
what maps to 0 is background, e.g. the air around a head; erosion in working pixels).

Targets (:func:`encode_targets`): a box centred at ``(cy, cx)`` in crop pixels marks cell ``(⌊cy / cell⌋,
⌊cx / cell⌋)`` with objectness 1, offsets ``(c − cell centre) / (cell / 2)`` and log-scales ``log(size /
anchor)``; when two boxes share a cell the larger (area) wins (one box per cell, as the paper's grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import disk

from cadx.config import DetectionConfig, InputConfig
from cadx.data.boxes import LesionBox, positive_slices, study_lesions
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.pipeline.preprocess import normalize_intensity, resize

__all__ = ["DetStudy", "build_det_studies", "encode_targets", "foreground_mask", "grid_crop", "make_batch",
           "training_items"]


@dataclass
class DetStudy:
    """One study at working resolution (see the module docstring)."""

    study_id: str
    patient_id: str
    image: np.ndarray
    foreground: np.ndarray
    lesions: list[LesionBox]
    scale: float
    shape: tuple[int, ...]
    three_d: bool
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])

    def scaled_boxes(self, z: int) -> list[tuple[float, float, float, float]]:
        """In-plane boxes ``(y0, x0, y1, x1)`` at working scale of the lesions whose positive span
        (:func:`cadx.data.boxes.positive_slices`) holds slice ``z`` (2D: every lesion)."""
        s = self.scale
        return [(lb.y0 * s, lb.x0 * s, lb.y1 * s, lb.x1 * s) for lb in self.lesions
                if not self.three_d or z in positive_slices(lb, self.n_slices)]


def foreground_mask(image: np.ndarray, erosion: int = 2) -> np.ndarray:
    """``(C, H, W)`` → bool ``(H, W)``: any channel > 0, holes filled, eroded by a disk of ``erosion`` px,
    largest connected component (the paper's breast mask: nonzero pixels, erosion, largest component). An image
    with no foreground left gives all True (nothing to filter against)."""
    m = np.asarray(image).max(axis=0) > 0
    m = ndimage.binary_fill_holes(m)
    if erosion > 0:
        m = ndimage.binary_erosion(m, structure=disk(erosion))
    lab, n = ndimage.label(m)
    if n == 0:
        return np.ones(m.shape, bool)
    return np.asarray(lab == (np.bincount(lab.ravel())[1:].argmax() + 1))


def _pad_to(a: np.ndarray, cell: int) -> np.ndarray:
    h, w = a.shape[-2:]
    ph, pw = -h % cell, -w % cell
    if not (ph or pw):
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(a, pad)


def build_det_study(study: Study, det: DetectionConfig, input_cfg: InputConfig, cell: int) -> DetStudy:
    """Load and prepare one study (see :class:`DetStudy`); errors name the study's file."""
    img = study.image().load()
    arr = img.array
    three_d = arr.ndim == 4
    vol = arr if three_d else arr[:, None]  # (C, Z, H, W)
    if det.channels is not None:
        bad = [c for c in det.channels if not 0 <= c < vol.shape[0]]
        if bad:
            raise CadxDataError(f"detection.channels {bad} not in the image's {vol.shape[0]} channel(s)",
                                path=study.image().source, field="channels")
        vol = vol[list(det.channels)]
    lesions = [lb for lb in study_lesions(study, min_voxels=det.min_voxels)]
    h, w = vol.shape[-2:]
    scale = det.size / float(max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    norm = np.stack([normalize_intensity(vol[c], input_cfg) for c in range(vol.shape[0])])
    slices = [resize(norm[:, z], size) for z in range(norm.shape[1])]
    image = _pad_to(np.stack(slices).astype(np.float32), cell)                       # (Z, C, H', W')
    foreground = np.stack([foreground_mask(im, det.foreground_erosion) for im in image])  # padding: background
    return DetStudy(study.study_id, study.patient_id, image, foreground, lesions, scale,
                    tuple(int(v) for v in vol.shape[1:]) if three_d else (int(h), int(w)), three_d)


#: The last prepared cohort of this process (a study's variants share one cohort; one entry bounds memory).
_LAST: dict[str, list[DetStudy]] = {}


def build_det_studies(cohort: Cohort, det: DetectionConfig, input_cfg: InputConfig, cell: int) -> list[DetStudy]:
    """:func:`build_det_study` for every study of ``cohort``, in cohort order. The result is reused within the
    process for the same cohort (source, study ids), preparation settings and cell (the study's loss variants)."""
    prep = det.model_dump(include={"size", "channels", "foreground_erosion", "min_voxels"})
    key = repr((cohort.source, cohort.study_ids, sorted(prep.items()), input_cfg.model_dump(mode="json"), cell))
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = [build_det_study(s, det, input_cfg, cell) for s in cohort]
    return _LAST[key]


def training_items(studies: Sequence[DetStudy], indices: Sequence[int] | np.ndarray, span_factor: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(positives, negatives)``, each ``(N, 2)`` int rows ``(study index, slice)``. Positives: the slices of
    each lesion's positive span (× ``span_factor``; 2D: the image); negatives: images without lesions, and
    slices of a volume outside every lesion's slice extent ``[z0, z1)`` that hold foreground."""
    pos: list[tuple[int, int]] = []
    neg: list[tuple[int, int]] = []
    for i in indices:
        st = studies[int(i)]
        if not st.lesions:
            neg += [(int(i), z) for z in range(st.n_slices) if st.foreground[z].any()]
            continue
        if not st.three_d:
            pos.append((int(i), 0))
            continue
        zs: set[int] = set()
        inside = np.zeros(st.n_slices, bool)
        for lb in st.lesions:
            zs.update(int(z) for z in positive_slices(lb, st.n_slices, span_factor))
            inside[lb.z0:lb.z1] = True
        pos += [(int(i), z) for z in sorted(zs)]
        neg += [(int(i), z) for z in range(st.n_slices) if not inside[z] and st.foreground[z].any()]
    return np.asarray(pos, np.int64).reshape(-1, 2), np.asarray(neg, np.int64).reshape(-1, 2)


def grid_crop(shape: tuple[int, int], crop: int, cell: int, box: tuple[float, float, float, float] | None,
              rng: np.random.Generator) -> tuple[int, int]:
    """Top-left ``(y, x)`` of a ``crop`` × ``crop`` window on the cell grid inside an image of ``shape`` (H, W,
    multiples of ``cell``) that contains ``box`` ``(y0, x0, y1, x1)`` whole when it fits (else its centre);
    uniform over the allowed grid positions. ``crop`` ≥ the image side → 0 on that axis."""
    out = []
    for a in range(2):
        n = shape[a]
        if crop >= n:
            out.append(0)
            continue
        hi_pos = (n - crop) // cell                     # last grid start
        if box is None:
            out.append(int(rng.integers(0, hi_pos + 1)) * cell)
            continue
        b0, b1 = box[a], box[a + 2]
        if b1 - b0 > crop:                               # box larger than the crop: keep its centre inside
            b0 = b1 = (b0 + b1) / 2
        lo = max(0, int(np.ceil((b1 - crop) / cell)))    # start*cell >= b1 - crop
        hi = min(hi_pos, int(np.floor(b0 / cell)))      # start*cell <= b0
        if lo > hi:
            lo = hi = min(hi_pos, max(0, int(np.floor(b0 / cell))))
        out.append(int(rng.integers(lo, hi + 1)) * cell)
    return out[0], out[1]


def encode_targets(boxes: Sequence[tuple[float, float, float, float]], grid: tuple[int, int], cell: int,
                   anchor: float) -> np.ndarray:
    """``(5, Gh, Gw)`` float32 targets for boxes ``(y0, x0, y1, x1)`` in crop pixels (see the module
    docstring); boxes whose centre lies outside the grid are ignored (they are outside the crop)."""
    t = np.zeros((5, *grid), np.float32)
    area = np.zeros(grid, np.float32)
    half = cell / 2.0
    for y0, x0, y1, x1 in boxes:
        cy, cx, h, w = (y0 + y1) / 2, (x0 + x1) / 2, y1 - y0, x1 - x0
        i, j = int(np.floor(cy / cell)), int(np.floor(cx / cell))
        if not (0 <= i < grid[0] and 0 <= j < grid[1]) or h <= 0 or w <= 0 or h * w <= area[i, j]:
            continue
        area[i, j] = h * w
        t[:, i, j] = (1.0, (cy - (i + 0.5) * cell) / half, (cx - (j + 0.5) * cell) / half,
                      np.log(h / anchor), np.log(w / anchor))
    return t


def make_batch(studies: Sequence[DetStudy], items: np.ndarray, positive: np.ndarray, crop: int, cell: int,
               anchor: float, rng: np.random.Generator, flip: bool = True) -> dict[str, torch.Tensor]:
    """Batch of ``items`` (``(B, 2)`` study index, slice) → ``{"image": (B, C, crop, crop), "det_target": (B, 5,
    crop / cell, crop / cell)}``. A positive item's crop contains one of its boxes (drawn at random); a negative
    item's crop is a random grid position. ``flip``: each item is mirrored left-right with probability 0.5
    (boxes too). Crops of an image smaller than ``crop`` are zero-padded."""
    imgs, tgts = [], []
    g = crop // cell
    for (si, z), is_pos in zip(items, positive, strict=True):
        st = studies[int(si)]
        im = st.image[int(z)]
        boxes = st.scaled_boxes(int(z)) if is_pos else []
        box = boxes[int(rng.integers(len(boxes)))] if boxes else None
        y, x = grid_crop(im.shape[1:], crop, cell, box, rng)
        patch = np.zeros((im.shape[0], crop, crop), np.float32)
        sub = im[:, y:y + crop, x:x + crop]
        patch[:, :sub.shape[1], :sub.shape[2]] = sub
        shifted = [(b[0] - y, b[1] - x, b[2] - y, b[3] - x) for b in boxes]
        if flip and rng.random() < 0.5:
            patch = patch[:, :, ::-1].copy()
            shifted = [(b[0], crop - b[3], b[2], crop - b[1]) for b in shifted]
        imgs.append(patch)
        tgts.append(encode_targets(shifted, (g, g), cell, anchor))
    return {"image": torch.from_numpy(np.stack(imgs)), "det_target": torch.from_numpy(np.stack(tgts))}
