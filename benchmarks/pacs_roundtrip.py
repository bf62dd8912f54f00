"""Benchmark: the PACS round trip with a real Orthanc, step by step, on the real CT of ``shared/data/ct_examples``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pacs_roundtrip.py [--out benchmarks/results/pacs]``.

Steps (each timed, ms, ``time.perf_counter``):

1. ``orthanc_start``: Debian's Orthanc + DICOMweb plugin on a free loopback port, temporary storage
   (:class:`cadx.dicom.orthanc.OrthancServer`), until ``/system`` answers;
2. ``prepare_series``: the 20-slice real CT (JPEG 2000) has blank SOP/study/series UIDs (de-identified test data);
   they are filled deterministically (:func:`cadx.dicom.identifiers.write_completed_series`, seed ``ct_examples``);
3. ``stow_ct``: STOW-RS of the 20 files; 4. ``qido_studies``: QIDO-RS study list; 5. ``wado_series``: WADO-RS of
   the series into a folder;
6. ``train_tiny_run`` (not part of the round trip; reported apart): a tiny U-Net segmentation run (base filters 4,
   2 levels, 16 px input, HU window [-200, 400], 10 epochs, 2 folds) on 4 synthetic CT phantoms (air, a 40 HU
   disc, a 300 HU square lesion) written as NIfTI + a cadx manifest — the model exists to exercise the one
   prediction path; on the real abdomen it marks bright (> ~250 HU) structures, which has no clinical meaning;
7. ``predict_and_write``: :func:`cadx.runs.dicom_export.export_dicom` on the pulled series — predict_study →
   predict_segmentation (mask) → seg.dcm (DICOM SEG) + sr.dcm (TID 1500 SR);
8. ``stow_seg_sr``: STOW-RS of both; 9. ``qido_find``: QIDO-RS instances of the study (the SEG and SR must appear
   with the UIDs written in step 7).

Writes ``<out>/roundtrip.json`` (UIDs found, per-step ms, the machine) and ``<out>/export.json`` (the export's
summary with the prediction and the wording). The run and the DICOM files live in a temporary folder that is
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from cadx.config import load_config
from cadx.data.image import ImageData
from cadx.data.readers import write_image
from cadx.dicom import pacs
from cadx.dicom.identifiers import write_completed_series
from cadx.dicom.orthanc import OrthancServer
from cadx.runs import run_cv
from cadx.runs.dicom_export import export_dicom
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CADX_SHARED_DATA", ROOT.parent / "shared" / "data"))
CT = SHARED / "ct_examples" / "example_ct_dicom"
T = TypeVar("T")


CPU_MS: dict[str, float] = {}


def timed(steps: dict[str, float], name: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; wall ms into ``steps[name]``, this process's CPU ms into ``CPU_MS[name]`` (Orthanc's own CPU
    is not counted)."""
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    steps[name] = round((time.perf_counter() - t0) * 1000.0, 1)
    CPU_MS[name] = round((time.process_time() - c0) * 1000.0, 1)
    print(f"{name}: {steps[name]} ms wall, {CPU_MS[name]} ms CPU", flush=True)
    return value


