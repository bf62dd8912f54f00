// The viewer: slice PNGs rendered by the server, overlays as transparent PNGs stacked on top, zoom/pan by CSS.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const sid = decodeURIComponent(window.location.pathname.split("/").pop());
  const api = "/api/studies/" + encodeURIComponent(sid);
  const v = { k: 0, n: 1, window: "auto", zoom: 1, panX: 0, panY: 0, boxes: [], overlays: [], fitted: false };

  function message(text) {
    const d = document.createElement("div"); d.textContent = text; $("#messages").appendChild(d);
  }

  function layout() {
    const img = $("#slice");
    if (!img.naturalWidth) return;
    const vp = $("#viewport").getBoundingClientRect();
    const fit = Math.min(vp.width / img.naturalWidth, vp.height / img.naturalHeight) * 0.95;
    const stage = $("#stage");
    stage.style.width = img.naturalWidth * fit + "px";
    stage.style.height = img.naturalHeight * fit + "px";
    img.style.width = "100%";
    img.style.height = "100%";
    transform();
  }

  function transform() {
    $("#stage").style.transform =
      `translate(${v.panX}px, ${v.panY}px) translate(-50%, -50%) scale(${v.zoom})`;
  }

  function overlaySrc(kind) { return `${api}/overlays/${kind}/${v.k}.png`; }

  function show() {
    $("#slice").src = `${api}/slices/${v.k}.png?window=${encodeURIComponent(v.window)}`;
    $("#slice-index").textContent = `${v.k + 1} / ${v.n}`;
    $("#slice-slider").value = String(v.k);
    for (const kind of ["mask", "gradcam"]) {
      const on = $("#toggle-" + kind).checked;
      const el = $("#overlay-" + kind);
      el.classList.toggle("hidden", !on);
      if (on) el.src = overlaySrc(kind);
    }
    renderBoxes();
    opacity();
  }

  function renderBoxes() {
    const boxes = $("#boxes");
    boxes.classList.toggle("hidden", !$("#toggle-boxes").checked);
    const img = $("#slice");
    boxes.replaceChildren(...v.boxes.filter(b => b.slice === v.k).map(b => {
      const d = document.createElement("div");
      d.className = "box";
      const w = img.naturalWidth || 1, h = img.naturalHeight || 1;
      d.style.left = (100 * b.x0 / w) + "%"; d.style.top = (100 * b.y0 / h) + "%";
      d.style.width = (100 * (b.x1 - b.x0) / w) + "%"; d.style.height = (100 * (b.y1 - b.y0) / h) + "%";
      d.title = "score " + b.score.toFixed(2);
      return d;
    }));
  }

  function opacity() {
    const a = Number($("#opacity").value) / 100;
    for (const sel of ["#overlay-mask", "#overlay-gradcam", "#boxes"]) $(sel).style.opacity = String(a);
  }

  function go(k) {
    const next = Math.max(0, Math.min(v.n - 1, k));
    if (next !== v.k) { v.k = next; show(); }
  }

  async function load() {
    const r = await fetch(api, { credentials: "same-origin" });
    if (!r.ok) { message("cannot open the study: " + r.status); return; }
    const d = await r.json();
    v.n = Math.max(1, d.n_slices);
    v.k = Math.floor((v.n - 1) / 2);
    v.overlays = d.overlays || [];
    v.window = d.default_window || "auto";
    $("#window").value = v.window;
    $("#patient").textContent = d.patient || "";
    $("#study-date").textContent = d.date || "";
    $("#slice-slider").max = String(v.n - 1);
    $("#probability").textContent = d.probability == null ? "pending" : d.probability.toFixed(2);
    $("#wording").textContent = d.wording || (d.error ? "" : "prediction pending");
    $("#model-name").textContent = `${d.model} (version ${d.model_version})`;
    const attrs = Object.entries(d.attributes || {}).map(([k, x]) => `${k} ${Number(x).toFixed(2)}`);
    $("#attributes").textContent = attrs.length ? "attributes: " + attrs.join(", ") : "";
    const link = $("#report-link");
    if (d.report_url) link.href = d.report_url; else link.classList.add("hidden");
    if (d.error) message(d.error);
    for (const kind of ["mask", "boxes", "gradcam"]) {
      const box = $("#toggle-" + kind);
      box.disabled = !v.overlays.includes(kind);
      box.parentElement.title = box.disabled ? "no run of this study provides it" : "";
    }
    if (v.overlays.includes("boxes")) {
      v.boxes = await (await fetch(api + "/boxes", { credentials: "same-origin" })).json();
    }
    renderFeedback(d.feedback || []);
    show();
  }

  function renderFeedback(rows) {
    $("#feedback-list").replaceChildren(...rows.map(f => {
      const li = document.createElement("li");
      li.textContent = `${f.created} ${f.reader}: ${f.verdict}${f.label ? " → " + f.label : ""}` +
        (f.note ? ` — ${f.note}` : "");
      return li;
    }));
  }

  $("#slice").addEventListener("load", () => {
    if (!v.fitted) { v.fitted = true; layout(); renderBoxes(); }
  });
  window.addEventListener("resize", layout);
  $("#slice-slider").addEventListener("input", (e) => go(Number(e.target.value)));
  $("#window").addEventListener("change", (e) => { v.window = e.target.value; show(); });
  for (const kind of ["mask", "boxes", "gradcam"]) $("#toggle-" + kind).addEventListener("change", show);
  $("#opacity").addEventListener("input", opacity);
  $("#zoom-in").addEventListener("click", () => { v.zoom = Math.min(16, v.zoom * 1.25); transform(); });
  $("#zoom-out").addEventListener("click", () => { v.zoom = Math.max(0.25, v.zoom / 1.25); transform(); });
  $("#zoom-reset").addEventListener("click", () => { v.zoom = 1; v.panX = 0; v.panY = 0; transform(); });

  const vp = $("#viewport");
  vp.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.deltaY !== 0) go(v.k + (e.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  let drag = null;
  vp.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, y: e.clientY, px: v.panX, py: v.panY };
    vp.classList.add("dragging");
    e.preventDefault();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    v.panX = drag.px + (e.clientX - drag.x);
    v.panY = drag.py + (e.clientY - drag.y);
    transform();
  });
  window.addEventListener("mouseup", () => { drag = null; vp.classList.remove("dragging"); });

  const reader = $("#reader");
  reader.value = window.localStorage.getItem("cadx-reader") || "";
  $("#submit-feedback").addEventListener("click", async () => {
    const status = $("#feedback-status");
    status.classList.remove("error");
    status.textContent = "saving…";
    const body = { reader: reader.value.trim(), verdict: $("#verdict").value };
    const label = $("#corrected-label").value.trim();
    const note = $("#note").value;
    if (label) body.label = label;
    if (note) body.note = note;
    try {
      const r = await fetch(api + "/feedback", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const out = await r.json();
      if (!r.ok) {
        const detail = Array.isArray(out.detail) ? out.detail.map(x => x.loc.slice(-1)[0] + ": " + x.msg).join("; ")
          : out.detail;
        throw new Error(detail || r.statusText);
      }
      window.localStorage.setItem("cadx-reader", body.reader);
      status.textContent = "saved";
      const d = await (await fetch(api, { credentials: "same-origin" })).json();
      renderFeedback(d.feedback || []);
    } catch (e) {
      status.classList.add("error");
      status.textContent = "not saved: " + e.message;
    }
  });

  load();
})();
