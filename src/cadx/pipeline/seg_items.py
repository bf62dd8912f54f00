"""Slice items with masks for volume-level segmentation (``segmentation`` config section).

A volume ``(C, Z, H, W)`` gives one item per axial slice (all of them, in order; ``input.channels`` = k adjacent
slices as channels, 2.5D); a 2D image ``(C, H, W)`` gives one item (the whole image). Items are resized to
``input.size`` (masks nearest-neighbour); intensities are normalised per study as the engine does
(``input.window`` / ``input.normalize``). ``input.roi``/``margin`` are ignored: segmentation sees the whole image.

Target map per pixel: 0 background, lesion = 1; with ``tissue_class`` 1 = tissue and 2 = lesion, where tissue =
the normalised ``tissue_channel`` > ``tissue_threshold`` (for LGG: channel 1 = FLAIR, threshold 0.1 of the
0.5–99.5 % percentile range; this is the head — skull, scalp and brain — since the public LGG slices are not
skull-stripped; the lesion overrides it). The same intensity mask gives each slice's tissue fraction, used to drop
empty slices from training (A.3 "discarded empty slices that did not contain any brain or other tissue").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.progress import track

from cadx.config import ExperimentConfig, InputConfig, SegmentationConfig
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.item_cache import cached_arrays, reopen
from cadx.pipeline.items import ItemStore, input_settings, study_targets
from cadx.pipeline.preprocess import StudyPreprocessor, normalize_intensity, resize
from cadx.utils import progress_console


@dataclass
class SegData:
    """An :class:`ItemStore` with per-item masks plus what evaluation needs.

    ``gt``: per study the original-resolution lesion mask (bool, ``(Z, H, W)`` or ``(H, W)``); ``tissue``:
    per item tissue fraction; ``lesion``: per item, the (resized) item mask holds lesion pixels.
    """

    store: ItemStore
    gt: list[np.ndarray]
    tissue: np.ndarray
    lesion: np.ndarray

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state: ``gt`` replaced by the item-cache entry's ``(path, key)`` when the store pickles by path
        and ``gt`` is still the entry's list (Ray tasks then map the same files)."""
        state = {k: v for k, v in self.__dict__.items() if k != "_gt_origin"}
        ref = self.store._cache_ref()
        origin = self.__dict__.get("_gt_origin")
        if ref is not None and origin is not None and origin[0] is self.gt and origin[1] == ref:
            state.update(gt=None, _gt_ref=(*ref, origin[2]))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ref = state.pop("_gt_ref", None)
        self.__dict__.update(state)
        if ref is not None:
            self.gt = _split_gt(reopen(ref[0], ref[1], _SEG_MMAP)["gt"], ref[2])
            self.__dict__["_gt_origin"] = (self.gt, (ref[0], ref[1]), ref[2])

    def study_items(self, s: int) -> np.ndarray:
        """Items of study ``s`` in slice order."""
        return np.flatnonzero(self.store.study == s)


def seg_settings(cfg: ExperimentConfig) -> SegmentationConfig:
    """The config's ``segmentation`` section (defaults when absent)."""
    return cfg.segmentation if cfg.segmentation is not None else SegmentationConfig.model_validate({})


def num_seg_classes(cfg: ExperimentConfig) -> int:
    """Output channels S of the model (``model.kwargs.num_seg_classes``; U-Net default 1, SCNet 3)."""
    default = 3 if cfg.model.name == "scnet" else 1
    return int(cfg.model.kwargs.get("num_seg_classes", default))


def lesion_channel(cfg: ExperimentConfig) -> int:
    """Output channel of the lesion: ``segmentation.lesion_class``, else the last (0 for a sigmoid output)."""
    s = num_seg_classes(cfg)
    lc = seg_settings(cfg).lesion_class
    if s == 1:
        return 0
    if lc is None:
        return s - 1
    if lc >= s:
        raise CadxConfigError(f"segmentation.lesion_class {lc} >= num_seg_classes {s}")
    return int(lc)


