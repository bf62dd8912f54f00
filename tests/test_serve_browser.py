"""Browser tests of the reading room (``cadx serve``): Playwright (Python) drives Debian's Chromium against the real
app served by uvicorn on a free loopback port, and every step is checked against the JSON API and the stored rows.

Chromium: Playwright 1.65's own browser download does not work here, so the tests launch Debian's
``/usr/bin/chromium`` (150.0.7871) with ``executable_path`` and ``--headless=new`` (the new headless mode is the
only one Chromium >= 132 ships; ``--no-sandbox`` because the tests may run as root). Checked by hand first:
``p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless=new"])`` reports
``browser.version == "150.0.7871.100"`` and runs a page's script. The module is skipped (with that reason) only when
``/usr/bin/chromium`` is absent.

The served set: three tiny runs on the ``_test_tiny`` cohort (tests/helpers.py; 2 folds, 1 epoch, ~1-2 s each):
a classifier (the worklist's model, Grad-CAM), a U-Net segmentation run (the "mask" overlay) and a ``yolo_dense``
detector (the "boxes" overlay), and :data:`N_STUDIES` NIfTI studies (6 x 20 x 20) listed in a cadx manifest CSV.
The app runs in this process under uvicorn on a free loopback port (the tiny test model is registered in this
process only); its background worker predicts every (study, run) through the one prediction path before the
first browser step (the fixture waits for ``/api/jobs`` done == total).

Marked ``slow`` + ``ci``: the module takes 30-60 s on this shared 2-core machine (Chromium and the three runs), so
it stays out of a quick ``-m "not slow"`` loop and runs in CI (``make test`` selects ``not slow or ci``).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from cadx.config import load_config
from cadx.data.datasets.manifest import load_manifest
from cadx.data.image import ImageData
from cadx.data.readers import write_image
from cadx.runs import run_cv
from cadx.serve.app import ServeSettings, create_app
from helpers import tiny_cohort, tiny_config

CHROMIUM = Path("/usr/bin/chromium")
N_STUDIES = 6
N_SLICES = 6                  # tiny_volume's Z

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.ci,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed ({CHROMIUM}); "
                                                     "`make system` installs it"),
]



# ---------------------------------------------------------------- the served set and the server

def write_studies(folder: Path, n: int = N_STUDIES, seed: int = 1) -> Path:
    """``n`` tiny CT-like studies (``(1, 6, 20, 20)`` HU volumes + masks, NIfTI) and their cadx manifest CSV
    (study_id, patient_id, path, label, mask, box "z0 y0 x0 z1 y1 x1"); returns the CSV path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for st in tiny_cohort(n, seed):
        img, mask = st.image().load(), st.mask().load()  # type: ignore[union-attr]
        write_image(ImageData(img.array, img.spacing), folder / f"{st.study_id}.nii.gz")
        write_image(ImageData(mask.array, mask.spacing), folder / f"{st.study_id}_mask.nii.gz")
        rows.append({"study_id": st.study_id, "patient_id": st.patient_id, "path": f"{st.study_id}.nii.gz",
                     "label": st.label, "mask": f"{st.study_id}_mask.nii.gz",
                     "box": " ".join(str(v) for v in st.boxes[0])})
    out = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def seg_config() -> Any:
    """A tiny U-Net segmentation run on the same ``_test_tiny`` cohort (adds the "mask" overlay): 2 folds, 1 epoch."""
    return load_config(None, [
        "name=segtiny", "data.dataset=_test_tiny", "data.root=.", "data.options={n: 6}", "task.classification=false",
        "task.segmentation=true", "input.size=16", "input.normalize=minmax", "model.name=unet",
        "model.kwargs={base_filters: 4, levels: 2}", "objective={dice: {weight: 1, batch: true}}", "train.epochs=1",
        "train.batch_size=4", "train.progress=false", "cv.folds=2", "eval.bootstrap=20", "optim.lr=0.01",
        "segmentation={oversample_lesion: 3, min_tissue_fraction: 0.05, tissue_channel: 1}"])


