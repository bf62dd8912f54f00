"""ONNX export (``cadx export``) and the onnxruntime backend of the one prediction path (``--backend onnx``).

Parity: the paper networks (ResNet-18 2D, the 3D CNN, DMRN, U-Net) exported with random weights give the torch
outputs to 1e-4 through :func:`cadx.runs.inference.infer`, on a batch size other than the export's (the batch axis
is dynamic). A tiny 2D run and a tiny 3D run (2 folds, the ``_test_tiny`` CNN) are exported and every study,
written to disk, is predicted by ``predict_study`` with both backends — the fold ensemble and fold 0's model: the
probabilities agree to 1e-4, the class and the decision parameters exactly, and fold k's ONNX answer equals the
study's row of the run's ``predictions.csv`` (to 1e-4) for the studies fold k held out. A tiny U-Net run exported
the same way writes the same mask through ``--backend onnx`` (slice probabilities to 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cadx.cli import app
from cadx.data.image import ImageData
from cadx.data.readers import read_image, write_image
from cadx.data.splits import Splits
from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import create_model
from cadx.runs import predict_study, run_cv
from cadx.runs.export import export_model, export_run, positive_class
from cadx.runs.inference import infer, load_predictor
from cadx.runs.onnx_backend import OnnxModule, export_folder, export_model_dirs, load_onnx_module
from cadx.runs.segmentation import load_models, predict_items
from helpers import tiny_cohort, tiny_config

N = 8
SETTINGS = {"2d": ["input.max_slices=2"], "3d": ["input.kind=volume3d", "input.size=[4,8,8]"]}


@pytest.mark.parametrize(("name", "dims", "shape", "kwargs", "out"), [
    ("resnet18", 2, (1, 24, 24), {"width": 8, "stem": "small"}, "proba"),
    ("cnn3d", 3, (1, 12, 12, 12), {}, "proba"),
    ("dmrn", 2, (1, 24, 24), {"width": 8, "stem": "small"}, "proba"),
    ("unet", 2, (1, 32, 32), {}, "seg_logits"),
])
def test_paper_networks_export_with_parity(tmp_path: Path, name: str, dims: int, shape: tuple[int, ...],
                                           kwargs: dict, out: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=0 if out == "seg_logits" else 2, in_channels=shape[0], spatial_dims=dims,
                         **kwargs).eval()
    spec = {"name": name, "in_channels": shape[0], "classes": ["a", "b"]}
    info = export_model(model, spec, shape, tmp_path / "m.onnx")
    assert info["check_max_abs_diff"] <= 1e-4 and info["opset"] == 17 and info["input_shape"] == list(shape)
    onnx_model, got_spec = load_onnx_module(tmp_path / "m.onnx")
    assert got_spec == spec
    x = torch.rand((5, *shape), generator=torch.Generator().manual_seed(1))   # 5 ≠ the export's batch of 2
    if out == "proba":
        ref, res = infer(model, x), infer(onnx_model, x)
        assert ref["proba"].shape == (5, 2)
        np.testing.assert_allclose(res["proba"], ref["proba"], atol=1e-4, rtol=0)
        ref_f, res_f = infer(model, x, features="features"), infer(onnx_model, x, features="features")
        np.testing.assert_allclose(res_f["features"], ref_f["features"], atol=1e-4, rtol=0)
    else:
        with torch.no_grad():
            ref_s, res_s = model(x)["seg_logits"], onnx_model(x)["seg_logits"]
        assert ref_s.shape == res_s.shape == (5, ref_s.shape[1], *shape[1:])
        assert float((ref_s - res_s).abs().max()) <= 1e-4
    with pytest.raises(CadxDataError, match="input_shape"):   # the item size is fixed by the export
        onnx_model(torch.zeros((1, shape[0], *[s + 2 for s in shape[1:]])))


def _write_studies(folder: Path) -> dict[str, tuple[Path, Path]]:
    out = {}
    for st in tiny_cohort(N, 0):
        img, mask = st.image().load(), st.mask().load()  # type: ignore[union-attr]
        ip = write_image(ImageData(img.array, img.spacing), folder / f"{st.study_id}.nii.gz")
        mp = write_image(ImageData(mask.array, mask.spacing), folder / f"{st.study_id}_mask.nii.gz")
        out[st.study_id] = (ip, mp)
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return _write_studies(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module", params=["2d", "3d"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(kind, run folder, export folder) of a tiny 2-fold run with a Youden decision, exported to RUN/onnx."""
    kind = str(request.param)
    run = tmp_path_factory.mktemp(f"run{kind}") / "run"
    cfg = tiny_config("cv.val_fraction=0.3", f"data.options={{n: {N}}}", "eval.decision=youden",
                      "input.roi=mask", *SETTINGS[kind])
    run_cv(cfg, run)
    return kind, run, export_run(run)


