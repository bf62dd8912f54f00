"""Latency of the reading room (``cadx serve``) for a 1,000-study worklist, measured in Debian's Chromium.

What it does, in order (everything under ``--work``, default ``/tmp/cadx_serve_bench``; reused when present):

1. ``studies/``: ``--n`` synthetic adrenal CT studies (:func:`cadx.data.synthetic.generate_cohort`, real DICOM
   series of 8 slices of 32 x 32 voxels, seed 1, classes ACA/NAA) and their cadx manifest CSV;
2. ``run/``: a small real run to serve: the packaged ``demo_resnet`` config (narrow ResNet-18) on its own
   synthetic cohort (seed 0, 40 patients, ``train.epochs=2``, ``cv.folds=2``) — the model's quality is not
   what is measured, only that it is a real run predicted through the one prediction path;
3. predictions: all but ``--worker-share`` (default 40) studies are scored in one batch by
   :func:`cadx.runs.evaluate.evaluate_run` (the same models, items, aggregation and decision as
   ``predict_study``; per-study calls reload the models, about 1.4 s a study on this loaded machine, so 1,000 of
   them would cost the CPU budget of this benchmark many times over) and written into a fresh server database
   under the server's own keys (:func:`seed_predictions`); the server's background worker predicts the other
   ``--worker-share`` studies itself, timed, and its probabilities are compared with the batch path's;
4. starts the real server as a subprocess, ``cadx serve RUN --studies MANIFEST --port P --db sqlite:///...``,
   times its start (until ``/api/health`` answers) and the worker (until ``/api/jobs`` reports done == total);
5. measures, median of ``--reps`` repetitions after one warm-up each:
   - ``api_studies_ms``: ``GET /api/studies?sort=risk&order=desc`` (all rows, JSON parsed) from Python;
   - ``worklist_page_ms``: Chromium, a fresh browser context each time (no HTTP cache): from navigation start
     (``performance.timeOrigin``) until every ``tr.study-row`` of the worklist is in the DOM (checked at each
     animation frame); also the browser's own resource timing of its ``/api/studies`` fetch;
   - ``open_study_first_slice_ms``: Chromium, navigation to ``/study/{id}`` until ``img#slice`` has decoded its
     first PNG (checked at each animation frame); ``cold``: a study not opened before (the server renders the PNG
     from DICOM), ``warm``: the same study again (server-side slice cache);
   - ``slice_png_ms``: ``GET /api/studies/{id}/slices/{k}.png`` alone from Python, cold and warm.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_latency.py [--n 1000] [--reps 7]

Writes ``benchmarks/results/serve/latency.json`` (every sample, the medians, the machine) and prints it; beside it
``serve.log`` (the server's log: study numbers, hashes and timings), ``run_config.yaml`` (the served run's config)
and ``batch_predictions.csv`` (the batch path's predictions of all studies, the seeded ones included).
The server and the browser run on the same machine (2 cores shared with other jobs: the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import select

from cadx.config import load_config, packaged_config_path
from cadx.data.synthetic import generate_cohort
from cadx.runs import run_cv
from cadx.runs.evaluate import evaluate_run
from cadx.serve.served import load_runs
from cadx.serve.sources import study_id
from cadx.serve.store import PredictionRow, Store
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "serve" / "latency.json"
CHROMIUM = "/usr/bin/chromium"
#: Playwright 1.65 drives Debian's Chromium 150 with these (its own browser download does not work here).
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new"]
CADX = str(Path(sys.executable).with_name("cadx"))


def build_studies(work: Path, n: int, seed: int = 1) -> Path:
    """``n`` synthetic CT studies (8 x 32 x 32 voxels, DICOM) under ``work/studies``; returns the manifest CSV."""
    return generate_cohort(work / "studies", n_patients=n, seed=seed, shape=(8, 32, 32), classes=["ACA", "NAA"])


def build_run(work: Path) -> Path:
    """A small ``demo_resnet`` run (40 patients, 2 folds, 2 epochs) in ``work/run``; a finished one (its
    ``metrics.json`` written) is reused untouched, so the served run's fingerprint stays the same."""
    if (work / "run" / "metrics.json").is_file():
        return work / "run"
    cfg = load_config(packaged_config_path("demo_resnet"),
                      [f"data.root={work / 'train_data'}", "data.options={n_patients: 40, classes: [ACA, NAA]}",
                       "train.epochs=2", "cv.folds=2", "eval.bootstrap=200", "train.progress=false"])
    run_cv(cfg, work / "run", resume=True)
    return work / "run"


