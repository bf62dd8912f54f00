"""Point systems (thesis A.7): the built-in ACR / AI TI-RADS tables against a literal transcription of Fig. 2,
hand-worked nodules, levels, recommendations, validation errors and the two-proportion tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from cadx.classical.points import (
    design_matrix,
    level_of,
    load_system,
    mcnemar_exact,
    parse_system,
    reclassification_table,
    recommend,
    system_to_dict,
    totals,
    two_proportion_test,
)
from cadx.errors import CadxDataError

# Thesis A.7 Fig. 2, transcribed cell by cell (thesis text lines ~2500-2520), in the figure's order.
FIG2_ACR = {
    "composition": [("Cystic or almost completely cystic", 0), ("Spongiform", 0), ("Mixed cystic/solid", 1),
                    ("Solid or almost completely solid", 2), ("Can't classify", 2)],
    "echogenicity": [("Anechoic", 0), ("Hyperechoic", 1), ("Isoechoic", 1), ("Hypoechoic", 2),
                     ("Very hypoechoic", 3), ("Can't classify", 1)],
    "shape": [("Wider-than-tall", 0), ("Taller-than-wide", 3)],
    "margin": [("Smooth", 0), ("Ill-defined", 0), ("Irregular/lobulated", 2), ("Extra-thyroidal extensions", 3),
               ("Can't classify", 0)],
    "echogenic_foci": [("None", 0), ("Large comet tail", 0), ("Macrocalcifications", 1), ("Peripheral", 2),
                       ("Punctate", 3)],
}
FIG2_AI = {
    "composition": [("Cystic or almost completely cystic", 0), ("Spongiform", 0), ("Mixed cystic/solid", 0),
                    ("Solid or almost completely solid", 3), ("Can't classify", 0)],
    "echogenicity": [("Anechoic", 0), ("Hyperechoic", 0), ("Isoechoic", 0), ("Hypoechoic", 2),
                     ("Very hypoechoic", 3), ("Can't classify", 0)],
    "shape": [("Wider-than-tall", 0), ("Taller-than-wide", 1)],
    "margin": [("Smooth", 0), ("Ill-defined", 0), ("Irregular/lobulated", 2), ("Extra-thyroidal extensions", 3),
               ("Can't classify", 0)],
    "echogenic_foci": [("None", 0), ("Large comet tail", 0), ("Macrocalcifications", 0), ("Peripheral", 2),
                       ("Punctate", 3)],
}
CATS = ["composition", "echogenicity", "shape", "margin", "echogenic_foci"]


def _nodules(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["Composition", "Echogenicity", "Shape", "Margin", "Echogenic foci"])


@pytest.mark.parametrize(("name", "fig"), [("acr", FIG2_ACR), ("ai", FIG2_AI)])
def test_builtin_tables_reproduce_fig2_cell_by_cell(name: str, fig: dict) -> None:
    system = load_system(name)
    assert [c.name for c in system.categories] == CATS
    assert [c.rule for c in system.categories] == ["choose_one"] * 4 + ["choose_all"]
    for cat in system.categories:
        assert len(cat.features) == len(fig[cat.name])
        for feat, (printed, pts) in zip(cat.features, fig[cat.name], strict=True):
            # the figure's wording is accepted as a value and maps to the feature holding its points
            one = _nodules([("solid", "hypoechoic", "wider-than-tall", "smooth", "none")])
            one[{"composition": "Composition", "echogenicity": "Echogenicity", "shape": "Shape",
                 "margin": "Margin", "echogenic_foci": "Echogenic foci"}[cat.name]] = printed
            X = design_matrix(one, system)
            j = system.feature_keys.index((cat.name, feat.name))
            assert X[0, j] == 1 or (cat.name == "composition" and feat.name in ("cystic", "spongiform"))
            assert feat.points == pts, (name, cat.name, printed)
    assert len(system.features) == 23


def test_ai_changes_eight_of_23_features_as_the_paper_says() -> None:
    acr, ai = load_system("acr").points, load_system("ai").points
    diff = np.abs(acr - ai)
    assert int((diff > 0).sum()) == 8 and int((diff == 0).sum()) == 15
    assert int((diff == 1).sum()) == 6 and int((diff == 2).sum()) == 2  # taller-than-wide and composition can't tell


def test_hand_worked_nodules_totals_and_levels() -> None:
    acr, ai = load_system("acr"), load_system("ai")
    df = _nodules([
        ("solid", "hypoechoic", "taller-than-wide", "smooth", "none"),                 # 2+2+3+0+0 = 7 | 3+2+1 = 6
        ("mixed cystic and solid", "isoechoic", "taller-than-wide", "smooth", "none"),  # Fig. 4: 5 TR4 | 1 TR1
        ("Mixed cystic/solid", "Hypoechoic", "wider-than-tall", "smooth", "none"),     # Fig. 5: 3 TR3 | 2 TR2
        ("spongiform", "very hypoechoic", "taller-than-wide", "irregular/lobulated", "punctate"),  # forced 0 | 0
        ("solid", "very hypoechoic", "taller-than-wide", "lobulated", "punctate; Macrocalcifications"),  # 14 | 12
        ("solid", "isoechoic", "wider-than-tall", "ill-defined", "peripheral;comet-tail"),  # 2+1+0+0+2 = 5 | 3+0+2 = 5
        ("cystic", "anechoic", "wider-than-tall", "smooth", "none"),                   # 0 | 0
        ("can't classify", "can't classify", "wider-than-tall", "extrathyroidal extension", "none"),  # 2+1+3=6 | 3
    ])
    t_acr = totals(design_matrix(df, acr), acr.points)
    t_ai = totals(design_matrix(df, ai), ai.points)
    assert t_acr.tolist() == [7, 5, 3, 0, 14, 5, 0, 6]
    assert t_ai.tolist() == [6, 1, 2, 0, 12, 5, 0, 3]
    names = [lv.name for lv in acr.levels]
    assert [names[i] for i in level_of(t_acr, acr)] == ["TR5", "TR4", "TR3", "TR1", "TR5", "TR4", "TR1", "TR4"]
    assert [names[i] for i in level_of(t_ai, ai)] == ["TR4", "TR1", "TR2", "TR1", "TR5", "TR4", "TR1", "TR3"]


def test_level_boundaries_are_the_acr_cut_points() -> None:
    acr = load_system("acr")
    names = np.array([lv.name for lv in acr.levels])
    got = names[level_of([-2, 0, 1, 2, 3, 4, 6, 7, 20], acr)].tolist()
    assert got == ["TR1", "TR1", "TR1", "TR2", "TR3", "TR4", "TR4", "TR5", "TR5"]


def test_recommendation_size_thresholds_in_mm() -> None:
    acr = load_system("acr")
    lv = np.array([0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])  # TR1 TR2 TR3x3 TR4x3 TR5x3
    size = np.array([50, 50, 25, 24.9, 14.9, 15, 10, 9.9, 10, 5, 4.9])
    assert recommend(lv, acr, size).tolist() == [
        "none", "none", "FNA", "follow-up", "none", "FNA", "follow-up", "none", "FNA", "follow-up", "none"]
    # sizes unknown: every nodule meets every threshold → FNA exactly at TR3-TR5
    assert recommend(np.arange(5), acr).tolist() == ["none", "none", "FNA", "FNA", "FNA"]
    with pytest.raises(ValueError, match="NaN"):
        recommend([2], acr, [math.nan])


def test_choose_all_as_flag_columns_equals_the_list_form() -> None:
    acr = load_system("acr")
    lists = _nodules([("solid", "hypo", "wider than tall", "smooth", "macrocalcifications;punctate"),
                      ("solid", "hypo", "wider than tall", "smooth", "none")])
    flags = lists.drop(columns=["Echogenic foci"])
    for f in ("none", "comet_tail", "macrocalcifications", "peripheral", "punctate"):
        flags[f"echogenic_foci__{f}"] = 0
    flags.loc[0, ["echogenic_foci__macrocalcifications", "echogenic_foci__punctate"]] = 1
    flags.loc[1, "echogenic_foci__none"] = 1
    np.testing.assert_array_equal(design_matrix(lists, acr), design_matrix(flags, acr))
    assert totals(design_matrix(flags, acr), acr.points).tolist() == [2 + 2 + 4, 4]
    flags = flags.drop(columns=["echogenic_foci__peripheral"])
    with pytest.raises(CadxDataError, match="echogenic_foci__peripheral"):
        design_matrix(flags, acr, "t.csv")


@pytest.mark.parametrize(("cell_col", "value", "needle"), [
    ("Shape", "round", r"t\.csv: Shape: row 2: unknown value 'round'; allowed: wider_than_tall, taller_than_wide"),
    ("Margin", "", r"t\.csv: Margin: row 2: empty cell; allowed: smooth"),
    ("Echogenic foci", "none;punctate", r"t\.csv: Echogenic foci: row 2: 'none' cannot be combined"),
    ("Echogenic foci", "punctate;sparkles", r"row 2: unknown value 'sparkles'; allowed: none, comet_tail"),
])
def test_bad_cells_name_the_file_row_column_and_allowed_values(cell_col: str, value: str, needle: str) -> None:
    df = _nodules([("solid", "hypo", "wider than tall", "smooth", "none")] * 2)
    df.loc[1, cell_col] = value
    with pytest.raises(CadxDataError, match=needle) as e:
        design_matrix(df, load_system("acr"), "t.csv")
    assert "\n" not in str(e.value)


def test_missing_column_is_named() -> None:
    df = _nodules([("solid", "hypo", "wider than tall", "smooth", "none")]).drop(columns=["Shape"])
    with pytest.raises(CadxDataError, match=r"t\.csv: shape: missing column 'shape'"):
        design_matrix(df, load_system("acr"), "t.csv")


def _valid() -> dict:
    return system_to_dict(load_system("acr"))


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["categories"][1]["features"][2].update(points=1.5), r"categories\[1\]\.features\[2\]\.points"),
    (lambda d: d["categories"][0]["features"][3].pop("points"), r"categories\[0\]\.features\[3\]\.points"),
    (lambda d: d["categories"][2]["features"][1].update(points=7), r"categories\[2\]\.features\[1\]\.points: 7 is "
                                                                   r"outside the bounds \[0, 3\]"),
    (lambda d: d["categories"][4].update(rule="pick_two"), r"categories\[4\]\.rule"),
    (lambda d: d["levels"][3].update(min_points=2), r"levels\[3\]\.min_points"),
    (lambda d: d["zero_total_if"][0].update(feature="lava"), r"zero_total_if\[0\]\.feature"),
    (lambda d: d["categories"][0].update(colour="red"), r"categories\[0\]\.colour: unknown key"),
    (lambda d: d["levels"][2].update(fna_mm=-1), r"levels\[2\]\.fna_mm"),
])
def test_system_file_errors_name_the_file_and_field(tmp_path: Path, edit, field: str) -> None:
    d = _valid()
    edit(d)
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(CadxDataError, match=f"mine.yaml: {field}"):
        load_system(p)


def test_system_round_trips_and_unknown_builtin_is_named(tmp_path: Path) -> None:
    acr = load_system("acr")
    again = parse_system(_valid(), "x")
    np.testing.assert_array_equal(again.points, acr.points)
    assert again.zero_total_if == acr.zero_total_if and again.levels == acr.levels
    assert acr.fixed.sum() == 4  # cystic, spongiform, anechoic, extrathyroidal extension (the notebook's)
    with pytest.raises(CadxDataError, match=r"nope\.yaml: system: no such system file"):
        load_system(tmp_path / "nope.yaml")


def test_two_proportion_test_matches_hand_computation_on_the_papers_specificity() -> None:
    # A.7: single expert specificity 40/85 (ACR) vs 55/85 (AI), "P < .001".
    p1, p2, p = 40 / 85, 55 / 85, 95 / 170
    z = (p2 - p1) / math.sqrt(p * (1 - p) * (2 / 85))
    plain = two_proportion_test(40, 85, 55, 85, correction=False)
    assert plain.statistic == pytest.approx(z * z, rel=1e-12)
    assert plain.pvalue == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert plain.pvalue == pytest.approx(0.0205, abs=1e-4)
    yates = two_proportion_test(40, 85, 55, 85)  # R prop.test default: Yates continuity correction
    chi_yates = 170 * (abs(40 * 30 - 45 * 55) - 170 / 2) ** 2 / (85 * 85 * 95 * 75)
    assert yates.statistic == pytest.approx(chi_yates, rel=1e-12) and yates.pvalue == pytest.approx(0.0306, abs=1e-4)
    # The same 85 nodules, 15 lost their FNA and none gained one: exact McNemar p = 2 * 0.5**15 < .001, which is
    # the paper's P < .001; the unpaired test gives .02-.03.
    assert mcnemar_exact(0, 15).pvalue == pytest.approx(2 * 0.5 ** 15, rel=1e-12)
    assert mcnemar_exact(0, 0).pvalue == 1.0
    assert two_proportion_test(14, 15, 14, 15).pvalue == pytest.approx(1.0)


def test_reclassification_table_counts() -> None:
    tab = reclassification_table([4, 3, 3, 0], [3, 3, 0, 0], ["TR1", "TR2", "TR3", "TR4", "TR5"])
    assert tab.loc["TR5", "TR4"] == 1 and tab.loc["TR4", "TR4"] == 1 and tab.loc["TR4", "TR1"] == 1
    assert tab.loc["TR1", "TR1"] == 1 and int(tab.to_numpy().sum()) == 4