def det_config() -> Any:
    """A tiny detector run (``yolo_dense``, thesis A.8) on the same cohort (adds the "boxes" overlay)."""
    return load_config(None, [
        "name=dettiny", "data.dataset=_test_tiny", "data.root=.", "data.options={n: 6}", "task.classification=false",
        "model.name=yolo_dense", "model.kwargs={growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8, "
        "anchor: 8.0}", "objective={det_reduced_focal: 1.0, det_box_mse: 1.0}", "train.epochs=1",
        "train.batch_size=4", "train.progress=false", "cv.folds=2", "eval.bootstrap=20",
        "detection={size: 32, crop: 16}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


class Served:
    """A running app: ``base`` URL, the run folder, the manifest and the uvicorn server (stopped by the fixture)."""

    def __init__(self, base: str, run: Path, manifest: Path, server: Any, thread: threading.Thread) -> None:
        self.base, self.run, self.manifest, self.server, self.thread = base, run, manifest, server, thread

    def api(self, path: str) -> Any:
        return get_json(self.base + path)


def wait_until(pred: Any, timeout: float, what: str) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:

    tmp = tmp_path_factory.mktemp("serve")
    manifest = write_studies(tmp / "studies")
    run, seg_run, det_run = tmp / "run", tmp / "seg_run", tmp / "det_run"
    run_cv(tiny_config("train.epochs=1", "eval.bootstrap=20"), run)
    run_cv(seg_config(), seg_run)
    run_cv(det_config(), det_run)
    port = free_port()
    settings = ServeSettings(runs=[run, seg_run, det_run], studies=manifest, pacs=None, host="127.0.0.1", port=port,
                             db_url=f"sqlite:///{tmp / 'serve.sqlite3'}", token=None)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="cadx-serve-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    s = Served(base, run, manifest, server, thread)

    def healthy() -> bool:
        try:
            return bool(s.api("/api/health") == {"status": "ok"})
        except OSError:
            return False

    wait_until(healthy, 30, "/api/health")

    def predicted() -> bool:
        j = s.api("/api/jobs")
        return bool(j["total"] >= 3 * N_STUDIES and j["done"] == j["total"] and not j["running"])

    wait_until(predicted, 90, "the background predictions (/api/jobs done == total)")
    yield s
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def rows(page: Any, visible_only: bool = True) -> list[dict[str, str]]:
    """The worklist's ``tr.study-row`` attributes in DOM order (only displayed rows when ``visible_only``)."""
    return list(page.eval_on_selector_all(
        "table#worklist tbody tr.study-row",
        """(trs, vis) => trs.filter(t => !vis || t.offsetParent !== null).map(t => ({
               id: t.dataset.studyId, risk: t.dataset.risk, status: t.dataset.status, text: t.innerText}))""",
        visible_only))


def open_worklist(page: Any, served: Served) -> list[dict[str, str]]:
    page.goto(served.base + "/")
    page.wait_for_function("n => document.querySelectorAll('table#worklist tbody tr.study-row').length >= n",
                           arg=N_STUDIES, timeout=15000)
    return rows(page)


# ---------------------------------------------------------------- worklist

def test_worklist_lists_every_study_with_its_prediction(page: Any, served: Served) -> None:
    api = served.api("/api/studies")
    by_id = {s["id"]: s for s in api["studies"]}
    got = open_worklist(page, served)
    assert len(got) == N_STUDIES == len(by_id)
    assert {r["id"] for r in got} == set(by_id)
    for r in got:
        s = by_id[r["id"]]
        assert s["error"] in (None, "")
        assert 0.0 <= s["probability"] <= 1.0
        assert float(r["risk"]) == pytest.approx(s["probability"], abs=1e-6)
        assert s["patient"] in r["text"]
        assert s["wording"] and s["wording"].strip() not in ("benign", "malignant")   # never a bare class
        assert s["status"] == "new" or r["status"] == s["status"]
    assert page.text_content("span#pending-count").strip() == str(api["pending"]) == "0"


RISKS = "() => [...document.querySelectorAll('table#worklist tbody tr.study-row')].map(t => Number(t.dataset.risk))"
MONOTONE_OTHER_THAN = f"""old => {{ const r = ({RISKS})();
    const inc = r.every((v, i) => i === 0 || r[i - 1] <= v), dec = r.every((v, i) => i === 0 || r[i - 1] >= v);
    return r.length === old.length && (inc || dec) && r.some((v, i) => v !== old[i]); }}"""


def test_sort_by_risk_orders_rows_by_probability(page: Any, served: Served) -> None:
    """Each click on th#sort-risk re-sorts the rows by risk in the other direction (whatever the first state)."""
    open_worklist(page, served)
    orders = [page.evaluate(RISKS)]
    for _ in range(2):
        page.click("th#sort-risk")
        page.wait_for_function(MONOTONE_OTHER_THAN, arg=orders[-1], timeout=10000)
        orders.append([float(r["risk"]) for r in rows(page)])
    desc = [o for o in orders[1:] if o == sorted(o, reverse=True)]
    asc = [o for o in orders[1:] if o == sorted(o)]
    assert len(desc) == len(asc) == 1, f"the two clicks did not give both directions: {orders}"
    assert desc[0] == asc[0][::-1]
    api = served.api("/api/studies?sort=risk&order=desc")["studies"]
    assert [s["probability"] for s in api] == sorted((s["probability"] for s in api), reverse=True)
    assert desc[0] == pytest.approx([s["probability"] for s in api], abs=1e-6)


def test_filter_by_text_keeps_matching_rows(page: Any, served: Served) -> None:
    first = open_worklist(page, served)
    target = served.api("/api/studies")["studies"][2]
    page.fill("input#filter", target["patient"])
    page.wait_for_function("n => [...document.querySelectorAll('tr.study-row')]"
                           ".filter(t => t.offsetParent !== null).length < n", arg=len(first), timeout=5000)
    kept = rows(page)
    assert [r["id"] for r in kept] == [target["id"]]
    api = served.api(f"/api/studies?q={target['patient']}")["studies"]
    assert [s["id"] for s in api] == [target["id"]]
    page.fill("input#filter", "")
    page.wait_for_function("n => [...document.querySelectorAll('tr.study-row')]"
                           ".filter(t => t.offsetParent !== null).length == n", arg=len(first), timeout=5000)


# ---------------------------------------------------------------- viewer

def slice_state(page: Any) -> dict[str, Any]:
    """The viewer's current slice: index text, slider value, img src and whether the PNG has been decoded."""
    return dict(page.evaluate("""() => {
        const img = document.querySelector('img#slice');
        return {index: document.querySelector('span#slice-index').textContent.trim(),
                slider: Number(document.querySelector('input#slice-slider').value),
                src: img.getAttribute('src'), painted: img.complete && img.naturalWidth > 0,
                width: img.naturalWidth};
    }"""))


def wait_painted(page: Any, src_not: str | None = None) -> dict[str, Any]:
    page.wait_for_function("""old => { const i = document.querySelector('img#slice');
        return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src') !== old; }""", arg=src_not,
        timeout=10000)
    return slice_state(page)


def open_viewer(page: Any, served: Served, study_id: str | None = None) -> dict[str, Any]:
    """Open the worklist, click a study's row (the first row when ``study_id`` is None), wait for the first slice."""
    got = open_worklist(page, served)
    sid = study_id or got[0]["id"]
    page.click(f"tr.study-row[data-study-id='{sid}']")
    page.wait_for_url(f"**/study/{sid}", timeout=10000)
    state = wait_painted(page)
    state["id"] = sid
    return state


def index_of(text: str) -> tuple[int, int]:
    k, n = (int(v) for v in text.split("/"))
    return k, n


def test_viewer_shows_the_study_and_scrolls_slices(page: Any, served: Served) -> None:
    st = open_viewer(page, served)
    detail = served.api(f"/api/studies/{st['id']}")
    assert detail["n_slices"] == N_SLICES
    assert page.get_attribute("input#slice-slider", "type") == "range"
    assert int(page.get_attribute("input#slice-slider", "min") or 0) == 0
    assert int(page.get_attribute("input#slice-slider", "max") or -1) == N_SLICES - 1
    k0, n = index_of(st["index"])
    assert n == N_SLICES
    assert page.text_content("span#probability").strip() == f"{detail['probability']:.2f}"
    assert page.text_content("span#wording").strip() == detail["wording"]
    shown = page.text_content("span#model-name")
    assert detail["model"] in shown and str(detail["model_version"]) in shown
    # the image is the study's slice PNG, as large as the study's slices (20 x 20)
    assert st["width"] == 20 and f"/api/studies/{st['id']}/slices/" in st["src"]

    page.fill("input#slice-slider", "4")                          # the slider
    s2 = wait_painted(page, st["src"])
    assert s2["slider"] == 4 and index_of(s2["index"])[0] - k0 == 4 - st["slider"]
    assert "/slices/4.png" in s2["src"]

    page.hover("img#slice")                                       # the mouse wheel: one slice per notch
    page.mouse.wheel(0, 120)
    s3 = wait_painted(page, s2["src"])
    page.mouse.wheel(0, -120)
    s4 = wait_painted(page, s3["src"])
    assert abs(s3["slider"] - 4) == 1 and s4["slider"] == 4
    assert index_of(s3["index"])[0] - index_of(s2["index"])[0] == s3["slider"] - 4
    assert s4["src"] == s2["src"]


def test_viewer_window_presets_change_the_pixels(page: Any, served: Served) -> None:
    st = open_viewer(page, served)
    options = page.eval_on_selector_all("select#window option", "os => os.map(o => o.value)")
    assert {"lung", "soft_tissue", "brain", "bone", "auto"} <= set(options)
    pngs = {}
    src = st["src"]
    for w in ("lung", "bone"):
        page.select_option("select#window", w)
        s = wait_painted(page, src)
        src = s["src"]
        assert f"window={w}" in src
        pngs[w] = np.asarray(Image.open(io.BytesIO(get_bytes(served.base + src))).convert("L"), dtype=np.int16)
    # the same slice under two windows: same size, different grey levels (lung W1500 vs bone W1800, other centres)
    assert pngs["lung"].shape == pngs["bone"].shape == (20, 20)
    assert np.abs(pngs["lung"] - pngs["bone"]).max() > 10


VISIBLE = """sel => { const e = document.querySelector(sel); return !!e && e.offsetParent !== null &&
    getComputedStyle(e).visibility !== 'hidden' && getComputedStyle(e).display !== 'none'; }"""


def overlay_rgba(served: Served, sid: str, kind: str, k: int) -> np.ndarray:
    png = Image.open(io.BytesIO(get_bytes(f"{served.base}/api/studies/{sid}/overlays/{kind}/{k}.png")))
    assert png.mode == "RGBA" and png.size == (20, 20)
    return np.asarray(png)


def test_overlay_pngs_are_transparent_where_nothing(served: Served) -> None:
    """Grad-CAM is computed on the box ROI's slices only (box z 1..4 of 0..5): slices 0 and 5 are fully
    transparent, some box slice is not; the predicted mask is opaque red or fully transparent; boxes lie inside
    the image, best first."""
    sid = served.api("/api/studies")["studies"][0]["id"]
    assert set(served.api(f"/api/studies/{sid}")["overlays"]) == {"mask", "boxes", "gradcam"}
    cam = np.stack([overlay_rgba(served, sid, "gradcam", k) for k in range(N_SLICES)])
    assert cam[0, ..., 3].max() == 0 and cam[-1, ..., 3].max() == 0
    assert cam[1:-1, ..., 3].max() > 0
    mask = np.stack([overlay_rgba(served, sid, "mask", k) for k in range(N_SLICES)])
    assert set(np.unique(mask[..., 3])) <= {0, 255}
    assert (mask[mask[..., 3] == 255][:, :3] == (255, 48, 48)).all()
    boxes = served.api(f"/api/studies/{sid}/boxes")
    assert boxes, "the detector run gave no box"
    for b in boxes:
        assert 0 <= b["slice"] < N_SLICES and 0 <= b["score"] <= 1
        assert -1 <= b["x0"] < b["x1"] <= 21 and -1 <= b["y0"] < b["y1"] <= 21
    assert [b["score"] for b in boxes] == sorted((b["score"] for b in boxes), reverse=True)


@pytest.mark.parametrize("kind", ["gradcam", "mask"])
def test_viewer_overlay_toggle_and_opacity(page: Any, served: Served, kind: str) -> None:
    st = open_viewer(page, served)
    sel = f"#overlay-{kind}"
    assert not page.evaluate(VISIBLE, sel)
    page.check(f"input#toggle-{kind}")
    page.wait_for_function(VISIBLE, arg=sel, timeout=5000)
    k = st["slider"]
    assert (page.get_attribute(sel, "src") or "").endswith(f"/api/studies/{st['id']}/overlays/{kind}/{k}.png")
    page.fill("input#opacity", "30")
    page.wait_for_function("sel => Math.abs(Number(getComputedStyle(document.querySelector(sel)).opacity) - 0.3)"
                           " < 0.011", arg=sel, timeout=5000)
    page.fill("input#slice-slider", str(k + 1))                   # the overlay follows the slice
    page.wait_for_function(f"sel => (document.querySelector(sel).getAttribute('src') || '')"
                           f".endsWith('/{kind}/{k + 1}.png')", arg=sel, timeout=5000)
    page.uncheck(f"input#toggle-{kind}")
    page.wait_for_function(f"sel => !({VISIBLE})(sel)", arg=sel, timeout=5000)


def test_viewer_detector_boxes(page: Any, served: Served) -> None:
    st = open_viewer(page, served)
    boxes = served.api(f"/api/studies/{st['id']}/boxes")
    k = int(boxes[0]["slice"])
    page.fill("input#slice-slider", str(k))
    assert not page.evaluate(VISIBLE, "#boxes")
    page.check("input#toggle-boxes")
    page.wait_for_function(VISIBLE, arg="#boxes", timeout=5000)
    n_here = sum(1 for b in boxes if b["slice"] == k)
    assert page.eval_on_selector_all("#boxes .box", "bs => bs.length") == n_here >= 1
    # the best box is drawn where the API puts it: left/top/width in % of the 20-px slice
    css = page.eval_on_selector("#boxes .box", "b => [b.style.left, b.style.top, b.style.width]")
    best = next(b for b in boxes if b["slice"] == k)
    assert [float(c.rstrip("%")) for c in css] == pytest.approx(
        [100 * best["x0"] / 20, 100 * best["y0"] / 20, 100 * (best["x1"] - best["x0"]) / 20], abs=1e-3)


def test_viewer_zoom_and_pan_move_the_image(page: Any, served: Served) -> None:
    open_viewer(page, served)
    rect = "() => { const r = document.querySelector('img#slice').getBoundingClientRect();" \
           " return [r.x, r.y, r.width, r.height]; }"
    _, _, w0, h0 = page.evaluate(rect)
    page.click("button#zoom-in")
    page.wait_for_function(f"w => ({rect})()[2] > w * 1.05", arg=w0, timeout=5000)
    x1, y1, w1, h1 = page.evaluate(rect)
    assert w1 / w0 == pytest.approx(h1 / h0, rel=0.01)            # zoom keeps the aspect ratio
    cx, cy = x1 + w1 / 2, y1 + h1 / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 40, cy + 25, steps=5)
    page.mouse.up()
    x2, y2, w2, _ = page.evaluate(rect)
    assert (x2 - x1, y2 - y1) == (pytest.approx(40, abs=2), pytest.approx(25, abs=2))   # drag = pan
    assert w2 == pytest.approx(w1)
    page.click("button#zoom-out")
    page.wait_for_function(f"w => ({rect})()[2] < w * 0.97", arg=w2, timeout=5000)


def test_viewer_links_the_run_report(page: Any, served: Served) -> None:
    st = open_viewer(page, served)
    href = page.get_attribute("a#report-link", "href")
    assert href == served.api(f"/api/studies/{st['id']}")["report_url"]
    html = get_bytes(served.base + href if href.startswith("/") else href).decode()
    assert html == (served.run / "report.html").read_text()


def test_feedback_is_stored_with_reader_and_time(page: Any, served: Served) -> None:
    sid = served.api("/api/studies?sort=risk&order=desc")["studies"][0]["id"]
    open_viewer(page, served, sid)
    before = datetime.now(UTC)
    page.fill("input#reader", "dr_h3")
    page.select_option("select#verdict", "disagree")
    page.fill("textarea#note", "lesion looks benign to me")
    page.click("button#submit-feedback")
    page.wait_for_function("() => document.querySelector('div#feedback-status').textContent.trim() === 'saved'",
                           timeout=5000)
    stored = [f for f in served.api("/api/feedback") if f.get("reader") == "dr_h3"]
    assert len(stored) == 1
    fb = stored[0]
    assert fb["verdict"] == "disagree" and fb["note"] == "lesion looks benign to me"
    assert str(fb.get("study_id", fb.get("study"))) == sid
    when = datetime.fromisoformat(str(fb.get("created_at", fb.get("when", fb.get("timestamp")))))
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    assert before - timedelta(seconds=2) <= when <= datetime.now(UTC) + timedelta(seconds=2)
    # the worklist shows the study as disagreed, and the status filter finds it
    row = {s["id"]: s for s in served.api("/api/studies")["studies"]}[sid]
    assert row["status"] == "disagreed"
    open_worklist(page, served)
    assert {r["id"]: r["status"] for r in rows(page)}[sid] == "disagreed"
    page.select_option("select#status-filter", "disagreed")
    page.wait_for_function("() => [...document.querySelectorAll('tr.study-row')]"
                           ".filter(t => t.offsetParent !== null).length === 1", timeout=5000)
    assert [r["id"] for r in rows(page)] == [sid]


def test_corrected_label_feedback_exports_a_manifest(page: Any, served: Served) -> None:
    studies = served.api("/api/studies?sort=risk&order=desc")["studies"]
    sid = studies[-1]["id"]
    open_viewer(page, served, sid)
    page.fill("input#reader", "dr_h3b")
    page.select_option("select#verdict", "corrected")
    page.fill("input#corrected-label", "malignant")
    page.fill("textarea#note", "")
    page.click("button#submit-feedback")
    page.wait_for_function("() => document.querySelector('div#feedback-status').textContent.trim() === 'saved'",
                           timeout=5000)
    fb = [f for f in served.api("/api/feedback") if f.get("reader") == "dr_h3b"]
    assert len(fb) == 1 and fb[0]["verdict"] == "corrected" and fb[0]["label"] == "malignant"
    out = served.manifest.parent.parent / "feedback_export.csv"
    out.write_bytes(get_bytes(served.base + "/api/feedback/export.csv"))
    csv = pd.read_csv(out).set_index("study_id")
    assert csv.loc[sid, "label"] == "malignant" and csv.loc[sid, "reader"] == "dr_h3b"
    src = pd.read_csv(served.manifest).set_index("patient_id").loc[studies[-1]["patient"]]
    assert Path(csv.loc[sid, "path"]) == (served.manifest.parent / src["path"]).resolve()
    cohort = load_manifest(out)                                   # cadx's own manifest reader takes it back
    assert {s.study_id: s.label for s in cohort}[sid] == "malignant"
