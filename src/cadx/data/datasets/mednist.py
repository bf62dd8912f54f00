"""MedNIST (``<root>/<Class>/<id>.jpeg``, 6 classes × 2000, 64×64 grey JPEG): label = folder.

MedNIST has no patient ids, and many images are repeats or near-repeats (adjacent slices of one scan), so
by default ``patient_id`` is the near-duplicate group from :mod:`cadx.data.dedup` (hashes cached on disk,
first load ≈ 10 s, then < 1 s); ``group=image`` makes every image its own patient.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image

from cadx.data.datasets.base import register_dataset
from cadx.data.dedup import DEFAULT_MAX_GROUP, DEFAULT_MIN_NCC, DEFAULT_THRESHOLD, group_files
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError
from cadx.registry import Lower, NoneText, Options

SUFFIXES = (".jpeg", ".jpg", ".png")


def read_grey(path: Path) -> np.ndarray:
    """One image file → ``(H,W)`` uint8 grey for hashing (PIL; colour converted with ITU-R 601 luma)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L") if im.mode != "L" else im)
    except OSError as e:
        raise CadxDataError(f"cannot read image: {e}", path=path, field="image") from None


def _loader(path: Path) -> Callable[[], ImageData]:
    def load() -> ImageData:
        return read_image(path)
    return load


class DedupOptions(Options):
    """Near-duplicate grouping shared by mednist and busi: ``group`` = ``dedup`` (patient = near-duplicate group)
    | ``image`` (one group per image); ``dedup_threshold`` (Hamming bits), ``dedup_min_ncc`` (``none`` = hash
    only) and ``cache`` (hashes cached on disk) of :func:`cadx.data.dedup.group_files`."""

    group: Annotated[Literal["dedup", "image"], Lower] = "dedup"
    dedup_threshold: int = DEFAULT_THRESHOLD
    dedup_min_ncc: Annotated[float | None, NoneText] = DEFAULT_MIN_NCC
    cache: bool = True


@register_dataset("mednist", "MedNIST 6-class anatomy/modality 64×64 JPEGs, near-duplicate groups as patients",
                  options=DedupOptions)
def load(root: Path, *, group: str, dedup_threshold: int, dedup_min_ncc: float | None, cache: bool) -> Cohort:
    """Load ``<root>/<Class>/*.jpeg``.

    Options: ``group`` = ``dedup`` (default) | ``image``; ``dedup_threshold`` (Hamming bits, default
    :data:`~cadx.data.dedup.DEFAULT_THRESHOLD`), ``dedup_min_ncc`` (default
    :data:`~cadx.data.dedup.DEFAULT_MIN_NCC`, ``none`` = hash only), ``cache`` (default true).
    Studies: ``study_id = "<Class>/<stem>"``, image ``(1,64,64)`` uint8, spacing (1,1); ``metadata``:
    ``file``, ``dedup_group``. ``cohort.info``: ``dedup_groups`` and ``mixed_label_groups``.
    """
    thr, ncc = dedup_threshold, dedup_min_ncc
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[str] = []
    for c in classes:
        fs = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in SUFFIXES)
        files += fs
        labels += [c] * len(fs)
    if not files:
        raise CadxDataError(f"no {'/'.join(SUFFIXES)} files in <Class>/ folders", path=root, field="root")
    info: dict[str, Any] = {"group": group}
    if group == "dedup":
        groups = group_files(files, read_grey, threshold=thr, min_ncc=ncc, use_cache=cache)
        info.update(dedup_groups=int(groups.max()) + 1, dedup_threshold=thr, dedup_min_ncc=ncc,
                    dedup_max_group=DEFAULT_MAX_GROUP, dedup_largest_group=int(np.bincount(groups).max()),
                    mixed_label_groups=mixed_label_groups(groups, labels))
    else:
        groups = np.arange(len(files))
    studies = []
    for f, lab, gid in zip(files, labels, groups, strict=True):
        sid = f"{lab}/{f.stem}"
        pid = f"g{int(gid):05d}" if group == "dedup" else sid
        studies.append(Study(study_id=sid, patient_id=pid, images={"image": LazyImage(_loader(f), str(f))},
                             label=lab, metadata={"file": f.name, "dedup_group": int(gid)}))
    return Cohort(studies, classes=[c for c in classes if c in set(labels)], name="mednist", source=str(root),
                  info=info)


def mixed_label_groups(groups: np.ndarray, labels: list[str]) -> int:
    """Number of groups whose members carry more than one label."""
    seen: dict[int, set[str]] = {}
    for g, lab in zip(groups.tolist(), labels, strict=True):
        seen.setdefault(g, set()).add(lab)
    return sum(len(v) > 1 for v in seen.values())
