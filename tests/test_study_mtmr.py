"""MTMR-Net study (issue #5): variant configs, paper configs, table helpers, an end-to-end run on a tiny LIDC export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadx.config import load_config
from cadx.data.datasets.lidc import ATTRIBUTES
from cadx.errors import CadxConfigError
from cadx.studies.mtmr import run_mtmr_study, variant_config
from cadx.studies.mtmr.study import run_variant
from cadx.studies.mtmr.tables import handcrafted_matrix, inter_reader_row, table2

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_and_paper_configs_follow_the_paper() -> None:
    for name in ("mtmr_lidc", "mtmr_lidc_paper"):
        cfg = load_config(ROOT / "configs" / "papers" / f"{name}.yaml")
        assert cfg.objective == {"ce": 1.0, "attribute_mse": 1.0, "margin_ranking": 0.5}
        assert cfg.pairs == "random" and cfg.optim.name == "adam" and cfg.optim.weight_decay == 1e-3
        assert cfg.optim.groups[0].prefixes == ["backbone"] and cfg.schedule.name == "step"
        assert cfg.schedule.gamma == 0.1 and cfg.sampler.kind == "oversample"
        assert cfg.input.roi == "diameter" and cfg.input.augment.enabled and cfg.input.augment.flip
        assert cfg.cv.folds == 5 and cfg.task.attributes == "all" and cfg.task.score == "malignancy_score"
    paper = load_config(ROOT / "configs" / "papers" / "mtmr_lidc_paper.yaml")
    assert paper.input.size == 256 and paper.input.augment.translate * 256 == 16  # 256 → random 224 window
    assert paper.model.kwargs["depth"] == 152 and paper.optim.groups[0].lr == 3e-3 and paper.optim.lr == 3e-5
    assert paper.train.epochs == 150 and paper.train.batch_size == 32


def test_variants_remove_one_loss_each() -> None:
    cfg = load_config(ROOT / "configs" / "papers" / "mtmr_lidc.yaml")
    assert variant_config(cfg, "mtmr").to_dict() == cfg.to_dict()
    nr = variant_config(cfg, "no_rank")
    assert nr.objective == {"ce": 1.0, "attribute_mse": 1.0} and nr.pairs == "none"
    assert nr.model == cfg.model and nr.name == "mtmr_lidc_no_rank"
    ng = variant_config(cfg, "no_reg")
    assert ng.objective == {"ce": 1.0, "margin_ranking": 0.5} and ng.pairs == "random"
    assert ng.model.kwargs["attribute_branch"] is False and ng.model.kwargs["depth"] == cfg.model.kwargs["depth"]
    with pytest.raises(CadxConfigError, match="unknown MTMR variant"):
        variant_config(cfg, "nope")
    with pytest.raises(CadxConfigError, match="no 'margin_ranking'"):
        variant_config(nr, "no_rank")


def test_table2_formats_ci_and_paper_row() -> None:
    block = {"accuracy": 0.8, "sensitivity": 0.7, "specificity": 0.9, "auc": 0.85,
             "ci": {"accuracy": [0.75, 0.85], "auc": [0.8, 0.9]}}
    t = table2({"mtmr": {"pooled": block}}, {"mtmr": "MTMR-Net"})
    assert t["columns"] == ["method", "accuracy", "sensitivity", "specificity", "auc"]
    assert t["rows"][0] == ["MTMR-Net", "0.800 [0.750, 0.850]", "0.700", "0.900", "0.850 [0.800, 0.900]"]
    assert t["rows"][1][1:] == ["0.935", "0.930", "0.894", "0.979"]


def test_handcrafted_matrix_disk_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 24, 24)).astype(np.float32)
    x[1, 0, 9:15, 9:15] = 5.0  # bright nodule in the centre disk (diameter 24 / 2 = 12)
    f = handcrafted_matrix(x, 2.0)
    assert f.shape == (3, 812 + 19) and np.isfinite(f).all()
    assert f[1, 812 + 3] > f[0, 812 + 3] + 1.0  # "mean" inside the disk


class _S:
    def __init__(self, r: dict[str, list[float | None]]) -> None:
        self.metadata = {"ratings": r}


class _C:
    def __init__(self, studies: list[_S]) -> None:
        self.studies = studies


def test_inter_reader_row_pairs_of_readers() -> None:
    c = _C([_S({"texture": [1.0, 3.0, None, None]}), _S({"texture": [5.0, 5.0, 4.0, None]})])
    # pairs: |1-3| = 2; |5-5|, |5-4|, |5-4| = 0, 1, 1 → 4 / 4
    assert inter_reader_row(c, ["texture"]) == {"texture": 1.0}


def _fake_lidc(root: Path, n: int = 32) -> None:
    """A tiny export in the shared layout: bright discs whose size/brightness follow malignancy."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:71, :71]
    crops, rows = [], []
    for k in range(n):
        mal = [1.0, 2.0] if k % 2 == 0 else [4.0, 5.0]
        r = 5 + 5 * (k % 2) + rng.integers(0, 2)
        img = 1024 - 850 + rng.normal(0, 30, (71, 71))
        img[(yy - 35) ** 2 + (xx - 35) ** 2 <= r * r] = 1024 + 40
        crops.append(img)
        row = {"nodule_id": k + 1, "patient_id": f"P{k // 2}", "pixel_spacing_mm": 0.7, "slice_z_mm": 0.0,
               "equiv_diameter_px": 2.0 * r, "study_uid": "1", "series_uid": "2"}
        for a in (*ATTRIBUTES, "malignancy"):
            for i in range(4):
                row[f"{a}_{i + 1}"] = mal[i % 2] if a == "malignancy" else (1 + (k % 2) * 2 + i % 2 if i < 3
                                                                           else np.nan)
        rows.append(row)
    np.savez(root / "crops.npz", images=np.asarray(crops).astype(np.int16), nodule_id=np.arange(1, n + 1))
    pd.DataFrame(rows).to_csv(root / "nodules.csv", index=False)


