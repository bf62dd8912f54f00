"""The PACS round trip against a real Orthanc (Debian's /usr/sbin/Orthanc + DICOMweb plugin, started on a loopback
port with a temporary storage folder): STOW a series, list it (QIDO), pull it (WADO), predict it with a tiny run
through `cadx export-dicom --stow`, and find the SEG and SR in the study. Skipped when Orthanc is not installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from cadx.cli import app
from cadx.data.readers_dicom import read_dicom_series
from cadx.dicom import pacs
from cadx.dicom.orthanc import OrthancServer, free_port, orthanc_available
from cadx.errors import CadxDataError
from conftest import shared_path
from test_dicom_out import phantom_series, real_ct, seg_run  # noqa: F401  (module fixtures)

AVAILABLE, WHY = orthanc_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"Orthanc not installed: {WHY}")


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    with OrthancServer() as server:
        yield server


def test_orthanc_config_is_loopback_only_and_cleans_up() -> None:
    server = OrthancServer()
    with server:
        folder = server.folder
        assert folder is not None and server.running
        cfg = json.loads((folder / "orthanc.json").read_text())
        assert cfg["RemoteAccessAllowed"] is False and cfg["AuthenticationEnabled"] is False
        assert cfg["DicomServerEnabled"] is False and cfg["DicomWeb"]["Root"] == "/dicom-web/"
        assert cfg["StorageDirectory"].startswith(str(folder)) and cfg["HttpPort"] == server.port
        assert pacs.list_studies(server.dicomweb_url) == []
    assert not server.running and not folder.exists()


def test_pacs_down_and_unknown_series_are_one_readable_line(orthanc: OrthancServer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(CadxDataError) as e:
        pacs.list_studies(dead)
    assert str(e.value) == f"{dead}: QIDO studies: PACS not reachable (ConnectionError)"
    with pytest.raises(CadxDataError, match=r"/dicom-web: WADO series 1\.2\.3: PACS answered HTTP 404"):
        pacs.retrieve_series(orthanc.dicomweb_url, "1.2.3", "1.2.3", tmp_path)
    assert pacs.find(orthanc.dicomweb_url, "1.2.3") == []
    with pytest.raises(CadxDataError, match="not a readable DICOM file"):
        pacs.store(orthanc.dicomweb_url, [tmp_path / "missing.dcm"])
    # the shared real CT as distributed (blank UIDs): Orthanc answers 200 but indexes nothing -> an error, not []
    blank = sorted(p for p in shared_path("ct_examples", "example_ct_dicom").iterdir())[:2]
    with pytest.raises(CadxDataError, match=r"/dicom-web: STOW: PACS accepted 0 of 2 instances \(blank UIDs"):
        pacs.store(orthanc.dicomweb_url, blank)


def test_real_ct_push_list_pull_is_lossless(orthanc: OrthancServer, real_ct: list[Path],  # noqa: F811
                                            tmp_path: Path) -> None:
    url = orthanc.dicomweb_url
    stored = pacs.store(url, real_ct)
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in real_ct]
    assert sorted(stored) == sorted(str(d.SOPInstanceUID) for d in src)
    study_uid, series_uid = str(src[0].StudyInstanceUID), str(src[0].SeriesInstanceUID)
    row = next(s for s in pacs.list_studies(url) if s["StudyInstanceUID"] == study_uid)
    assert row == {"StudyInstanceUID": study_uid, "PatientID": "CTEX", "PatientName": "", "StudyDate": "20221208",
                   "StudyDescription": "", "modalities": ["CT"], "n_series": 1, "n_instances": 20}
    assert [s["SeriesInstanceUID"] for s in pacs.list_series(url, study_uid)] == [series_uid]
    paths = pacs.retrieve_series(url, study_uid, series_uid, tmp_path / "pulled")
    assert len(paths) == 20 and {p.stem for p in paths} == set(stored)
    # the volume read from the pulled files equals the original's, voxel for voxel (JPEG 2000 lossless, as stored)
    a, b = read_dicom_series(tmp_path / "pulled"), read_dicom_series(real_ct[0].parent)
    assert np.array_equal(a.array, b.array) and a.spacing == b.spacing


def test_round_trip_predict_and_stow_seg_and_sr(orthanc: OrthancServer, phantom_series: Path,  # noqa: F811
                                                seg_run: Path, tmp_path: Path) -> None:  # noqa: F811
    url = orthanc.dicomweb_url
    pacs.store(url, sorted(phantom_series.iterdir()))
    first = pydicom.dcmread(next(phantom_series.iterdir()), stop_before_pixels=True)
    study_uid = str(first.StudyInstanceUID)
    series = pacs.list_series(url, study_uid)
    pulled = pacs.retrieve_series(url, study_uid, series[0]["SeriesInstanceUID"], tmp_path / "pulled")
    assert len(pulled) == 5
    res = CliRunner().invoke(app, ["export-dicom", str(seg_run), "--study", str(tmp_path / "pulled"), "--out",
                                   str(tmp_path / "out"), "--stow", url, "--json"], terminal_width=200)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "export.json").read_text())
    assert summary["StudyInstanceUID"] == study_uid
    found = pacs.find(url, study_uid)
    by_modality: dict[str, list[dict[str, object]]] = {}
    for inst in found:
        by_modality.setdefault(str(inst["Modality"]), []).append(inst)
    assert sorted(by_modality) == ["CT", "SEG", "SR"] and len(by_modality["CT"]) == 5
    assert [i["SOPInstanceUID"] for i in by_modality["SEG"]] == [summary["seg"]["SOPInstanceUID"]]
    assert [i["SOPInstanceUID"] for i in by_modality["SR"]] == [summary["sr"]["SOPInstanceUID"]]
    assert by_modality["SEG"][0]["SeriesInstanceUID"] == summary["seg"]["SeriesInstanceUID"]
    row = next(s for s in pacs.list_studies(url) if s["StudyInstanceUID"] == study_uid)
    assert row["modalities"] == ["CT", "SEG", "SR"] and row["n_instances"] == 7 and row["n_series"] == 3
    # the SEG pulled back from the PACS still references the pulled CT series
    seg_back = pacs.retrieve_series(url, study_uid, summary["seg"]["SeriesInstanceUID"], tmp_path / "seg")
    ds = pydicom.dcmread(seg_back[0])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series[0]["SeriesInstanceUID"]
