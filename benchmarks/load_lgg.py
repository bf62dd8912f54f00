"""Time and peak memory to load the whole LGG folder (every volume and mask actually read into memory).

A child process (fresh interpreter) imports cadx, records its resident memory, loads the cohort and then
every study's image ``(3,Z,256,256)`` float32 and mask ``(1,Z,256,256)`` uint8, keeping them all; it reports
the wall time and ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak RSS). Written to
``benchmarks/results/load_lgg.json``.

    .venv/bin/python benchmarks/load_lgg.py [--root ../shared/data/lgg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import psutil
from cadx.data.datasets import load_dataset
rss0 = psutil.Process().memory_info().rss
t0 = time.perf_counter()
cohort = load_dataset("lgg", sys.argv[1])
t1 = time.perf_counter()
arrays = []
for s in cohort:
    arrays.append(s.image().load().array)
    arrays.append(s.mask().load().array)
t2 = time.perf_counter()
print(json.dumps({
    "studies": len(cohort), "slices": int(sum(a.shape[1] for a in arrays[::2])),
    "image_bytes": int(sum(a.nbytes for a in arrays[::2])), "mask_bytes": int(sum(a.nbytes for a in arrays[1::2])),
    "index_seconds": t1 - t0, "read_seconds": t2 - t1, "total_seconds": t2 - t0,
    "rss_after_import_mb": rss0 / 2**20,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "lgg")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_lgg.json")
    args = ap.parse_args()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(args.root)], capture_output=True, text=True,
                          check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["loaded_mb"] = (res["image_bytes"] + res["mask_bytes"]) / 2**20
    res["peak_over_import_mb"] = res["peak_rss_mb"] - res["rss_after_import_mb"]
    res["command"] = "python benchmarks/load_lgg.py"
    from cadx.utils import atomic_write_json

    atomic_write_json(args.out, {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
