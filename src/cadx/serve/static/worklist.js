// The worklist: GET /api/studies (sorted, filtered server-side), refreshed while predictions run.
"use strict";
(() => {
  const state = { sort: "risk", order: "desc", q: "", status: "" };
  const tbody = document.querySelector("table#worklist tbody");
  let timer = null;
  let seq = 0;

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function render(data) {
    const frag = document.createDocumentFragment();
    for (const s of data.studies) {
      const tr = document.createElement("tr");
      tr.className = "study-row";
      tr.dataset.studyId = s.id;
      tr.dataset.risk = s.probability == null ? "" : String(s.probability);
      tr.dataset.status = s.status;
      cell(tr, s.patient);
      cell(tr, s.date);
      cell(tr, s.probability == null ? (s.error ? "—" : "pending") : s.probability.toFixed(2), "risk");
      cell(tr, s.wording || "");
      cell(tr, s.model);
      const attrs = Object.entries(s.attributes || {}).map(([k, v]) => `${k} ${Number(v).toFixed(2)}`);
      cell(tr, attrs.join(", "));
      cell(tr, s.status, "status-" + s.status);
      cell(tr, s.error || "", "error");
      tr.addEventListener("click", () => { window.location.href = "/study/" + encodeURIComponent(s.id); });
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    document.querySelector("#pending-count").textContent = String(data.pending);
    const box = document.querySelector("#messages");
    box.replaceChildren(...(data.messages || []).map(m => {
      const d = document.createElement("div"); d.textContent = m; return d;
    }));
    document.querySelector("#risk-arrow").textContent =
      state.sort === "risk" ? (state.order === "desc" ? "▼" : "▲") : "";
  }

  async function load() {
    const my = ++seq;
    const p = new URLSearchParams({ sort: state.sort, order: state.order });
    if (state.q) p.set("q", state.q);
    if (state.status) p.set("status", state.status);
    try {
      const r = await fetch("/api/studies?" + p.toString(), { credentials: "same-origin" });
      if (!r.ok) throw new Error((await r.json()).detail || r.statusText);
      const data = await r.json();
      if (my === seq) render(data);
      const j = await (await fetch("/api/jobs", { credentials: "same-origin" })).json();
      document.querySelector("#jobs").textContent =
        `predicted ${j.done} / ${j.total}` + (j.running ? " (worker running)" : "");
      schedule(j.done < j.total || j.running ? 1500 : 10000);
    } catch (e) {
      const box = document.querySelector("#messages");
      const d = document.createElement("div"); d.textContent = "cannot load the worklist: " + e.message;
      box.replaceChildren(d);
      schedule(5000);
    }
  }

  function schedule(ms) { clearTimeout(timer); timer = setTimeout(load, ms); }

  document.querySelector("th#sort-risk").addEventListener("click", () => {
    state.order = state.sort === "risk" && state.order === "desc" ? "asc" : "desc";
    state.sort = "risk";
    load();
  });
  for (const id of ["sort-patient", "sort-date"]) {
    const th = document.getElementById(id);
    th.addEventListener("click", () => {
      state.order = state.sort === th.dataset.sort && state.order === "asc" ? "desc" : "asc";
      state.sort = th.dataset.sort;
      load();
    });
  }
  let debounce = null;
  document.querySelector("input#filter").addEventListener("input", (e) => {
    state.q = e.target.value.trim();
    clearTimeout(debounce);
    debounce = setTimeout(load, 150);
  });
  document.querySelector("select#status-filter").addEventListener("change", (e) => {
    state.status = e.target.value;
    load();
  });
  document.querySelector("#upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.querySelector("#upload");
    const out = document.querySelector("#upload-status");
    if (!input.files.length) { out.textContent = "choose a DICOM file first"; return; }
    const fd = new FormData();
    fd.append("file", input.files[0]);
    const r = await fetch("/api/upload", { method: "POST", body: fd, credentials: "same-origin" });
    const body = await r.json();
    out.textContent = r.ok ? "uploaded" : ("refused: " + (body.detail || r.statusText));
    load();
  });
  fetch("/api/runs", { credentials: "same-origin" }).then(r => r.json()).then(d => {
    document.querySelector("#runs").textContent =
      "runs: " + d.runs.map(r => `${r.name} (${r.kind}, v ${r.version})`).join(", ");
  }).catch(() => {});
  load();
})();
