"""Near-duplicate grouping on the real datasets without patient ids (BUSI, MedNIST): the evidence for the
default thresholds and the groups they give.

For each dataset: nearest-neighbour Hamming distance histogram of the 64-bit pHashes, the cosine similarity
(NCC of the 16×16 embeddings) of pairs that are certainly unrelated (different classes) and of random
same-class pairs, the group count over a grid of (Hamming threshold, min NCC), and at the defaults: groups,
group-size histogram, the largest groups and the grouping time. BUSI also checks that the frames of one
lesion, ``malignant (3)``…``(9)``, fall in one group. Writes ``benchmarks/results/dedup.json``.

    .venv/bin/python benchmarks/dedup_datasets.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.datasets.mednist import read_grey
from cadx.data.dedup import (
    DEFAULT_MAX_GROUP,
    DEFAULT_MIN_NCC,
    DEFAULT_THRESHOLD,
    embed,
    group_near_duplicates,
    hamming_pairs,
    nearest_neighbour_distances,
    phash,
)
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
GRID_T = (0, 6, 10, 14, 18, 20, 24)
GRID_NCC = (None, 0.9, 0.95, 0.97, 0.98)


def _files(root: Path, pattern: str) -> tuple[list[Path], list[str]]:
    files = sorted(p for p in root.glob(pattern) if "_mask" not in p.stem)
    return files, [p.parent.name for p in files]


def analyse(name: str, files: list[Path], labels: list[str], rng: np.random.Generator,
            grid_t: tuple[int, ...] = GRID_T, grid_ncc: tuple[float | None, ...] = GRID_NCC) -> dict[str, Any]:
    t0 = time.perf_counter()
    images = [read_grey(p) for p in files]
    t1 = time.perf_counter()
    hashes, emb = phash(images), embed(images)
    t2 = time.perf_counter()
    g = group_near_duplicates(hashes=hashes, embeddings=emb)
    t3 = time.perf_counter()
    lab = np.asarray(labels)
    nn = nearest_neighbour_distances(hashes)
    # similarity of unrelated pairs: different classes (exhaustive for small sets, sampled otherwise)
    n = len(files)
    a, b = rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)
    keep = a != b
    a, b = a[keep], b[keep]
    sim = np.einsum("pd,pd->p", emb[a], emb[b])
    cross, same = lab[a] != lab[b], lab[a] == lab[b]
    i, j, _, ncc, _ = hamming_pairs(hashes, DEFAULT_THRESHOLD, embeddings=emb, min_ncc=-1.0)
    within = {"pairs": len(i), "cross_class": int((lab[i] != lab[j]).sum()),
              "cross_class_max_ncc": float(ncc[lab[i] != lab[j]].max()) if (lab[i] != lab[j]).any() else None,
              "ncc_quantiles": {f"q{q}": float(np.quantile(ncc, q / 100)) for q in (5, 50, 95)} if len(ncc) else {}}
    grid = {}
    for t in grid_t:
        for m in grid_ncc:
            gg = group_near_duplicates(hashes=hashes, embeddings=emb, threshold=t, min_ncc=m, max_group=None)
            sizes = np.bincount(gg.groups)
            grid[f"T{t}_ncc{m}"] = {"groups": gg.n_groups, "largest": int(sizes.max())}
    # the default rule without its size bound (transitive chaining only), for comparison with "default"
    gu = group_near_duplicates(hashes=hashes, embeddings=emb, max_group=None)
    unbounded = {"groups": gu.n_groups, "largest": int(np.bincount(gu.groups).max()),
                 "components_above_bound": int((np.bincount(gu.groups) > DEFAULT_MAX_GROUP).sum())}
    sizes = np.bincount(g.groups)
    order = np.argsort(-sizes, kind="stable")[:10]
    res: dict[str, Any] = {
        "images": n, "classes": {c: int((lab == c).sum()) for c in sorted(set(labels))},
        "default_unbounded": unbounded,
        "default": {"threshold": DEFAULT_THRESHOLD, "min_ncc": DEFAULT_MIN_NCC, "max_group": DEFAULT_MAX_GROUP,
                    "groups": g.n_groups, "largest": int(sizes.max()),
                    "candidate_pairs": g.candidates, "confirmed_pairs": len(g.pairs),
                    "images_in_multi_groups": int((sizes[g.groups] > 1).sum()),
                    "group_size_histogram": {int(k): int(v) for k, v in
                                             zip(*np.unique(sizes, return_counts=True), strict=True)},
                    "largest_groups": [{"size": int(sizes[k]),
                                        "members": [f"{labels[x]}/{files[x].stem}"
                                                    for x in np.flatnonzero(g.groups == k)[:8]]}
                                       for k in order if sizes[k] > 1],
                    "mixed_label_groups": int(sum(len(set(lab[g.groups == k])) > 1
                                                  for k in np.flatnonzero(sizes > 1)))},
        "seconds": {"read": t1 - t0, "hash_and_embed": t2 - t1, "group": t3 - t2},
        "nn_hamming_histogram": {int(k): int(v) for k, v in zip(*np.unique(nn, return_counts=True), strict=True)},
        "ncc_cross_class_pairs": {"n": int(cross.sum()), "max": float(sim[cross].max()),
                                  "q999": float(np.quantile(sim[cross], 0.999))},
        "ncc_same_class_random_pairs": {f"q{q}": float(np.quantile(sim[same], q / 100)) for q in (50, 95, 99, 99.9)},
        "pairs_within_default_hamming": within,
        "grid": grid,
        "_hashes": hashes, "_emb": emb,
    }
    print(f"{name}: {n} images → {g.n_groups} groups ({t3 - t2:.2f} s grouping)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dedup.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    files, labels = _files(args.shared / "busi", "*/*.png")
    out["busi"] = analyse("busi", files, labels, rng)
    h, e = out["busi"].pop("_hashes"), out["busi"].pop("_emb")
    groups = group_near_duplicates(hashes=h, embeddings=e).groups
    stems = [p.stem for p in files]
    idx = [stems.index(f"malignant ({k})") for k in range(3, 10)]
    ham = [[int(np.bitwise_count(h[a] ^ h[b])) for b in idx] for a in idx]
    out["busi"]["lesion_frames_malignant_3_to_9"] = {
        "one_group": len({int(groups[k]) for k in idx}) == 1, "hamming": ham,
        "ncc": np.round(e[idx] @ e[idx].T, 3).tolist()}
    files, labels = _files(args.shared / "mednist", "*/*.jpeg")
    out["mednist"] = analyse("mednist", files, labels, rng, grid_t=(0, 10, 20), grid_ncc=(None, 0.95, 0.97))
    out["mednist"].pop("_hashes"), out["mednist"].pop("_emb")
    out["_meta"] = {"command": "python benchmarks/dedup_datasets.py"}
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