def seed_predictions(run: Path, manifest: Path, db: Path, worker_share: int, reuse: bool = False) -> dict[str, Any]:
    """Score every study of ``manifest`` with the run through cadx's batch prediction path
    (:func:`cadx.runs.evaluate.evaluate_run`: the same models, items, aggregation and decision rule as
    ``predict_study``, models loaded once) and store the answers in the server database ``db`` under the keys the
    server uses (study id :func:`cadx.serve.sources.study_id` of ``manifest:<csv>#<study_id>``, run id and
    fingerprint of :func:`cadx.serve.served.load_runs`), except the first ``worker_share`` studies of the
    manifest, left for the server's own worker. Returns ``{"seconds", "seeded", "probabilities" (manifest
    study_id → {class: p} of every study), "batch_reused"}``. ``reuse``: take the batch predictions an earlier call
    wrote (``run/external/serve_bench/predictions.csv``) when they are newer than the manifest and the run's
    ``config.yaml`` (same run, same studies) instead of scoring again."""
    t0 = time.perf_counter()
    done = run / "external" / "serve_bench" / "predictions.csv"
    reused = reuse and done.is_file() and done.stat().st_mtime > max(manifest.stat().st_mtime,
                                                                      (run / "config.yaml").stat().st_mtime)
    if not reused:
        evaluate_run(run, "manifest", manifest, name="serve_bench", check=False)
    preds = pd.read_csv(done)
    classes = [c[2:] for c in preds.columns if c.startswith("p_")]
    (served,), _ = load_runs([run])
    fp = served.fingerprint()
    store = Store(f"sqlite:///{db}")
    key = str(manifest.resolve())
    order = pd.read_csv(manifest)["study_id"].astype(str).tolist()
    left = set(order[:worker_share])
    probs: dict[str, dict[str, float]] = {}
    n = 0
    with store.session() as ses:                     # one transaction for all rows
        for row in preds.itertuples(index=False):
            sid = str(row.study_id)
            p = {c: float(getattr(row, f"p_{c}")) for c in classes}
            probs[sid] = p
            if sid in left:
                continue
            result = {"probabilities": p, "prediction": str(row.y_pred), "seeded_by": "benchmarks/serve_latency.py "
                      "from cadx.runs.evaluate.evaluate_run (batch path)"}
            ses.merge(PredictionRow(study_id=study_id(f"manifest:{key}#{sid}"), run_id=served.run_id,
                                    fingerprint=fp, result=json.dumps(result), error="", seconds=0.0))
            n += 1
    store.engine.dispose()
    return {"seconds": time.perf_counter() - t0, "seeded": n, "probabilities": probs, "batch_reused": reused}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return bytes(r.read())


