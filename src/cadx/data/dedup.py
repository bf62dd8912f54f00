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

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cadx.utils import atomic_write_bytes

#: Default Hamming threshold (bits of 64): a loose candidate filter, the cosine check decides. The frames of
#: one BUSI lesion (``malignant (3)``…``(9)``) are 0–22 bits apart and ``malignant (3)``'s closest frames are at
#: 18 bits, so the threshold must be ≥ 18; but nearest-neighbour distances of unrelated BUSI images are mostly
#: 16–22 bits (and within-class MedNIST images 2–12), so Hamming alone chains everything (BUSI at 20 bits
#: without the cosine check: 25 groups, one of 114 images). Numbers: ``benchmarks/results/dedup.json``.
DEFAULT_THRESHOLD = 20
#: Default minimum cosine similarity of the 16×16 zero-mean embeddings. Pairs of images of different classes,
#: certainly unrelated, never exceed 0.94 (BUSI max 0.938, MedNIST max 0.897 among pairs within 20 bits),
#: while ``malignant (3)`` links to the other frames of its lesion at 0.970–0.973: 0.95 sits in the gap.
DEFAULT_MIN_NCC = 0.95
#: Largest group joined transitively. Union-find chains near-duplicates of near-duplicates: on MedNIST at the defaults
#: one component held 576 Hand images (one class's test images in one "patient"), which makes a group bootstrap
#: degenerate. A component above this size is regrouped without chaining (:func:`leader_groups`): every member joins
#: the first earlier member it is itself a near-duplicate of that leads a group. BUSI's largest real group (the
#: seven frames of one lesion) stays whole.
DEFAULT_MAX_GROUP = 20


def _box_resize(a: np.ndarray, size: int) -> np.ndarray:
    """Area-average (box filter) resize of a 2D float image to ``size×size`` — anti-aliased and fast (PIL)."""
    if a.shape == (size, size):
        return a
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def _to_grey_stack(images: Iterable[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Images (each ``(H,W)``, ``(C,H,W)`` or ``(H,W,C)`` with C ≤ 4) → ``(N,size,size)`` float64 grey,
    each resized by area averaging (:func:`_box_resize`)."""
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float64)
        if a.ndim == 3:
            a = a.mean(axis=0) if a.shape[0] <= 4 and a.shape[-1] > 4 else a.mean(axis=-1)
        if a.ndim != 2:
            raise ValueError(f"expected a 2D image (optionally with channels), got shape {np.shape(im)}")
        out.append(_box_resize(a, size))
    return np.stack(out) if out else np.zeros((0, size, size))


def phash(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """64-bit DCT perceptual hash(es).

    ``images``: one 2D array ``(H,W)`` → ``np.uint64`` scalar; an ``(N,H,W)`` array or a list of images
    (each ``(H,W)``, ``(C,H,W)`` or ``(H,W,C)``, channels averaged, any size) → ``(N,)`` uint64. Each image
    is resized to 32×32 by area averaging, its 2D DCT-II taken, and bit ``k`` of the hash is set when the
    ``k``-th coefficient of the top-left 8×8 block (row-major) exceeds that block's median. A constant image
    sets at most the DC bit (the most significant one).
    """
    single = isinstance(images, np.ndarray) and images.ndim == 2
    stack = _to_grey_stack([np.asarray(images)] if single else images, 32)
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


def hamming_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024, embeddings: np.ndarray | None = None,
                  min_ncc: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs ``i < j`` with Hamming distance ≤ ``threshold`` (and cosine ≥ ``min_ncc`` when given).

    Returns ``(i, j, distance, ncc, candidates)``: int arrays, the pairs' cosine similarities (NaN when not
    checked) and the number of pairs within the Hamming threshold before the cosine check. Distances are
    popcounts of XORs, computed per row chunk against the upper triangle only, so memory is ``chunk × N``
    and the cosine check is one matrix product per chunk.
    """
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = len(h)
    emb = np.asarray(embeddings, dtype=np.float32) if embeddings is not None else None
    ncc_min = float(min_ncc) if min_ncc is not None else None
    ii, jj, dd, ss = [], [], [], []
    candidates = 0
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = np.bitwise_count(h[s:e, None] ^ h[None, s:])
        ok = d <= threshold
        ok &= np.arange(s, n)[None, :] > np.arange(s, e)[:, None]
        candidates += int(ok.sum())
        if emb is not None and ncc_min is not None:
            sim = emb[s:e] @ emb[s:].T
            ok &= sim >= ncc_min
        r, c = np.nonzero(ok)
        ii.append(r + s)
        jj.append(c + s)
        dd.append(d[r, c])
        ss.append(sim[r, c] if emb is not None and ncc_min is not None else np.full(len(r), np.nan, np.float32))
    if not ii:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0, np.float32), 0
    return (np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64),
            np.concatenate(dd).astype(np.int64), np.concatenate(ss).astype(np.float32), candidates)


