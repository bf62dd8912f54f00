"""`cadx serve --pacs URL` against a real Orthanc (Debian's, started on a loopback port with a temporary storage
folder by cadx.dicom.orthanc): two CT series STOWed, listed in the worklist with the PACS's patient and date,
retrieved (WADO-RS) and predicted by the worker exactly as `predict_study` predicts the pulled series. Skipped when
Orthanc is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import test_serve_app as base
from cadx.data.dicom_write import write_dicom_series
from cadx.dicom import pacs
from cadx.dicom.orthanc import OrthancServer, orthanc_available
from cadx.runs import predict_study
from cadx.serve import ServeSettings, create_app
from cadx.serve.worker import run_pending
from helpers import tiny_cohort

AVAILABLE, WHY = orthanc_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"Orthanc not installed: {WHY}")
served = base.served


def test_pacs_studies_are_listed_pulled_and_predicted(served: base.Served, tmp_path: Path) -> None:
    files = []
    for st in tiny_cohort(2, seed=9):
        vol = st.image().load().array[0]
        files += write_dicom_series(vol, (2.0, 1.0, 1.0), tmp_path / "src" / st.study_id,
                                    patient_id=f"PACS-{st.patient_id}", uid_seed=f"serve-{st.study_id}")
    with OrthancServer() as orthanc:
        url = orthanc.dicomweb_url
        assert len(pacs.store(url, files)) == len(files) == 12
        app = create_app(ServeSettings(runs=[served.run], pacs=url, db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
                                       data_dir=tmp_path / "data", worker=False))
        state = app.state.cadx
        assert state.store.studies() == []                  # startup does not wait for the PACS
        state.refresh_studies()                               # the worker's listing
        listed = {s["StudyInstanceUID"]: s for s in pacs.list_studies(url)}
        rows = state.store.studies()
        assert sorted(r.patient for r in rows) == ["PACS-P00", "PACS-P01"]
        assert {r.remote for r in rows} == set(listed) and all(r.source == "pacs" and r.path == "" for r in rows)
        assert run_pending(state) == 2
        with TestClient(app) as c:
            js = c.get("/api/studies?sort=patient&order=asc").json()
            assert js["pending"] == 0 and js["messages"] == []
            for r in js["studies"]:
                row = state.store.study(r["id"])
                assert row is not None and Path(row.path).is_relative_to(tmp_path / "data" / "pacs")
                assert len(list(Path(row.path).glob("*.dcm"))) == 6
                direct = predict_study(served.run, row.path)
                assert r["probability"] == pytest.approx(direct["probabilities"]["malignant"], abs=1e-9)
                assert r["predicted"] == direct["prediction"] and r["error"] == ""
                d = c.get(f"/api/studies/{r['id']}").json()
                assert d["n_slices"] == 6 and d["default_window"] == "soft_tissue"   # DICOM CT: HU windows
                assert c.get(f"/api/studies/{r['id']}/slices/3.png?window=lung").status_code == 200
