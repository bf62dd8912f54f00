"""Describe every real dataset in ../shared/data: counts per class, patients, official splits, load times.

Runs ``load_dataset(...).describe()`` for lidc (MTMR labelling), lidc (labelling none), medmnist
(breastmnist, adrenalmnist3d, adrenalmnist3d_64), mednist, busi and lgg, and writes
``benchmarks/results/describe.json`` (one entry per dataset: the description and the seconds ``load``
took). Near-duplicate hashes are cached under ``$CADX_CACHE_DIR``; pass ``--cold`` to time a first load.

    .venv/bin/python benchmarks/describe_datasets.py [--shared ../shared/data] [--cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cadx.data.datasets import load_dataset
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATASETS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("lidc", "lidc", "lidc", {}),
    ("lidc_all", "lidc", "lidc", {"labelling": "none"}),
    ("medmnist:breastmnist", "medmnist:breastmnist", "medmnist", {}),
    ("medmnist:adrenalmnist3d", "medmnist:adrenalmnist3d", "medmnist", {}),
    ("medmnist:adrenalmnist3d_64", "medmnist:adrenalmnist3d_64", "medmnist", {}),
    ("mednist", "mednist", "mednist", {}),
    ("busi", "busi", "busi", {}),
    ("lgg", "lgg", "lgg", {}),
    ("lgg:histological_type", "lgg", "lgg", {"label": "histological_type"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "describe.json")
    ap.add_argument("--cold", action="store_true", help="use an empty hash cache (times a first load)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cadx-cache-") if args.cold else None
    if tmp:
        os.environ["CADX_CACHE_DIR"] = tmp
    out: dict[str, Any] = {}
    for key, name, folder, opts in DATASETS:
        t0 = time.perf_counter()
        cohort = load_dataset(name, args.shared / folder, **opts)
        seconds = time.perf_counter() - t0
        d = cohort.describe()
        d["load_seconds"] = round(seconds, 3)
        d["options"] = opts
        d["unlabelled"] = sum(s.label is None for s in cohort)
        out[key] = d
        print(f"{key:28s} {d['studies']:6d} studies {d['patients']:5d} patients {d['class_counts']} "
              f"({seconds:.2f} s)")
    out["_meta"] = {"command": "python benchmarks/describe_datasets.py" + (" --cold" if args.cold else ""),
                    "cold_cache": bool(args.cold), "cpu_count": os.cpu_count()}
    atomic_write_json(args.out, out)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