def check_classes(cfg: ExperimentConfig) -> None:
    """The target map (2 or 3 values) must fit the model's S channels."""
    s = num_seg_classes(cfg)
    need = 3 if seg_settings(cfg).tissue_class else 2
    if s > 1 and s < need:
        raise CadxConfigError(f"model.kwargs.num_seg_classes={s} but the targets have {need} classes "
                              "(segmentation.tissue_class adds the tissue class)")


def tissue_mask(arr: np.ndarray, seg: SegmentationConfig) -> np.ndarray:
    """Intensity tissue mask of a normalised image ``(C, *spatial)`` → bool ``spatial``."""
    c = min(seg.tissue_channel, arr.shape[0] - 1)
    return np.asarray(arr[c] > seg.tissue_threshold)


def image_items(arr: np.ndarray, lesion: np.ndarray | None, inp: InputConfig, seg: SegmentationConfig,
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[float]]:
    """Items of one normalised image ``arr`` ``(C, *spatial)`` with its lesion mask (bool ``spatial`` or None).

    Returns ``(images (C', *size), targets (1, *size) float, slice positions (-1 for 2D), tissue fractions)``.
    """
    pre = StudyPreprocessor(inp)
    size = inp.size_tuple()
    nd = arr.ndim - 1
    if nd not in (2, 3):
        raise CadxDataError(f"segmentation needs a 2D image or 3D volume, got shape {arr.shape}", field="image")
    tissue = tissue_mask(arr, seg)
    les = lesion if lesion is not None else np.zeros(arr.shape[1:], bool)
    target = les.astype(np.float32)
    if seg.tissue_class:
        target = np.where(les, 2.0, tissue.astype(np.float32)).astype(np.float32)
    zs: list[int | None] = list(range(arr.shape[1])) if nd == 3 else [None]
    imgs, tgts, pos, frac = [], [], [], []
    for z in zs:
        sl = pre._slab(arr, z)
        t = target if z is None else target[z]
        ts = tissue if z is None else tissue[z]
        imgs.append(resize(sl, size))
        tgts.append(resize(t[None], size, mask=True))
        pos.append(-1 if z is None else int(z))
        frac.append(float(ts.mean()))
    return imgs, tgts, pos, frac


