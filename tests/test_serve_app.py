"""The reading room's app (cadx.serve) through FastAPI's TestClient, on a tiny trained run and studies on disk.

One session run (``_test_tiny`` CNN, 2 folds, box ROI) and eight NIfTI studies + masks in a manifest, plus two bad
studies: a file that is not an image and a mask whose shape differs from its image. The worker is driven by hand
(``run_pending``) except in the test of the background thread, so every test knows what has been predicted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cadx.data.datasets.manifest import load_manifest
from cadx.data.image import ImageData
from cadx.data.readers import read_image, write_image
from cadx.runs import predict_study, run_cv
from cadx.serve import ServeSettings, create_app
from cadx.serve.app import export_label
from cadx.serve.state import ServeState
from cadx.serve.worker import run_pending
from helpers import tiny_cohort, tiny_config

N = 8


class Served:
    def __init__(self, run: Path, manifest: Path, studies: dict[str, dict[str, Any]], root: Path) -> None:
        self.run, self.manifest, self.studies, self.root = run, manifest, studies, root


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """A tiny CV run (~5 s) and a manifest of N good studies + 2 bad ones."""
    root = tmp_path_factory.mktemp("serve")
    run = root / "run"
    run_cv(tiny_config("data.options={n: 12}"), run)
    (run / "report.html").write_text("<html>tiny report</html>")
    folder = root / "studies"
    folder.mkdir()
    rows, info = [], {}
    for st in tiny_cohort(N, seed=5):
        img, mask = st.image().load(), st.mask().load()  # type: ignore[union-attr]
        ip = write_image(ImageData(img.array, img.spacing), folder / f"{st.study_id}.nii.gz")
        mp = write_image(ImageData(mask.array, mask.spacing), folder / f"{st.study_id}_mask.nii.gz")
        rows.append([st.study_id, st.patient_id, ip.name, st.label, mp.name])
        info[st.patient_id] = {"path": ip, "mask": mp, "label": st.label}
    (folder / "BROKEN.nii.gz").write_bytes(b"this is not an image")
    rows.append(["BROKEN", "PBROKEN", "BROKEN.nii.gz", "", ""])
    ok = write_image(ImageData(np.zeros((1, 6, 20, 20), np.float32), (2.0, 1.0, 1.0)), folder / "BADMASK.nii.gz")
    bm = write_image(ImageData(np.zeros((1, 3, 20, 20), np.uint8), (2.0, 1.0, 1.0)), folder / "BADMASK_mask.nii.gz")
    rows.append(["BADMASK", "PBADMASK", ok.name, "", bm.name])
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "patient_id", "path", "label", "mask"])
        w.writerows(rows)
    return Served(run, manifest, info, root)


def make_app(served: Served, tmp: Path, **kw: Any) -> tuple[Any, ServeState]:
    kw.setdefault("worker", False)
    kw.setdefault("studies", served.manifest)
    s = ServeSettings(runs=kw.pop("runs", [served.run]), db_url=f"sqlite:///{tmp / 'serve.sqlite3'}",
                      data_dir=tmp / "data", **kw)
    app = create_app(s)
    return app, app.state.cadx


@pytest.fixture(scope="module")
def predicted(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, ServeState]]:
    """Every study predicted once, for the tests that only read (module scope)."""
    app, state = make_app(served, tmp_path_factory.mktemp("predicted"))
    assert run_pending(state) == N + 2
    with TestClient(app) as c:
        yield c, state


@pytest.fixture
def fresh(served: Served, tmp_path: Path) -> Iterator[tuple[TestClient, ServeState]]:
    """Like ``predicted``, for a test that writes (feedback, a tampered row)."""
    app, state = make_app(served, tmp_path)
    assert run_pending(state) == N + 2
    with TestClient(app) as c:
        yield c, state


def test_worklist_rows_are_the_prediction_paths_answers(predicted: tuple[TestClient, ServeState],
                                                        served: Served) -> None:
    c, _ = predicted
    js = c.get("/api/studies").json()
    rows = js["studies"]
    assert len(rows) == N + 2 and js["pending"] == 0
    assert c.get("/api/jobs").json() == {"done": N + 2, "total": N + 2, "running": False}
    for r in rows:
        if r["patient"].startswith("PBAD") or r["patient"] == "PBROKEN":
            continue
        st = served.studies[r["patient"]]
        direct = predict_study(served.run, st["path"], mask=st["mask"])    # the one prediction path, called here
        assert r["probability"] == pytest.approx(direct["probabilities"]["malignant"], abs=1e-9)
        assert r["predicted"] == direct["prediction"]
        assert r["model"] == "tiny" and r["status"] == "new" and r["error"] == ""
        assert r["wording"].startswith(f"{r['predicted']} — model probability")
        assert "CV " in r["wording"] and r["wording"] != r["predicted"]


def test_bad_studies_show_their_error_and_the_rest_is_served(predicted: tuple[TestClient, ServeState]) -> None:
    c, _ = predicted
    rows = {r["patient"]: r for r in c.get("/api/studies").json()["studies"]}
    assert rows["PBROKEN"]["probability"] is None and rows["PBROKEN"]["error"]
    assert "BROKEN.nii.gz" in rows["PBROKEN"]["error"]            # the page names the file
    assert "mask" in rows["PBADMASK"]["error"] and "data check" in rows["PBADMASK"]["error"]
    assert "shape" in rows["PBADMASK"]["error"]
    assert "\n" not in rows["PBADMASK"]["error"]
    assert sum(r["probability"] is not None for r in rows.values()) == N


def test_sort_by_risk_patient_and_filters(predicted: tuple[TestClient, ServeState]) -> None:
    c, _ = predicted
    desc = c.get("/api/studies?sort=risk&order=desc").json()["studies"]
    p = [r["probability"] for r in desc]
    assert p[:N] == sorted(p[:N], reverse=True) and p[N:] == [None, None]     # unpredicted last
    asc = [r["probability"] for r in c.get("/api/studies?sort=risk&order=asc").json()["studies"]]
    assert asc[:N] == sorted(p[:N]) and asc[N:] == [None, None]
    pats = [r["patient"] for r in c.get("/api/studies?sort=patient&order=asc").json()["studies"]]
    assert pats == sorted(pats)
    one = c.get("/api/studies?q=p03").json()["studies"]                        # case-insensitive text filter
    assert [r["patient"] for r in one] == ["P03"]
    mal = c.get("/api/studies?q=malignant").json()["studies"]
    assert {r["id"] for r in mal} == {r["id"] for r in desc if r["wording"] and "malignant" in r["wording"]}
    assert c.get("/api/studies?status=read").json()["studies"] == []
    assert c.get("/api/studies?sort=nonsense").status_code == 400


def test_feedback_rows_status_and_export_manifest(fresh: tuple[TestClient, ServeState], served: Served) -> None:
    c, _ = fresh
    rows = {r["patient"]: r for r in c.get("/api/studies").json()["studies"]}
    a, b, d = rows["P00"], rows["P01"], rows["P02"]
    t0 = time.time()
    r1 = c.post(f"/api/studies/{a['id']}/feedback", json={"reader": "dr_a", "verdict": "agree"})
    r2 = c.post(f"/api/studies/{b['id']}/feedback", json={"reader": "dr_b", "verdict": "corrected",
                                                            "label": "benign", "note": "cyst"})
    r3 = c.post(f"/api/studies/{d['id']}/feedback", json={"reader": "dr_b", "verdict": "disagree"})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    bad = c.post(f"/api/studies/{a['id']}/feedback", json={"reader": "dr_a", "verdict": "corrected"})
    assert bad.status_code == 422 and "label" in bad.json()["detail"]
    assert c.post(f"/api/studies/{a['id']}/feedback", json={"reader": "", "verdict": "agree"}).status_code == 422
    fb = c.get("/api/feedback").json()
    assert [(f["reader"], f["verdict"], f["label"], f["note"]) for f in fb] == [
        ("dr_a", "agree", "", ""), ("dr_b", "corrected", "benign", "cyst"), ("dr_b", "disagree", "", "")]
    for f in fb:
        when = pd.Timestamp(f["created_at"]).timestamp()
        assert t0 - 2 <= when <= time.time() + 2 and f["created_at"].endswith("+00:00")
    status = {r["patient"]: r["status"] for r in c.get("/api/studies").json()["studies"]}
    assert (status["P00"], status["P01"], status["P02"], status["P03"]) == ("read", "disagreed", "disagreed", "new")
    assert [r["patient"] for r in c.get("/api/studies?status=read").json()["studies"]] == ["P00"]
    # the export is a manifest cadx reads back: agreed → the predicted class; corrected → the label;
    # disagree on a binary run → the other class
    text = c.get("/api/feedback/export.csv").text
    path = served.root / "export.csv"
    path.write_text(text)
    cohort = load_manifest(path)
    got = {s.patient_id: (s.label, Path(s.image().source).name, s.mask() is not None) for s in cohort}
    other = {"benign": "malignant", "malignant": "benign"}
    assert got == {"P00": (a["predicted"], "S00.nii.gz", True), "P01": ("benign", "S01.nii.gz", True),
                   "P02": (other[d["predicted"]], "S02.nii.gz", True)}


def test_export_label_rule() -> None:
    cls = ["benign", "malignant"]
    assert export_label("agree", "", "malignant", cls) == "malignant"
    assert export_label("corrected", "benign", "malignant", cls) == "benign"
    assert export_label("disagree", "", "malignant", cls) == "benign"
    assert export_label("disagree", "", "b", ["a", "b", "c"]) is None
    assert export_label("disagree", "c", "b", ["a", "b", "c"]) == "c"


def test_cache_hit_then_recompute_after_the_checkpoint_changes(served: Served, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(served.run, run)
    _, state = make_app(served, tmp_path, runs=[run])
    assert run_pending(state) == N + 2
    r = state.runs[0]
    before = state.store.predictions(r.run_id, r.fingerprint())
    assert len(before) == N
    assert state.pending() == [] and run_pending(state) == 0               # cache hit: nothing recomputed
    state2 = create_app(ServeSettings(runs=[run], studies=served.manifest, db_url=state.settings.db_url,
                                      data_dir=tmp_path / "data", worker=False)).state.cadx
    assert state2.pending() == []                                           # ... also after a restart
    fp0 = r.fingerprint()
    assert r.fingerprint() == fp0                                           # reading the run does not change it
    ck = run / "fold_0" / "checkpoint_best.ckpt"
    st = ck.stat()
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))      # the run changed
    assert r.fingerprint() != fp0
    state2._fps.clear()                                                     # (the 1 s re-check cache)
    pend = state2.pending()
    assert len(pend) == N
    assert run_pending(state2) == N
    after = state2.store.predictions(r.run_id, r.fingerprint())
    assert set(after) == set(before)
    assert all(after[k].created > before[k].created for k in before)
    assert all(json.loads(after[k].result)["probabilities"] == json.loads(before[k].result)["probabilities"]
               for k in before)                                             # same weights: same answer


def test_background_worker_reports_progress(served: Served, tmp_path: Path) -> None:
    app, _ = make_app(served, tmp_path, worker=True, poll_s=0.2)
    with TestClient(app) as c:
        first = c.get("/api/jobs").json()
        assert first["total"] == N + 2 and 0 <= first["done"] <= N + 2
        deadline = time.time() + 60
        while time.time() < deadline:
            j = c.get("/api/jobs").json()
            if j["done"] == j["total"] and not j["running"]:
                break
            time.sleep(0.1)
        assert j == {"done": N + 2, "total": N + 2, "running": False}
        assert c.get("/api/studies").json()["pending"] == 0


def test_viewer_endpoints_slices_overlays_and_report(predicted: tuple[TestClient, ServeState],
                                                     served: Served) -> None:
    c, state = predicted
    sid = next(r["id"] for r in c.get("/api/studies").json()["studies"] if r["patient"] == "P01")
    d = c.get(f"/api/studies/{sid}").json()
    assert d["n_slices"] == 6 and d["model"] == "tiny" and len(d["model_version"]) == 12
    assert d["overlays"] == ["gradcam"] and d["windows"] == ["lung", "soft_tissue", "brain", "bone", "auto"]
    assert d["report_url"] == "/runs/0/report.html"
    assert [(r["name"], r["kind"], r["predicted"]) for r in d["runs"]] == [("tiny", "classifier", d["predicted"])]
    assert c.get("/runs/0/report.html").text == "<html>tiny report</html>"
    assert c.get("/runs/1/report.html").status_code == 404
    # the lung window of slice 2, computed by hand: (v - (-600 - 750)) / 1500 → 8 bits
    png = c.get(f"/api/studies/{sid}/slices/2.png?window=lung")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(png.content)))
    arr = read_image(served.studies["P01"]["path"]).array[0, 2]
    want = (np.clip((arr + 1350.0) / 1500.0, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert c.get(f"/api/studies/{sid}/slices/6.png").status_code == 404
    assert c.get(f"/api/studies/{sid}/slices/0.png?window=nope").status_code == 400
    # Grad-CAM: RGBA at the slice size, transparent outside the ROI the model looked at, cached in the DB
    g = Image.open(io.BytesIO(c.get(f"/api/studies/{sid}/overlays/gradcam/2.png").content))
    assert g.mode == "RGBA" and g.size == (20, 20)
    run = state.runs[0]
    assert state.store.overlay(sid, run.run_id, "gradcam", run.fingerprint()) is not None
    # the map lies on the lesion's ROI: finite only on the lesion's slices, covering the mask's box there
    row = state.store.study(sid)
    assert row is not None
    heat = state.overlay_array(row, "gradcam")
    assert heat is not None
    mask = read_image(served.studies["P01"]["mask"]).array[0] > 0
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    assert heat.shape == mask.shape
    assert set(np.flatnonzero(np.isfinite(heat).any(axis=(1, 2)))) <= set(zs)
    for z in np.flatnonzero(np.isfinite(heat).any(axis=(1, 2))):
        assert np.isfinite(heat[z][mask[z]]).all() and not np.isfinite(heat[z]).all()   # ROI, not whole slice
        assert 0.0 <= np.nanmin(heat[z]) and np.nanmax(heat[z]) <= 1.0
    m = Image.open(io.BytesIO(c.get(f"/api/studies/{sid}/overlays/mask/2.png").content))
    assert m.mode == "RGBA" and np.asarray(m)[..., 3].max() == 0         # no segmentation run: transparent
    assert c.get(f"/api/studies/{sid}/boxes").json() == []
    assert c.get(f"/api/studies/{sid}/overlays/other/2.png").status_code == 404


def test_worker_loads_the_models_once_per_fingerprint(served: Served, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import cadx.serve.served as served_mod

    calls: list[str] = []
    real = served_mod.load_predictor

    def counting(d: Any, *a: Any, **k: Any) -> Any:
        calls.append(str(d))
        return real(d, *a, **k)

    monkeypatch.setattr(served_mod, "load_predictor", counting)
    _, state = make_app(served, tmp_path)
    assert run_pending(state) == N + 2
    r = state.runs[0]
    assert len(calls) == 2                              # two fold models, loaded once for all N + 2 studies
    first = r.predictors()
    assert r.predictors() is first and len(calls) == 2  # cached while the fingerprint holds
    st = next(iter(served.studies.values()))
    direct = predict_study(served.run, str(st["path"]), mask=str(st["mask"]))
    cached = predict_study(served.run, str(st["path"]), mask=str(st["mask"]), predictors=first)
    assert cached["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-9)
