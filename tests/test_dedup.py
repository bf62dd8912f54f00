"""Near-duplicate grouping: pHash against an explicit DCT, Hamming pairs against brute force, grouping."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cadx.data import dedup
from cadx.data.dedup import (
    embed,
    file_features,
    group_files,
    group_near_duplicates,
    hamming,
    hamming_pairs,
    hash_bits,
    nearest_neighbour_distances,
    phash,
)


def _smooth(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random smooth image (low-frequency content, like a scan) in [0, 255]."""
    small = rng.random((6, 6))
    img = np.asarray(Image.fromarray((small * 255).astype(np.float32), mode="F").resize((size, size),
                                                                                          Image.Resampling.BICUBIC))
    return np.clip(img, 0, 255)


def test_phash_matches_explicit_dct() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((32, 32)) * 255
    # DCT-II basis written out: C[k, n] = cos(pi (2n+1) k / 64); the orthonormal scaling does not change the
    # signs of the coefficients relative to their median except for row/col 0, so use it exactly.
    n = np.arange(32)
    c = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64) * np.sqrt(2 / 32)
    c[0] /= np.sqrt(2)
    coef = (c @ img @ c.T)[:8, :8].ravel()
    bits = coef > np.median(coef)
    expected = int("".join("1" if b else "0" for b in bits), 2)
    assert int(phash(img)) == expected
    assert hash_bits(np.array([expected], dtype=np.uint64))[0].tolist() == bits.astype(int).tolist()


def test_phash_batch_equals_single_and_is_scale_invariant() -> None:
    rng = np.random.default_rng(1)
    imgs = [_smooth(rng) for _ in range(4)]
    batch = phash(np.stack(imgs))
    assert batch.dtype == np.uint64 and batch.shape == (4,)
    assert [int(phash(i)) for i in imgs] == batch.tolist()
    big = np.kron(imgs[0], np.ones((3, 3)))  # 192×192 copy of the same picture
    assert hamming(phash(big), batch[0]) == 0
    # constant image: only the DC coefficient is positive
    assert int(phash(np.full((40, 40), 7.0))) == 1 << 63
    assert int(phash(np.zeros((40, 40)))) == 0
    # in a list, RGB (H,W,3) and channel-first (3,H,W) images give the hash of their grey mean
    rgb = np.stack([imgs[1]] * 3, axis=-1)
    assert phash([rgb, np.moveaxis(rgb, -1, 0)]).tolist() == [batch[1], batch[1]]


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    h = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    h[10] = h[3] ^ np.uint64(0b1011)  # 3 bits away
    h[20] = h[3]
    i, j, d, ncc, cand = hamming_pairs(h, 24, chunk=64)
    brute = {(a, b): bin(int(h[a]) ^ int(h[b])).count("1") for a in range(300) for b in range(a + 1, 300)}
    want = {k: v for k, v in brute.items() if v <= 24}
    assert dict(zip(zip(i.tolist(), j.tolist(), strict=True), d.tolist(), strict=True)) == want
    assert cand == len(want) and np.isnan(ncc).all()
    assert brute[(3, 10)] == 3 and brute[(3, 20)] == 0
    nn = nearest_neighbour_distances(h, chunk=50)
    full = np.full((300, 300), 99)
    for (a, b), v in brute.items():
        full[a, b] = full[b, a] = v
    assert nn.tolist() == full.min(axis=1).tolist()


