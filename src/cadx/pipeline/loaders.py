"""Item tensors → dict batches: per-epoch resampling, Siamese partners and seeded batch augmentation.

A training epoch is a pure function of ``(seed, epoch)``: the resampled/shuffled order (``EpochIndexSampler`` or
``ClassBalancedBatchSampler``), the partners (``pair_partners``/``random_pairs`` with ``rng([seed, epoch])``) and the
augmentation of batch ``b`` (``rng([seed, epoch, b])``). A resumed run therefore sees exactly the batches an
uninterrupted one would. Batches are built by ``ItemDataset.__getitems__`` (one tensor gather per batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cadx.config import AugmentConfig, ExperimentConfig
from cadx.pipeline.augment import augment_batch
from cadx.pipeline.items import ItemStore
from cadx.pipeline.samplers import (
    ClassBalancedBatchSampler,
    EpochIndexSampler,
    oversample_indices,
    pair_partners,
    random_pairs,
    undersample_indices,
)


@dataclass(frozen=True)
class BatchKey:
    """One training batch: positions into the dataset's items, their partners (or None), epoch and batch number."""

    epoch: int
    batch: int
    items: tuple[int, ...]
    partners: tuple[int, ...] | None = None


def _passthrough(batch: Any) -> Any:
    return batch


