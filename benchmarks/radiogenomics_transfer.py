"""Thesis A.4 on the shared LGG patients: three starts of one CNN (scratch, MedNIST, in-domain U-Net), 5-fold CV.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/radiogenomics_transfer.py \
        [--out benchmarks/results/radiogenomics/transfer] [--pretrain-only] [--only-folds K ...]

Writes ``config.json``, ``metrics.json``, ``predictions.csv``, ``predictions_slices.csv``, ``splits.json`` and
``mednist_encoder.pt`` (the out-of-domain weights: trained by the same command when absent, reused when present;
``--pretrain-only`` trains just them). Every setting is fixed in ``CONFIG`` below before any run; nothing is tuned.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from cadx.studies.radiogenomics.transfer import TransferConfig, pretrain_mednist, run_transfer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "radiogenomics" / "transfer"

CONFIG: dict[str, Any] = {
    "data_root": str(SHARED / "lgg"), "label_column": "COCCluster", "channels": [1], "folds": 5, "seed": 0,
    "size": 256, "patch": 80, "copies": 5, "max_rotate": 10.0, "max_shift": 16,
    "base_filters": 8, "levels": 3, "dropout": 0.5, "epochs": 2, "batch_size": 32, "lr": 1e-3,
    "starts": ["scratch", "mednist", "lgg_unet"],
    "mednist": {"root": str(SHARED / "mednist"), "per_class": 200, "epochs": 2, "lr": 1e-3},
    "unet": {"epochs": 6, "lr": 1e-3}, "n_bootstrap": 2000, "threads": 1,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--pretrain-only", action="store_true")
    ap.add_argument("--only-folds", type=int, nargs="+", default=None,
                    help="run just these outer folds (saved in fold_<k>/; a later full call reuses them)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(CONFIG, mednist=dict(CONFIG["mednist"], weights=str(out / "mednist_encoder.pt")))
    t0, c0 = time.perf_counter(), time.process_time()
    if args.pretrain_only:
        info = pretrain_mednist(TransferConfig(**cfg), out / "mednist_encoder.pt")
        print(json.dumps(info, indent=1))
        return
    res = run_transfer(dict(cfg, only_folds=args.only_folds), out)
    if "tasks" not in res:
        print(f"folds done: {res['folds_done']} of {res['folds']}")
        return
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = {"config": cfg, "wall_seconds": wall, "cpu_seconds": cpu, "machine": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    (out / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    for task, t in res["tasks"].items():
        aucs = ", ".join(f"{s} {a['auc']:.3f} ({a['ci_lo']:.3f}, {a['ci_hi']:.3f})" for s, a in t["auc"].items())
        ps = ", ".join(f"{p['a']}-{p['b']} p={p['p']:.3f} holm={p['p_holm']:.3f}" for p in t["pvalues"])
        print(f"{task} (n+ {t['n_pos']}, n- {t['n_neg']}): {aucs}; {ps}")
    print(f"wall {wall:.0f} s, cpu {cpu:.0f} s")


if __name__ == "__main__":
    main()
