"""``write_report``: one self-contained report.html (inline CSS, base64 PNGs) and a Markdown twin."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cadx.report import figures as F
from cadx.report import tables as T
from cadx.report.compare import paired_table
from cadx.report.runs import RunData, load_run
from cadx.utils import atomic_write_bytes, atomic_write_text, dumps_json

__all__ = ["write_report"]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Verbatim:
    """Free text (notes.md) copied as is: raw in Markdown, pre-wrapped text in HTML."""
    text: str


@dataclass
class Code:
    summary: str
    text: str
    lang: str = ""


@dataclass
class Fig:
    title: str
    png: bytes
    filename: str


Block = Heading | Para | Verbatim | Code | Fig | T.Table

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{border-bottom:1px solid #ccd;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}caption{font-weight:600;text-align:left;padding:.3em 0}
.note{color:#555;font-size:.85em}figure{margin:1em 0}figcaption{font-size:.85em;color:#444}
img{max-width:100%}pre{background:#f6f6f8;padding:.8em;overflow-x:auto;font-size:.85em}
.notes{white-space:pre-wrap;background:#fbfbf2;border-left:3px solid #cc9;padding:.6em}
details summary{cursor:pointer;font-weight:600}
"""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "run"


# ---- rendering ----------------------------------------------------------------------------------------

def _html_table(t: T.Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<div class="note">{e(t.note)}</div>' if t.note else ""
    return f"<table><caption>{e(t.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Verbatim):
            parts.append(f'<div class="notes">{e(b.text)}</div>')
        elif isinstance(b, Code):
            parts.append(f"<details><summary>{e(b.summary)}</summary><pre>{e(b.text)}</pre></details>")
        elif isinstance(b, Fig):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<figure><img alt="{e(b.title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(b.title)}</figcaption></figure>")
        else:
            parts.append(_html_table(b))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(t: T.Table) -> str:
    lines = [f"**{_md_cell(t.title)}**", "", "| " + " | ".join(_md_cell(c) or " " for c in t.columns) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(t.columns) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"*{t.note}*"]
    return "\n".join(lines)


