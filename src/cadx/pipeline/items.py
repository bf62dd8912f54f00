"""Tensors of a whole cohort's items (built once per run, or mapped from the item cache) and the per-study targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import track

from cadx.config import ExperimentConfig
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.item_cache import cached_arrays, reopen
from cadx.pipeline.preprocess import StudyPreprocessor, study_number
from cadx.utils import progress_console


@dataclass
class ItemStore:
    """All items of a cohort.

    ``images`` ``(N, C, *size)`` float32; ``masks`` ``(N, 1, *size)`` float32 or None; ``study`` ``(N,)`` int64 (index
    into the cohort); ``slice_pos`` ``(N,)`` (z of a 2D item, -1 for 2D images, 0 for volumes). Per study:
    ``labels`` ``(S,)`` int64 (-1 = missing), ``attributes`` ``(S, A)`` float32 (NaN = missing), ``score`` ``(S,)``.
    ``meta["item_cache"]``: what the item cache did (:func:`cadx.pipeline.item_cache.cached_arrays`). A store whose
    array fields are an item-cache entry's (memory-mapped) pickles as the entry's path + key, not the bytes (Ray
    tasks then map the same file); assigning another array to one of those fields makes it pickle by value again.
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

    def attach_cache(self, path: str, key: str) -> None:
        """Mark the current ``images``/``masks``/``study``/``slice_pos`` as the item-cache entry at ``path``."""
        self.__dict__["_cache_origin"] = (path, key, self.images, self.masks, self.study, self.slice_pos)

    def _cache_ref(self) -> tuple[str, str] | None:
        origin = self.__dict__.get("_cache_origin")
        if origin is None or any(a is not b for a, b in zip(origin[2:], (self.images, self.masks, self.study,
                                                                          self.slice_pos), strict=True)):
            return None
        return origin[0], origin[1]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state: the array fields replaced by the cache entry's ``(path, key)`` when they are its arrays."""
        state = {k: v for k, v in self.__dict__.items() if k != "_cache_origin"}
        ref = self._cache_ref()
        if ref is not None:
            state.update(images=None, masks=None, study=None, slice_pos=None, _cache_ref=ref)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ref = state.pop("_cache_ref", None)
        self.__dict__.update(state)
        if ref is not None:
            arrays = reopen(ref[0], ref[1], _MMAP)
            self.images, self.masks, self.study, self.slice_pos = _store_arrays(arrays)
            self.attach_cache(*ref)

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


#: arrays of an item-cache entry that are memory-mapped (the rest are small and read)
_MMAP = ("images", "masks")


def _store_arrays(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray, np.ndarray]:
    """``(images, masks or None, study, slice_pos)`` of cached/built arrays (tensors share the arrays' memory)."""
    masks = torch.from_numpy(arrays["masks"]) if "masks" in arrays else None
    return torch.from_numpy(arrays["images"]), masks, arrays["study"], arrays["slice_pos"]


def input_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config parts every item builder reads: ``input`` (less ``augment``, applied per batch, and ``cache``)
    and the dataset with its options (an adapter option may change what a study's loader returns)."""
    return {"input": cfg.input.model_dump(mode="json", exclude={"augment", "cache"}),
            "data": {"dataset": cfg.data.dataset, "options": cfg.data.options}}


def build_store(cohort: Cohort, cfg: ExperimentConfig, classes: list[str] | None = None,
                attributes: list[str] | None = None, progress: bool = True, cache: bool = True) -> ItemStore:
    """Preprocess every study of ``cohort`` once (rich progress bar when ``progress``), or map the items from the
    item cache (``input.cache``, :mod:`cadx.pipeline.item_cache`; ``cache=False`` bypasses it, e.g. one-study
    predictions). ``store.meta["item_cache"]`` says which.

    ``classes``/``attributes`` default to the cohort's (an external cohort passes the trained run's); the per-study
    targets are always computed from the cohort, so they are not part of the cache key.
    Raises CadxDataError naming the study when a study yields no item or items disagree in channels.
    """
    classes = list(classes if classes is not None else cohort.classes)
    attributes = list(attributes if attributes is not None else resolve_attributes(cfg, cohort))
    settings = {**input_settings(cfg), "with_masks": cfg.task.segmentation}
    arrays, _, record = cached_arrays("items", cohort, settings, cfg.input.cache if cache else "off",
                                      lambda: (_build_arrays(cohort, cfg, progress), {}), _MMAP)
    images, masks, study, pos = _store_arrays(arrays)
    labels, attrs, score = study_targets(list(cohort), classes, attributes, cfg.task.score)
    store = ItemStore(images, masks, study, pos, labels, attrs, score, classes, attributes, cohort.study_ids,
                      cohort.patient_ids, meta={"item_cache": record})
    if "path" in record:
        store.attach_cache(record["path"], record["key"])
    return store


def _build_arrays(cohort: Cohort, cfg: ExperimentConfig, progress: bool) -> dict[str, np.ndarray]:
    """The preprocessed arrays of :func:`build_store`: ``images``, ``masks`` (with ``task.segmentation``),
    ``study``, ``slice_pos``."""
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
    out: dict[str, np.ndarray] = {"images": np.stack(imgs).astype(np.float32, copy=False),
                                  "study": np.asarray(study_idx, np.int64), "slice_pos": np.asarray(pos, np.int64)}
    if cfg.task.segmentation:
        out["masks"] = np.stack(masks).astype(np.float32, copy=False)
    return out