def test_export_json_records_the_preprocessing_and_decisions(exported: tuple[str, Path, Path]) -> None:
    kind, run, folder = exported
    assert folder == run / "onnx" and export_folder(run) == folder and export_folder(folder) == folder
    info = json.loads((folder / "export.json").read_text())
    cfg = json.loads(json.dumps(tiny_config(*SETTINGS[kind]).input.model_dump(mode="json")))
    assert info["input"]["kind"] == cfg["kind"] and info["input"]["size"] == cfg["size"]
    assert info["input"]["window"] == [0.0, 400.0] and info["input"]["roi"] == "mask"
    assert info["input_shape"] == ([1, 8, 8] if kind == "2d" else [1, 4, 8, 8])
    assert info["classes"] == ["benign", "malignant"] and info["positive_class"] == "malignant"
    assert info["aggregation"] == "mean" and info["decision_rule"] == "youden" and info["opset"] >= 17
    assert [m["name"] for m in info["models"]] == ["fold_0", "fold_1"]
    for m in info["models"]:
        saved = json.loads((run / m["name"] / "metrics.json").read_text())
        assert m["decision_fit"] == saved["decision_fit"] and 0.0 <= m["decision_fit"]["threshold"] <= 1.0
        assert m["check_max_abs_diff"] <= 1e-4 and (folder / m["file"]).is_file()
        assert json.loads((folder / m["name"] / "metrics.json").read_text()) == saved
    assert export_model_dirs(folder) == [folder / "fold_0", folder / "fold_1"]
    assert export_model_dirs(folder, 1) == [folder / "fold_1"]
    with pytest.raises(CadxConfigError, match="holds fold_0, fold_1, not fold_7"):
        export_model_dirs(folder, 7)


def test_onnx_predictions_equal_torch_and_the_cv_rows(exported: tuple[str, Path, Path],
                                                      studies: dict[str, tuple[Path, Path]]) -> None:
    _, run, folder = exported
    rows = pd.read_csv(run / "predictions.csv", dtype={"study_id": str}).set_index("study_id")
    held_out = {p: f.fold for f in Splits.load(run / "splits.json") for p in f.test}
    worst = 0.0
    for sid, (image, mask) in studies.items():
        for fold in (None, held_out[f"P{sid[1:]}"]):
            ref = predict_study(run, image, mask=mask, fold=fold)
            got = predict_study(folder, image, mask=mask, fold=fold, backend="onnx")
            assert got["backend"] == "onnx" and got["items"] == ref["items"] and got["models"] == ref["models"]
            assert got["decision"] == ref["decision"] and got["prediction"] == ref["prediction"]
            for c, p in ref["probabilities"].items():
                worst = max(worst, abs(got["probabilities"][c] - p))
            if fold is not None:   # the study's own fold: its CV row
                assert got["prediction"] == rows.loc[sid, "y_pred"]
                assert abs(got["probabilities"]["malignant"] - rows.loc[sid, "p_malignant"]) <= 1e-4
    assert worst <= 1e-4
    # the ensemble decision is the mean of the folds' thresholds, as with torch
    fits = [json.loads((folder / f"fold_{k}" / "metrics.json").read_text())["decision_fit"] for k in (0, 1)]
    image, mask = next(iter(studies.values()))
    got = predict_study(run, image, mask=mask, backend="onnx")   # the run folder finds RUN/onnx
    assert got["decision"]["threshold"] == pytest.approx(np.mean([f["threshold"] for f in fits]), abs=1e-12)


