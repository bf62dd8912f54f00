"""``create_app(settings)``: the reading room's FastAPI app — worklist and viewer pages, the JSON API of the serve
contract (docs/serve.md), reader feedback and its export as a cadx manifest, uploads, the runs' reports.

Security: with a token every ``/api`` and ``/runs`` request (except ``GET /api/health``) and every page needs
``Authorization: Bearer <token>`` or the ``cadx_token`` cookie that ``GET /login?token=...`` sets (HttpOnly,
SameSite=Strict); study ids are hashes looked up in the database (anything else: 400), and a study's files are
read only from the configured roots; uploads are size-limited and must be DICOM; CORS is closed unless
``cors_origins`` names origins; request log lines carry the method, the path (ids only) and the status, never a
query string (the filter box may hold a patient's name).
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from cadx.errors import CadxError
from cadx.serve.imaging import HU_WINDOWS, box_png, gradcam_png, mask_png, png_bytes, slice_png
from cadx.serve.settings import ServeSettings, check_settings
from cadx.serve.sources import dicom_upload
from cadx.serve.state import ServeState, log
from cadx.serve.store import FeedbackRow, StudyRow
from cadx.serve.worker import PredictionWorker

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "cadx_token"
_ID = re.compile(r"[0-9a-f]{16}")
_OPEN = ("/login", "/static/", "/api/health")
WINDOWS = [*HU_WINDOWS, "auto"]
_access = logging.getLogger("cadx.serve.access")


class FeedbackIn(BaseModel):
    """``POST /api/studies/{id}/feedback`` body. ``corrected`` needs ``label``."""

    reader: str = Field(min_length=1, max_length=128)
    verdict: Literal["agree", "disagree", "corrected"]
    label: str | None = Field(default=None, max_length=128)
    note: str | None = Field(default=None, max_length=5000)


class _Auth(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        t0 = time.perf_counter()
        path = request.url.path
        if self.token and not path.startswith(_OPEN):
            given = request.headers.get("authorization", "")
            bearer = given[7:] if given.lower().startswith("bearer ") else ""
            cookie = request.cookies.get(COOKIE, "")
            if not (hmac.compare_digest(bearer.encode(), self.token.encode())
                    or hmac.compare_digest(cookie.encode(), self.token.encode())):
                _access.info("%s %s 401", request.method, path)
                if path.startswith(("/api", "/runs")):
                    return JSONResponse({"detail": "token required: send Authorization: Bearer <token>"},
                                        status_code=401)
                return PlainTextResponse("token required: open /login?token=<token> once", status_code=401)
        response = await call_next(request)
        _access.info("%s %s %d %.1f ms", request.method, path, response.status_code,
                     (time.perf_counter() - t0) * 1e3)
        return response


def _row(state: ServeState, sid: str) -> StudyRow:
    """The study ``sid``: 400 when it is not a study id (a path, ``../``), 404 when unknown."""
    if not _ID.fullmatch(sid):
        raise HTTPException(400, "not a study id")
    row = state.store.study(sid)
    if row is None:
        raise HTTPException(404, "no such study")
    return row


def _sort_key(sort: str) -> Any:
    if sort == "risk":
        return lambda s: (s["probability"] is None, s["probability"] or 0.0)
    if sort in ("patient", "date"):
        return lambda s: (s[sort] or "", s["index"])
    raise HTTPException(400, f"sort must be risk, patient or date, not {sort!r}")


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for ``settings`` (checked first: CadxConfigError with one line on refusal). The worker thread
    starts with the app (``settings.worker``) and stops with it."""
    check_settings(settings)
    state = ServeState(settings)
    worker = PredictionWorker(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.worker:
            worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="cadx reading room", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None if settings.token else "/openapi.json")
    app.state.cadx = state
    app.state.worker = worker
    app.add_middleware(_Auth, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=True)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- pages ----------------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def worklist_page() -> FileResponse:
        return FileResponse(STATIC / "worklist.html")

    @app.get("/study/{sid}", include_in_schema=False)
    def viewer_page(sid: str) -> FileResponse:
        _row(state, sid)
        return FileResponse(STATIC / "viewer.html")

    @app.get("/login", include_in_schema=False)
    def login(token: str = "") -> Response:
        if not settings.token or not hmac.compare_digest(token.encode(), settings.token.encode()):
            return PlainTextResponse("wrong token", status_code=401)
        r = RedirectResponse("/", status_code=303)
        r.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return r

    # -- API ------------------------------------------------------------------------------------------------------
    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        return {"runs": [{"index": r.index, "name": r.name, "kind": r.kind, "classes": r.classes,
                          "version": state.fingerprint(r)[:12], "report_url": _report_url(r.index)}
                         for r in state.runs], "messages": list(state.messages)}

    def _report_url(i: int) -> str | None:
        return f"/runs/{i}/report.html" if (settings.runs[i] / "report.html").is_file() else None

    @app.get("/api/studies")
    def studies(sort: str = "risk", order: Literal["asc", "desc"] = "desc", q: str = "",
                status: Literal["", "new", "read", "disagreed"] = "") -> dict[str, Any]:
        rows, pending = state.worklist()
        if q:
            needle = q.lower()
            rows = [s for s in rows if any(needle in str(s.get(k) or "").lower()
                                           for k in ("id", "patient", "date", "predicted", "wording", "error"))]
        if status:
            rows = [s for s in rows if s["status"] == status]
        key = _sort_key(sort)
        if sort == "risk":   # unpredicted studies last in both orders
            done = sorted((s for s in rows if s["probability"] is not None), key=key, reverse=order == "desc")
            rows = done + [s for s in rows if s["probability"] is None]
        else:
            rows = sorted(rows, key=key, reverse=order == "desc")
        return {"studies": rows, "pending": pending, "messages": list(state.messages)}

    @app.get("/api/studies/{sid}")
    def study(sid: str) -> dict[str, Any]:
        row = _row(state, sid)
        run = state.primary or state.runs[0]
        s = state.study_summary(row)
        n_slices, windows, window, error = 0, ["auto"], "auto", s["error"]
        try:
            vol = state.volume(row)
            n_slices, windows, window = vol.n_slices, vol.windows, vol.default_window
        except (CadxError, OSError, ValueError) as e:
            error = error or str(e)
        return {"id": row.id, "patient": row.patient, "date": row.date, "n_slices": n_slices, "model": run.name,
                "model_version": state.fingerprint(run)[:12], "probability": s["probability"],
                "predicted": s["predicted"], "wording": s["wording"], "attributes": s["attributes"],
                "probabilities": s.get("probabilities"), "report_url": _report_url(run.index),
                "overlays": state.available_overlays(row), "windows": windows, "default_window": window,
                "status": row.status, "error": error, "runs": state.run_answers(row),
                "feedback": [_fb(f, row) for f in state.store.feedback(row.id)]}

    def _volume(row: StudyRow) -> Any:
        try:
            return state.volume(row)
        except PermissionError:
            raise HTTPException(403, "study outside the served roots") from None
        except FileNotFoundError:
            raise HTTPException(404, "study image not available yet") from None
        except (CadxError, OSError, ValueError) as e:
            raise HTTPException(422, str(e)) from None

    @app.get("/api/studies/{sid}/slices/{k}.png")
    def slice_png_ep(sid: str, k: int, window: str = Query("auto")) -> Response:
        row = _row(state, sid)
        if window not in WINDOWS:
            raise HTTPException(400, f"window must be one of {WINDOWS}")
        vol = _volume(row)
        if not 0 <= k < vol.n_slices:
            raise HTTPException(404, f"slice {k} outside 0..{vol.n_slices - 1}")
        data = state.pngs.get(("slice", row.id, k, window), lambda: slice_png(vol, k, window))
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/api/studies/{sid}/overlays/{kind}/{k}.png")
    def overlay_png(sid: str, kind: str, k: int) -> Response:
        row = _row(state, sid)
        if kind not in ("mask", "boxes", "gradcam"):
            raise HTTPException(404, "overlay kind must be mask, boxes or gradcam")
        vol = _volume(row)
        if not 0 <= k < vol.n_slices:
            raise HTTPException(404, f"slice {k} outside 0..{vol.n_slices - 1}")
        run = state.overlay_run(kind)
        fp = state.fingerprint(run) if run is not None else ""

        def make() -> bytes:
            shape = tuple(int(v) for v in vol.array.shape[2:])
            if kind == "boxes":
                return box_png(shape, state.boxes(row), k)   # type: ignore[arg-type]
            try:
                arr = state.overlay_array(row, kind)
            except (CadxError, RuntimeError, ValueError, OSError) as e:   # the page keeps working without it
                log.warning("study #%d %s: %s overlay failed: %s", row.index, row.id, kind, type(e).__name__)
                arr = None
            if arr is None:
                return png_bytes(Image.new("RGBA", (shape[1], shape[0]), (0, 0, 0, 0)))
            return mask_png(arr, k) if kind == "mask" else gradcam_png(arr, k)

        data = state.pngs.get(("overlay", row.id, kind, k, fp, tuple(state.available_overlays(row))), make)
        return Response(data, media_type="image/png")

    @app.get("/api/studies/{sid}/boxes")
    def boxes(sid: str) -> list[dict[str, float]]:
        return state.boxes(_row(state, sid))

    @app.post("/api/studies/{sid}/feedback")
    def feedback(sid: str, body: FeedbackIn) -> dict[str, Any]:
        row = _row(state, sid)
        if body.verdict == "corrected" and not (body.label or "").strip():
            raise HTTPException(422, "verdict 'corrected' needs the corrected label (field label)")
        s = state.study_summary(row)
        fb = state.store.add_feedback(FeedbackRow(study_id=row.id, reader=body.reader.strip(), verdict=body.verdict,
                                                  label=(body.label or "").strip(), note=body.note or "",
                                                  model=s["model"], predicted=s["predicted"] or ""))
        state.store.update_study(row.id, status="read" if body.verdict == "agree" else "disagreed")
        log.info("study #%d %s: feedback %s stored", row.index, row.id, body.verdict)
        return _fb(fb, row)

    def _fb(f: FeedbackRow, row: StudyRow | None) -> dict[str, Any]:
        return {"id": f.id, "study_id": f.study_id, "patient": row.patient if row else "", "reader": f.reader,
                "verdict": f.verdict, "label": f.label, "note": f.note, "model": f.model, "predicted": f.predicted,
                "created": _iso(f.created), "created_at": _iso(f.created)}

    @app.get("/api/feedback")
    def feedback_list() -> list[dict[str, Any]]:
        rows = {r.id: r for r in state.store.studies()}
        return [_fb(f, rows.get(f.study_id)) for f in state.store.feedback()]

    @app.get("/api/feedback/export.csv")
    def feedback_export() -> Response:
        return Response(export_manifest(state), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="feedback_manifest.csv"'})

    @app.get("/api/jobs")
    def jobs() -> dict[str, Any]:
        p = state.progress()
        return {"done": p.done, "total": p.total, "running": p.running}

    @app.post("/api/upload")
    async def upload(request: Request, file: UploadFile) -> dict[str, Any]:
        limit = int(settings.max_upload_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB (field max_upload_mb)")
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB (field max_upload_mb)")
        try:
            found, _ = dicom_upload(data, file.filename or "upload", state.data_dir / "uploads")
        except CadxError as e:
            state.message(f"upload refused: {e}", "upload refused: not a DICOM file")
            raise HTTPException(400, str(e)) from None
        row = state.add_found(found)
        log.info("study #%d %s: uploaded", row.index, row.id)
        return {"id": row.id, "index": row.index}

    @app.get("/runs/{i}/report.html")
    def report(i: int) -> FileResponse:
        if not 0 <= i < len(settings.runs):
            raise HTTPException(404, "no such run")
        f = settings.runs[i] / "report.html"
        if not f.is_file():
            raise HTTPException(404, "this run has no report.html (cadx report RUN)")
        return FileResponse(f, media_type="text/html")

    return app


def _iso(t: datetime) -> str:
    """ISO 8601 in UTC with its offset (SQLite hands back naive datetimes; they were stored as UTC)."""
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def export_label(verdict: str, label: str, predicted: str, classes: list[str]) -> str | None:
    """The label a feedback row gives its study: agree → the predicted class; corrected → ``label``; disagree →
    ``label`` when given, else (binary runs) the other class, else None (no label known: left out)."""
    if verdict == "agree":
        return predicted or None
    if label:
        return label
    if verdict == "disagree" and len(classes) == 2 and predicted in classes:
        return classes[1 - classes.index(predicted)]
    return None


def export_manifest(state: ServeState) -> str:
    """The feedback as a cadx manifest CSV (``study_id, patient_id, path, label, mask, box`` + metadata columns
    ``reader, verdict, feedback_time``): the latest feedback of each study, absolute paths, studies without a
    known label or without a local image left out."""
    run = state.primary or state.runs[0]
    latest: dict[str, FeedbackRow] = {}
    for f in state.store.feedback():
        latest[f.study_id] = f
    rows = {r.id: r for r in state.store.studies()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["study_id", "patient_id", "path", "label", "mask", "box", "reader", "verdict", "feedback_time"])
    for sid, f in latest.items():
        row = rows.get(sid)
        label = export_label(f.verdict, f.label, f.predicted, run.classes)
        if row is None or not row.path or label is None:
            continue
        w.writerow([row.id, row.patient or row.id, str(Path(row.path).resolve()), label,
                    str(Path(row.mask).resolve()) if row.mask else "", row.box, f.reader, f.verdict,
                    _iso(f.created)])
    return buf.getvalue()
