"""Make the SYNTHETIC thyroid-like TI-RADS feature table of ``benchmarks/results/points_synthetic/``.

Usage: ``.venv/bin/python benchmarks/points_synthetic.py OUT.csv [N] [SEED]`` (defaults 1425 rows, seed 0; the
A.7 cohort size). Not patient data: every nodule's five ACR TI-RADS categories are drawn at random (choose-one
uniformly, echogenic foci 0-2 of the four non-"none" features), and the label is drawn from a logistic model of
the **AI TI-RADS** total points (prevalence 10.6 %, as A.7's 151/1425). The GA starts from ACR TI-RADS, so the
generating points are known and differ from the baseline in the 8 features A.7 changed (of which the GA can move
6: cystic/spongiform, anechoic and extrathyroidal extension are fixed). Columns: patient_id, composition,
echogenicity, shape, margin, echogenic_foci, size_mm, malignant, split (``test`` = the patients of the last 100
rows, A.7's temporal split; use ``--test-split column:split``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cadx.classical.points import load_system
from cadx.studies.points import synthetic_points_table


def main(out: Path, n: int = 1425, seed: int = 0) -> None:
    acr, ai = load_system("acr"), load_system("ai")
    df = synthetic_points_table(acr, n, seed=seed, true_points=ai.points, prevalence=0.106, slope=1.0)
    # A.7's temporal split: the last 100 nodules are the test set (extended to whole patients: no leakage)
    test_patients = set(df["patient_id"].iloc[-100:])
    df["split"] = ["test" if p in test_patients else "train" for p in df["patient_id"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    test = df["split"] == "test"
    print(f"{out}: {len(df)} rows, {int(df['malignant'].sum())} positive, {df['patient_id'].nunique()} patients; "
          f"test {int(test.sum())} rows ({int(df.loc[test, 'malignant'].sum())} positive)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:4]))
