"""The reading room's two screenshots for the README: ``docs/screenshots/worklist.png`` (the triage worklist) and
``docs/screenshots/viewer.png`` (a study in the viewer with its Grad-CAM overlay shown).

Serves, with the real ``cadx serve`` (subprocess, loopback), the small ``demo_resnet`` run that
``benchmarks/serve_latency.py`` builds (reused from ``--work`` when present) and ``--n`` synthetic adrenal CT
studies of the default size (28 x 64 x 64 voxels, DICOM, seed 2); waits until the background worker has predicted
them, records one reader's feedback on two studies (so the worklist shows the read / disagreed statuses), then
drives Debian's Chromium with Playwright: the worklist sorted by risk, and the highest-risk study at its middle
slice, soft-tissue window, zoomed in once, Grad-CAM at 50 % opacity.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_screenshots.py [--n 12] [--work /tmp/cadx_serve_bench]
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright
from serve_latency import CHROMIUM, CHROMIUM_ARGS, build_run, get_json, serve, wait_until

from cadx.data.synthetic import generate_cohort

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"


def post_json(url: str, body: dict[str, str]) -> object:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12, help="studies in the worklist")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cadx_serve_bench"))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    shots = a.work / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    manifest = generate_cohort(shots / "studies", n_patients=a.n, seed=2, classes=["ACA", "NAA"])
    run = build_run(a.work)
    db = shots / "serve.sqlite3"
    if db.exists():
        db.unlink()                                  # a fresh worklist: no feedback from an earlier run
    a.out.mkdir(parents=True, exist_ok=True)
    with serve(run, manifest, db, shots / "serve.log") as base:
        def all_done() -> bool:
            j = get_json(base + "/api/jobs")
            return bool(j["total"] >= a.n and j["done"] == j["total"] and not j["running"])
        wait_until(all_done, 600, "the background predictions")
        studies = get_json(base + "/api/studies?sort=risk&order=desc")["studies"]
        post_json(f"{base}/api/studies/{studies[1]['id']}/feedback",
                  {"reader": "reader1", "verdict": "agree", "note": "margins irregular, agree"})
        post_json(f"{base}/api/studies/{studies[-1]['id']}/feedback",
                  {"reader": "reader1", "verdict": "disagree", "note": "fat-containing: adenoma"})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
            page.goto(base + "/")
            page.wait_for_function("n => document.querySelectorAll('tr.study-row').length >= n", arg=a.n)
            descending = """() => { const r = [...document.querySelectorAll('tr.study-row')]
                .map(t => Number(t.dataset.risk)); return r.every((v, i) => i === 0 || r[i - 1] >= v); }"""
            for _ in range(2):                         # th#sort-risk toggles; the triage order is highest first
                if page.evaluate(descending):
                    break
                page.click("th#sort-risk")
                page.wait_for_timeout(500)
            page.wait_for_function(descending)
            page.screenshot(path=str(a.out / "worklist.png"))

            top = studies[0]
            n_slices = int(get_json(f"{base}/api/studies/{top['id']}")["n_slices"])
            page.goto(f"{base}/study/{top['id']}")
            page.wait_for_function("() => { const i = document.querySelector('img#slice');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            page.fill("input#slice-slider", str(n_slices // 2))
            page.select_option("select#window", "soft_tissue")
            page.check("input#toggle-gradcam")
            page.fill("input#opacity", "50")
            page.click("button#zoom-in")
            page.wait_for_timeout(800)                 # let the slice and overlay PNGs load
            page.wait_for_function("() => { const i = document.querySelector('img#slice');"
                                   " return i.complete && i.naturalWidth > 0; }")
            page.screenshot(path=str(a.out / "viewer.png"))
            browser.close()
    print(f"wrote {a.out / 'worklist.png'} and {a.out / 'viewer.png'}")


if __name__ == "__main__":
    main()