def get_json(url: str) -> Any:
    return json.loads(get(url))


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> float:
    """Poll ``pred`` until true; returns the seconds waited. Raises TimeoutError naming ``what``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if pred():
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(step)
    raise TimeoutError(f"serve_latency: timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def serve(run: Path, manifest: Path, db: Path, log: Path, startup: dict[str, float] | None = None) -> Iterator[str]:
    """``cadx serve RUN --studies MANIFEST`` on a free loopback port as a subprocess; yields its base URL once
    ``/api/health`` answers (``startup["seconds"]`` = how long that took from the process start); the process is
    terminated (then killed) on exit."""
    port = free_port()
    cmd = [CADX, "serve", str(run), "--studies", str(manifest), "--host", "127.0.0.1", "--port", str(port),
           "--db", f"sqlite:///{db}"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        base = f"http://127.0.0.1:{port}"
        try:
            def healthy() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"cadx serve exited ({proc.returncode}); see {log}")
                return bool(get_json(base + "/api/health") == {"status": "ok"})
            waited = wait_until(healthy, 1800, "/api/health")
            if startup is not None:
                startup["seconds"] = waited
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stats(samples: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(samples), 1), "min": round(min(samples), 1),
            "max": round(max(samples), 1), "n": len(samples), "samples": [round(s, 1) for s in samples]}


def timed_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def measure_api(base: str, reps: int, n: int) -> dict[str, Any]:
    url = base + "/api/studies?sort=risk&order=desc"
    body = get_json(url)
    if len(body["studies"]) != n:
        raise RuntimeError(f"serve_latency: /api/studies lists {len(body['studies'])} studies, expected {n}")
    out = stats([timed_ms(lambda: get_json(url)) for _ in range(reps)])
    out["bytes"] = len(get(url))
    return out


ROWS_DONE = """n => document.querySelectorAll('table#worklist tbody tr.study-row').length >= n
    ? performance.now() : 0"""
SLICE_DONE = """() => { const i = document.querySelector('img#slice');
    return i && i.complete && i.naturalWidth > 0 ? performance.now() : 0; }"""
API_FETCH = """() => performance.getEntriesByType('resource').filter(e => e.name.includes('/api/studies'))
    .map(e => e.duration)"""


def measure_worklist(browser: Browser, base: str, reps: int, n: int) -> dict[str, Any]:
    """Navigation start → all ``n`` rows in the DOM, a fresh context (cold HTTP cache) per repetition."""
    page_ms: list[float] = []
    fetch_ms: list[float] = []
    for i in range(reps + 1):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        page.goto(base + "/", wait_until="commit")
        t = float(page.wait_for_function(ROWS_DONE, arg=n, polling="raf", timeout=120000).json_value())
        fetched = page.evaluate(API_FETCH)
        ctx.close()
        if i:                                       # the first one warms the server and the browser up
            page_ms.append(t)
            fetch_ms.append(float(fetched[0]) if fetched else float("nan"))
    return {"page_until_rows_rendered": stats(page_ms), "browser_api_fetch": stats(fetch_ms)}


def measure_open(browser: Browser, base: str, ids: list[str], reps: int) -> dict[str, Any]:
    """Navigation to ``/study/{id}`` → the first slice decoded: ``cold`` (each study opened once) and ``warm``
    (the first study again)."""
    cold: list[float] = []
    warm: list[float] = []
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    for i, sid in enumerate(ids[:reps + 1]):
        page.goto(f"{base}/study/{sid}", wait_until="commit")
        t = float(page.wait_for_function(SLICE_DONE, polling="raf", timeout=60000).json_value())
        if i:
            cold.append(t)
    for _ in range(reps):
        page.goto(f"{base}/study/{ids[0]}", wait_until="commit")
        warm.append(float(page.wait_for_function(SLICE_DONE, polling="raf", timeout=60000).json_value()))
    ctx.close()
    return {"cold": stats(cold), "warm": stats(warm)}


def measure_slice_png(base: str, ids: list[str], reps: int) -> dict[str, Any]:
    def png(sid: str) -> float:
        return timed_ms(lambda: get(f"{base}/api/studies/{sid}/slices/0.png?window=soft_tissue"))

    cold = [png(sid) for sid in ids[:reps]]
    warm = [png(ids[0]) for _ in range(reps)]
    return {"cold": stats(cold), "warm": stats(warm)}


def code_version() -> dict[str, Any]:
    """The commit measured and whether src/cadx/serve had uncommitted changes (another engineer's work in progress)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "serve_uncommitted": bool(git("status", "--porcelain", "--", "src/cadx/serve"))}


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="studies in the worklist")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per measurement (median reported)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cadx_serve_bench"))
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--worker-share", type=int, default=40,
                    help="studies left for the server's worker to predict (the rest are seeded, see seed_predictions)")
    ap.add_argument("--reuse-batch", action="store_true",
                    help="reuse the batch predictions of an earlier call (same run and studies) for the seeding")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    t_all, cpu0 = time.perf_counter(), cpu_seconds()
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    manifest = build_studies(a.work, a.n)
    t_studies = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = build_run(a.work)
    t_run = time.perf_counter() - t0
    db = a.work / "serve.sqlite3"
    if db.exists():
        db.unlink()                                  # a fresh database
    seed = seed_predictions(run, manifest, db, a.worker_share, a.reuse_batch)
    key = str(manifest.resolve())
    worker_ids = {study_id(f"manifest:{key}#{sid}"): sid
                  for sid in pd.read_csv(manifest)["study_id"].astype(str).tolist()[:a.worker_share]}

    startup: dict[str, float] = {}
    with serve(run, manifest, db, a.work / "serve.log", startup) as base:
        def all_done() -> bool:
            j = get_json(base + "/api/jobs")
            return bool(j["total"] >= a.n and j["done"] == j["total"] and not j["running"])
        t_predict = wait_until(all_done, 3600, "the background predictions", step=0.5)
        studies = get_json(base + "/api/studies?sort=risk&order=desc")["studies"]
        diff = max(abs(float(s["probabilities"][c]) - seed["probabilities"][worker_ids[s["id"]]][c])
                   for s in studies if s["id"] in worker_ids for c in s["probabilities"])
        errors = [s for s in studies if s.get("error")]
        ids = [s["id"] for s in studies if not s.get("error")]
        api = measure_api(base, a.reps, a.n)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            worklist = measure_worklist(browser, base, a.reps, a.n)
            opened = measure_open(browser, base, ids[len(ids) // 2:], a.reps)
            version = browser.version
            browser.close()
        png = measure_slice_png(base, ids[len(ids) // 4:], a.reps)
    store = Store(f"sqlite:///{db}")
    with store.session() as ses:
        per_study = [float(r.seconds) for r in ses.scalars(select(PredictionRow)
                                                           .where(PredictionRow.study_id.in_(list(worker_ids))))]
    store.engine.dispose()

    result = {
        "n_studies": a.n, "reps": a.reps, "code": code_version(),
        "api_studies_ms": api,
        "worklist_page_ms": worklist,
        "open_study_first_slice_ms": opened,
        "slice_png_ms": png,
        "server_startup_seconds": round(startup["seconds"], 1),
        "server_startup_note": "from starting `cadx serve` (a fresh database: the manifest's studies are listed "
                               "into it) until /api/health answers",
        "predictions": {
            "worker_studies": a.worker_share,
            "worker_wall_seconds": round(t_predict, 1),
            "worker_seconds_per_study": stats(per_study),
            "worker_vs_batch_max_abs_probability_difference": diff,
            "seeded_studies": seed["seeded"],
            "seed_seconds": round(seed["seconds"], 1),
            "batch_reused": seed["batch_reused"],
            "note": f"{seed['seeded']} studies' predictions were computed in one batch by cadx.runs.evaluate."
                    f"evaluate_run (same models, items, aggregation and decision as predict_study) and written into "
                    f"the server's database before it started; the server's background worker predicted the other "
                    f"{a.worker_share} itself (predict_study per study) in worker_wall_seconds (wall, from "
                    f"/api/health answering to /api/jobs done == total); worker_seconds_per_study is the worker's own "
                    f"per-study timing; the two paths' probabilities for those studies differ by at most "
                    f"{diff:.2e}",
        },
        "studies_with_error": len(errors),
        "setup_seconds": {"generate_studies": round(t_studies, 1), "train_run": round(t_run, 1)},
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "cpu_seconds_this_process_and_children": round(cpu_seconds() - cpu0, 1),
        "machine": {"cpu_count": os.cpu_count(), "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
                    "chromium": version, "platform": platform.platform()},
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_latency.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, result)
    shutil.copyfile(a.work / "serve.log", a.out.parent / "serve.log")          # ids and timings only, no patient
    shutil.copyfile(run / "config.yaml", a.out.parent / "run_config.yaml")
    shutil.copyfile(run / "external" / "serve_bench" / "predictions.csv", a.out.parent / "batch_predictions.csv")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return result


if __name__ == "__main__":
    main()
