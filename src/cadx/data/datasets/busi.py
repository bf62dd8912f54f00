"""BUSI breast ultrasound (``<root>/{benign,malignant,normal}/<name>.png`` + ``<name>_mask*.png``).

Label = folder. The lesion mask is the logical OR of ``<name>_mask.png`` and any ``<name>_mask_<k>.png``
(a few images outline two lesions); ``normal`` images have empty masks. A mask whose size differs from its
image cannot belong to it (on the shared set: ``benign (4)_mask_1.png``, 555×465 against a 416×416 image):
it is left out and listed in ``cohort.info["skipped_masks"]`` (``strict=true`` raises instead).

BUSI has no patient ids and several images are frames of one lesion (e.g. ``malignant (3)``…``(9)``), so
``patient_id`` is the near-duplicate group from :mod:`cadx.data.dedup` by default (``group=image`` to use
one group per image).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image

from cadx.data.datasets.base import register_dataset
from cadx.data.datasets.mednist import DedupOptions, mixed_label_groups, read_grey
from cadx.data.dedup import DEFAULT_MAX_GROUP, group_files
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.registry import Lower

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$")


def read_rgb_or_grey(path: Path, channels: str = "auto") -> np.ndarray:
    """PNG → ``(C,H,W)`` uint8 (via :func:`cadx.data.readers.read_image`, alpha dropped): ``auto`` keeps 1
    channel when R=G=B everywhere, else 3; ``1`` converts colour to grey (ITU-R 601 luma, rounded);
    ``3`` always gives RGB."""
    a = read_image(path).array
    if a.shape[0] == 1:
        return np.repeat(a, 3, axis=0) if channels == "3" else a
    if channels == "1":
        luma = np.tensordot(np.array([0.299, 0.587, 0.114]), a.astype(np.float64), axes=1)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[None]
    if channels == "auto" and (a[0] == a[1]).all() and (a[0] == a[2]).all():
        return np.ascontiguousarray(a[:1])
    return a


def read_mask(path: Path) -> np.ndarray:
    """Mask PNG (mode 1, L, RGB or RGBA; 0/255) → ``(H,W)`` bool, true where any colour channel is > 0
    (the reader drops the alpha channel, which is not part of the outline)."""
    return read_image(path).array.max(axis=0) > 0


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise CadxDataError(f"cannot read image header: {e}", path=path, field="image") from None


class BusiOptions(DedupOptions):
    """The near-duplicate grouping options (:class:`~cadx.data.datasets.mednist.DedupOptions`), ``channels``
    (``auto`` | ``1`` | ``3``) and ``strict`` (raise on a mask whose size differs from its image)."""

    channels: Annotated[Literal["auto", "1", "3"], Lower] = "auto"
    strict: bool = False


@register_dataset("busi", "BUSI breast ultrasound (benign/malignant/normal) with merged lesion masks",
                  options=BusiOptions)
def load(root: Path, *, group: str, dedup_threshold: int, dedup_min_ncc: float | None, cache: bool, channels: str,
         strict: bool) -> Cohort:
    """Load ``<root>/<class>/<name>.png`` with their masks.

    Options: ``group`` = ``dedup`` (default) | ``image``; ``dedup_threshold``, ``dedup_min_ncc``, ``cache``
    (see :mod:`cadx.data.datasets.mednist`); ``channels`` = ``auto`` (default) | ``1`` | ``3``;
    ``strict`` (default false): raise on a mask whose size differs from its image.
    Studies: ``study_id = "<class>/<name>"``, image ``(C,H,W)`` uint8 (C = 1, or 3 for the few truly colour
    frames with ``auto``), mask ``(1,H,W)`` uint8 {0,1}, spacing (1,1) (BUSI gives no pixel size);
    ``metadata``: ``file``, ``mask_files``, ``dedup_group``.
    """
    thr, ncc = dedup_threshold, dedup_min_ncc
    root = Path(root)
    classes = [c for c in CLASSES if (root / c).is_dir()]
    if not classes:
        raise CadxDataError(f"no class folders {list(CLASSES)}", path=root, field="root")
    entries: list[tuple[str, Path, list[Path]]] = []
    skipped: list[str] = []
    for c in classes:
        pngs = sorted((root / c).glob("*.png"))
        masks: dict[str, list[Path]] = {}
        images = []
        for p in pngs:
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
            else:
                images.append(p)
        orphans = sorted(set(masks) - {p.stem for p in images})
        if orphans:
            raise CadxDataError(f"mask without image: {orphans[0]}_mask.png", path=root / c, field="mask")
        for p in images:
            ms = sorted(masks.get(p.stem, []), key=lambda q: (len(q.stem), q.stem))
            if not ms:
                raise CadxDataError("no <name>_mask.png for this image", path=p, field="mask")
            size = _image_size(p)
            keep = []
            for q in ms:
                if _image_size(q) == size:
                    keep.append(q)
                elif strict:
                    raise CadxDataError(f"mask size {_image_size(q)} differs from image size {size}", path=q,
                                        field="mask")
                else:
                    skipped.append(f"{c}/{q.name}")
            if not keep:
                raise CadxDataError(f"no mask of the image's size {size}", path=p, field="mask")
            entries.append((c, p, keep))
    labels = [c for c, _, _ in entries]
    info: dict[str, Any] = {"group": group, "skipped_masks": skipped, "channels": channels}
    if group == "dedup":
        groups = group_files([p for _, p, _ in entries], read_grey, threshold=thr, min_ncc=ncc, use_cache=cache)
        info.update(dedup_groups=int(groups.max()) + 1, dedup_threshold=thr, dedup_min_ncc=ncc,
                    dedup_max_group=DEFAULT_MAX_GROUP, dedup_largest_group=int(np.bincount(groups).max()),
                    mixed_label_groups=mixed_label_groups(groups, labels))
    else:
        groups = np.arange(len(entries))
    studies = []
    for (c, p, ms), gid in zip(entries, groups, strict=True):
        sid = f"{c}/{p.stem}"
        studies.append(Study(
            study_id=sid, patient_id=f"g{int(gid):04d}" if group == "dedup" else sid,
            images={"image": LazyImage(_image_loader(p, channels), str(p))},
            masks={"mask": LazyImage(_mask_loader(ms), str(ms[0]))},
            label=c, metadata={"file": p.name, "mask_files": [q.name for q in ms], "dedup_group": int(gid)}))
    return Cohort(studies, classes=classes, name="busi", source=str(root), info=info)


def _image_loader(path: Path, channels: str) -> Callable[[], ImageData]:
    def load() -> ImageData:
        return ImageData(read_rgb_or_grey(path, channels), (1.0, 1.0), meta={"file": str(path)})
    return load


def _mask_loader(paths: list[Path]) -> Callable[[], ImageData]:
    def load() -> ImageData:
        m = read_mask(paths[0])
        for q in paths[1:]:
            m |= read_mask(q)
        return ImageData(m.astype(np.uint8)[None], (1.0, 1.0), meta={"files": [str(q) for q in paths]})
    return load
