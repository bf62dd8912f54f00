"""In-memory tensors of a whole cohort's items (built once per run) and the per-study targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import track

from cadx.config import ExperimentConfig
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.preprocess import StudyPreprocessor, study_number
from cadx.utils import progress_console


@dataclass
class ItemStore:
    """All items of a cohort.

    ``images`` ``(N, C, *size)`` float32; ``masks`` ``(N, 1, *size)`` float32 or None; ``study`` ``(N,)`` int64 (index
    into the cohort); ``slice_pos`` ``(N,)`` (z of a 2D item, -1 for 2D images, 0 for volumes). Per study:
    ``labels`` ``(S,)`` int64 (-1 = missing), ``attributes`` ``(S, A)`` float32 (NaN = missing), ``score`` ``(S,)``.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    study: np.ndarray
    slice_pos: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    score: np.ndarray
    classes: list[str]
    attribute_names: list[str]
    study_ids: list[str]
    patient_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    def item_labels(self, items: np.ndarray) -> np.ndarray:
        """Class index of each item's study, ``(len(items),)`` int64."""
        return self.labels[self.study[items]]

    def items_of_studies(self, study_indices: np.ndarray) -> np.ndarray:
        """Item indices (ascending) whose study is in ``study_indices``."""
        return np.flatnonzero(np.isin(self.study, np.asarray(study_indices, dtype=np.int64)))


def resolve_attributes(cfg: ExperimentConfig, cohort: Cohort) -> list[str]:
    """Attribute names the task predicts (``"all"`` = every attribute of the cohort except the score)."""
    want = cfg.task.attributes
    names = cohort.attribute_names()
    if want == "all":
        return [a for a in names if a != cfg.task.score]
    missing = [a for a in want if a not in names]
    if missing:
        raise CadxConfigError(f"task.attributes: {missing} not in the cohort (has {names})")
    return list(want)


def study_targets(studies: list[Study], classes: list[str], attributes: list[str],
                  score: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels (S,), attributes (S, A), score (S,))`` of ``studies`` (missing → -1 / NaN)."""
    lut = {c: i for i, c in enumerate(classes)}
    labels = np.array([lut.get(s.label, -1) if s.label is not None else -1 for s in studies], dtype=np.int64)
    attrs = np.array([[float(s.attributes.get(a, np.nan)) for a in attributes] for s in studies],
                     dtype=np.float32).reshape(len(studies), len(attributes))
    sc = np.array([v if (v := study_number(s, score)) is not None else np.nan for s in studies], dtype=np.float32)
    return labels, attrs, sc


def build_store(cohort: Cohort, cfg: ExperimentConfig, classes: list[str] | None = None,
                attributes: list[str] | None = None, progress: bool = True) -> ItemStore:
    """Preprocess every study of ``cohort`` once (rich progress bar when ``progress``).

    ``classes``/``attributes`` default to the cohort's (an external cohort passes the trained run's).
    Raises CadxDataError naming the study when a study yields no item or items disagree in channels.
    """
    classes = list(classes if classes is not None else cohort.classes)
    attributes = list(attributes if attributes is not None else resolve_attributes(cfg, cohort))
    pre = StudyPreprocessor(cfg.input, with_masks=cfg.task.segmentation)
    imgs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    study_idx: list[int] = []
    pos: list[int] = []
    it: Any = range(len(cohort))
    if progress:
        it = track(it, description=f"preprocessing {len(cohort)} studies", transient=True,
                   console=progress_console())
    for i in it:
        st = cohort[i]
        a, m, p = pre.study_items(st)
        if not a:
            raise CadxDataError("no input item could be made", path=st.study_id, field="image")
        imgs.extend(a)
        masks.extend(m)
        study_idx.extend([i] * len(a))
        pos.extend(p)
    if not imgs:
        raise CadxDataError("cohort is empty", path=cohort.source, field="studies")
    shapes = {x.shape for x in imgs}
    if len(shapes) != 1:
        raise CadxDataError(f"items differ in shape {sorted(shapes)} (mixed channel counts?)", path=cohort.source,
                            field="image")
    images = torch.from_numpy(np.stack(imgs).astype(np.float32))
    mask_t = torch.from_numpy(np.stack(masks).astype(np.float32)) if cfg.task.segmentation else None
    labels, attrs, score = study_targets(list(cohort), classes, attributes, cfg.task.score)
    return ItemStore(images, mask_t, np.asarray(study_idx, np.int64), np.asarray(pos, np.int64), labels, attrs,
                     score, classes, attributes, cohort.study_ids, cohort.patient_ids)
