"""Approximate masks from the HAND-annotated calipers (tests/data/busi_calipers.csv) of the BUSI lesion images with
2 or 4 calipers, against the expert masks: Dice on the original grid. Independent of the detector's errors; writes
benchmarks/results/calipers_busi/approx_from_annotations.csv. Run from the project folder:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calipers_approx_from_annotations.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cadx.data.calipers import format_calipers, points_to_mask
from cadx.evaluation.overlap import dice
from cadx.studies.calipers import read_annotations

ROOT = Path("../shared/data/busi")
OUT = Path("benchmarks/results/calipers_busi/approx_from_annotations.csv")


def main() -> None:
    rows = []
    for f, pts in read_annotations(Path("tests/data/busi_calipers.csv")).items():
        if len(pts) not in (2, 4):
            continue
        stem = f[:-4]
        masks = sorted(ROOT.glob(f"{stem}_mask*.png"))
        expert = np.zeros(np.asarray(Image.open(ROOT / f).convert("L")).shape, bool)
        for m in masks:
            expert |= np.asarray(Image.open(m).convert("L")) > 0
        approx = points_to_mask(pts, expert.shape)
        rows.append({"file": f, "n_calipers": len(pts), "calipers": format_calipers(pts),
                     "expert_pixels": int(expert.sum()), "approx_pixels": int(approx.sum()),
                     "dice": dice(approx, expert)})
    df = pd.DataFrame(rows)
    df.to_csv(OUT, index=False)
    print(df.to_string())
    print("mean", df["dice"].mean(), "median", df["dice"].median())


if __name__ == "__main__":
    main()
