"""The radiogenomics study (thesis A.3) on a tiny LGG-layout folder written in tmp_path, and (slow) on the 28 real
patients with manual masks.

The tiny cohort: 12 patients, RNASeq cluster 1 = ellipsoid tumours (regular), cluster 2 = 5-lobed tumours
(irregular), so the 1/BEVR quartile table is pure and Fisher's p is hand-computable: every pure 4 x 2 table with
3 per bin and 6/6 clusters has probability 6!6!/12! = 1/924, and there are C(4,2) = 6 of them, p = 6/924.
Bad input: one patient without an RNASeq value, one whose manual mask has no tumour slice, one whose automatic
mask is empty after post-processing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cadx.cli import app
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation.exact import fisher_exact_rxc
from cadx.evaluation.shape import shape_features
from cadx.studies.radiogenomics import load_radiogenomics_config, run_radiogenomics_study
from cadx.studies.radiogenomics.study import automatic_masks
from cadx.studies.radiogenomics.tables import power_table, quartile_bins
from conftest import shared_path

Z, H = 9, 40
COLUMNS = ["Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster", "OncosignCluster",
           "COCCluster", "neoplasm_histologic_grade", "gender", "age_at_initial_pathologic"]
UNET = Path(__file__).resolve().parents[1] / "configs" / "papers" / "unet_lgg.yaml"


def _shape(i: int, lobed: bool) -> np.ndarray:
    z, y, x = np.mgrid[:Z, :H, :H].astype(float)
    z, y, x = z - 4, y - 19.5, x - 19.5
    taper = np.sqrt(np.clip(1 - (z / 4.5) ** 2, 0, None))
    th = np.arctan2(y, x)
    r = (10 + 0.4 * i) * (1 + (0.35 * np.cos(5 * th) if lobed else 0.15 * np.cos(2 * th)))
    return np.hypot(y, x) <= r * taper


def _write_cohort(root: Path) -> list[np.ndarray]:
    base = root / "kaggle_3m"
    rows, masks = [], []
    for i in range(12):
        pid = f"TCGA_AA_{1000 + i}"
        folder = base / f"{pid}_20000101"
        folder.mkdir(parents=True)
        cluster = 1 if i < 6 else 2
        m = _shape(i % 6, lobed=cluster == 2)
        if i == 11:
            m = np.zeros_like(m)  # no tumour slice in the manual mask
        masks.append(m)
        for zi in range(Z):
            img = np.full((H, H, 3), 40, np.uint8)
            img[m[zi]] = 200
            Image.fromarray(img).save(folder / f"{folder.name}_{zi + 1}.tif")
            Image.fromarray((m[zi] * 255).astype(np.uint8)).save(folder / f"{folder.name}_{zi + 1}_mask.tif")
        rnaseq = "" if i == 5 else cluster  # patient 5: RNASeq missing
        rows.append([pid, rnaseq, 1 + i % 3, cluster, 1 + i % 2, 1 + (i % 3), cluster, 1 + i % 2, 1 + (i % 2),
                     30 + 3 * i])
    pd.DataFrame(rows, columns=COLUMNS).to_csv(base / "data.csv", index=False)
    return masks


def _write_run(run: Path, root: Path, masks: list[np.ndarray], empty: int = 3) -> list[float]:
    """A segmentation run folder as `cadx cv` leaves it: 2 folds, pred_masks.npz keyed s<index>."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(UNET.read_text().replace("../shared/data/lgg", str(root)))
    dice = [0.5 + 0.04 * i for i in range(12)]
    for k in range(2):
        fd = run / f"fold_{k}"
        fd.mkdir()
        idx = [i for i in range(12) if i % 2 == k]
        pred = {f"s{i}": (np.zeros_like(masks[i]) if i == empty else masks[i]) for i in idx}
        np.savez_compressed(fd / "pred_masks.npz", **pred)  # type: ignore[arg-type]
        pd.DataFrame({"study_id": [f"TCGA_AA_{1000 + i}_20000101" for i in idx],
                      "patient_id": [f"TCGA_AA_{1000 + i}" for i in idx], "fold": k, "y_true": None,
                      "dice": [dice[i] for i in idx]}).to_csv(fd / "predictions.csv", index=False)
        (fd / "DONE").write_text(json.dumps({"fold": k, "seconds": 2.0}))
    (run / "metrics.json").write_text(json.dumps({"run": {"folds": 2, "input_size": [64, 64], "seconds": 4.0}}))
    return dice


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rg")
    masks = _write_cohort(tmp / "lgg")
    dice = _write_run(tmp / "seg_run", tmp / "lgg", masks)
    (tmp / "transfer").mkdir()
    (tmp / "transfer" / "metrics.json").write_text(json.dumps({
        "n_patients": 11, "label_column": "COCCluster", "starts": ["scratch", "mednist"], "excluded": [],
        "tasks": {"coc2 vs rest": {"n_pos": 5, "n_neg": 6, "auc": {
            "scratch": {"auc": 0.61, "ci_lo": 0.3, "ci_hi": 0.9}, "mednist": {"auc": 0.72, "ci_lo": 0.4, "ci_hi": 1.0}},
            "pvalues": [{"a": "mednist", "b": "scratch", "p": 0.42, "p_holm": 0.42}]}}}))
    cfg = load_radiogenomics_config(None, [f"data_root={tmp / 'lgg'}", f"segmentation.run={tmp / 'seg_run'}",
                                           "bootstrap=200", "power_simulations=0",
                                           f"transfer_results={tmp / 'transfer'}"])
    res = run_radiogenomics_study(cfg, tmp / "out")
    return {"res": res, "out": tmp / "out", "masks": masks, "dice": dice, "tmp": tmp, "cfg": cfg}


