"""``OrthancServer``: a throw-away Orthanc PACS (Debian's ``/usr/sbin/Orthanc`` + its DICOMweb plugin) for tests,
benchmarks and demos.

The server gets a generated JSON configuration in a temporary folder: HTTP on a free port (Orthanc 1.10 has no
bind-address option, so ``RemoteAccessAllowed: false`` makes it answer loopback clients only), the DICOM (C-STORE)
listener disabled, StorageDirectory/IndexDirectory inside the temporary folder, the DICOMweb plugin enabled at
``/dicom-web/``, no authentication (loopback only). Leaving the ``with`` block stops the process and deletes
the folder (storage included).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from cadx.errors import CadxDataError

__all__ = ["DICOMWEB_PLUGIN", "ORTHANC", "OrthancServer", "free_port", "orthanc_available"]

#: Debian's Orthanc binary (package ``orthanc``).
ORTHANC = Path("/usr/sbin/Orthanc")
#: Debian's DICOMweb plugin (package ``orthanc-dicomweb``).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_available() -> tuple[bool, str]:
    """``(True, "")`` when the Orthanc binary and its DICOMweb plugin are installed, else ``(False, reason)``."""
    for p, pkg in ((ORTHANC, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")):
        if not p.exists():
            return False, f"{p} not found (Debian package {pkg})"
    return True, ""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; another process may take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """Context manager running one Orthanc process; ``url`` (REST root) and ``dicomweb_url`` once started.

    ``startup_timeout`` seconds to wait for ``GET /system`` to answer; a process that exits or does not answer in
    time raises :class:`CadxDataError` with the last line of Orthanc's log. ``binary``/``plugin`` default to
    Debian's paths. ``keep`` leaves the temporary folder (config, log, storage) in place for debugging.
    """

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0, binary: Path = ORTHANC,
                 plugin: Path = DICOMWEB_PLUGIN, keep: bool = False) -> None:
        self.port = port
        self.startup_timeout = float(startup_timeout)
        self.binary = Path(binary)
        self.plugin = Path(plugin)
        self.keep = keep
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """REST root, e.g. ``http://127.0.0.1:8042``."""
        if self.port is None:
            raise RuntimeError("OrthancServer is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``."""
        return f"{self.url}/dicom-web"

    def config(self, folder: Path, port: int) -> dict[str, object]:
        """The JSON configuration written to ``folder/orthanc.json``."""
        return {
            "Name": "cadx-orthanc",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpServerEnabled": True,
            "HttpPort": port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "DicomPort": 0,
            "HttpThreadsCount": 4,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "Plugins": [str(self.plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                         "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }

    def _log_tail(self) -> str:
        log = (self.folder / "orthanc.log") if self.folder else None
        if log is None or not log.is_file():
            return "no log"
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "empty log"

    def start(self) -> OrthancServer:
        """Write the config, start Orthanc and wait until ``/system`` answers. Returns ``self`` (at once when it
        is already running, so ``server.start()`` then ``with server:`` starts one process)."""
        if self.running:
            return self
        ok, why = orthanc_available() if (self.binary, self.plugin) == (ORTHANC, DICOMWEB_PLUGIN) else (True, "")
        if not ok or not self.binary.exists():
            raise CadxDataError(why or "not found", path=self.binary, field="orthanc")
        self.folder = Path(tempfile.mkdtemp(prefix="cadx-orthanc-"))
        if self.port is None:
            self.port = free_port()
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config(self.folder, self.port), indent=2), encoding="utf-8")
        log = (self.folder / "orthanc.log").open("wb")
        self._proc = subprocess.Popen([str(self.binary), str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=self.folder)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise CadxDataError(f"Orthanc exited during start-up: {tail}", path=self.url, field="orthanc")
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise CadxDataError(f"Orthanc did not answer /system within {self.startup_timeout:g} s: {tail}",
                                    path=self.url, field="orthanc")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and delete the temporary folder unless ``keep``."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if self.folder is not None and not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while the Orthanc process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
