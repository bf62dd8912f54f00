"""Probability → DL2–DL5 → recommendation (thesis A.6): hand-computed levels, recommendations and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.evaluation.risk import level_table, recommend, recommendation_metrics, risk_levels

CUTS = (0.25, 0.5, 0.75)


def test_risk_levels_cut_points_go_up() -> None:
    p = [0.1, 0.25, 0.49, 0.5, 0.8, 0.75, 1.0, 0.0]
    assert risk_levels(p, CUTS).tolist() == [2, 3, 3, 4, 5, 5, 5, 2]
    with pytest.raises(ValueError, match="increasing"):
        risk_levels(p, (0.5, 0.25, 0.75))
    with pytest.raises(ValueError, match="probabilities"):
        risk_levels([0.2, 1.2], CUTS)


def test_recommend_acr_size_thresholds() -> None:
    levels = [2, 3, 3, 4, 4, 5, 5, 5]
    size = [5.0, 2.5, 2.4, 1.5, 1.2, 1.0, 0.6, 0.4]
    assert recommend(levels, size).tolist() == ["none", "FNA", "follow-up", "FNA", "follow-up", "FNA",
                                                "follow-up", "none"]
    # custom thresholds: FNA at DL5 only, from 2 cm; no follow-up
    assert recommend([5, 5, 4], [2.0, 1.9, 9.0], fna_cm={5: 2.0}, follow_up_cm={}).tolist() == \
        ["FNA", "none", "none"]
    with pytest.raises(ValueError, match="size_cm"):
        recommend([3], [np.nan])


def test_recommendation_metrics_and_level_table() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0])
    rec = recommend([2, 3, 3, 4, 4, 5, 5, 5], [5.0, 2.5, 2.4, 1.5, 1.2, 1.0, 0.6, 0.4])
    m = recommendation_metrics(y, rec, n_resamples=200)
    # FNA on cases 2, 4, 6 (all malignant) of 4 malignant; no benign case gets FNA
    assert (m["fna"]["tp"], m["fna"]["positives"], m["fna"]["tn"], m["fna"]["negatives"]) == (3, 4, 4, 4)
    assert m["fna"]["sensitivity"][0] == 0.75 and m["fna"]["specificity"][0] == 1.0
    # FNA or follow-up: every malignant case, and 2 of the 4 benign ones
    assert m["follow_up"]["sensitivity"][0] == 1.0 and m["follow_up"]["specificity"][0] == 0.5
    lo, hi = m["fna"]["sensitivity"][1:]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    t = level_table(y, [2, 3, 3, 4, 4, 5, 5, 5], rec).set_index("level")
    assert t.loc["DL3", ["cases", "malignant", "FNA", "follow-up", "none"]].tolist() == [2, 1, 1, 1, 0]
    assert t.loc["DL5", "malignancy_rate"] == pytest.approx(2 / 3)
    assert t.loc["DL2", "none"] == 1
    with pytest.raises(ValueError, match="recommendation"):
        recommendation_metrics(y, ["biopsy"] * 8)
