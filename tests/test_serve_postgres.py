"""The reading room on a real PostgreSQL server (the department deployment): initdb + pg_ctl in a temporary folder
on a free loopback port, the app's database URL pointed at it. Skipped, with the reason, when PostgreSQL's
binaries are not installed (Debian: ``postgresql``; ``make system`` installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import test_serve_app as base
from cadx.serve import ServeSettings, create_app
from cadx.serve.store import Store
from cadx.serve.worker import run_pending
from test_serve_app import N

served = base.served


def _pg_bin(name: str) -> str | None:
    for d in ("/usr/local/bin", *(str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin")))):
        p = Path(d) / name
        if p.is_file():
            return str(p)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL not installed (no initdb/pg_ctl; Debian package postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) not installed")
    root = tmp_path_factory.mktemp("pg")
    prefix: list[str] = []
    if os.geteuid() == 0:   # initdb refuses to run as root: run the server as the postgres user
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a 'postgres' user and runuser: initdb cannot run")
        prefix = [runuser, "-u", "postgres", "--"]
        os.chmod(root, 0o777)
        for p in root.parents:
            if p == Path("/tmp") or p == Path("/"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o711)
    data, port = root / "data", _free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(initdb, "-D", str(data), "-A", "trust", "-U", "cadx", "--no-sync")
    run(pg_ctl, "-D", str(data), "-l", str(root / "log.txt"), "-w", "-t", "60",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://cadx@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=60)


def test_serve_on_postgresql(pg_url: str, served: base.Served, tmp_path: Path) -> None:
    settings = ServeSettings(runs=[served.run], studies=served.manifest, db_url=pg_url, data_dir=tmp_path / "d",
                             worker=False)
    app = create_app(settings)
    state = app.state.cadx
    assert state.store.engine.dialect.name == "postgresql"
    assert run_pending(state) == N + 2
    with TestClient(app) as c:
        rows = c.get("/api/studies?sort=risk&order=desc").json()["studies"]
        p = [r["probability"] for r in rows[:N]]
        assert p == sorted(p, reverse=True) and all(0 <= v <= 1 for v in p)
        sid = rows[0]["id"]
        r = c.post(f"/api/studies/{sid}/feedback", json={"reader": "dr_pg", "verdict": "corrected",
                                                          "label": "benign", "note": "ünïcode ok"})
        assert r.status_code == 200
    # a second server on the same database: the feedback and the prediction cache are there
    again = Store(pg_url)
    fb = again.feedback()
    assert [(f.reader, f.verdict, f.label, f.note, f.study_id) for f in fb] == [
        ("dr_pg", "corrected", "benign", "ünïcode ok", sid)]
    assert fb[0].created.tzinfo is not None
    state2 = create_app(ServeSettings(runs=[served.run], studies=served.manifest, db_url=pg_url,
                                      data_dir=tmp_path / "d", worker=False)).state.cadx
    assert state2.pending() == []
    assert {r.id: r.status for r in state2.store.studies()}[sid] == "disagreed"