def test_embed_is_normalised_cross_correlation() -> None:
    rng = np.random.default_rng(3)
    a = _smooth(rng, 32)
    e = embed([a, 2 * a + 10, 255 - a, np.full((32, 32), 3.0)], size=16)
    assert e.shape == (4, 256)
    assert np.allclose(np.linalg.norm(e[:3], axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] == pytest.approx(1.0, abs=1e-5)  # affine intensity change
    assert e[0] @ e[2] == pytest.approx(-1.0, abs=1e-5)  # inverted
    assert not e[3].any()  # constant image → zero row


def test_group_near_duplicates_recovers_copies() -> None:
    rng = np.random.default_rng(4)
    bases = [_smooth(rng) for _ in range(5)]
    images = [bases[0], bases[1], bases[0] + rng.normal(0, 2, (64, 64)), bases[2], bases[3],
              np.kron(bases[1], np.ones((2, 2))), bases[4], bases[2] * 0.9 + 5]
    g = group_near_duplicates(images)
    # groups numbered by first appearance: 0 = base0, 1 = base1, 2 = base2, 3, 4
    assert g.groups.tolist() == [0, 1, 0, 2, 3, 1, 4, 2]
    assert g.n_groups == 5 and len(g.pairs) == 3
    assert (g.ncc >= dedup.DEFAULT_MIN_NCC).all()
    exact = group_near_duplicates(images, threshold=0, min_ncc=None)  # the noisy copy may move a few bits
    assert exact.groups[5] == exact.groups[1]
    blocked = group_near_duplicates(images, blocks=["a", "b", "c", "a", "a", "b", "a", "a"])
    assert blocked.groups[2] != blocked.groups[0]  # different blocks never join
    assert blocked.groups[7] == blocked.groups[3]
    empty = group_near_duplicates(hashes=np.zeros(0, np.uint64), min_ncc=None)
    assert empty.n_groups == 0
    with pytest.raises(ValueError):
        group_near_duplicates(hashes=np.zeros(3, np.uint64))  # min_ncc without embeddings


def test_file_features_and_groups_are_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CADX_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    a, b = _smooth(rng), _smooth(rng)
    paths = []
    for k, im in enumerate([a, b, a]):
        p = tmp_path / f"{k}.png"
        Image.fromarray(im.astype(np.uint8)).save(p)
        paths.append(p)
    calls = []

    def read(p):
        calls.append(p)
        return np.asarray(Image.open(p))

    h1, e1 = file_features(paths, read)
    assert len(calls) == 3 and h1[0] == h1[2] != h1[1]
    h2, e2 = file_features(paths, read)
    assert len(calls) == 3 and np.array_equal(h1, h2) and np.array_equal(e1, e2)
    assert group_files(paths, read).tolist() == [0, 1, 0]
    assert len(list((tmp_path / "cache" / "dedup").glob("*.npz"))) == 2
    Image.fromarray(b.astype(np.uint8)).save(paths[2])  # file changed → recomputed
    assert group_files(paths, read).tolist() == [0, 1, 1]


def test_leader_groups_break_a_chain_hand_case() -> None:
    from cadx.data.dedup import leader_groups

    # path 10-11-12-13-14: 11 joins leader 10; 12 is not a neighbour of 10, so it leads; 13 joins 12; 14 leads
    members = np.array([10, 11, 12, 13, 14])
    pairs = np.array([[10, 11], [11, 12], [12, 13], [13, 14]])
    assert leader_groups(members, pairs).tolist() == [0, 0, 1, 1, 2]
    # a star around 10 stays one group
    star = np.array([[10, 11], [10, 12], [10, 13], [10, 14]])
    assert leader_groups(members, star).tolist() == [0, 0, 0, 0, 0]


def test_max_group_bounds_transitive_chaining() -> None:
    from cadx.data.dedup import group_near_duplicates

    # hashes 5 bits apart in a chain (0, 5, 10, 15, 20 low bits set): neighbours are within 5 bits, the rest are not
    hashes = np.array([(1 << k) - 1 for k in (0, 5, 10, 15, 20)], dtype=np.uint64)
    chained = group_near_duplicates(hashes=hashes, threshold=5, min_ncc=None, max_group=None)
    assert chained.groups.tolist() == [0, 0, 0, 0, 0]
    bounded = group_near_duplicates(hashes=hashes, threshold=5, min_ncc=None, max_group=3)
    assert bounded.groups.tolist() == [0, 0, 1, 1, 2]
    assert len(bounded.pairs) == 4                     # the confirmed pairs are reported unchanged
    small = group_near_duplicates(hashes=hashes, threshold=5, min_ncc=None, max_group=5)
    assert small.groups.tolist() == [0, 0, 0, 0, 0]    # a component within the bound is kept whole
