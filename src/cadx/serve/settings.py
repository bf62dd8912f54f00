"""``ServeSettings``: what ``cadx serve`` serves and how (runs, studies, PACS, bind address, storage, security)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cadx.errors import CadxConfigError

__all__ = ["TOKEN_ENV", "ServeSettings", "check_settings", "is_loopback"]

#: Environment variable read for the access token when ``--token`` is not given.
TOKEN_ENV = "CADX_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else, including
    ``0.0.0.0`` / ``::`` (every interface) and host names other than ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """Settings of one server.

    ``runs``: run folders (the first classifier run is the worklist's model; segmentation/detection runs add
    overlays). ``studies``: a folder of studies (each DICOM series folder or image file directly inside it is one
    study) or a cadx manifest CSV. ``pacs``: a DICOMweb root URL listed instead of / besides ``studies``.
    ``db_url``: SQLAlchemy URL (default ``sqlite:///<first run>/serve.sqlite3``; ``postgresql+psycopg://...`` for
    a department server). ``token``: bearer token (default: env ``CADX_SERVE_TOKEN``); required when ``host`` is
    not a loopback address. ``max_upload_mb``: size limit of ``POST /api/upload``. ``cors_origins``: origins
    allowed cross-site (default none: CORS closed). ``data_dir``: where uploads, PACS retrievals and predicted
    masks are kept (default ``<first run>/serve_data``). ``worker``: start the background prediction thread
    (tests may drive it by hand). ``poll_s``: how often the worker re-checks the runs' fingerprints.
    """

    runs: list[Path]
    studies: Path | None = None
    pacs: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    db_url: str | None = None
    token: str | None = None
    max_upload_mb: float = 200.0
    cors_origins: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    worker: bool = True
    poll_s: float = 2.0
    slice_cache: int = 512

    def __post_init__(self) -> None:
        self.runs = [Path(r) for r in self.runs]
        self.studies = Path(self.studies) if self.studies is not None else None
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if self.data_dir is None and self.runs:
            self.data_dir = self.runs[0] / "serve_data"
        if self.db_url is None and self.runs:
            self.db_url = f"sqlite:///{(self.runs[0] / 'serve.sqlite3').resolve()}"


def check_settings(s: ServeSettings) -> None:
    """Refuse settings that must not start a server, with one line naming the setting (CadxConfigError): no run,
    a run folder or studies path that does not exist, a non-loopback ``host`` without a token, a bad port or
    upload limit."""
    if not s.runs:
        raise CadxConfigError("cadx serve: give at least one run folder (field runs)")
    for r in s.runs:
        if not r.is_dir():
            raise CadxConfigError(f"cadx serve: run folder not found: {r} (field runs)")
    if s.studies is not None and not s.studies.exists():
        raise CadxConfigError(f"cadx serve: studies folder or manifest not found: {s.studies} (field studies)")
    if not is_loopback(s.host) and not s.token:
        raise CadxConfigError(f"cadx serve: refusing to bind {s.host} (not loopback) without a token: pass --token "
                              f"or set {TOKEN_ENV} (field host)")
    if not 0 < s.port < 65536:
        raise CadxConfigError(f"cadx serve: port {s.port} out of range (field port)")
    if s.max_upload_mb <= 0:
        raise CadxConfigError(f"cadx serve: max_upload_mb must be > 0, got {s.max_upload_mb} (field max_upload_mb)")