def test_features_manual_and_automatic_match_by_study_index(study: dict) -> None:
    f = pd.read_csv(study["out"] / "features.csv")
    man, auto = f[f["source"] == "manual"].set_index("patient"), f[f["source"] == "automatic"].set_index("patient")
    assert len(man) == len(auto) == 12
    ref = shape_features(study["masks"][7])
    assert man.loc["TCGA_AA_1007", "asd"] == pytest.approx(ref.asd)
    assert man.loc["TCGA_AA_1007", "inv_bevr"] == pytest.approx(ref.inv_bevr)
    ok = [p for p in man.index if p not in ("TCGA_AA_1003", "TCGA_AA_1011")]
    np.testing.assert_allclose(auto.loc[ok, ["asd", "mf", "inv_bevr"]], man.loc[ok, ["asd", "mf", "inv_bevr"]])
    assert man.loc["TCGA_AA_1011", "reason"] == "manual mask has no tumour slice"
    assert auto.loc["TCGA_AA_1003", "reason"] == "automatic mask empty after post-processing"
    assert np.isnan(auto["asd"].to_numpy(float)[3]) and np.isfinite(man["asd"].to_numpy(float)[3])


def test_hypothesis_table_hand_value_and_exclusions(study: dict) -> None:
    h = pd.read_csv(study["out"] / "hypotheses.csv")
    assert len(h) == 20  # 10 hypotheses x 2 sources
    r = h[(h["source"] == "automatic") & (h["hypothesis"] == "1/BEVR × RNASeq")].iloc[0]
    # automatic: patients 3 and 11 (automatic mask empty) and 5 (no RNASeq) out → 9 patients
    assert r["n"] == 9
    assert "TCGA_AA_1003 (automatic mask empty after post-processing)" in r["excluded"]
    m = h[(h["source"] == "manual") & (h["hypothesis"] == "1/BEVR × RNASeq")].iloc[0]
    # manual: patient 11 (no tumour slice) and patient 5 (no RNASeq) out → 10 patients, clusters 5/5
    assert m["n"] == 10
    assert "TCGA_AA_1011 (manual mask has no tumour slice)" in m["excluded"]
    assert "TCGA_AA_1005 (RNASeqCluster missing)" in m["excluded"]
    t = np.array([[int(x) for x in row.split()] for row in m["table"].split(" / ")])
    assert t.sum() == 10 and t.shape == (4, 2)
    assert m["p"] == pytest.approx(fisher_exact_rxc(t).pvalue)
    # the miRNA test (miRNACluster = the same split, no missing value) keeps patient 5: 11 patients
    mi = h[(h["source"] == "manual") & (h["hypothesis"] == "1/BEVR × miRNA")].iloc[0]
    assert mi["n"] == 11 and "TCGA_AA_1005" not in mi["excluded"]
    # Bonferroni and Holm over the 10 manual hypotheses
    man = h[h["source"] == "manual"]
    np.testing.assert_allclose(man["p_bonferroni"], np.minimum(1, man["p"] * 10))
    assert (man["p_holm"] <= man["p_bonferroni"] + 1e-12).all()