def _to_md(blocks: Sequence[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para | Verbatim):
            parts.append(b.text.rstrip())
        elif isinstance(b, Code):
            parts.append(f"<details><summary>{b.summary}</summary>\n\n```{b.lang}\n{b.text.rstrip()}\n```\n\n"
                         "</details>")
        elif isinstance(b, Fig):
            parts.append(f"![{b.title}](figures/{b.filename})")
        else:
            parts.append(_md_table(b))
    return "\n\n".join(parts) + "\n"


# ---- content --------------------------------------------------------------------------------------------

def _add_table(blocks: list[Block], t: T.Table | None) -> None:
    if t is not None and t.rows:
        blocks.append(t)


def _overview(runs: Sequence[RunData], title: str) -> list[Block]:
    blocks: list[Block] = [Heading(1, title), Para("Runs: " + ", ".join(r.name for r in runs))]
    for r in runs:
        m = r.metrics
        bits = [f"{r.name}: {m.get('n_studies', T.NA)} studies, {m.get('n_patients', T.NA)} patients"]
        if r.classes:
            bits.append("classes " + ", ".join(r.classes))
        info = m.get("run") or {}
        bits += [f"{k} {info[k]}" for k in ("dataset", "model", "folds") if info.get(k) is not None]
        dec = m.get("decision") or {}
        if dec.get("rule") == "given":
            bits.append("decision: y_pred of predictions.csv")
        elif dec.get("rule") and r.classes:
            bits.append(f"decision rule {dec['rule']}")
        bs = m.get("bootstrap") or {}
        if bs.get("n_resamples"):
            bits.append(f"CIs: percentile bootstrap, {bs['n_resamples']} resamples of {bs.get('unit', 'patient')}s")
        blocks.append(Para("; ".join(bits) + "."))
    seen: list[str] = []
    fps = [(r, r.fingerprint) for r in runs if r.fingerprint]
    if fps:
        blocks.append(Heading(2, "Data"))
        for _r, fp in fps:
            key = dumps_json(fp)
            if key in seen:
                continue
            seen.append(key)
            shared = [x.name for x, f in fps if dumps_json(f) == key]
            blocks.append(T.fingerprint_table(fp, "Dataset fingerprint (" + ", ".join(shared) + ")"))
    return blocks


def _results(runs: Sequence[RunData]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Results")]
    if any("accuracy" in (r.metrics.get("pooled") or {}) for r in runs):
        blocks.append(T.comparison_table(runs))
        bs = runs[0].metrics.get("bootstrap") or {}
        n_boot = int(bs.get("n_resamples") or 2000)
        _add_table(blocks, paired_table(runs, n_resamples=n_boot, seed=int(bs.get("seed") or 0)))
        _add_table(blocks, T.per_class_table(runs))
    _add_table(blocks, T.dice_table(runs))
    _add_table(blocks, T.abe_table(runs))
    binary = [r for r in runs if len(r.classes) == 2]
    if binary:
        png = F.roc_binary_png(binary)
        if png:
            blocks.append(Fig("ROC curves (pooled test predictions, all binary runs)", png, "roc_binary.png"))
    for r in runs:
        if len(r.classes) > 2:
            png = F.roc_ovr_png(r)
            if png:
                blocks.append(Fig(f"{r.name}: one-vs-rest ROC curves", png, f"{_slug(r.name)}_roc_ovr.png"))
    return blocks


def _run_section(run: RunData) -> list[Block]:
    s = _slug(run.name)
    blocks: list[Block] = [Heading(2, f"Run {run.name}")]
    if run.notes:
        blocks += [Heading(3, "Notes"), Verbatim(run.notes)]
    blocks.append(Heading(3, "Metrics"))
    _add_table(blocks, T.fold_table(run))
    _add_table(blocks, T.splits_table(run))
    cm = T.confusion_table(run)
    if cm is not None:
        _add_table(blocks, cm)
        pooled = run.metrics.get("pooled") or {}
        classes = [c.removeprefix("pred ") for c in cm.columns[1:]]
        png = F.confusion_png(pooled["confusion_matrix"], classes, f"{run.name} (pooled)")
        blocks.append(Fig(f"{run.name}: confusion matrix (pooled)", png, f"{s}_confusion.png"))
    blocks.append(Heading(3, "Training curves"))
    curves = F.training_png(run.histories, f"{run.name}: training curves per fold")
    if curves:
        blocks.append(Fig(f"{run.name}: training curves per fold", curves, f"{s}_training.png"))
    else:
        blocks.append(Para("No training history (fold_<k>/history.csv) in this run."))
    for t in T.extra_tables(run):
        _add_table(blocks, t)
    for i, f in enumerate(run.extra("figures")):
        p = run.path / str(f.get("path", ""))
        if p.is_file() and p.suffix.lower() == ".png":
            blocks.append(Fig(str(f.get("title", p.stem)), p.read_bytes(), f"{s}_extra{i}_{_slug(p.name)}"))
        else:
            blocks.append(Para(f"Figure '{f.get('title', '')}' not found ({f.get('path')}); PNG files only."))
    if run.config_text is not None:
        blocks.append(Code(f"Resolved configuration (config.yaml, {run.name})", run.config_text, "yaml"))
    if run.missing:
        blocks.append(Para("Not in this run folder: " + ", ".join(run.missing) + "."))
    return blocks


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 title: str | None = None) -> tuple[Path, Path]:
    """Render ``report.html`` (self-contained) and ``report.md`` (+ ``figures/*.png``) for run folders.

    ``run_dirs``: one or more run folders (each needs ``metrics.json``; other files are optional).
    ``out_dir``: defaults to the run folder for one run, else ``<common parent>/report``.
    Returns ``(html_path, md_path)``. Raises CadxDataError for a folder without metrics.json.
    """
    if not run_dirs:
        raise ValueError("write_report needs at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # keep names (and figure files) unique
        if names.count(r.name) > 1:
            r.name = f"{r.name}#{i + 1}"
    if out_dir is None:
        out = (runs[0].path if len(runs) == 1 else
               Path(os.path.commonpath([str(r.path.resolve()) for r in runs])) / "report")
    else:
        out = Path(out_dir)
    figdir = out / "figures"
    title = title or "cadx report: " + ", ".join(r.name for r in runs)
    blocks = _overview(runs, title) + _results(runs)
    for r in runs:
        blocks += _run_section(r)
    for b in blocks:
        if isinstance(b, Fig):
            atomic_write_bytes(figdir / b.filename, b.png)
    html_path = atomic_write_text(out / "report.html", _to_html(blocks, title))
    md_path = atomic_write_text(out / "report.md", _to_md(blocks))
    return html_path, md_path
