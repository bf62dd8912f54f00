"""The server's state and the work behind every endpoint: the study list (refreshed from the sources), one study's
prediction with every run (cached in the database under the run's fingerprint), lazy overlays, the worklist rows.

Logs never name a patient or a path: a study is logged as ``study #<index> <id>`` (its row number and hash); error
texts that reach the log have the study's path and patient id replaced by ``<study>`` / ``<patient>``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from cadx.data.check import check_cohort
from cadx.data.image import LazyImage
from cadx.data.readers import read_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxError
from cadx.report.wording import risk_probability, wording
from cadx.serve.imaging import LRU, Volume, load_volume
from cadx.serve.served import (
    ServedRun,
    StudyInput,
    array_from_npz,
    array_to_npz,
    gradcam_map,
    load_runs,
    predict_with_run,
)
from cadx.serve.settings import ServeSettings
from cadx.serve.sources import (
    Found,
    fetch_pacs_study,
    folder_studies,
    inside,
    manifest_studies,
    pacs_studies,
)
from cadx.serve.store import PredictionRow, Store, StudyRow

__all__ = ["ServeState", "log"]

log = logging.getLogger("cadx.serve")


def redact(text: str, row: StudyRow) -> str:
    """``text`` with the study's path(s) and patient id replaced (for log lines)."""
    for value, token in ((row.path, "<study>"), (row.mask, "<mask>"), (row.patient, "<patient>")):
        if value:
            text = text.replace(value, token)
            if token != "<patient>":
                text = text.replace(Path(value).name, token)
    return text


def _kind(e: Exception) -> str:
    """An error's type and field, never its text (which may name a file or a patient)."""
    field = getattr(e, "field", None)
    return f"{type(e).__name__}" + (f" (field {field})" if field else "")


def _tag(row: StudyRow) -> str:
    return f"study #{row.index} {row.id}"


@dataclass
class Progress:
    done: int
    total: int
    running: bool