def test_pure_quartile_table_has_the_hand_p_value() -> None:
    """12 patients, 6 regular and 6 irregular, perfectly separated: p = C(4,2) x 6!6!/12! = 6/924."""
    x = np.r_[np.linspace(1.0, 1.2, 6), np.linspace(1.5, 2.5, 6)]
    g = np.r_[np.ones(6), 2 * np.ones(6)]
    bins = quartile_bins(x)
    np.testing.assert_array_equal(bins, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    t = np.zeros((4, 2), int)
    np.add.at(t, (bins, (g - 1).astype(int)), 1)
    assert fisher_exact_rxc(t).pvalue == pytest.approx(6 * math.factorial(6) ** 2 / math.factorial(12))


def test_table3_auc_matches_sklearn(study: dict) -> None:
    a = pd.read_csv(study["out"] / "table3_auc.csv")
    f = pd.read_csv(study["out"] / "features.csv")
    man = f[(f["source"] == "manual") & f["inv_bevr"].notna() & f["RNASeqCluster"].notna()]
    row = a[(a["variable"] == "Manual 1/BEVR") & (a["cluster"] == "R2")].iloc[0]
    assert row["auc"] == pytest.approx(roc_auc_score(man["RNASeqCluster"] == 2, man["inv_bevr"]))
    assert row["auc"] > 0.9  # lobed tumours are the irregular ones
    assert row["ci_lo"] <= row["auc"] <= row["ci_hi"] and row["n_pos"] == 5 and row["n"] == 10
    age = a[(a["variable"] == "Age") & (a["cluster"] == "R1")].iloc[0]
    cl = f[f["source"] == "manual"].dropna(subset=["RNASeqCluster"])
    assert age["auc"] == pytest.approx(roc_auc_score(cl["RNASeqCluster"] == 1, cl["age_at_initial_pathologic"]))
    assert set(a["variable"]) == {"Deep learning ASD", "Deep learning 1/BEVR", "Deep learning MF", "Manual ASD",
                                  "Manual 1/BEVR", "Manual MF", "Age", "Gender"}


def test_dice_table_and_report(study: dict) -> None:
    d = pd.read_csv(study["out"] / "dice.csv")
    assert d.loc[0, "n"] == 12
    assert d.loc[0, "dice_mean"] == pytest.approx(np.mean(study["dice"]))
    assert d.loc[0, "dice_median"] == pytest.approx(np.median(study["dice"]))
    lo, mean, hi = d.loc[0, ["mean_ci_lo", "dice_mean", "mean_ci_hi"]].to_numpy(float)
    assert lo < mean < hi
    text = (study["out"] / "report.md").read_text()
    for s in ("What 28 patients can and cannot show", "Ten hypotheses, manual masks",
              "Ten hypotheses, deep learning masks", "Table 3", "A.4 transfer learning (pooled-CV AUC",
              "0.72 [0.40, 1.00]", "TCGA_AA_1011 (manual mask): manual mask has no tumour slice",
              "TCGA_AA_1003 (automatic mask): automatic mask empty after post-processing",
              "RNASeqCluster missing for TCGA_AA_1005"):
        assert s in text, s
    res = json.loads((study["out"] / "results.json").read_text())
    assert res["cohort"] == {"n_patients": 12, "n_manual": 11, "n_automatic": 10}


def test_same_seed_same_result(study: dict) -> None:
    again = run_radiogenomics_study(study["cfg"], study["tmp"] / "out2")
    assert [r["p"] for r in again["hypotheses"]] == [r["p"] for r in study["res"]["hypotheses"]]
    assert [r["ci_lo"] for r in again["table3"]] == [r["ci_lo"] for r in study["res"]["table3"]]


def test_power_with_12_patients_cannot_reach_bonferroni(study: dict) -> None:
    """Two clusters of 5 and 5 (RNASeq, manual), bins 3/2/2/3: the smallest attainable p is 4 x 5!5!/10! = 4/252
    = 0.016 > 0.005, so Bonferroni power is exactly 0 however large the shift; at alpha = 0.05 a 6-SD shift is
    always found."""
    f = pd.read_csv(study["out"] / "features.csv")
    cfg = study["cfg"].model_copy(update={"power_simulations": 20, "power_effects": [0.0, 6.0]})
    p = power_table(f, cfg, columns=["RNASeqCluster"])
    assert list(p["delta"]) == [0.0, 6.0] and set(p["n"]) == {10}
    assert (p["power_bonferroni"] == 0).all()
    power = p["power_alpha"].to_numpy(float)
    assert power[1] == 1.0 and power[0] <= 0.25
    assert p.loc[1, "auc"] == pytest.approx(0.99999, abs=1e-4)


def test_bad_run_folder_and_config_are_one_line_errors(study: dict, tmp_path: Path) -> None:
    masks = study["masks"]
    run = tmp_path / "run"
    _write_run(run, study["tmp"] / "lgg", masks)
    with np.load(run / "fold_0" / "pred_masks.npz") as z:
        d = dict(z)
    d["s0"] = d["s0"][:3]
    np.savez_compressed(run / "fold_0" / "pred_masks.npz", **d)  # type: ignore[arg-type]
    from cadx.data.datasets import load_dataset

    cohort = load_dataset("lgg", study["tmp"] / "lgg")
    with pytest.raises(CadxDataError, match="does not match") as e:
        automatic_masks(run, cohort)
    assert "pred_masks.npz" in str(e.value) and "\n" not in str(e.value)
    d["s0"] = masks[0]
    d["s1"] = masks[1]  # fold 1's study listed under fold 0
    np.savez_compressed(run / "fold_0" / "pred_masks.npz", **d)  # type: ignore[arg-type]
    with pytest.raises(CadxDataError, match=r"not in this fold's predictions\.csv"):
        automatic_masks(run, cohort)
    with pytest.raises(CadxConfigError, match="unknown key"):
        load_radiogenomics_config(None, ["fisher_sample=3"])
    cfg = load_radiogenomics_config(None, [f"data_root={study['tmp'] / 'lgg'}", "auc_column=NoSuchCluster"])
    with pytest.raises(CadxConfigError, match="NoSuchCluster"):
        run_radiogenomics_study(cfg, tmp_path / "o")


def test_cli_writes_the_report_without_a_segmentation_run(study: dict, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["study", "radiogenomics", str(Path(__file__).parents[1] / "configs" / "papers" /
                                                                "radiogenomics_lgg.yaml"),
                                   "--out", str(tmp_path / "cli"), "--set", f"data_root={study['tmp'] / 'lgg'}",
                                   "--set", f"segmentation.run={tmp_path / 'absent'}", "--set", "bootstrap=0",
                                   "--set", "power_simulations=0", "--set", "transfer_results=null"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "cli" / "report.md").read_text()
    assert "has no finished fold: manual masks only" in text and "A.4 transfer learning\n\nNot run" in text
    h = pd.read_csv(tmp_path / "cli" / "hypotheses.csv")
    assert set(h["source"]) == {"manual"} and len(h) == 10


@pytest.mark.slow
def test_real_lgg_manual_masks() -> None:
    root = shared_path("lgg")
    cfg = load_radiogenomics_config(None, [f"data_root={root}", "segmentation.run=null", "bootstrap=200",
                                           "power_simulations=0"])
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = run_radiogenomics_study(cfg, d)
    assert res["cohort"] == {"n_patients": 28, "n_manual": 28, "n_automatic": 0}
    h = pd.DataFrame(res["hypotheses"])
    rna = h[h["column"] == "RNASeqCluster"]
    assert (rna["n"] == 24).all()  # 4 patients without an RNASeq cluster, named
    for pid in ("TCGA_CS_4944", "TCGA_CS_5397", "TCGA_DU_5872", "TCGA_DU_6408"):
        assert all(pid in e for e in rna["excluded"])
    assert (h.loc[h["column"] != "RNASeqCluster", "n"] == 28).all()
    for _, r in h.iterrows():
        t = np.array([[int(x) for x in row.split()] for row in r["table"].split(" / ")])
        assert t.sum() == r["n"] and r["p"] == pytest.approx(fisher_exact_rxc(t).pvalue)
