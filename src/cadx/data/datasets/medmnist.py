"""MedMNIST (v2/v3) official ``.npz`` files: any flag, 2D or 3D, official train/val/test split kept.

MedMNIST carries no patient ids; its official split is already patient-level (Yang et al., Sci Data 2023),
so ``patient_id = study_id`` and ``metadata["split"]`` holds the official split: use it (``make_splits``
with ``use_official=True``) rather than re-splitting images, which could put one patient in two folds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cadx.data.datasets.base import register_dataset
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_medmnist
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.registry import Options, TextList

SPLITS = ("train", "val", "test")
#: Official MedMNIST label names (from the MedMNIST INFO table, written snake_case so they are safe as CSV
#: column suffixes) for the binary / small flags. Flags not listed fall back to ``"0"``, ``"1"``, ...
LABEL_NAMES: dict[str, list[str]] = {
    "breastmnist": ["malignant", "normal_benign"],  # NB label 0 is malignant
    "pneumoniamnist": ["normal", "pneumonia"],
    "adrenalmnist3d": ["normal", "adrenal_mass"],
    "vesselmnist3d": ["vessel", "aneurysm"],
    "nodulemnist3d": ["benign", "malignant"],
    "fracturemnist3d": ["buckle_rib_fracture", "nondisplaced_rib_fracture", "displaced_rib_fracture"],
    "synapsemnist3d": ["inhibitory_synapse", "excitatory_synapse"],
}


def _flag_base(flag: str) -> str:
    """``adrenalmnist3d_64`` → ``adrenalmnist3d`` (size suffixes of MedMNIST+ share the label table)."""
    head, _, tail = flag.rpartition("_")
    return head if head and tail.isdigit() else flag


def _resolve(root: Path, flag: str | None) -> tuple[Path, str]:
    if root.is_file():
        if root.suffix != ".npz":
            raise CadxDataError("expected a MedMNIST .npz file", path=root, field="root")
        return root, flag or root.stem
    if not flag:
        found = sorted(p.stem for p in root.glob("*.npz"))
        raise CadxConfigError(f"medmnist: option flag is required when root is a folder (found {found})")
    path = root / f"{flag}.npz"
    if not path.is_file():
        found = sorted(p.stem for p in root.glob("*.npz"))
        raise CadxDataError(f"no {flag}.npz here (found {found})", path=root, field="flag")
    return path, flag


class MedMNISTOptions(Options):
    """``flag``: the MedMNIST flag (e.g. ``breastmnist``, ``adrenalmnist3d_64``); may be left out when root is
    the npz file itself, and ``medmnist:<flag>`` sets it. ``splits``: keep only these official splits (e.g.
    ``train,val`` for an inner cross-validation that must never see the test images); None = all three."""

    flag: str | None = None
    splits: TextList = None


@register_dataset("medmnist", "MedMNIST official npz by flag (2D/3D, official patient-level split)",
                  options=MedMNISTOptions)
def load(root: Path, *, flag: str | None, splits: list[str] | None = None) -> Cohort:
    """Load ``<root>/<flag>.npz`` (or root = the npz itself); option ``flag`` (e.g. ``breastmnist``).

    Images: 2D grey ``(1,H,W)``, 2D RGB flags ``(3,H,W)``, 3D ``(1,D,H,W)``, uint8 as stored, spacing 1.
    The npz is read once at load time (:func:`cadx.data.readers.read_medmnist`, all three splits needed)
    and each study indexes into it. Labels: the official class names (:data:`LABEL_NAMES`; classes ordered
    by label index), multi-label flags (chestmnist) use the first positive index.
    ``study_id = "<split>_<index>"``; ``metadata``: ``split``, ``index``, ``label_index``.
    ``splits`` (e.g. ``["train", "val"]``) keeps only those official splits; the class list still comes from all
    three, so a subset never renumbers or drops a class. Unknown or repeated names raise CadxConfigError.
    """
    path, flag = _resolve(Path(root), flag or None)
    keep = _check_splits(splits)
    data = read_medmnist(path)  # validates keys and lengths, raises CadxDataError naming the key
    three_d = "3d" in _flag_base(flag)
    max_label = 0
    parsed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s, (imgs, labels) in data.items():
        idx = labels if labels.ndim == 1 else np.argmax(labels > 0, axis=1)
        ok = imgs.ndim == 4 if three_d else (imgs.ndim == 3 or (imgs.ndim == 4 and imgs.shape[-1] == 3))
        if not ok:
            raise CadxDataError(f"unexpected image array shape {imgs.shape}", path=path, field=f"{s}_images")
        max_label = max(max_label, int(idx.max()) if idx.size else 0)
        parsed[s] = (imgs, idx.astype(np.int64))
    names = LABEL_NAMES.get(_flag_base(flag), [])
    classes = names if len(names) > max_label else [str(k) for k in range(max_label + 1)]
    studies = []
    for s, (imgs, idx) in parsed.items():
        if s not in keep:
            continue
        for i in range(len(imgs)):
            sid = f"{s}_{i}"
            studies.append(Study(
                study_id=sid, patient_id=sid,
                images={"image": LazyImage(_loader(imgs, i, three_d), f"{path}[{s}_images][{i}]")},
                label=classes[int(idx[i])],
                metadata={"split": s, "index": i, "label_index": int(idx[i])}))
    return Cohort(studies, classes=classes, name=f"medmnist:{flag}", source=str(path),
                  info={"flag": flag, "splits": list(keep), "spatial_dims": 3 if three_d else 2,
                        "image_shape": list(next(iter(parsed.values()))[0].shape[1:])})


def _check_splits(splits: list[str] | None) -> tuple[str, ...]:
    """The official splits to keep, in file order; ``None`` = all of :data:`SPLITS`."""
    if splits is None:
        return SPLITS
    names = [str(s).strip().lower() for s in splits]
    bad = [s for s in names if s not in SPLITS]
    if bad or not names or len(set(names)) != len(names):
        raise CadxConfigError(f"medmnist: option splits={splits!r} must name distinct official splits of {SPLITS}")
    return tuple(s for s in SPLITS if s in names)


def _loader(imgs: np.ndarray, i: int, three_d: bool) -> Callable[[], ImageData]:
    def load() -> ImageData:
        a = imgs[i]
        if three_d or a.ndim == 2:
            arr = a[None]
        else:  # (H, W, 3) RGB → (3, H, W)
            arr = np.moveaxis(a, -1, 0)
        return ImageData(np.ascontiguousarray(arr), (1.0,) * (arr.ndim - 1))
    return load
