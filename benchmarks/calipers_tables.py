"""Rebuild the calipers study's tables (summary.json, report.md, learning_curve.png) from the files already in
benchmarks/results/calipers_busi: detector.json, approx_masks.csv, cells/<mode>_fold<k>.csv and
learning_curve.csv. Used when the study could not finish every cell in the time available: the report then covers
exactly the cells present (it lists them). Run from the project folder:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calipers_tables.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from cadx.studies.calipers import load_calipers_config
from cadx.studies.calipers.tables import write_tables

OUT = Path("benchmarks/results/calipers_busi")


def main() -> None:
    t0 = time.time()
    cfg = load_calipers_config(Path("configs/papers/calipers_busi.yaml"))
    cells = sorted(p for p in (OUT / "cells").glob("*_fold*.csv") if not p.name.endswith("_history.csv"))
    df = pd.concat([pd.read_csv(p) for p in cells], ignore_index=True)
    df.to_csv(OUT / "dice_per_image.csv", index=False)
    lc_path = OUT / "learning_curve.csv"
    lc = pd.read_csv(lc_path) if lc_path.is_file() else pd.DataFrame()
    summary = write_tables(cfg, OUT, df, lc, time.time() - t0)
    print("cells:", [p.stem for p in cells])
    for r in summary["modes"]:
        print(r)


if __name__ == "__main__":
    main()