@pytest.mark.parametrize("exported", ["2d"], indirect=True)
def test_cli_export_one_fold_and_predict_onnx(exported: tuple[str, Path, Path], studies: dict,
                                              tmp_path: Path) -> None:
    _, run, _ = exported
    runner = CliRunner()
    out = tmp_path / "fold0"
    res = runner.invoke(app, ["export", str(run), "--format", "onnx", "--fold", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [m["name"] for m in json.loads((out / "export.json").read_text())["models"]] == ["fold_0"]
    image, mask = studies["S03"]
    res = runner.invoke(app, ["predict", str(out), "--study", str(image), "--mask", str(mask), "--backend", "onnx",
                              "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    ref = predict_study(run, image, mask=mask, fold=0)
    assert got["prediction"] == ref["prediction"] and got["models"] == 1
    assert got["probabilities"]["malignant"] == pytest.approx(ref["probabilities"]["malignant"], abs=1e-4)
    bad = runner.invoke(app, ["export", str(run), "--format", "tflite"])
    assert bad.exit_code != 0 and isinstance(bad.exception, CadxConfigError) and "onnx" in str(bad.exception)


@pytest.mark.parametrize("exported", ["2d"], indirect=True)
def test_bad_exports_are_one_readable_error(exported: tuple[str, Path, Path], tmp_path: Path) -> None:
    _, run, folder = exported
    with pytest.raises(CadxConfigError, match="no ONNX export"):
        export_folder(tmp_path)
    with pytest.raises(CadxConfigError, match="'final'"):
        export_run(run, tmp_path / "x", fold="last")
    with pytest.raises(CadxDataError, match="no final model"):
        export_run(run, tmp_path / "x", fold="final")
    with pytest.raises(CadxConfigError, match="opset"):
        export_run(run, tmp_path / "x", opset=13)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(CadxDataError, match="unreadable ONNX model") as e:
        OnnxModule(broken / "model.onnx")
    assert str(broken / "model.onnx") in str(e.value)
    with pytest.raises(CadxDataError, match="ONNX model missing"):
        load_predictor(tmp_path, backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        load_predictor(folder / "fold_0", backend="tensorrt")


def test_positive_class_follows_eval_positive() -> None:
    classes = ["benign", "malignant"]
    assert positive_class(tiny_config(), classes) == "malignant"
    assert positive_class(tiny_config("eval.positive=benign"), classes) == "benign"
    assert positive_class(tiny_config("eval.positive=0"), classes) == "benign"
    assert positive_class(tiny_config(), ["a", "b", "c"]) is None
    with pytest.raises(CadxConfigError, match="not a class"):
        positive_class(tiny_config("eval.positive=cancer"), classes)


def test_segmentation_run_onnx_masks_equal_torch(tmp_path: Path) -> None:
    """A tiny U-Net run (2 folds): slice probabilities of the exported models equal torch's to 1e-4 and
    ``predict_study(..., backend="onnx")`` writes the same mask as the torch run."""
    from test_engine_segmentation import seg_cohort, seg_config  # the tiny segmentation cohort of that test

    run = tmp_path / "run"
    run_cv(seg_config(), run)
    folder = export_run(run)
    info = json.loads((folder / "export.json").read_text())
    assert [m["outputs"] for m in info["models"]] == [["features", "seg_logits"]] * 2
    study = seg_cohort(4)[1]
    write_image(study.image().load(), tmp_path / "new.nii.gz")
    ref = predict_study(run, tmp_path / "new.nii.gz", out_dir=tmp_path / "torch")
    got = predict_study(run, tmp_path / "new.nii.gz", out_dir=tmp_path / "onnx", backend="onnx")
    assert got["models"] == ref["models"] == 2 and got["lesion_voxels"] == ref["lesion_voxels"] > 0
    np.testing.assert_array_equal(read_image(got["mask"]).array, read_image(ref["mask"]).array)
    images = torch.rand((5, *info["input_shape"]), generator=torch.Generator().manual_seed(0))
    dirs = [run / m["name"] for m in info["models"]]
    seg_t, _ = predict_items(load_models(dirs, images.shape[1])[0], images)
    seg_o, _ = predict_items(load_models([folder / m["name"] for m in info["models"]], images.shape[1], "onnx")[0],
                             images)
    assert float(np.abs(seg_t - seg_o).max()) <= 1e-4
