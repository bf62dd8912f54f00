"""Near-duplicate grouping for datasets without patient ids (MedNIST, BUSI, ...).

Two images are called near-duplicates when their 64-bit DCT perceptual hashes (:func:`phash`) differ in at
most ``threshold`` bits and, optionally, their normalised low-resolution embeddings (:func:`embed`) have a
cosine similarity (= normalised cross-correlation) of at least ``min_ncc``. Near-duplicate pairs are joined
transitively (connected components = union-find) into groups, which then play the role of patients so that
frames of one lesion or repeated exports of one scan never sit on both sides of a split.

Everything is vectorised: hashing is one batched DCT, pairwise Hamming distances are chunked matrix
products of the bit matrices, so MedNIST's 12 000 images group in about a second once they are in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import block_reduce
from skimage.transform import resize

#: Default Hamming threshold (bits of 64). Chosen from the nearest-neighbour distance distributions of BUSI
#: and MedNIST (see ``benchmarks/results/dedup.json``): true repeats sit at 0–6 bits, BUSI's frames of one
#: lesion (``malignant (3)``…``(8)``) at ≤ 10, while unrelated images of the same class rarely fall below 12.
DEFAULT_THRESHOLD = 20
#: Default confirmation threshold on the cosine similarity of the 16×16 zero-mean embeddings.
DEFAULT_MIN_NCC = 0.97


def _to_grey_stack(images: Iterable[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Images (each ``(H,W)``, ``(C,H,W)`` or ``(H,W,C)`` with C ≤ 4) → ``(N,size,size)`` float64 grey.

    Equal-shape inputs are resized as one stack (block mean when the size divides evenly).
    """
    grey = []
    for im in images:
        a = np.asarray(im, dtype=np.float64)
        if a.ndim == 3:
            a = a.mean(axis=0) if a.shape[0] <= 4 and a.shape[-1] > 4 else a.mean(axis=-1)
        if a.ndim != 2:
            raise ValueError(f"expected a 2D image (optionally with channels), got shape {np.shape(im)}")
        grey.append(a)
    if not grey:
        return np.zeros((0, size, size))
    if len({a.shape for a in grey}) == 1:
        st = np.stack(grey)
        h, w = st.shape[1:]
        if (h, w) == (size, size):
            return st
        if h % size == 0 and w % size == 0:
            return block_reduce(st, (1, h // size, w // size), np.mean)
        return resize(st, (len(st), size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.stack([resize(a, (size, size), order=1, anti_aliasing=True, preserve_range=True) for a in grey])


def phash(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """64-bit DCT perceptual hash(es).

    ``images``: one 2D image ``(H,W)`` (channels ``(C,H,W)``/``(H,W,C)`` are averaged) → ``np.uint64``
    scalar; or a sequence / ``(N,H,W)`` stack → ``(N,)`` uint64. Each image is resized to 32×32
    (anti-aliased), its 2D DCT-II taken, and bit ``k`` of the hash is set when the ``k``-th coefficient of
    the top-left 8×8 block (row-major) exceeds that block's median. Constant images hash to 0.
    """
    single = isinstance(images, np.ndarray) and images.ndim == 2
    stack = _to_grey_stack([images] if single else images, 32)
    coef = scipy.fft.dctn(stack, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(stack), 64)
    bits = coef > np.median(coef, axis=1, keepdims=True)
    hashes = np.packbits(bits, axis=1, bitorder="big").view(">u8").ravel().astype(np.uint64)
    return hashes[0] if single else hashes


def hash_bits(hashes: np.ndarray) -> np.ndarray:
    """``(N,)`` uint64 hashes → ``(N,64)`` uint8 bit matrix (most significant bit first)."""
    h = np.asarray(hashes, dtype=np.uint64).astype(">u8")
    return np.unpackbits(h.view(np.uint8).reshape(-1, 8), axis=1, bitorder="big")


def hamming(a: np.uint64 | int, b: np.uint64 | int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


def embed(images: np.ndarray | Sequence[np.ndarray], size: int = 16) -> np.ndarray:
    """Normalised low-resolution embedding: grey, resized to ``size×size``, zero mean, unit L2 norm.

    Returns ``(N, size*size)`` float32; the dot product of two rows is their normalised cross-correlation.
    Constant images give an all-zero row (similarity 0 with everything).
    """
    stack = _to_grey_stack(images, size).reshape(-1, size * size)
    stack = stack - stack.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(stack, axis=1, keepdims=True)
    return np.divide(stack, norm, out=np.zeros_like(stack), where=norm > 0).astype(np.float32)


def hamming_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """All pairs ``i < j`` with Hamming distance ≤ ``threshold``: ``(i, j, distance)`` int arrays.

    Computed as ``|a| + |b| − 2 a·b`` on the bit matrices in row chunks, so memory is ``chunk × N``.
    """
    bits = hash_bits(hashes).astype(np.float32)
    n = len(bits)
    ones = bits.sum(axis=1)
    ii, jj, dd = [], [], []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = ones[s:e, None] + ones[None, :] - 2.0 * (bits[s:e] @ bits.T)
        r, c = np.nonzero(d <= threshold + 0.5)
        keep = c > r + s
        ii.append(r[keep] + s)
        jj.append(c[keep])
        dd.append(np.rint(d[r[keep], c[keep]]).astype(np.int64))
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64),
            np.concatenate(dd).astype(np.int64))


def nearest_neighbour_distances(hashes: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Hamming distance of every hash to its nearest other hash, ``(N,)`` int (64 when N == 1)."""
    bits = hash_bits(hashes).astype(np.float32)
    n = len(bits)
    ones = bits.sum(axis=1)
    out = np.full(n, 64, dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = ones[s:e, None] + ones[None, :] - 2.0 * (bits[s:e] @ bits.T)
        d[np.arange(e - s), np.arange(s, e)] = np.inf
        if n > 1:
            out[s:e] = np.rint(d.min(axis=1)).astype(np.int64)
    return out


def pair_similarity(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Cosine similarity ``embeddings[i[p]] · embeddings[j[p]]`` for each pair, ``(P,)`` float32 (batched)."""
    out = np.zeros(len(i), dtype=np.float32)
    for s in range(0, len(i), batch):
        a, b = embeddings[i[s:s + batch]], embeddings[j[s:s + batch]]
        out[s:s + batch] = np.einsum("pd,pd->p", a, b)
    return out


@dataclass
class Grouping:
    """Result of :func:`group_near_duplicates`: ``groups`` (N,) int, the kept pairs and their scores."""

    groups: np.ndarray
    pairs: np.ndarray  # (P, 2) int, i < j
    distances: np.ndarray  # (P,) Hamming distance
    ncc: np.ndarray | None  # (P,) cosine similarity of the embeddings, None when not checked
    candidates: int  # pairs within the Hamming threshold before confirmation

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1 if self.groups.size else 0


def group_near_duplicates(images: Sequence[np.ndarray] | np.ndarray | None = None, *,
                          hashes: np.ndarray | None = None, embeddings: np.ndarray | None = None,
                          threshold: int = DEFAULT_THRESHOLD, min_ncc: float | None = DEFAULT_MIN_NCC,
                          blocks: Sequence[object] | None = None) -> Grouping:
    """Group near-duplicate images by union-find over close pairs.

    Give ``images`` (2D arrays, any size; hashes and embeddings are computed) or precomputed ``hashes``
    ``(N,)`` uint64 (and ``embeddings`` ``(N,D)`` from :func:`embed` when ``min_ncc`` is not None).
    A pair joins when Hamming ≤ ``threshold`` and (if ``min_ncc`` is not None) cosine ≥ ``min_ncc``.
    ``blocks`` (one key per image, e.g. the class) restricts pairs to images with equal keys.
    Group ids are ``0..G-1`` numbered by first appearance (deterministic); singletons get their own group.
    """
    if hashes is None:
        if images is None:
            raise ValueError("give images or hashes")
        hashes = phash(images)
        if min_ncc is not None and embeddings is None:
            embeddings = embed(images)
    hashes = np.asarray(hashes, dtype=np.uint64).ravel()
    n = len(hashes)
    if not 0 <= threshold <= 64:
        raise ValueError(f"threshold must be within 0..64, got {threshold}")
    i, j, d = hamming_pairs(hashes, threshold)
    if blocks is not None:
        if len(blocks) != n:
            raise ValueError(f"blocks has {len(blocks)} entries for {n} images")
        _, codes = np.unique(np.asarray([str(b) for b in blocks]), return_inverse=True)
        same = codes[i] == codes[j]
        i, j, d = i[same], j[same], d[same]
    candidates = len(i)
    ncc = None
    if min_ncc is not None:
        if embeddings is None:
            raise ValueError("min_ncc needs images or embeddings")
        emb = np.asarray(embeddings, dtype=np.float32)
        ncc = pair_similarity(emb, i, j)
        ok = ncc >= min_ncc
        i, j, d, ncc = i[ok], j[ok], d[ok], ncc[ok]
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(np.argsort(first))  # component → rank of its first member
    groups = order[comp].astype(np.int64) if n else np.zeros(0, np.int64)
    return Grouping(groups, np.stack([i, j], axis=1) if len(i) else np.zeros((0, 2), np.int64), d, ncc,
                    candidates)