@pytest.mark.slow
def test_study_end_to_end_tiny(tmp_path) -> None:
    data = tmp_path / "lidc"
    data.mkdir()
    _fake_lidc(data)
    sets = [f"data.root={data}", "input.size=16", "model.kwargs={depth: 10, width: 4, stem: small}",
            "train.epochs=1", "train.batch_size=8", "cv.folds=2", "eval.bootstrap=20", "train.progress=false"]
    out = tmp_path / "study"
    cfg = load_config(ROOT / "configs" / "papers" / "mtmr_lidc.yaml", sets)
    m = run_mtmr_study(cfg, out)
    for v in ("mtmr", "no_rank", "no_reg"):
        assert (out / v / "fold_1" / "DONE").is_file()
    # the three variants share one set of splits
    assert (out / "no_rank" / "splits.json").read_text() == (out / "mtmr" / "splits.json").read_text()
    assert (out / "no_reg" / "splits.json").read_text() == (out / "mtmr" / "splits.json").read_text()
    pred = pd.read_csv(out / "mtmr" / "predictions.csv")
    assert len(pred) == 32 and {f"pred_{a}" for a in ATTRIBUTES} <= set(pred.columns)
    assert "pred_texture" not in pd.read_csv(out / "no_reg" / "predictions.csv").columns
    titles = [t["title"].split(":")[0] for t in m["extra"]["tables"]]
    assert titles == ["Table II", "Table III", "Table IV"]
    # the size reference: discs of radius 5-6 px (benign) vs 10-11 px (malignant) → the diameter separates them
    ref = m["study"]["table2_reference"]
    assert ref["Nodule diameter alone (logistic regression on log mm)"]["auc"] == pytest.approx(1.0)
    assert ref["Nodule diameter alone (logistic regression on log mm)"]["accuracy"] == pytest.approx(1.0)
    rows = [r[0] for r in m["extra"]["tables"][0]["rows"]]
    assert rows[3:5] == list(ref) and rows[-1].startswith("MTMR-Net (paper")
    t3 = m["study"]["table3"]
    assert set(t3) == {"MTMR-Net", "LASSO (handcrafted)", "EN (handcrafted)", "LASSO (CNN embedding)",
                       "EN (CNN embedding)", "IB (inter-reader)", "MTMR-Net (paper)"}
    # readers 1..3 rate 1/2/1 (benign) or 3/4/3 (malignant): pairs |1-2|,|1-1|,|2-1| → 2/3 on every attribute
    assert t3["IB (inter-reader)"]["texture"] == pytest.approx(2 / 3)
    assert all(0 <= v <= 5 for row in t3.values() for v in row.values())
    assert m["study"]["table4"]["texture"]["rank"] in range(1, 9)
    for f in m["extra"]["figures"]:
        assert (out / f["path"]).stat().st_size > 1000
    assert (out / "report.html").is_file() and "Table III" in (out / "report.md").read_text()
    assert "largest slice" in (out / "notes.md").read_text()
    # resumable: a finished variant with the same config is reused (no new training)
    done = (out / "mtmr" / "fold_0" / "DONE").stat().st_mtime
    again = run_variant(variant_config(cfg, "mtmr"), out / "mtmr", None)
    assert (out / "mtmr" / "fold_0" / "DONE").stat().st_mtime == done
    assert again["pooled"]["auc"] == m["pooled"]["auc"]