class ItemDataset(Dataset):
    """Items ``positions`` (indices into ``store``) of one part of a fold.

    ``__getitems__`` takes a :class:`BatchKey` (training: augmented when ``augment`` is enabled, partners added as
    ``*_b`` keys) or a list of positions (evaluation; ``eval_partners`` adds fixed partners for paired objectives).
    """

    def __init__(self, store: ItemStore, positions: np.ndarray, augment: AugmentConfig | None = None,
                 seed: int = 0, eval_partners: np.ndarray | None = None) -> None:
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = int(seed)
        self.eval_partners = eval_partners

    def __len__(self) -> int:
        return int(self.positions.size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])

    def _gather(self, pos: np.ndarray, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        st = self.store
        items = self.positions[pos]
        idx = torch.from_numpy(items)
        studies = st.study[items]
        image = st.images.index_select(0, idx)
        mask = st.masks.index_select(0, idx) if st.masks is not None else None
        if rng is not None and self.augment is not None:
            image, mask = augment_batch(image, mask, self.augment, rng)
        out = {
            "image": image,
            "label": torch.from_numpy(st.labels[studies]),
            "attributes": torch.from_numpy(st.attributes[studies]),
            "score": torch.from_numpy(st.score[studies]),
            "study_index": torch.from_numpy(studies),
            "item_index": idx,
        }
        if mask is not None:
            out["mask"] = mask
        return out

    def __getitems__(self, key: BatchKey | list[int]) -> dict[str, torch.Tensor]:
        if isinstance(key, BatchKey):
            base = [self.seed, key.epoch, key.batch]
            out = self._gather(np.asarray(key.items), np.random.default_rng([*base, 0]))
            if key.partners is not None:
                out_b = self._gather(np.asarray(key.partners), np.random.default_rng([*base, 1]))
                out.update({f"{k}_b": v for k, v in out_b.items()})
            return out
        pos = np.asarray(key, dtype=np.int64)
        out = self._gather(pos, None)
        if self.eval_partners is not None:
            out.update({f"{k}_b": v for k, v in self._gather(self.eval_partners[pos], None).items()})
        return out


class EpochBatchSampler(Sampler):
    """Yields the :class:`BatchKey` s of one epoch; ``set_epoch`` (called by Lightning) selects the epoch.

    ``kind``: plain/oversample/undersample (an :class:`EpochIndexSampler` cut into batches; a trailing batch of one
    item is merged into the previous batch so BatchNorm always sees ≥ 2) or balanced (class-balanced batches).
    ``pairs``: none | balanced (``pair_partners``) | random (``random_pairs``), drawn with ``rng([seed, epoch])``.
    """

    def __init__(self, y: np.ndarray, batch_size: int, seed: int, kind: str = "plain", ratio: float = 1.0,
                 pairs: str = "none") -> None:
        self.y = np.asarray(y, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.kind = kind
        self.pairs = pairs
        self.epoch = 0
        # Lightning calls set_epoch only on ``loader.sampler`` and ``loader.batch_sampler.sampler``, never on the
        # batch sampler itself, and stops after len(loader) batches (so the increment at the end of __iter__ never
        # runs): exposing ourselves as ``.sampler`` is what makes every epoch draw its own order, partners and
        # augmentation (without it every epoch replayed epoch 0).
        self.sampler = self
        n = self.y.size
        if kind == "balanced":
            self.inner: Sampler = ClassBalancedBatchSampler(self.y, self.batch_size, seed=self.seed)
        else:
            fns = {"plain": lambda rng: np.arange(n),
                   "oversample": lambda rng: oversample_indices(self.y, rng, ratio),
                   "undersample": lambda rng: undersample_indices(self.y, rng, ratio)}
            self.inner = EpochIndexSampler(fns[kind], seed=self.seed, shuffle=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """This epoch's batches (positions into the training items)."""
        self.inner.set_epoch(self.epoch)  # type: ignore[attr-defined]
        if isinstance(self.inner, ClassBalancedBatchSampler):
            return [list(b) for b in self.inner]
        idx = self.inner.indices().tolist()  # type: ignore[attr-defined]
        out = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2].extend(out.pop())
        return out

    def partners(self) -> np.ndarray | None:
        if self.pairs == "none":
            return None
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.pairs == "balanced":
            return pair_partners(self.y, rng, balanced=True)
        return random_pairs(self.y.size, rng)

    def __iter__(self) -> Iterator[BatchKey]:
        partners = self.partners()
        for b, items in enumerate(self.batches()):
            part = tuple(int(p) for p in partners[items]) if partners is not None else None
            yield BatchKey(self.epoch, b, tuple(items), part)
        self.epoch += 1

    def __len__(self) -> int:
        if isinstance(self.inner, ClassBalancedBatchSampler):
            return len(self.inner)
        self.inner.set_epoch(self.epoch)  # type: ignore[attr-defined]
        n = len(self.inner)  # type: ignore[arg-type]
        return max(1, n // self.batch_size + (1 if n % self.batch_size > 1 else 0)) if n else 0


def train_loader(store: ItemStore, items: np.ndarray, cfg: ExperimentConfig, seed: int) -> DataLoader:
    """DataLoader over the training ``items`` with the config's sampler, pairs and augmentation.

    Unlabelled items are dropped when the task is classification only (they carry no target).
    """
    y = store.item_labels(items)
    if cfg.task.classification and not cfg.task.attributes and not cfg.task.segmentation:
        items, y = items[y >= 0], y[y >= 0]
    ds = ItemDataset(store, items, cfg.input.augment, seed=seed)
    sampler = EpochBatchSampler(y, cfg.train.batch_size, seed, cfg.sampler.kind, cfg.sampler.ratio, cfg.pairs)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=_passthrough, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def eval_loader(store: ItemStore, items: np.ndarray, batch_size: int, pairs: str = "none",
                seed: int = 0) -> DataLoader:
    """Sequential, unaugmented batches of ``items``; with ``pairs`` != none each item gets a fixed partner
    (drawn once with ``rng([seed, -1])``) so a paired objective can be evaluated."""
    partners = None
    if pairs != "none" and items.size >= 2:
        y = store.item_labels(items)
        rng = np.random.default_rng([seed, 2**31 - 1])
        partners = pair_partners(y, rng, balanced=True) if pairs == "balanced" and (y >= 0).all() \
            else random_pairs(items.size, rng)
    ds = ItemDataset(store, items, None, seed=seed, eval_partners=partners)
    n = int(items.size)
    bs = max(1, min(batch_size, n))
    batches = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
    return DataLoader(ds, batch_sampler=batches, collate_fn=_passthrough, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    return max(1, math.ceil(n_items / batch_size))
