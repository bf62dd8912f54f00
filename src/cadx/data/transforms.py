"""Transforms on channel-first numpy arrays ``(C,Y,X)`` / ``(C,Z,Y,X)`` (one import point).

- intensity (:mod:`.transforms_intensity`): ``WINDOW_PRESETS``, ``window``, ``clip_percentiles``, ``zscore``,
  ``minmax``;
- spatial (:mod:`.transforms_spatial`): ``resample``, ``resize``, ``crop_box``, ``mask_bbox``,
  ``crop_mask_bbox``, ``crop_diameter``, ``extract_slices``, ``center_crop``, ``random_crop``,
  ``PaddedRandomCrop``;
- augmentation (:mod:`.transforms_augment`, MONAI): ``make_augmentation``, ``make_paired_augmentation``.
"""

from __future__ import annotations

from cadx.data.transforms_augment import (
    Augmentation,
    PairedAugmentation,
    make_augmentation,
    make_paired_augmentation,
)
from cadx.data.transforms_intensity import WINDOW_PRESETS, clip_percentiles, minmax, window, zscore
from cadx.data.transforms_spatial import (
    PaddedRandomCrop,
    center_crop,
    crop_box,
    crop_diameter,
    crop_mask_bbox,
    extract_slices,
    mask_bbox,
    random_crop,
    resample,
    resize,
)

__all__ = [
    "WINDOW_PRESETS",
    "Augmentation",
    "PaddedRandomCrop",
    "PairedAugmentation",
    "center_crop",
    "clip_percentiles",
    "crop_box",
    "crop_diameter",
    "crop_mask_bbox",
    "extract_slices",
    "make_augmentation",
    "make_paired_augmentation",
    "mask_bbox",
    "minmax",
    "random_crop",
    "resample",
    "resize",
    "window",
    "zscore",
]
