"""BUSI SCNet runs re-stated by lesion presence (issue 17 item 6/9c): Dice over lesion images only, false-positive
rate and mean predicted area on the normal images, and the old all-image mean as the third line — recomputed from
each run's committed ``predictions.csv`` with :func:`cadx.evaluation.seg_summary.lesion_split` (CIs: percentile
bootstrap over near-duplicate groups, the runs' own ``eval.bootstrap`` resamples and ``seed``).

Usage: ``.venv/bin/python benchmarks/results/segmentation/lesion_split.py`` → ``lesion_split.json`` and
``lesion_split.md`` beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from cadx.evaluation.seg_summary import lesion_split

HERE = Path(__file__).resolve().parent
RUNS = ("scnet_busi_grouped", "scnet_busi_naive")


def _ci(v: float | None, ci: list[float] | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def main() -> None:
    out: dict[str, dict[str, object]] = {}
    rows = []
    for name in RUNS:
        cfg = yaml.safe_load((HERE / name / "config.yaml").read_text())
        df = pd.read_csv(HERE / name / "predictions.csv", dtype={"patient_id": str})
        r = lesion_split(df, n_bootstrap=int(cfg["eval"]["bootstrap"]), seed=int(cfg["seed"]),
                         source=str(HERE / name / "predictions.csv"))
        out[name] = r
        les, neg, alls = r["lesion"], r["no_lesion"], r["all"]
        rows.append(f"| {name} | {les['n']} | {_ci(les['dice_mean'], les['ci_dice_mean'])} | "
                    f"{les['dice_median']:.3f} | {neg['n_false_positive']} / {neg['n']} = "
                    f"{_ci(neg['false_positive_rate'], neg['ci_false_positive_rate'])} | "
                    f"{_ci(neg['pred_voxels_mean'], neg['ci_pred_voxels_mean'], 0)} | "
                    f"{_ci(alls['dice_mean'], alls['ci_dice_mean'])} |")
    (HERE / "lesion_split.json").write_text(json.dumps(out, indent=2) + "\n")
    head = ("| run | lesion images | Dice on lesion images, mean [95 % CI] | median | normal images with any "
            "predicted pixel [95 % CI] | mean predicted pixels on normal images [95 % CI] | all images (old "
            "headline) |\n|---|---|---|---|---|---|---|")
    (HERE / "lesion_split.md").write_text(
        "# SCNet on BUSI by lesion presence\n\nFrom each run's `predictions.csv` "
        "(`cadx.evaluation.seg_summary.lesion_split`; group bootstrap, the run's resamples and seed). Pixels are "
        "of the original image grid.\n\n" + head + "\n" + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
