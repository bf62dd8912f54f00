"""DICOM out: SEG and SR written with highdicom, checked by reading them back from bytes (pydicom + highdicom);
the export of a run's prediction (runs/dicom_export.py) with tiny classification and segmentation runs."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from cadx.config import ExperimentConfig, load_config
from cadx.data.datasets.base import DATASETS, register_dataset
from cadx.data.dicom_write import write_dicom_series
from cadx.data.image import LazyImage
from cadx.data.readers import read_image
from cadx.data.readers_dicom import read_dicom_series
from cadx.data.study import Cohort, Study
from cadx.dicom.identifiers import complete_identifiers, missing_identifiers, write_completed_series
from cadx.dicom.seg import source_order, write_seg
from cadx.dicom.sr import PRIVATE_SCHEME, finding_code, write_sr
from cadx.errors import CadxDataError
from cadx.registry import Options
from cadx.report.wording import cv_figures, wording
from cadx.runs import run_cv
from cadx.runs.dicom_export import export_dicom, operating_point_wording
from cadx.runs.predict import predict_study
from conftest import shared_path
from helpers import tiny_config, tiny_volume

CT_EXAMPLE = ("ct_examples", "example_ct_dicom")


# ---------------------------------------------------------------- fixtures shared with test_dicom_pacs.py

def ct_phantom(rng: np.random.Generator, n: int = 16, z: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, n, n)`` HU volume: air (-1000) around a 40 HU disc with a 300 HU square lesion on slices 1..Z-2;
    returns (volume, mask uint8)."""
    yy, xx = np.mgrid[:n, :n]
    vol = np.full((z, n, n), -1000.0, np.float32)
    vol[:, (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 2 - 1) ** 2] = 40.0
    mask = np.zeros((z, n, n), np.uint8)
    c, s = int(rng.integers(n // 4, n // 2)), n // 4
    mask[1:z - 1, c:c + s, c:c + s] = 1
    vol[mask > 0] = 300.0
    vol += rng.normal(0, 5, vol.shape).astype(np.float32)
    return vol, mask


class CtSegOptions(Options):
    n: int = 4


if "_test_ct_seg" not in DATASETS:
    @register_dataset("_test_ct_seg", "test stand-in: CT-like phantoms with a square lesion", options=CtSegOptions)
    def _load_ct_seg(root: Path, *, n: int) -> Cohort:
        rng = np.random.default_rng(0)
        studies = []
        for i in range(n):
            v, m = ct_phantom(rng)
            studies.append(Study(f"S{i}", f"P{i}", images={"image": LazyImage.from_array(v[None], (2.0, 1.0, 1.0))},
                                 masks={"mask": LazyImage.from_array(m[None], (2.0, 1.0, 1.0))}))
        return Cohort(studies, classes=[], name="ct_seg")


def ct_seg_config(epochs: int = 10) -> ExperimentConfig:
    """A tiny U-Net segmentation run on the phantoms (16 px, HU window [-200, 400], 2 folds)."""
    return load_config(None, [
        "name=ct_seg", "data.dataset=_test_ct_seg", "data.root=.", "task.classification=false",
        "task.segmentation=true", "input.size=16", "input.window=[-200, 400]", "model.name=unet",
        "model.kwargs={base_filters: 4, levels: 2}", "objective={dice: {weight: 1, batch: true}}",
        f"train.epochs={epochs}", "train.batch_size=4", "train.progress=false", "cv.folds=2", "eval.bootstrap=20",
        "eval.decision=argmax", "optim.lr=0.01", "segmentation={oversample_lesion: 3}"])


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("segrun") / "run"
    run_cv(ct_seg_config(), run)
    return run


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-slice 32 px phantom CT series (files in shuffled name order), deterministic UIDs."""
    folder = tmp_path_factory.mktemp("phantom") / "series"
    v, _ = ct_phantom(np.random.default_rng(5), n=32)
    write_dicom_series(v, (2.0, 1.0, 1.0), folder, patient_id="PH1", uid_seed="phantom", shuffle_files=True)
    return folder


@pytest.fixture(scope="module")
def real_ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The real CT of ct_examples with its blank UIDs completed (deterministic), as files in a temp folder."""
    src = sorted(p for p in shared_path(*CT_EXAMPLE).iterdir() if p.is_file())
    return write_completed_series(src, tmp_path_factory.mktemp("ct") / "series", seed="ct_examples",
                                  patient_id="CTEX")


def _bytes(ds: Dataset) -> bytes:
    b = io.BytesIO()
    ds.save_as(b, enforce_file_format=True)
    return b.getvalue()


def _report(src: Any) -> hd.sr.MeasurementReport:
    """The TID 1500 content of an SR read back with highdicom (``src``: bytes buffer or path)."""
    content = hd.sr.srread(src).content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def _frame_sources(seg: Dataset) -> list[str]:
    """The source SOPInstanceUID each SEG frame derives from, in frame order."""
    return [str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for f in seg.PerFrameFunctionalGroupsSequence]


# ---------------------------------------------------------------- identifiers

def test_real_ct_has_blank_uids_and_completion_fills_them_deterministically(tmp_path: Path) -> None:
    src = sorted(p for p in shared_path(*CT_EXAMPLE).iterdir() if p.is_file())
    raw = pydicom.dcmread(src[0])
    assert missing_identifiers(raw) == ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
    a = write_completed_series(src[:3], tmp_path / "a", seed="s", patient_id="X")
    b = write_completed_series(src[:3], tmp_path / "b", seed="s")
    da, db = pydicom.dcmread(a[0]), pydicom.dcmread(b[0])
    assert da.SOPInstanceUID == raw.file_meta.MediaStorageSOPInstanceUID
    assert da.SOPClassUID == raw.file_meta.MediaStorageSOPClassUID
    assert da.StudyInstanceUID == db.StudyInstanceUID and da.SeriesInstanceUID == db.SeriesInstanceUID
    assert da.PatientID == "X" and db.PatientID == ""
    assert {str(pydicom.dcmread(p).SeriesInstanceUID) for p in a} == {str(da.SeriesInstanceUID)}
    # pixels untouched (same compressed bytes)
    assert da.PixelData == raw.PixelData and da.file_meta.TransferSyntaxUID == raw.file_meta.TransferSyntaxUID
    other = complete_identifiers([pydicom.dcmread(src[0])], seed="t")[0]
    assert other.StudyInstanceUID != da.StudyInstanceUID
    nometa = Dataset()
    with pytest.raises(CadxDataError, match="dataset 0: SOPClassUID: blank"):
        complete_identifiers([nometa], seed="s")


# ---------------------------------------------------------------- SEG

def test_seg_round_trip_on_the_real_ct(real_ct: list[Path]) -> None:
    dss = [pydicom.dcmread(p) for p in real_ct]
    vol = read_dicom_series(real_ct[0].parent)
    order = source_order(dss)
    # the SEG's slice order is the reader's: source k = the k-th file the reader stacked
    assert [str(real_ct[i]) for i in order] == vol.meta["files"]
    mask = np.zeros(vol.array.shape[1:], bool)
    mask[5:8, 200:260, 210:250] = True
    mask[6, 300, 300] = True
    seg_ds = write_seg(dss, mask, algorithm_name="unet", algorithm_version="run-1", uid_seed="x")
    raw = _bytes(seg_ds)
    back = pydicom.dcmread(io.BytesIO(raw))
    src = dss[0]
    assert back.SOPClassUID == SegmentationStorage and back.SegmentationType == "BINARY" and back.Modality == "SEG"
    assert back.StudyInstanceUID == src.StudyInstanceUID and back.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert back.PatientID == "CTEX"
    uids = {str(d.SOPInstanceUID) for d in dss}
    assert back.SeriesInstanceUID != src.SeriesInstanceUID and str(back.SOPInstanceUID) not in uids
    assert len(uids) == 20 and str(back.SeriesInstanceUID) not in uids
    ref = back.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert {str(r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence} <= uids
    # empty slices omitted: 3 frames, each derived from the source image of its slice
    assert int(back.NumberOfFrames) == 3
    assert sorted(_frame_sources(back)) == sorted(str(dss[order[k]].SOPInstanceUID) for k in (5, 6, 7))
    seg_item = back.SegmentSequence[0]
    assert seg_item.SegmentLabel == "lesion" and seg_item.SegmentAlgorithmType == "AUTOMATIC"
    assert seg_item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert seg_item.SegmentAlgorithmName == "unet"
    # pixels round-trip exactly through highdicom's reader
    seg = hd.seg.segread(io.BytesIO(raw))
    px = seg.get_pixels_by_source_instance([str(dss[i].SOPInstanceUID) for i in order], segment_numbers=[1],
                                           combine_segments=False)
    assert px.shape == (20, 512, 512, 1) and np.array_equal(px[..., 0].astype(bool), mask)
    # deterministic UIDs with a seed, fresh ones without
    again = write_seg(dss, mask, algorithm_name="unet", algorithm_version="run-1", uid_seed="x")
    fresh = write_seg(dss, mask, algorithm_name="unet", algorithm_version="run-1")
    assert again.SOPInstanceUID == back.SOPInstanceUID and again.SeriesInstanceUID == back.SeriesInstanceUID
    assert fresh.SOPInstanceUID != back.SOPInstanceUID


def test_seg_empty_mask_keeps_every_frame_and_input_order_does_not_matter(phantom_series: Path) -> None:
    files = sorted(phantom_series.iterdir())
    dss = [pydicom.dcmread(p) for p in files]
    vol = read_dicom_series(phantom_series)
    empty = write_seg(dss, np.zeros(vol.array.shape[1:], np.uint8), algorithm_name="m", algorithm_version="1")
    assert int(empty.NumberOfFrames) == 5 and not np.asarray(empty.pixel_array).any()
    mask = np.zeros(vol.array.shape[1:], np.uint8)
    mask[3, 4:9, 10:12] = 1
    a = write_seg(dss, mask, algorithm_name="m", algorithm_version="1", uid_seed="o")
    b = write_seg(dss[::-1], mask, algorithm_name="m", algorithm_version="1", uid_seed="o")
    assert _frame_sources(a) == _frame_sources(b) == [str(pydicom.dcmread(vol.meta["files"][3]).SOPInstanceUID)]
    assert np.array_equal(np.asarray(a.pixel_array), mask[3]) and np.array_equal(a.pixel_array, b.pixel_array)
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)


def test_seg_refuses_bad_masks_and_blank_uids(phantom_series: Path) -> None:
    dss = [pydicom.dcmread(p) for p in sorted(phantom_series.iterdir())]
    with pytest.raises(CadxDataError, match=r"series: mask: shape \(5, 32, 31\) is not the source geometry"):
        write_seg(dss, np.zeros((5, 32, 31), bool), algorithm_name="m", algorithm_version="1",
                  where=str(phantom_series))
    bad = np.zeros((5, 32, 32), np.uint8)
    bad[0, 0, 0] = 255
    with pytest.raises(CadxDataError, match="mask: values must be 0/1"):
        write_seg(dss, bad, algorithm_name="m", algorithm_version="1")
    with pytest.raises(CadxDataError, match="mask: values must be 0/1"):
        write_seg(dss, bad.astype(np.float32) / 255, algorithm_name="m", algorithm_version="1")
    blank = [pydicom.dcmread(p) for p in sorted(shared_path(*CT_EXAMPLE).iterdir())[:2]]
    with pytest.raises(CadxDataError, match="SOPClassUID: image 0 has blank SOPClassUID"):
        write_seg(blank, np.zeros((2, 512, 512), bool), algorithm_name="m", algorithm_version="1")
    with pytest.raises(CadxDataError, match="source_datasets: no source images"):
        write_seg([], np.zeros((0, 1, 1), bool), algorithm_name="m", algorithm_version="1")


# ---------------------------------------------------------------- SR

def _group_items(sr: Dataset) -> list[Dataset]:
    """The content items of the SR's (only) measurement group."""
    report = _report(io.BytesIO(_bytes(sr)))
    groups = report.get_volumetric_roi_measurement_groups() or report.get_image_measurement_groups()
    assert len(groups) == 1
    return list(groups[0][0].ContentSequence)


@pytest.mark.parametrize("with_seg", [False, True])
def test_sr_round_trip(real_ct: list[Path], with_seg: bool) -> None:
    dss = [pydicom.dcmread(p) for p in real_ct]
    mask = np.zeros((20, 512, 512), bool)
    mask[4:6, 100:120, 100:130] = True
    seg = write_seg(dss, mask, algorithm_name="unet", algorithm_version="v7") if with_seg else None
    attrs = {"spiculation": 3.25, "subtlety": 0.125}
    wording = "malignant — model probability 0.82 at this run's operating point (youden rule, threshold 0.43)"
    sr = write_sr(dss, finding="malignant", probability=0.8125, model_name="unet", model_version="v7",
                  attributes=attrs, operating_point=wording, seg=seg)
    raw = _bytes(sr)
    back = pydicom.dcmread(io.BytesIO(raw))
    assert back.Modality == "SR" and back.SOPClassUID == Comprehensive3DSRStorage
    assert back.StudyInstanceUID == dss[0].StudyInstanceUID and back.PatientID == "CTEX"
    others = {str(d.SOPInstanceUID) for d in dss} | ({str(seg.SOPInstanceUID)} if seg is not None else set())
    assert str(back.SOPInstanceUID) not in others and back.SeriesInstanceUID != dss[0].SeriesInstanceUID
    report = _report(io.BytesIO(raw))
    groups = report.get_volumetric_roi_measurement_groups() if with_seg else report.get_image_measurement_groups()
    assert len(groups) == 1
    g = groups[0]
    assert g.finding_type == hd.sr.CodedConcept("21594007", "SCT", "Malignant")
    values = {m.name.meaning: (m.value, m.unit.value) for m in g.get_measurements()}
    assert values == {"Probability": (0.8125, "1"), "spiculation": (3.25, "1"), "subtlety": (0.125, "1")}
    assert {m.name.scheme_designator for m in g.get_measurements()} == {"DCM", PRIVATE_SCHEME}
    texts = {str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.TextValue) for i in _group_items(sr)
             if i.ValueType == "TEXT"}
    assert texts["Operating point"] == wording and texts["Algorithm Name"] == "unet"
    assert texts["Algorithm Version"] == "v7"
    # the observer is the model (a device)
    obs = {str(i.ConceptNameCodeSequence[0].CodeMeaning): i for i in back.ContentSequence
           if i.RelationshipType == "HAS OBS CONTEXT"}
    assert str(obs["Observer Type"].ConceptCodeSequence[0].CodeMeaning) == "Device"
    assert str(obs["Device Observer Name"].TextValue) == "unet"
    # evidence: the source series, plus the SEG's series when given; the group references segment 1 of the SEG
    ev = {str(s.SeriesInstanceUID): {str(r.ReferencedSOPInstanceUID) for r in s.ReferencedSOPSequence}
          for s in back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert ev[str(dss[0].SeriesInstanceUID)] == {str(d.SOPInstanceUID) for d in dss}
    if seg is not None:
        assert ev[str(seg.SeriesInstanceUID)] == {str(seg.SOPInstanceUID)}
        refs = [i for i in _group_items(sr) if i.ValueType == "IMAGE"]
        assert len(refs) == 1
        r = refs[0].ReferencedSOPSequence[0]
        assert r.ReferencedSOPInstanceUID == seg.SOPInstanceUID and int(r.ReferencedSegmentNumber) == 1
    else:
        assert len(ev) == 1


def test_sr_without_probability_and_bad_values(phantom_series: Path) -> None:
    dss = [pydicom.dcmread(p) for p in sorted(phantom_series.iterdir())]
    sr = write_sr(dss, finding="no lesion", probability=None, model_name="unet", model_version="1",
                  attributes={"lesion_voxels": 0.0})
    report = _report(io.BytesIO(_bytes(sr)))
    g = report.get_image_measurement_groups()[0]
    assert [(m.name.meaning, m.value) for m in g.get_measurements()] == [("lesion_voxels", 0.0)]
    assert g.finding_type == hd.sr.CodedConcept("no lesion", PRIVATE_SCHEME, "no lesion")
    kw: dict[str, Any] = {"finding": "malignant", "model_name": "m", "model_version": "1"}
    with pytest.raises(CadxDataError, match=r"probability: 1.5 is outside \[0, 1\]"):
        write_sr(dss, probability=1.5, **kw)
    with pytest.raises(CadxDataError, match=r"attributes\.size: not a finite number"):
        write_sr(dss, probability=0.5, attributes={"size": math.nan}, **kw)
    with pytest.raises(CadxDataError, match="finding: empty finding"):
        write_sr(dss, probability=0.5, finding=" ", model_name="m", model_version="1")


def test_finding_codes() -> None:
    assert finding_code("Malignant") == hd.sr.CodedConcept("21594007", "SCT", "Malignant")
    assert finding_code("benign") == hd.sr.CodedConcept("30807003", "SCT", "Benign")
    assert finding_code("G3") == hd.sr.CodedConcept("G3", PRIVATE_SCHEME, "G3")


# ---------------------------------------------------------------- export of a run's prediction

def test_operating_point_wording() -> None:
    """The SR's sentence starts with the viewer's (cadx.report.wording: the same words for the same prediction),
    then the decision rule and the CV AUC."""
    res = {"prediction": "malignant", "probabilities": {"benign": 0.18, "malignant": 0.82},
           "decision": {"rule": "youden", "threshold": 0.4321}}
    metrics = {"positive": "malignant", "pooled": {
        "sensitivity": 0.71, "specificity": 0.654, "auc": 0.8, "n_studies": 120,
        "ci": {"sensitivity": [0.6, 0.8], "specificity": [0.55, 0.74], "auc": [0.72, 0.87]}}}
    assert operating_point_wording(res, metrics) == (
        "malignant — model probability 0.82 (CV sensitivity 0.71 [0.60, 0.80] at this run's operating point, "
        "120 studies); youden rule, threshold 0.43; CV AUC 0.80 [0.72, 0.87] (pooled, 95 % bootstrap CI)")
    assert operating_point_wording(res, metrics).startswith(
        wording("malignant", res["probabilities"], cv_figures(metrics, ["benign", "malignant"], "malignant")))
    # a negative call: the positive class's probability and the CV specificity, as in the viewer
    neg = {**res, "prediction": "benign", "probabilities": {"benign": 0.7, "malignant": 0.3}}
    assert operating_point_wording(neg, metrics) == (
        "benign — model probability of malignant 0.30 (CV specificity 0.65 [0.55, 0.74] at this run's operating "
        "point, 120 studies); youden rule, threshold 0.43; CV AUC 0.80 [0.72, 0.87] (pooled, 95 % bootstrap CI)")
    # metrics.json's positive class decides which probability is shown (here the first class)
    first = {**metrics, "positive": "benign"}
    assert operating_point_wording(neg, first).startswith("benign — model probability 0.70 (CV sensitivity 0.71")
    assert operating_point_wording({**res, "decision": {"rule": "argmax"}}, None) == (
        "malignant — model probability 0.82 (no cross-validation figures in this run); argmax rule")
    seg = {"lesion_voxels": 40, "slices_with_lesion": 3}
    assert operating_point_wording(seg, {"pooled": {"dice_mean": 0.6079, "ci": {"dice_mean": [0.48, 0.7258]}}}) == (
        "lesion — 40 voxels on 3 slices; CV Dice 0.61 [0.48, 0.73] (mean per study, 95 % bootstrap CI)")
    assert operating_point_wording({"lesion_voxels": 0}, None) == "no lesion — empty predicted mask"


def test_export_classification_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cv(tiny_config("eval.decision=argmax"), run)
    vol, _, _ = tiny_volume(1, np.random.default_rng(3))
    series = tmp_path / "series"
    write_dicom_series(vol[0], (2.0, 1.0, 1.0), series, patient_id="T1", uid_seed="t1")
    out = export_dicom(run, series, tmp_path / "out", uid_seed="e")
    direct = predict_study(run, series)
    assert out["seg"] is None and not (tmp_path / "out" / "seg.dcm").exists()
    pred = out["prediction"]
    assert pred["probabilities"] == direct["probabilities"] and pred["prediction"] == direct["prediction"]
    assert out["model_name"] == "_test_tiny" and out["model_version"].startswith("run-")
    assert json.loads((tmp_path / "out" / "export.json").read_text())["sr"]["SOPInstanceUID"] == \
        out["sr"]["SOPInstanceUID"]
    report = _report(tmp_path / "out" / "sr.dcm")
    g = report.get_image_measurement_groups()[0]
    p = {m.name.meaning: m.value for m in g.get_measurements()}["Probability"]
    assert p == pytest.approx(direct["probabilities"][direct["prediction"]], abs=1e-9)
    assert g.finding_type is not None and g.finding_type.meaning.lower() == direct["prediction"]
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    assert sr.StudyInstanceUID == pydicom.dcmread(next(series.iterdir())).StudyInstanceUID
    (tmp_path / "empty").mkdir()
    with pytest.raises(CadxDataError, match="empty: path: no DICOM series"):
        export_dicom(run, tmp_path / "empty", tmp_path / "o2")
    with pytest.raises(CadxDataError, match="example_ct_dicom: path: no DICOM series with a SeriesInstanceUID"):
        export_dicom(run, shared_path(*CT_EXAMPLE), tmp_path / "o2")  # the real CT as distributed: blank UIDs
    with pytest.raises(CadxDataError, match=r"sr\.dcm: PixelData: no pixel data"):  # a folder holding an SR only
        export_dicom(run, tmp_path / "out", tmp_path / "o2")


def test_export_segmentation_run(seg_run: Path, phantom_series: Path, tmp_path: Path) -> None:
    out = export_dicom(seg_run, phantom_series, tmp_path / "out", uid_seed="e")
    mask = read_image(out["prediction"]["mask"]).array[0] > 0
    assert mask.shape == (5, 32, 32) and out["prediction"]["lesion_voxels"] == int(mask.sum())
    assert mask.any() and not mask.all()  # the phantom's 300 HU lesion is found (so the SEG carries pixels)
    seg = hd.seg.segread(tmp_path / "out" / "seg.dcm")
    dss = [pydicom.dcmread(p) for p in sorted(phantom_series.iterdir())]
    order = source_order(dss)
    px = seg.get_pixels_by_source_instance([str(dss[i].SOPInstanceUID) for i in order], segment_numbers=[1],
                                           combine_segments=False)[..., 0] > 0
    assert np.array_equal(px, mask)
    assert out["seg"]["frames"] == int(mask.any(axis=(1, 2)).sum())
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "unet"
    report = _report(tmp_path / "out" / "sr.dcm")
    g = report.get_volumetric_roi_measurement_groups()[0]
    vals = {m.name.meaning: m.value for m in g.get_measurements()}
    assert vals["lesion_voxels"] == int(mask.sum()) and vals["lesion_volume_mm3"] == pytest.approx(2.0 * mask.sum())
    assert "Probability" not in vals
    assert g.finding_type is not None and g.finding_type.meaning == "Lesion"
