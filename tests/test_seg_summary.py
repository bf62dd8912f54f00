"""Lesion-present Dice, lesion-absent false-positive rate / predicted volume, overall mean (issue 17 item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadx.errors import CadxDataError
from cadx.evaluation.bootstrap import bootstrap_mean_ci
from cadx.evaluation.seg_summary import lesion_split
from cadx.report.runs import RunData
from cadx.report.tables import lesion_split_table
from cadx.runs.segmentation import evaluate_seg


def _table() -> pd.DataFrame:
    # p1..p3 lesion cases (Dice .8, .4, .6; p3 has two studies), p4-p6 normal (p5 predicts 10 voxels), p7 no mask
    return pd.DataFrame({
        "study_id": [f"s{i}" for i in range(8)],
        "patient_id": ["p1", "p2", "p3", "p3", "p4", "p5", "p6", "p7"],
        "dice": [0.8, 0.4, 0.6, 0.6, 1.0, 0.0, 1.0, np.nan],
        "lesion_voxels": [50, 20, 30, 40, 0, 0, 0, np.nan],
        "pred_voxels": [45, 30, 25, 40, 0, 10, 0, 5],
    })


def test_hand_computed_values() -> None:
    s = lesion_split(_table(), n_bootstrap=0)
    assert s["lesion"]["n"] == 4
    assert s["lesion"]["dice_mean"] == pytest.approx(0.6) and s["lesion"]["dice_median"] == pytest.approx(0.6)
    assert s["no_lesion"]["n"] == 3 and s["no_lesion"]["n_false_positive"] == 1
    assert s["no_lesion"]["false_positive_rate"] == pytest.approx(1 / 3)
    assert s["no_lesion"]["pred_voxels_mean"] == pytest.approx(10 / 3)
    # overall = the old headline: (.8 + .4 + .6 + .6 + 1 + 0 + 1) / 7
    assert s["all"]["n"] == 7 and s["all"]["dice_mean"] == pytest.approx(4.4 / 7)
    assert s["n_no_mask"] == 1
    assert s["lesion"]["ci_dice_mean"] is None and s["all"]["ci_dice_mean"] is None


def test_cis_are_the_patient_bootstrap_of_each_group() -> None:
    df = _table()
    s = lesion_split(df, n_bootstrap=500, seed=3)
    les = df.iloc[:4]
    ref = bootstrap_mean_ci(les["dice"].to_numpy(float), les["patient_id"].to_numpy(), n_resamples=500, seed=3)
    assert s["lesion"]["ci_dice_mean"] == pytest.approx([ref.lo, ref.hi])
    neg = df.iloc[4:7]
    ref_fp = bootstrap_mean_ci(np.array([0.0, 1.0, 0.0]), neg["patient_id"].to_numpy(), n_resamples=500, seed=3)
    assert s["no_lesion"]["ci_false_positive_rate"] == pytest.approx([ref_fp.lo, ref_fp.hi])
    lo, hi = s["no_lesion"]["ci_pred_voxels_mean"]
    assert 0.0 <= lo <= 10 / 3 <= hi <= 10.0
    assert lesion_split(df, n_bootstrap=500, seed=3) == s  # same seed, same result


def test_no_false_positive_gives_zero_rate_and_zero_width_ci() -> None:
    df = _table()
    df.loc[5, ["pred_voxels", "dice"]] = [0, 1.0]
    s = lesion_split(df, n_bootstrap=200)
    assert s["no_lesion"]["false_positive_rate"] == 0.0
    assert s["no_lesion"]["ci_false_positive_rate"] == [0.0, 0.0]


def test_empty_groups_and_bad_input() -> None:
    only_lesion = _table().iloc[:4]
    s = lesion_split(only_lesion, n_bootstrap=0)
    assert s["no_lesion"]["n"] == 0 and s["no_lesion"]["false_positive_rate"] is None
    with pytest.raises(CadxDataError, match=r"run/predictions.csv: pred_voxels"):
        lesion_split(_table().drop(columns=["pred_voxels"]), source="run/predictions.csv")
    bad = _table()
    bad.loc[0, "lesion_voxels"] = -1
    with pytest.raises(CadxDataError, match="lesion_voxels: negative"):
        lesion_split(bad)


def test_segmentation_metrics_and_report_table() -> None:
    """evaluate_seg (the segmentation run kind's metrics.json) carries the split; the report prints three lines."""
    df = _table().assign(fold=[0, 0, 1, 1, 0, 1, 0, 1], y_true=np.nan)
    m = evaluate_seg(df, [], 200, 0)
    assert m["pooled"]["lesion_split"] == lesion_split(df, 200, 0)
    assert m["pooled"]["dice_mean"] == pytest.approx(4.4 / 7)  # the overall mean is unchanged
    t = lesion_split_table([RunData("seg", Path("."), m)])
    assert t is not None and [r[1] for r in t.rows] == ["lesion present", "lesion absent", "all cases"]
    les = m["pooled"]["lesion_split"]["lesion"]
    assert t.rows[0][4] == f"0.600 [{les['ci_dice_mean'][0]:.3f}, {les['ci_dice_mean'][1]:.3f}]"
    assert t.rows[1][5].startswith("1 of 3; mean predicted volume 3.333 [")
