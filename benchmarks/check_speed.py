"""Speed of ``cadx datasets check`` (:func:`cadx.data.check.check_cohort` with ``all_errors``) on the shared datasets.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_speed.py [--workers 2] [--datasets busi lgg ...]``.
Writes ``benchmarks/results/check_speed.json``: per dataset the studies, files opened (images + masks), wall
seconds (cohort loading excluded), files/s, seconds per 1000 files, and the problems found by field.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cadx.data.check import check_cohort
from cadx.data.datasets import load_dataset
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
SETS: dict[str, tuple[str, Path]] = {
    "busi": ("busi", DATA / "busi"),
    "lgg": ("lgg", DATA / "lgg"),
    "lidc": ("lidc", DATA / "lidc"),
    "mednist": ("mednist", DATA / "mednist"),
    "breastmnist": ("medmnist:breastmnist", DATA / "medmnist"),
}


def bench(name: str, workers: int) -> dict[str, Any]:
    dataset, root = SETS[name]
    t0 = time.perf_counter()
    cohort = load_dataset(dataset, root)
    load_s = time.perf_counter() - t0
    files = sum(len(s.images) + len(s.masks) for s in cohort)
    t0 = time.perf_counter()
    problems = check_cohort(cohort, all_errors=True, allow_unlabelled=True, workers=workers,
                            recipe=(dataset, str(root), {}))
    secs = time.perf_counter() - t0
    by = Counter(f"{p.severity}:{p.field}" for p in problems)
    return {"dataset": dataset, "studies": len(cohort), "files_opened": files, "load_seconds": round(load_s, 2),
            "check_seconds": round(secs, 2), "files_per_s": round(files / secs, 1),
            "seconds_per_1000_files": round(1000 * secs / files, 2), "problems": dict(sorted(by.items())),
            "example": problems[0].line() if problems else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--datasets", nargs="*", default=list(SETS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "check_speed.json")
    args = ap.parse_args()
    results = {}
    for name in args.datasets:
        results[name] = bench(name, args.workers)
        print(name, results[name], flush=True)
    atomic_write_json(args.out, {
        "command": f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_speed.py --workers {args.workers} "
                   f"--datasets {' '.join(args.datasets)}",
        "workers": args.workers, "cpus": os.cpu_count(), "machine": platform.machine(),
        "note": "2 CPU cores shared with other processes; files = images + masks opened in full; all_errors "
                "and allow_unlabelled on; cohort loading (listing) excluded from check_seconds",
        "results": results})


if __name__ == "__main__":
    main()
