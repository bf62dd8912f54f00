"""Index-level resampling, class-balanced batches, Siamese partners and the imbalance generators of thesis A.2.

All functions take integer class labels ``y`` of shape ``(N,)`` (``-1`` = unlabelled) and an explicit
``np.random.Generator``; they return indices into ``y`` (int64). Apply them to the **training** part only.
Unlabelled examples are kept once by oversampling and dropped by undersampling and the imbalance generators.

Resampling ``ratio`` (both directions) is the target *minority/majority* ratio after sampling, i.e. the
resulting imbalance ratio ρ' = max_i |C_i| / min_i |C_i| (A.2, Eq. 2) is at most ``1/ratio`` (up to
rounding). ``ratio=1`` is full balance, as in A.2's "oversampling up to the majority count" and
"undersampling until all classes have the same number of examples"; ``0 < ratio < 1`` is A.2's partial
resampling to an intermediate imbalance ratio (§4.5, Fig. 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from cadx.errors import CadxConfigError, CadxDataError


def _labels(y: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y as int64, present classes ascending, their counts)."""
    arr = np.asarray(y)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise CadxDataError(f"labels must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}",
                            field="y")
    arr = arr.astype(np.int64)
    classes, counts = np.unique(arr[arr >= 0], return_counts=True)
    if classes.size == 0:
        raise CadxDataError("no labelled examples", field="y")
    return arr, classes, counts


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise CadxConfigError(f"resampling ratio must be in (0, 1], got {ratio}")


def oversample_indices(y: Sequence[int] | np.ndarray, rng: np.random.Generator, ratio: float = 1.0) -> np.ndarray:
    """Random minority oversampling: every original index once, plus copies drawn with replacement
    from each class until it has ``ceil(ratio × majority count)`` examples. Unlabelled indices are kept
    once. Returns sorted indices, shape ``(M,)`` with ``M ≥ N``."""
    _check_ratio(ratio)
    arr, classes, counts = _labels(y)
    target = math.ceil(ratio * counts.max() - 1e-9)
    extra = []
    for c, n in zip(classes, counts, strict=True):
        if n < target:
            members = np.flatnonzero(arr == c)
            extra.append(rng.choice(members, size=target - n, replace=True))
    return np.sort(np.concatenate([np.arange(arr.size), *extra])).astype(np.int64)