def nearest_neighbour_distances(hashes: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Hamming distance of every hash to its nearest other hash, ``(N,)`` int (64 when N == 1)."""
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = len(h)
    out = np.full(n, 64, dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = np.bitwise_count(h[s:e, None] ^ h[None, :]).astype(np.int64)
        d[np.arange(e - s), np.arange(s, e)] = 65
        if n > 1:
            out[s:e] = d.min(axis=1)
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


def leader_groups(members: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Regroup one component without chaining: ``members`` ``(M,)`` image indices (ascending), ``pairs`` ``(P, 2)``
    the confirmed near-duplicate pairs. In index order, an image joins the first leader it is paired with directly,
    else it leads a new group. Returns ``(M,)`` local group numbers ``0..K-1`` (by first appearance). Every member is
    a direct near-duplicate of its group's leader, so a group's diameter is at most two pair steps."""
    pos = {int(m): k for k, m in enumerate(members)}
    nbrs: list[set[int]] = [set() for _ in members]
    for a, b in pairs:
        ka, kb = pos.get(int(a)), pos.get(int(b))
        if ka is not None and kb is not None:
            nbrs[ka].add(kb)
            nbrs[kb].add(ka)
    out = np.full(len(members), -1, np.int64)
    leaders: list[int] = []
    for k in range(len(members)):
        lead = next((g for g, ld in enumerate(leaders) if ld in nbrs[k]), None)
        if lead is None:
            leaders.append(k)
            lead = len(leaders) - 1
        out[k] = lead
    return out


def group_near_duplicates(images: Sequence[np.ndarray] | np.ndarray | None = None, *,
                          hashes: np.ndarray | None = None, embeddings: np.ndarray | None = None,
                          threshold: int = DEFAULT_THRESHOLD, min_ncc: float | None = DEFAULT_MIN_NCC,
                          blocks: Sequence[object] | None = None,
                          max_group: int | None = DEFAULT_MAX_GROUP) -> Grouping:
    """Group near-duplicate images by union-find over close pairs.

    ``max_group``: a connected component larger than this is regrouped by :func:`leader_groups` (no chaining);
    ``None`` keeps every component whole.

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
    if n == 0:
        z = np.zeros(0, np.int64)
        return Grouping(z, np.zeros((0, 2), np.int64), z, None, 0)
    if min_ncc is not None and embeddings is None:
        raise ValueError("min_ncc needs images or embeddings")
    i, j, d, sim, candidates = hamming_pairs(hashes, threshold, embeddings=embeddings, min_ncc=min_ncc)
    ncc = sim if min_ncc is not None else None
    if blocks is not None:
        if len(blocks) != n:
            raise ValueError(f"blocks has {len(blocks)} entries for {n} images")
        _, codes = np.unique(np.asarray([str(b) for b in blocks]), return_inverse=True)
        same = codes[i] == codes[j]
        i, j, d = i[same], j[same], d[same]
        ncc = ncc[same] if ncc is not None else None
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    if max_group is not None and len(i):
        if max_group < 1:
            raise ValueError(f"max_group must be >= 1, got {max_group}")
        sizes = np.bincount(comp)
        pairs = np.stack([i, j], axis=1)
        nxt = int(comp.max()) + 1
        for c in np.flatnonzero(sizes > max_group):
            members = np.flatnonzero(comp == c)
            inside = np.isin(pairs[:, 0], members) & np.isin(pairs[:, 1], members)
            local = leader_groups(members, pairs[inside])
            comp[members] = np.where(local == 0, c, nxt + local - 1)
            nxt += int(local.max())
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(np.argsort(first))  # component → rank of its first member
    groups = order[comp].astype(np.int64)
    return Grouping(groups, np.stack([i, j], axis=1) if len(i) else np.zeros((0, 2), np.int64), d, ncc,
                    candidates)


def cache_dir() -> Path:
    """Folder for cached hashes: ``$CADX_CACHE_DIR`` or ``~/.cache/cadx``."""
    return Path(os.environ.get("CADX_CACHE_DIR") or Path.home() / ".cache" / "cadx")


def _files_key(paths: Sequence[Path], extra: str) -> str:
    key = hashlib.sha1(f"v2|{extra}".encode())
    for p in paths:
        st = Path(p).stat()
        key.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return key.hexdigest()


def _cache_load(name: str, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    path = cache_dir() / "dedup" / f"{name}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError):
        return None  # unreadable cache → recompute


def _cache_save(name: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    try:
        atomic_write_bytes(cache_dir() / "dedup" / f"{name}.npz", buf.getvalue())
    except OSError:
        pass  # a read-only home is not an error: results are just not cached


def file_features(paths: Sequence[Path], read: Callable[[Path], np.ndarray], *, embed_size: int = 16,
                  use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """pHashes ``(N,)`` uint64 and embeddings ``(N, embed_size²)`` of image files, cached on disk.

    ``read(path)`` returns a 2D (or channelled) array. The cache key covers every path, size and mtime, so a
    changed file recomputes; the cache is one ``.npz`` under :func:`cache_dir` written atomically.
    """
    name = _files_key(paths, f"features|{embed_size}")
    hit = _cache_load(name, ("hashes", "embeddings")) if use_cache else None
    if hit is not None and len(hit["hashes"]) == len(paths):
        return hit["hashes"].astype(np.uint64), hit["embeddings"]
    images = [read(Path(p)) for p in paths]
    hashes, emb = phash(images), embed(images, embed_size)
    if use_cache:
        _cache_save(name, hashes=hashes, embeddings=emb)
    return hashes, emb


def group_files(paths: Sequence[Path], read: Callable[[Path], np.ndarray], *,
                threshold: int = DEFAULT_THRESHOLD, min_ncc: float | None = DEFAULT_MIN_NCC,
                use_cache: bool = True, max_group: int | None = DEFAULT_MAX_GROUP) -> np.ndarray:
    """Near-duplicate group per file, ``(N,)`` int (see :func:`group_near_duplicates`), cached on disk."""
    name = _files_key(paths, f"groups|{threshold}|{min_ncc}|{max_group}")
    hit = _cache_load(name, ("groups",)) if use_cache else None
    if hit is not None and len(hit["groups"]) == len(paths):
        return hit["groups"].astype(np.int64)
    hashes, emb = file_features(paths, read, use_cache=use_cache)
    groups = group_near_duplicates(hashes=hashes, embeddings=emb, threshold=threshold, min_ncc=min_ncc,
                                   max_group=max_group).groups
    if use_cache:
        _cache_save(name, groups=groups)
    return groups