class ServeState:
    """Everything one app holds: settings, database, served runs, the page's messages and the caches."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        if settings.db_url is None:  # pragma: no cover - set by ServeSettings when runs are given
            raise ValueError("db_url")
        self.store = Store(settings.db_url)
        self.runs, run_messages = load_runs(settings.runs)
        self.messages: list[str] = []
        for m in run_messages:
            self.message(m)
        self.data_dir = Path(settings.data_dir or settings.runs[0] / "serve_data")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.volumes: LRU[str, Volume] = LRU(8)
        self.pngs: LRU[tuple[Any, ...], bytes] = LRU(settings.slice_cache)
        self.busy = threading.Event()
        self._fp_lock = threading.Lock()
        self._fps: dict[str, tuple[float, str]] = {}
        self._overlay_lock = threading.Lock()
        self._manifest_roots: list[Path] = []
        self.refresh_studies(pacs=False)

    # -- messages and roots -------------------------------------------------------------------------------------
    def message(self, text: str, log_text: str | None = None) -> None:
        """A message for the page (and the log, as ``log_text`` when the page text may name a patient or a
        file): a run refused, the PACS down, an upload refused, a manifest that cannot be read."""
        if text not in self.messages:
            self.messages.append(text)
        log.warning("%s", text if log_text is None else log_text)

    def roots(self) -> list[Path]:
        """The folders studies may be read from: the studies folder (or the manifest's folder and the folders
        of the manifest's files), the data folder (uploads, PACS copies, predicted masks) and the runs."""
        roots = [self.data_dir, *self.settings.runs]
        s = self.settings.studies
        if s is not None:
            roots.append(s if s.is_dir() else s.parent)
        roots.extend(self._manifest_roots)
        return roots

    @property
    def primary(self) -> ServedRun | None:
        """The worklist's model: the first run that predicts a class."""
        return next((r for r in self.runs if r.predicts_class), None)

    def fingerprint(self, run: ServedRun) -> str:
        """The run's fingerprint, recomputed at most every ``poll_s / 2`` seconds."""
        with self._fp_lock:
            t, fp = self._fps.get(run.run_id, (-1e9, ""))
            if time.monotonic() - t > self.settings.poll_s / 2:
                fp = run.fingerprint()
                self._fps[run.run_id] = (time.monotonic(), fp)
            return fp

    # -- studies ------------------------------------------------------------------------------------------------
    def refresh_studies(self, pacs: bool = True) -> None:
        """List the sources again (new files, the PACS's new studies); a source that fails becomes a message.
        ``pacs=False`` skips the PACS (startup: a PACS that is down must not delay the server; the worker lists
        it in its first cycle)."""
        found: list[Found] = []
        s = self.settings.studies
        if s is not None:
            try:
                if s.is_dir():
                    found += folder_studies(s)
                else:
                    found += manifest_studies(s)
                    self._manifest_roots = sorted({Path(f.path).resolve().parent for f in found}
                                                  | {Path(f.mask).resolve().parent for f in found if f.mask})
            except CadxError as e:
                self.message(f"studies {s.name}: {e}", f"studies {s.name}: not listed: {_kind(e)}")
        if self.settings.pacs and pacs:
            try:
                found += pacs_studies(self.settings.pacs)
                self.messages = [m for m in self.messages if not m.startswith("PACS")]
            except CadxError as e:
                self.message(f"PACS {self.settings.pacs}: not listed: {e}")
        known = {r.id: r.index for r in self.store.studies()}
        nxt = max(known.values(), default=-1) + 1
        rows = []
        for f in found:
            idx = known.get(f.id)
            if idx is None:
                idx, nxt = nxt, nxt + 1
            rows.append(StudyRow(index=idx, **f.row_fields()))
        self.store.upsert_studies(rows)

    def add_found(self, f: Found) -> StudyRow:
        """Register one study (an upload) and return its row."""
        old = self.store.study(f.id)
        idx = old.index if old is not None else self.store.next_index()
        self.store.upsert_study(StudyRow(index=idx, **f.row_fields()))
        row = self.store.study(f.id)
        assert row is not None
        return row

    def study_input(self, row: StudyRow) -> StudyInput:
        box = tuple(int(v) for v in row.box.split()) if row.box else None
        return StudyInput(row.path, row.mask or None, box, dict(json.loads(row.covariates or "{}")))

    def readable_path(self, row: StudyRow) -> Path:
        """The study's image path, refused (CadxDataError-like ``PermissionError``) outside the roots."""
        if not row.path:
            raise FileNotFoundError("study not retrieved yet")
        if not inside(row.path, self.roots()):
            raise PermissionError("study path outside the served roots")
        return Path(row.path)

    def volume(self, row: StudyRow) -> Volume:
        path = self.readable_path(row)
        return self.volumes.get(row.id, lambda: load_volume(path))

    # -- prediction ---------------------------------------------------------------------------------------------
    def prepare(self, row: StudyRow) -> StudyRow | None:
        """Retrieve a PACS study and run the data check once; None (with the row's error set, logged) when the
        study cannot be predicted."""
        if row.error:
            return None
        try:
            if row.source == "pacs" and not row.path:
                if self.settings.pacs is None:
                    raise CadxError("PACS study but no --pacs URL")
                folder = fetch_pacs_study(self.settings.pacs, row.remote, self.data_dir / "pacs" / row.id)
                path = str(folder.resolve())
                patient = row.patient
                self.store.update_study(row.id, path=path)
                row.path, row.patient = path, patient
            if not row.checked:
                self.readable_path(row)
                si = self.study_input(row)
                img = read_image(si.path)
                mpath = si.mask
                masks = {"mask": LazyImage(lambda: read_image(mpath), mpath)} if mpath else {}
                st = Study(row.id, row.id, images={"image": LazyImage(lambda: img, si.path)}, masks=masks,
                           boxes=[si.box] if si.box else [])
                problems = [p for p in check_cohort(Cohort([st], name=row.id), allow_unlabelled=True, workers=0)
                            if p.severity == "error"]
                if problems:
                    p = problems[0]
                    raise CadxError(f"data check: {p.field}: {p.message}")
                fields: dict[str, Any] = {"checked": True}
                meta = img.meta or {}
                if meta.get("patient_id") and row.source in ("folder", "upload"):
                    fields["patient"] = str(meta["patient_id"])
                if not row.date and meta.get("files"):
                    fields["date"] = _dicom_date(str(meta["files"][0]))
                self.store.update_study(row.id, **fields)
        except (CadxError, OSError, ValueError, RuntimeError) as e:
            msg = str(e) or type(e).__name__
            self.store.update_study(row.id, error=msg)
            log.warning("%s: not predicted: %s", _tag(row), redact(msg, row))
            return None
        return self.store.study(row.id)

    def pending(self) -> list[tuple[StudyRow, ServedRun]]:
        """(study, run) pairs without a prediction under the run's current fingerprint, studies in list order."""
        out = []
        cached = {r.run_id: set(self.store.prediction_ids(r.run_id, self.fingerprint(r))) for r in self.runs}
        for row in self.store.studies():
            if row.error:
                continue
            for run in self.runs:
                if row.id not in cached[run.run_id]:
                    out.append((row, run))
        return out

    def progress(self) -> Progress:
        rows = self.store.studies()
        total = len(rows) * len(self.runs)
        done = sum(1 for r in rows if r.error) * len(self.runs)   # a study that failed its check is done
        for run in self.runs:
            cached = set(self.store.prediction_ids(run.run_id, self.fingerprint(run)))
            done += sum(1 for r in rows if not r.error and r.id in cached)
        return Progress(done, total, self.busy.is_set())

    def predict(self, row: StudyRow, run: ServedRun) -> None:
        """Predict ``row`` with ``run`` and cache the answer (or its error) under the run's fingerprint."""
        fp = self.fingerprint(run)
        prepared = self.prepare(row)
        if prepared is None:
            return
        t0 = time.perf_counter()
        try:
            result, overlays = predict_with_run(run, self.study_input(prepared),
                                                self.data_dir / "masks" / run.run_id / row.id)
            result.pop("study", None)
            result.pop("mask", None)
            for kind, arr in overlays.items():
                self.store.put_overlay(row.id, run.run_id, kind, fp, array_to_npz(arr))
            self.store.put_prediction(row.id, run.run_id, fp, result, seconds=time.perf_counter() - t0)
            log.info("%s: predicted with run %d in %.2f s", _tag(row), run.index, time.perf_counter() - t0)
        except (CadxError, OSError, ValueError, RuntimeError, KeyError) as e:
            msg = str(e) or type(e).__name__
            self.store.put_prediction(row.id, run.run_id, fp, None, error=msg, seconds=time.perf_counter() - t0)
            log.warning("%s: run %d failed: %s", _tag(row), run.index, redact(msg, prepared))

    # -- overlays -----------------------------------------------------------------------------------------------
    def overlay_run(self, kind: str) -> ServedRun | None:
        want = {"mask": "segmentation", "boxes": "detection", "gradcam": "classifier"}[kind]
        return next((r for r in self.runs if r.kind == want), None)

    def overlay_array(self, row: StudyRow, kind: str) -> np.ndarray | None:
        """The ``mask`` (segmentation run, computed with its prediction) or ``gradcam`` (first classifier run,
        computed on first request, then cached in the database) of a study; None when no run provides it or it
        is not computed yet."""
        run = self.overlay_run(kind)
        if run is None:
            return None
        fp = self.fingerprint(run)
        data = self.store.overlay(row.id, run.run_id, kind, fp)
        if data is not None:
            return array_from_npz(data)
        if kind != "gradcam":
            return None
        pred = self.store.prediction(row.id, run.run_id, fp)
        if pred is None or pred.error:
            return None
        predicted = json.loads(pred.result).get("prediction")
        with self._overlay_lock:
            data = self.store.overlay(row.id, run.run_id, kind, fp)
            if data is not None:
                return array_from_npz(data)
            t0 = time.perf_counter()
            heat = gradcam_map(run, self.study_input(row), predicted)
            self.store.put_overlay(row.id, run.run_id, kind, fp, array_to_npz(heat))
            log.info("%s: Grad-CAM with run %d in %.2f s", _tag(row), run.index, time.perf_counter() - t0)
            return heat

    def boxes(self, row: StudyRow) -> list[dict[str, float]]:
        run = self.overlay_run("boxes")
        if run is None:
            return []
        pred = self.store.prediction(row.id, run.run_id, self.fingerprint(run))
        if pred is None or pred.error:
            return []
        return list(json.loads(pred.result).get("boxes") or [])

    def available_overlays(self, row: StudyRow) -> list[str]:
        out = []
        for kind in ("mask", "boxes", "gradcam"):
            run = self.overlay_run(kind)
            if run is None:
                continue
            pred = self.store.prediction(row.id, run.run_id, self.fingerprint(run))
            if pred is not None and not pred.error:
                out.append(kind)
        return out

    # -- rows -----------------------------------------------------------------------------------------------------
    def worklist(self) -> tuple[list[dict[str, Any]], int]:
        """Every study's worklist row and the number of studies with a prediction still to make (one query for
        the studies and one per run, not one per study)."""
        rows = self.store.studies()
        cached = {r.run_id: set(self.store.prediction_ids(r.run_id, self.fingerprint(r))) for r in self.runs}
        pending = sum(1 for row in rows if not row.error and any(row.id not in c for c in cached.values()))
        run = self.primary or self.runs[0]
        preds = self.store.predictions(run.run_id, self.fingerprint(run))
        return [self.summary(row, preds.get(row.id)) for row in rows], pending

    def summary(self, row: StudyRow, pred: PredictionRow | None) -> dict[str, Any]:
        """The worklist row of a study given the worklist model's cached prediction (contract fields;
        ``probability``/``predicted``/``wording`` None until predicted; ``error`` = the study's or the model's
        error, else ""; ``probabilities`` every class's)."""
        run = self.primary or self.runs[0]
        out: dict[str, Any] = {"id": row.id, "patient": row.patient, "date": row.date, "model": run.name,
                               "predicted": None, "probability": None, "wording": None, "attributes": {},
                               "status": row.status, "error": row.error, "index": row.index,
                               "source": row.source}
        if row.error or pred is None:
            return out
        if pred.error:
            out["error"] = pred.error
            return out
        res = json.loads(pred.result)
        out["attributes"] = res.get("attributes") or {}
        probs = res.get("probabilities")
        predicted = res.get("prediction")
        if probs and predicted is not None and run.classes:
            out["predicted"] = predicted
            out["probability"] = risk_probability(probs, run.classes, predicted, run.cv.positive)
            out["wording"] = wording(predicted, probs, run.cv)
            out["probabilities"] = probs
        return out

    def run_answers(self, row: StudyRow) -> list[dict[str, Any]]:
        """Every served run's cached answer for the study: ``{"index", "name", "kind", "predicted",
        "probabilities", "attributes", "n_boxes", "lesion_voxels", "error"}`` (None/empty while not predicted)."""
        out = []
        for run in self.runs:
            pred = self.store.prediction(row.id, run.run_id, self.fingerprint(run))
            res = json.loads(pred.result) if pred is not None else {}
            out.append({"index": run.index, "name": run.name, "kind": run.kind, "predicted": res.get("prediction"),
                        "probabilities": res.get("probabilities"), "attributes": res.get("attributes") or {},
                        "n_boxes": len(res["boxes"]) if "boxes" in res else None,
                        "lesion_voxels": res.get("lesion_voxels"), "error": pred.error if pred is not None else ""})
        return out

    def study_summary(self, row: StudyRow) -> dict[str, Any]:
        run = self.primary or self.runs[0]
        return self.summary(row, self.store.prediction(row.id, run.run_id, self.fingerprint(run)))

def _dicom_date(path: str) -> str:
    """StudyDate (YYYY-MM-DD) of a DICOM file, "" when absent or unreadable."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (OSError, ValueError):
        return ""
    d = str(ds.get("StudyDate", "") or "")
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d