def undersample_indices(y: Sequence[int] | np.ndarray, rng: np.random.Generator,
                        ratio: float = 1.0) -> np.ndarray:
    """Random majority undersampling: each class keeps at most ``floor(minority count / ratio)`` examples,
    drawn without replacement (classes at or below the cap are kept whole; unlabelled indices dropped).
    Returns sorted indices, shape ``(M,)`` with ``M ≤ N``."""
    _check_ratio(ratio)
    arr, classes, counts = _labels(y)
    cap = math.floor(counts.min() / ratio + 1e-9)
    keep = []
    for c, n in zip(classes, counts, strict=True):
        members = np.flatnonzero(arr == c)
        keep.append(members if n <= cap else rng.choice(members, size=cap, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)


class EpochIndexSampler(Sampler[int]):
    """A torch sampler that redraws its indices every epoch: ``indices_fn(np.random.default_rng([seed,
    epoch]))`` (e.g. ``lambda rng: oversample_indices(y, rng)``), shuffled with the same generator when
    ``shuffle``. ``set_epoch(e)`` (Lightning calls it) selects the draw; each full iteration also advances
    the epoch by one, so a plain loop redraws too. ``len()`` is the current epoch's number of indices."""

    def __init__(self, indices_fn: Callable[[np.random.Generator], np.ndarray], seed: int = 0,
                 shuffle: bool = True) -> None:
        self.indices_fn = indices_fn
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This epoch's indices (cached per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            idx = np.asarray(self.indices_fn(rng), dtype=np.int64)
            if self.shuffle:
                idx = rng.permutation(idx)
            self._cache = (self.epoch, idx)
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        idx = self.indices()
        yield from (int(i) for i in idx)
        self.epoch += 1

    def __len__(self) -> int:
        return int(self.indices().size)


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Batches with (nearly) equal numbers of each class ("class-aware sampling").

    Each batch holds ``batch_size // K`` examples of every one of the K classes present plus one more for
    ``batch_size % K`` classes taken from a shuffled cycle of the classes (so over batches every class gets
    the same number of extras). Within a class, examples are taken from a shuffled list,
    reshuffled when exhausted, so every example is seen before any repeats. ``num_batches`` defaults to
    ``ceil(N / batch_size)``. The draw depends on ``(seed, epoch)`` only; ``set_epoch`` selects it and a full
    iteration advances it. Unlabelled (``-1``) indices are never sampled.
    """

    def __init__(self, y: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0,
                 num_batches: int | None = None) -> None:
        arr, classes, _ = _labels(y)
        if batch_size < 1:
            raise CadxConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.members = [np.flatnonzero(arr == c) for c in classes]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_batches = int(num_batches) if num_batches is not None else math.ceil(arr.size / batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        k = len(self.members)
        per, rem = divmod(self.batch_size, k)
        queues = [rng.permutation(m) for m in self.members]
        pos = [0] * k
        extra: list[int] = []                    # cycle of classes that receive the remainder
        for _ in range(self.num_batches):
            take = np.full(k, per)
            got: list[int] = []
            for _ in range(rem):
                if not extra:                    # refill; classes already extra in this batch go last
                    fresh = rng.permutation(k).tolist()
                    extra = [c for c in fresh if c in got] + [c for c in fresh if c not in got]
                got.append(extra.pop())
                take[got[-1]] += 1
            batch: list[int] = []
            for c in range(k):
                for _ in range(int(take[c])):
                    if pos[c] == queues[c].size:
                        queues[c], pos[c] = rng.permutation(self.members[c]), 0
                    batch.append(int(queues[c][pos[c]]))
                    pos[c] += 1
            yield [batch[i] for i in rng.permutation(len(batch))]
        self.epoch += 1


# --- Siamese partners ------------------------------------------------------------------------------------

def random_pairs(n: int, rng: np.random.Generator) -> np.ndarray:
    """MTMR-Net pairing: for each of ``n`` items one partner drawn uniformly from the others, ignoring
    labels. Returns ``(n,)`` int64 with ``partner[i] != i``; needs ``n ≥ 2``."""
    if n < 2:
        raise CadxDataError(f"pairing needs at least 2 items, got {n}", field="y")
    r = rng.integers(0, n - 1, size=n)
    return (r + (r >= np.arange(n))).astype(np.int64)


def pair_partners(y: Sequence[int] | np.ndarray, rng: np.random.Generator, balanced: bool = True) -> np.ndarray:
    """DMRN pairing (P = f, one partner per training image per epoch). Shape ``(N,)`` int64, never self.

    ``balanced``: the partner's class is drawn uniformly over the classes present, then the partner
    uniformly within that class, so every sub-class contributes equally to the pairs whatever its size
    (DMRN: "all sub-classes have equal contributions"). An image alone in its class is paired with
    another class. ``balanced=False`` is :func:`random_pairs`. Unlabelled examples are an error when
    balanced.
    """
    arr = np.asarray(y)
    if not balanced:
        return random_pairs(arr.size, rng)
    arr, classes, counts = _labels(arr)
    if (arr < 0).any():
        raise CadxDataError("balanced pairing needs every example labelled", field="y")
    if arr.size < 2:
        raise CadxDataError(f"pairing needs at least 2 items, got {arr.size}", field="y")
    k = classes.size
    cls_idx = np.searchsorted(classes, arr)                      # class position of each item
    choice = rng.integers(0, k, size=arr.size)                   # partner class position
    lonely = (choice == cls_idx) & (counts[cls_idx] == 1)        # own class has nobody else
    if lonely.any():
        r = rng.integers(0, k - 1, size=int(lonely.sum()))
        choice[lonely] = r + (r >= cls_idx[lonely])
    members = [np.flatnonzero(arr == c) for c in classes]
    rank = np.empty(arr.size, dtype=np.int64)                    # position of each item in its class list
    for m in members:
        rank[m] = np.arange(m.size)
    partner = np.empty(arr.size, dtype=np.int64)
    for c in range(k):
        who = np.flatnonzero(choice == c)
        same = cls_idx[who] == c
        n_c = members[c].size
        r = rng.integers(0, np.where(same, n_c - 1, n_c))
        r = r + (same & (r >= rank[who]))                        # skip self within the own class
        partner[who] = members[c][r]
    return partner


# --- imbalance generators (thesis A.2) -------------------------------------------------------------------

def imbalance_counts(kind: str, n_classes: int, base: int, rho: float, mu: float | None = None) -> np.ndarray:
    """Class sizes of an A.2 imbalanced set, smallest first, shape ``(n_classes,)``.

    ``step``: ``round(mu × K)`` minority classes of ``max(1, round(base/rho))`` and the rest of ``base``.
    ``linear``: sizes from ``base/rho`` to ``base`` with a constant difference between consecutive
    classes, rounded (A.2: "interpolated linearly such that the difference between consecutive pairs of
    classes is constant"). E.g. K=6, base=2000, ρ=10 → step(μ=0.5) 200,200,200,2000,2000,2000 and
    linear 200,560,920,1280,1640,2000.
    """
    if rho < 1:
        raise CadxConfigError(f"imbalance ratio rho must be ≥ 1, got {rho}")
    if n_classes < 2:
        raise CadxConfigError(f"imbalance needs at least 2 classes, got {n_classes}")
    low = max(1, round(base / rho))
    if kind == "step":
        if mu is None or not 0.0 < mu < 1.0:
            raise CadxConfigError(f"step imbalance needs 0 < mu < 1, got {mu}")
        n_min = round(mu * n_classes)
        if not 1 <= n_min <= n_classes - 1:
            raise CadxConfigError(f"mu={mu} with {n_classes} classes gives {n_min} minority classes")
        return np.array([low] * n_min + [base] * (n_classes - n_min), dtype=np.int64)
    if kind == "linear":
        sizes = np.rint(np.linspace(base / rho, base, n_classes)).astype(np.int64)
        return np.maximum(sizes, 1)
    raise CadxConfigError(f"unknown imbalance kind {kind!r} (step or linear)")


def _imbalance(y: Sequence[int] | np.ndarray, kind: str, rho: float, mu: float | None,
               rng: np.random.Generator, minority: str | Sequence[int], base: int | None) -> np.ndarray:
    arr, classes, counts = _labels(y)
    k = classes.size
    base = int(counts.min()) if base is None else int(base)
    if base > counts.min():
        raise CadxDataError(f"base count {base} exceeds the smallest class ({counts.min()} examples)",
                            field="y")
    sizes = imbalance_counts(kind, k, base, rho, mu)
    perm = rng.permutation(k)                      # always drawn, so the streams below do not depend on mode
    if isinstance(minority, str):
        if minority == "random":
            order = perm
        elif minority == "lowest":
            order = np.arange(k)
        else:
            raise CadxConfigError(f"minority must be 'random', 'lowest' or a list of classes, got {minority!r}")
    else:
        first = [int(np.flatnonzero(classes == c)[0]) for c in minority if c in classes]
        if len(first) != len(set(minority)):
            raise CadxDataError(f"minority classes {list(minority)} not all among {classes.tolist()}", field="y")
        order = np.array(first + [i for i in range(k) if i not in first])
    # order[j] gets sizes[j] (smallest first); each class keeps a prefix of its own permutation, drawn in
    # class order, so with one seed the subsets are nested across rho (and across mu with "lowest").
    n_for = np.empty(k, dtype=np.int64)
    n_for[order] = sizes
    keep = [rng.permutation(np.flatnonzero(arr == c))[: n_for[i]] for i, c in enumerate(classes)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def step_imbalance(y: Sequence[int] | np.ndarray, rho: float, mu: float, rng: np.random.Generator,
                   minority: str | Sequence[int] = "random", base: int | None = None) -> np.ndarray:
    """A.2 step imbalance: a fraction ``mu`` of the classes (Eq. 1) keep ``base/rho`` examples, the others
    ``base`` (ρ = max/min, Eq. 2), each a random subset without replacement.

    ``base`` defaults to the smallest class count (A.2 first subsamples every class to a common count).
    ``minority``: ``"random"`` picks the minority classes at random (A.2 MNIST: "every time the subset of
    minority classes is randomized"), ``"lowest"`` takes the lowest class indices (A.2 CIFAR-10, nested
    sets), or an explicit list of class labels. Returns sorted indices into ``y``.
    """
    if not isinstance(minority, str):
        k = np.unique(np.asarray(y)[np.asarray(y) >= 0]).size
        if len(set(minority)) != round(mu * k):
            raise CadxConfigError(f"{len(set(minority))} minority classes given but mu={mu} × {k} classes "
                                  f"= {round(mu * k)}")
    return _imbalance(y, "step", rho, mu, rng, minority, base)


def linear_imbalance(y: Sequence[int] | np.ndarray, rho: float, rng: np.random.Generator,
                     minority: str | Sequence[int] = "random", base: int | None = None) -> np.ndarray:
    """A.2 linear imbalance: class sizes from ``base/rho`` to ``base`` with constant steps (see
    :func:`imbalance_counts`). ``minority`` orders the classes from smallest to largest: ``"random"``,
    ``"lowest"`` (class 0 smallest) or an explicit list (first = smallest). Returns sorted indices."""
    return _imbalance(y, "linear", rho, None, rng, minority, base)