def phantom(rng: np.random.Generator, n: int = 16, z: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, n, n)`` HU: air around a 40 HU disc with a 300 HU square lesion on slices 1..Z-2; (volume, mask)."""
    yy, xx = np.mgrid[:n, :n]
    vol = np.full((z, n, n), -1000.0, np.float32)
    vol[:, (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 2 - 1) ** 2] = 40.0
    mask = np.zeros((z, n, n), np.uint8)
    c, s = int(rng.integers(n // 4, n // 2)), n // 4
    mask[1:z - 1, c:c + s, c:c + s] = 1
    vol[mask > 0] = 300.0
    return vol + rng.normal(0, 5, vol.shape).astype(np.float32), mask


def train_tiny_run(work: Path) -> Path:
    data = work / "phantoms"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["study_id,patient_id,path,label,mask"]
    for i in range(4):
        v, m = phantom(rng)
        write_image(ImageData(v[None], (2.0, 1.0, 1.0)), data / f"s{i}.nii.gz")
        write_image(ImageData(m[None], (2.0, 1.0, 1.0)), data / f"s{i}_mask.nii.gz")
        rows.append(f"S{i},P{i},s{i}.nii.gz,,s{i}_mask.nii.gz")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = load_config(None, [
        "name=pacs_tiny_unet", "data.dataset=manifest", f"data.root={data}", "task.classification=false",
        "task.segmentation=true", "input.size=16", "input.window=[-200, 400]", "model.name=unet",
        "model.kwargs={base_filters: 4, levels: 2}", "objective={dice: {weight: 1, batch: true}}",
        "train.epochs=10", "train.batch_size=4", "train.progress=false", "cv.folds=2", "eval.bootstrap=20",
        "eval.decision=argmax", "optim.lr=0.01", "segmentation={oversample_lesion: 3}", "seed=0"])
    run = work / "run"
    run_cv(cfg, run)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pacs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not CT.is_dir():
        raise SystemExit(f"{CT}: real CT not found (set CADX_SHARED_DATA)")
    work = Path(tempfile.mkdtemp(prefix="cadx-pacs-bench-"))
    steps: dict[str, float] = {}
    result: dict[str, Any] = {}
    t_all = time.perf_counter()
    try:
        run = timed(steps, "train_tiny_run", lambda: train_tiny_run(work))
        server = OrthancServer()
        timed(steps, "orthanc_start", server.start)
        with server:  # stops Orthanc and deletes its storage on the way out
            url = server.dicomweb_url
            files = timed(steps, "prepare_series", lambda: write_completed_series(
                sorted(p for p in CT.iterdir() if p.is_file()), work / "ct", seed="ct_examples",
                patient_id="CTEX"))
            stored = timed(steps, "stow_ct", lambda: pacs.store(url, files))
            studies = timed(steps, "qido_studies", lambda: pacs.list_studies(url))
            study_uid = studies[0]["StudyInstanceUID"]
            series = pacs.list_series(url, study_uid)
            pulled = timed(steps, "wado_series", lambda: pacs.retrieve_series(
                url, study_uid, series[0]["SeriesInstanceUID"], work / "pulled"))
            summary = timed(steps, "predict_and_write", lambda: export_dicom(run, work / "pulled", work / "out"))
            stowed = timed(steps, "stow_seg_sr", lambda: pacs.store(
                url, [summary["seg"]["path"], summary["sr"]["path"]]))
            found = timed(steps, "qido_find", lambda: pacs.find(url, study_uid))
            after = pacs.list_studies(url)
        seg = [f for f in found if f["Modality"] == "SEG"]
        sr = [f for f in found if f["Modality"] == "SR"]
        ok = ([f["SOPInstanceUID"] for f in seg] == [summary["seg"]["SOPInstanceUID"]]
              and [f["SOPInstanceUID"] for f in sr] == [summary["sr"]["SOPInstanceUID"]])
        result = {
            "ok": ok, "StudyInstanceUID": study_uid, "ct_series_uid": series[0]["SeriesInstanceUID"],
            "ct_instances_stored": len(stored), "ct_instances_pulled": len(pulled),
            "seg_found": seg, "sr_found": sr, "stow_seg_sr_accepted": stowed,
            "study_after": next(s for s in after if s["StudyInstanceUID"] == study_uid),
            "prediction": {k: summary["prediction"][k] for k in ("lesion_voxels", "slices_with_lesion")},
            "seg_frames": summary["seg"]["frames"], "wording": summary["wording"],
            "model": f"{summary['model_name']} {summary['model_version']}",
            "steps_ms": steps, "steps_cpu_ms": dict(CPU_MS),
            "round_trip_ms": round(sum(v for k, v in steps.items() if k != "train_tiny_run"), 1),
        }
        atomic_write_json(args.out / "export.json", {k: v for k, v in summary.items()
                                                      if k not in ("study", "run")} | {"study": "pulled series"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - t_all, 1)
    result["machine"] = {"platform": platform.platform(), "cpus_visible": os.cpu_count(), "torch_threads": 1,
                         "python": platform.python_version()}
    atomic_write_json(args.out / "roundtrip.json", result)
    print(json.dumps({k: result[k] for k in ("ok", "steps_ms", "round_trip_ms", "wall_s")}, indent=1))


if __name__ == "__main__":
    main()
