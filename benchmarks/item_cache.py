"""The item cache (issue #19 item 1, :mod:`cadx.pipeline.item_cache`): build vs cache-hit seconds, peak RSS, first
epoch over the items and the pickled size of the store, on three real stores.

Stores: the LGG U-Net recipe (``configs/papers/unet_lgg_recipe.yaml``: segmentation items, 96 px, 3 sequences,
:func:`cadx.pipeline.seg_items.build_seg_data`), MTMR LIDC (``configs/papers/mtmr_lidc.yaml`` with
``input.covariate_channels=[diameter_mm]``) and BreastMNIST (``configs/breastmnist_resnet18.yaml``), both
:func:`cadx.pipeline.items.build_store`. Each case runs in a fresh subprocess (its own peak RSS), one after another,
with a private empty cache folder per store:

* ``off``: ``input.cache: off`` (the build as before);
* ``miss``: ``input.cache: disk`` with an empty cache (build + write + map back);
* ``hit``: the entry just written (its pages in the page cache: a second run right after the first);
* ``cold``: the same entry after ``posix_fadvise(DONTNEED)`` on its files (pages read from disk again; only this
  entry's pages are dropped, nothing else on the machine is touched).

Per case: cohort load seconds (not part of the store), store seconds, ``ru_maxrss`` after the imports and the
cohort load and at the end, a first "epoch" (every item once in shuffled batches of 32: the batch tensor gathered
from the store and summed, masks too, what a loader does before the model), and the cloudpickle size and seconds
of the store (what ``ray.put`` sends to fold tasks).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/item_cache.py --work /tmp/item_cache_bench \\
        --out benchmarks/results/item_cache

Writes ``OUT/item_cache.json`` (the README beside it quotes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STORES: dict[str, tuple[str, list[str]]] = {
    "lgg_unet_recipe_96px": ("configs/papers/unet_lgg_recipe.yaml", []),
    "mtmr_lidc_diameter": ("configs/papers/mtmr_lidc.yaml", ["input.covariate_channels=[diameter_mm]"]),
    "breastmnist": ("configs/breastmnist_resnet18.yaml", ["input.size=28"]),  # the size it was measured at
}
CASES = ("off", "miss", "hit", "cold")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drop_pages(path: Path) -> None:
    """Evict the page-cache pages of every file under ``path`` (posix_fadvise DONTNEED; this entry only)."""
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def one_case(store_name: str, case: str) -> dict[str, Any]:
    """Run one case in this process (``--child``) and return its figures."""
    import cloudpickle
    import numpy as np
    import torch

    from cadx.config import load_config
    from cadx.pipeline.item_cache import cache_root
    from cadx.pipeline.items import build_store
    from cadx.pipeline.seg_items import build_seg_data
    from cadx.runs.folder import load_cohort

    torch.set_num_threads(1)
    cfg_path, sets = STORES[store_name]
    mode = "off" if case == "off" else "disk"
    cfg = load_config(ROOT / cfg_path, [*sets, f"input.cache={mode}", "train.progress=false"])
    rss_imports = _rss_mb()
    t0 = time.perf_counter()
    cohort = load_cohort(cfg)
    load_s = time.perf_counter() - t0
    rss_cohort = _rss_mb()
    if case == "cold":
        for entry in cache_root().iterdir():
            drop_pages(entry)
    t0 = time.perf_counter()
    if cfg.segmentation is not None:
        data = build_seg_data(cohort, cfg)
        store, obj = data.store, data
    else:
        store = build_store(cohort, cfg, progress=False)
        obj = store
    store_s = time.perf_counter() - t0
    rss_store = _rss_mb()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(store))
    t0 = time.perf_counter()
    total = 0.0
    for i in range(0, len(order), 32):
        idx = torch.from_numpy(np.sort(order[i:i + 32]))
        total += float(store.images[idx].sum())
        if store.masks is not None:
            total += float(store.masks[idx].sum())
    epoch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = cloudpickle.dumps(obj)
    pickle_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = cloudpickle.loads(blob)
    unpickle_s = time.perf_counter() - t0
    back_store = back.store if cfg.segmentation is not None else back
    same = bool(torch.equal(back_store.images, store.images))
    return {"store": store_name, "case": case, "items": len(store), "item_shape": list(store.images.shape[1:]),
            "images_mb": round(store.images.numel() * 4 / 2**20, 1),
            "masks_mb": round(store.masks.numel() * 4 / 2**20, 1) if store.masks is not None else 0.0,
            "cohort_load_s": round(load_s, 3), "store_s": round(store_s, 3), "first_epoch_s": round(epoch_s, 3),
            "rss_after_imports_mb": round(rss_imports, 1), "rss_after_cohort_mb": round(rss_cohort, 1),
            "rss_after_store_mb": round(rss_store, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "pickle_bytes": len(blob), "pickle_s": round(pickle_s, 3), "unpickle_s": round(unpickle_s, 3),
            "unpickled_equal": same, "checksum": total, "item_cache": store.meta.get("item_cache")}


def run_round(name: str, rep: int, cache: Path) -> list[dict[str, Any]]:
    """The four cases of store ``name``, each in a subprocess, starting from an empty ``cache`` folder."""
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    rows = []
    for case in CASES:
        env = {**os.environ, "CADX_ITEM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", name, case], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{name} {case} failed:\n{out.stderr[-3000:]}")
        row = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])
        row.update(process_s=round(time.perf_counter() - t0, 2), repeat=rep, loadavg_before=load)
        rows.append(row)
        print(f"{name:22s} {case:5s} store {row['store_s']:8.2f} s  epoch {row['first_epoch_s']:6.2f} s  "
              f"peak {row['peak_rss_mb']:7.0f} MB  pickle {row['pickle_bytes'] / 2**20:8.2f} MiB", flush=True)
    entry_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    for r in rows:
        r["entry_mb"] = round(entry_mb, 1)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/item_cache_bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "item_cache")
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the four cases per store (an empty cache each)")
    ap.add_argument("--child", nargs=2, metavar=("STORE", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(one_case(*args.child)))
        return
    rows = []
    for name in args.stores.split(","):
        for rep in range(args.repeats):
            rows += run_round(name, rep, args.work / name)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.stores.split(","):
        for case in CASES:
            sel = [r for r in rows if r["store"] == name and r["case"] == case]
            summary.setdefault(name, {})[case] = {
                k: float(statistics.median(r[k] for r in sel))
                for k in ("store_s", "first_epoch_s", "rss_after_store_mb", "peak_rss_mb", "pickle_bytes",
                          "process_s")}
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_end": os.getloadavg()},
           "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/item_cache.py --work /tmp/item_cache_bench "
                      "--out benchmarks/results/item_cache", "median": summary, "rows": rows}
    (args.out / "item_cache.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
