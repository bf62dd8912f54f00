"""The server's database (SQLAlchemy 2): studies, cached predictions and overlays, reader feedback.

SQLite is the embedded default (one file beside the served runs); any SQLAlchemy URL works, e.g.
``postgresql+psycopg://user@host:5432/cadx`` for a department server. Migrations are kept simple: the tables are
created when missing and ``meta.schema_version`` records :data:`SCHEMA_VERSION`; a database written by a newer
version is refused with one line (CadxConfigError), an older one is upgraded by :data:`MIGRATIONS` (none yet).

Cache keys: a prediction or overlay is stored under ``(study_id, run_id, fingerprint)``; a row whose fingerprint
is not the run's current one is ignored (and replaced when recomputed), so a retrained run is re-predicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, LargeBinary, String, Text, create_engine, delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from cadx.errors import CadxConfigError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "FeedbackRow", "OverlayRow", "PredictionRow", "Store", "StudyRow",
           "utcnow"]

SCHEMA_VERSION = 1
#: version → function upgrading a database from ``version - 1`` (run inside one transaction).
MIGRATIONS: dict[int, Callable[[Session], None]] = {}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyRow(Base):
    """One study of the worklist. ``id``: a hash of its source (never a path, so it is safe in URLs);
    ``source``: folder | manifest | pacs | upload; ``path``: the image (file or DICOM folder; for PACS studies
    the local copy once retrieved, else empty); ``status``: new | read | disagreed; ``error``: why it cannot be
    predicted (data check, PACS), shown in its row."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    index: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text, default="")
    remote: Mapped[str] = mapped_column(Text, default="")
    patient: Mapped[str] = mapped_column(String(256), default="")
    date: Mapped[str] = mapped_column(String(32), default="")
    mask: Mapped[str] = mapped_column(Text, default="")
    box: Mapped[str] = mapped_column(String(128), default="")
    label: Mapped[str] = mapped_column(String(128), default="")
    covariates: Mapped[str] = mapped_column(Text, default="{}")
    checked: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="new")
    error: Mapped[str] = mapped_column(Text, default="")
    added: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PredictionRow(Base):
    """A run's prediction of a study: ``result`` = JSON of the prediction path's answer (probabilities,
    prediction, decision, attributes, boxes, n_slices ...) or ``error``."""

    __tablename__ = "predictions"
    study_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OverlayRow(Base):
    """A lazily computed overlay (``kind`` mask | gradcam) of a study under a run: an ``.npz`` of the array."""

    __tablename__ = "overlays"
    study_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedbackRow(Base):
    """One reader's verdict on a study: who (``reader``), when (``created``, UTC), agree | disagree | corrected,
    the corrected (or agreed) ``label``, a free-text ``note`` and the model answer it judged."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(String(40), index=True)
    reader: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(256), default="")
    predicted: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Store:
    """The database behind one server; every method opens its own short session (thread-safe)."""

    def __init__(self, url: str) -> None:
        kw: dict[str, Any] = {}
        if url.startswith("sqlite:///") and url not in ("sqlite:///:memory:",):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite"):
            kw["connect_args"] = {"check_same_thread": False}
            if url in ("sqlite://", "sqlite:///:memory:"):
                kw["poolclass"] = StaticPool
        try:
            self.engine: Engine = create_engine(url, **kw)
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as e:
            raise CadxConfigError(f"cadx serve: cannot open the database {_safe_url(url)}: "
                                  f"{type(e).__name__} (field db_url)") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._migrate()

    def _migrate(self) -> None:
        with self.session() as s:
            row = s.get(MetaRow, "schema_version")
            have = int(row.value) if row is not None else SCHEMA_VERSION
            if have > SCHEMA_VERSION:
                raise CadxConfigError(f"cadx serve: database schema version {have} is newer than this cadx's "
                                      f"{SCHEMA_VERSION} (field db_url)")
            for v in range(have + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](s)
            if row is None:
                s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            else:
                row.value = str(SCHEMA_VERSION)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        s = self._session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # -- studies ------------------------------------------------------------------------------------------------
    def upsert_study(self, row: StudyRow) -> None:
        """Insert a study, or refresh the descriptive fields of a known one (its status and error are kept; the
        patient/date/path of a folder or PACS study, once read from its DICOM header or retrieved, are kept)."""
        with self.session() as s:
            old = s.get(StudyRow, row.id)
            if old is None:
                s.add(row)
                return
            for f in ("index", "source", "remote", "mask", "box", "label", "covariates"):
                setattr(old, f, getattr(row, f))
            for f in ("path", "patient", "date"):   # a manifest is authoritative; other sources fill blanks
                new = getattr(row, f)
                if new and (row.source == "manifest" or not getattr(old, f)):
                    setattr(old, f, new)

    def upsert_studies(self, rows: list[StudyRow]) -> None:
        """:meth:`upsert_study` for many studies in one transaction (one commit: listing 1,000 studies must not
        cost 1,000 fsyncs)."""
        with self.session() as s:
            known = {r.id: r for r in s.scalars(select(StudyRow))}
            for row in rows:
                old = known.get(row.id)
                if old is None:
                    s.add(row)
                    known[row.id] = row
                    continue
                for f in ("index", "source", "remote", "mask", "box", "label", "covariates"):
                    if getattr(old, f) != getattr(row, f):
                        setattr(old, f, getattr(row, f))
                for f in ("path", "patient", "date"):   # a manifest is authoritative; other sources fill blanks
                    new = getattr(row, f)
                    if new and (row.source == "manifest" or not getattr(old, f)):
                        setattr(old, f, new)

    def studies(self) -> list[StudyRow]:
        with self.session() as s:
            return list(s.scalars(select(StudyRow).order_by(StudyRow.index)))

    def study(self, study_id: str) -> StudyRow | None:
        with self.session() as s:
            return s.get(StudyRow, study_id)

    def update_study(self, study_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(StudyRow, study_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    def next_index(self) -> int:
        with self.session() as s:
            top = s.scalar(select(func.max(StudyRow.index)))
            return 0 if top is None else int(top) + 1

    # -- predictions --------------------------------------------------------------------------------------------
    def prediction(self, study_id: str, run_id: str, fingerprint: str) -> PredictionRow | None:
        """The cached prediction, or None when absent or computed with another fingerprint."""
        with self.session() as s:
            row = s.get(PredictionRow, (study_id, run_id))
            return row if row is not None and row.fingerprint == fingerprint else None

    def predictions(self, run_id: str, fingerprint: str) -> dict[str, PredictionRow]:
        """Every current prediction of a run, by study id."""
        with self.session() as s:
            rows = s.scalars(select(PredictionRow).where(PredictionRow.run_id == run_id,
                                                         PredictionRow.fingerprint == fingerprint))
            return {r.study_id: r for r in rows}

    def prediction_ids(self, run_id: str, fingerprint: str) -> list[str]:
        """Ids of the studies with a current prediction of the run (without loading the results)."""
        with self.session() as s:
            return list(s.scalars(select(PredictionRow.study_id).where(PredictionRow.run_id == run_id,
                                                                       PredictionRow.fingerprint == fingerprint)))

    def put_prediction(self, study_id: str, run_id: str, fingerprint: str, result: dict[str, Any] | None,
                       error: str = "", seconds: float = 0.0) -> None:
        with self.session() as s:
            s.merge(PredictionRow(study_id=study_id, run_id=run_id, fingerprint=fingerprint,
                                  result=json.dumps(result or {}), error=error, seconds=seconds, created=utcnow()))

    # -- overlays -----------------------------------------------------------------------------------------------
    def overlay(self, study_id: str, run_id: str, kind: str, fingerprint: str) -> bytes | None:
        with self.session() as s:
            row = s.get(OverlayRow, (study_id, run_id, kind))
            return row.data if row is not None and row.fingerprint == fingerprint else None

    def put_overlay(self, study_id: str, run_id: str, kind: str, fingerprint: str, data: bytes) -> None:
        with self.session() as s:
            s.merge(OverlayRow(study_id=study_id, run_id=run_id, kind=kind, fingerprint=fingerprint, data=data,
                               created=utcnow()))

    # -- feedback -----------------------------------------------------------------------------------------------
    def add_feedback(self, row: FeedbackRow) -> FeedbackRow:
        with self.session() as s:
            s.add(row)
            s.flush()
            return row

    def feedback(self, study_id: str | None = None) -> list[FeedbackRow]:
        with self.session() as s:
            q = select(FeedbackRow).order_by(FeedbackRow.id)
            if study_id is not None:
                q = q.where(FeedbackRow.study_id == study_id)
            return list(s.scalars(q))

    def clear_feedback(self) -> None:
        with self.session() as s:
            s.execute(delete(FeedbackRow))


def _safe_url(url: str) -> str:
    """The URL without a password (``user:***@``)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url
