"""Overlays from segmentation and detection runs: a tiny U-Net run (masks through cadx.runs.seg_predict, the CV
mask rule) and a tiny YOLO-dense detection run (boxes through cadx.runs.detection.predict_study), both trained for
one epoch on six 8 x 64 x 64 NIfTI volumes (tests/test_detector.py's manifest), served together."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cadx.config import load_config
from cadx.data.readers import read_image
from cadx.runs import run_cv
from cadx.runs.seg_predict import predict_segmentation
from cadx.serve import ServeSettings, create_app
from cadx.serve.worker import run_pending
from test_detector import _tiny_manifest

DET = ("model: {name: yolo_dense, kwargs: {growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8,"
       " anchor: 16.0}}\nobjective: {det_reduced_focal: 1.0, det_box_mse: 1.0}\n"
       "optim: {name: adam, lr: 0.001, weight_decay: 0.0}\ntrain: {epochs: 1, batch_size: 4, progress: false}\n"
       "cv: {folds: 2, val_fraction: 0.34}\neval: {bootstrap: 50}\n"
       "detection: {size: 64, crop: 32, distance_px: 4.0, min_score: 0.01}\n")


@pytest.mark.slow   # trains two tiny runs: 12 s on an idle core, ~110 s when the 2 cores are shared 8 ways
@pytest.mark.ci
def test_mask_and_box_overlays(tmp_path: Path) -> None:
    csv = _tiny_manifest(tmp_path)
    seg = load_config(None, ["name=segtiny", "data.dataset=manifest", f"data.root={csv}", "data.allow_unlabelled=true",
                             "task.classification=false", "task.segmentation=true", "input.size=16",
                             "input.normalize=minmax", "model.name=unet", "model.kwargs={base_filters: 4, levels: 2}",
                             "objective={dice: {weight: 1, batch: true}}", "train.epochs=1", "train.batch_size=4",
                             "train.progress=false", "cv.folds=2", "eval.bootstrap=50", "optim.lr=0.01",
                             "segmentation={largest_component: false}"])
    run_cv(seg, tmp_path / "seg")
    (tmp_path / "det.yaml").write_text(f"name: det_tiny\ndata: {{dataset: manifest, root: {csv}, allow_unlabelled: "
                                       "true}\ntask: {classification: false}\n" + DET, encoding="utf-8")
    run_cv(load_config(tmp_path / "det.yaml"), tmp_path / "det")
    app = create_app(ServeSettings(runs=[tmp_path / "seg", tmp_path / "det"], studies=csv,
                                   db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path / "d",
                                   worker=False))
    state = app.state.cadx
    assert [r.kind for r in state.runs] == ["segmentation", "detection"] and state.primary is None
    assert run_pending(state) == 12
    with TestClient(app) as c:
        js = c.get("/api/studies?sort=patient&order=asc").json()
        assert js["pending"] == 0 and [r["patient"] for r in js["studies"]] == [f"p{i}" for i in range(6)]
        assert all(r["probability"] is None and r["error"] == "" for r in js["studies"])   # no classifier
        sid = js["studies"][2]["id"]
        d = c.get(f"/api/studies/{sid}").json()
        assert d["n_slices"] == 8 and d["overlays"] == ["mask", "boxes"]
        assert d["model"] == "segtiny"
        seg_answer, det_answer = d["runs"]
        assert (seg_answer["name"], seg_answer["kind"], det_answer["kind"]) == ("segtiny", "segmentation", "detection")
        assert seg_answer["lesion_voxels"] >= 0 and det_answer["n_boxes"] >= 1 and det_answer["error"] == ""
        # the mask overlay is the segmentation run's own prediction of the study, slice by slice
        want = np.asarray(read_image(predict_segmentation(tmp_path / "seg", tmp_path / "img2.nii.gz",
                                                          tmp_path / "ref")["mask"]).array)[0] > 0
        for k in range(8):
            png = np.asarray(Image.open(io.BytesIO(c.get(f"/api/studies/{sid}/overlays/mask/{k}.png").content)))
            assert png.shape == (64, 64, 4)
            np.testing.assert_array_equal(png[..., 3] > 0, want[k])
            assert (png[want[k]][:, :3] == [255, 48, 48]).all()
        # boxes: the detector's, in the image's pixels, best first, drawn on their slice
        boxes = c.get(f"/api/studies/{sid}/boxes").json()
        scores = [b["score"] for b in boxes]
        assert scores == sorted(scores, reverse=True) and all(0.01 <= s <= 1 for s in scores)
        for b in boxes:
            assert 0 <= b["x0"] < b["x1"] <= 64 and 0 <= b["y0"] < b["y1"] <= 64 and 0 <= b["slice"] < 8
        assert boxes
        if boxes:
            b = boxes[0]
            png = np.asarray(Image.open(io.BytesIO(
                c.get(f"/api/studies/{sid}/overlays/boxes/{b['slice']}.png").content)))
            assert png[int(b["y0"]), int(b["x0"]), 3] == 255          # the top-left corner of the outline
        other = next(k for k in range(8) if all(x["slice"] != k for x in boxes))
        png = np.asarray(Image.open(io.BytesIO(c.get(f"/api/studies/{sid}/overlays/boxes/{other}.png").content)))
        assert png[..., 3].max() == 0