def load_study_arrays(study: Any, inp: InputConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(normalised image (C, *spatial), lesion mask bool spatial)`` of a study (no mask → empty)."""
    img = study.image().load()
    arr = normalize_intensity(np.asarray(img.array), inp)
    m = study.mask()
    if m is None:
        return arr, np.zeros(arr.shape[1:], bool)
    marr = np.asarray(m.load().array)
    les = marr[0] > 0 if marr.ndim == arr.ndim else marr > 0
    if les.shape != arr.shape[1:]:
        raise CadxDataError(f"mask shape {les.shape} differs from image {arr.shape[1:]}", path=study.study_id,
                            field="mask")
    return arr, les


#: arrays of a segmentation cache entry that are memory-mapped (the rest are small and read)
_SEG_MMAP = ("images", "masks", "gt")


def _split_gt(flat: np.ndarray, shapes: list[list[int]]) -> list[np.ndarray]:
    """Per-study views ``shapes[s]`` of the concatenated flat ``gt`` array (no copy)."""
    out, o = [], 0
    for shp in shapes:
        n = int(np.prod(shp))
        out.append(flat[o:o + n].reshape(shp))
        o += n
    return out


def build_seg_data(cohort: Cohort, cfg: ExperimentConfig, progress: bool = False,
                   classes: Sequence[str] | None = None) -> SegData:
    """Preprocess every study into slice items with targets (once per run), or map them from the item cache
    (``input.cache``, :mod:`cadx.pipeline.item_cache`; ``store.meta["item_cache"]`` says which). ``classes``
    default to the cohort's (an external cohort passes the trained run's; a label outside them is stored as
    unlabelled, -1); labels are computed from the cohort on every call, never cached."""
    seg = seg_settings(cfg)
    check_classes(cfg)
    settings = {**input_settings(cfg),
                "segmentation": seg.model_dump(mode="json", include={"tissue_class", "tissue_channel",
                                                                     "tissue_threshold"})}
    arrays, info, record = cached_arrays("seg", cohort, settings, cfg.input.cache,
                                         lambda: _build_seg_arrays(cohort, cfg, seg, progress), _SEG_MMAP)
    masks = torch.from_numpy(arrays["masks"])
    classes = list(classes if classes is not None else cohort.classes)
    labels, attrs, score = study_targets(list(cohort), classes, [], None)
    store = ItemStore(torch.from_numpy(arrays["images"]), masks, arrays["study"], arrays["slice_pos"], labels, attrs,
                      score, classes, [], cohort.study_ids, cohort.patient_ids, meta={"item_cache": record})
    gt = _split_gt(arrays["gt"], info["gt_shapes"])
    data = SegData(store, gt, arrays["tissue"], arrays["lesion"])
    if "path" in record:
        store.attach_cache(record["path"], record["key"])
        data.__dict__["_gt_origin"] = (gt, (record["path"], record["key"]), info["gt_shapes"])
    return data


def _build_seg_arrays(cohort: Cohort, cfg: ExperimentConfig, seg: SegmentationConfig, progress: bool
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays of :func:`build_seg_data` (``images``, ``masks``, ``study``, ``slice_pos``, ``tissue`` float64,
    ``lesion`` bool, ``gt`` = every study's bool mask, flattened and concatenated) and ``{"gt_shapes": [...]}``."""
    imgs: list[np.ndarray] = []
    tgts: list[np.ndarray] = []
    study_idx: list[int] = []
    pos: list[int] = []
    frac: list[float] = []
    gt: list[np.ndarray] = []
    it: Any = range(len(cohort))
    if progress:
        it = track(it, description=f"preprocessing {len(cohort)} studies", transient=True,
                   console=progress_console())
    for i in it:
        arr, les = load_study_arrays(cohort[i], cfg.input)
        a, t, p, f = image_items(arr, les, cfg.input, seg)
        imgs += a
        tgts += t
        pos += p
        frac += f
        study_idx += [i] * len(a)
        gt.append(les)
    shapes = {x.shape for x in imgs}
    if len(shapes) != 1:
        raise CadxDataError(f"items differ in shape {sorted(shapes)} (mixed channel counts? set "
                            "data.options.channels)", path=cohort.source, field="image")
    masks = np.stack(tgts).astype(np.float32, copy=False)
    lesion_value = 2.0 if seg.tissue_class else 1.0
    lesion = (masks == lesion_value).reshape(len(masks), -1).any(1)
    flat = (np.concatenate([g.ravel() for g in gt]) if gt else np.zeros(0, bool)).astype(bool, copy=False)
    arrays = {"images": np.stack(imgs).astype(np.float32, copy=False), "masks": masks,
              "study": np.asarray(study_idx, np.int64), "slice_pos": np.asarray(pos, np.int64),
              "tissue": np.asarray(frac, np.float64), "lesion": lesion, "gt": flat}
    return arrays, {"gt_shapes": [list(g.shape) for g in gt]}


def training_items(data: SegData, items: np.ndarray, seg: SegmentationConfig) -> np.ndarray:
    """A.3 sampling of the training ``items``: drop slices with tissue fraction < ``min_tissue_fraction`` (lesion
    slices are always kept) and repeat each lesion slice ``oversample_lesion`` times in total (the copies are
    augmented on the fly by ``input.augment``, drawn per batch)."""
    items = np.asarray(items, np.int64)
    les = data.lesion[items]
    keep = items[les | (data.tissue[items] >= seg.min_tissue_fraction)]
    extra = np.repeat(keep[data.lesion[keep]], seg.oversample_lesion - 1)
    return np.sort(np.concatenate([keep, extra]))
