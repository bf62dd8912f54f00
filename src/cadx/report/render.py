"""``write_report``: one self-contained report.html (inline CSS, base64 PNGs) and a Markdown twin."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from cadx.errors import CadxDataError
from cadx.report import figures as F
from cadx.report import tables as T
from cadx.report.calibration import calibration_section
from cadx.report.checklist import checklist, run_warnings
from cadx.report.compare import paired_table
from cadx.report.external import external_results, external_tables
from cadx.report.runs import RunData, expand_run_dirs, load_run
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
    """Markdown text (a run's notes.md): rendered to HTML elements (CommonMark + tables, raw HTML escaped);
    copied into the Markdown twin. Headings move ``shift`` levels down in both (capped at 6)."""
    text: str
    shift: int = 0


@dataclass
class Code:
    summary: str
    text: str
    lang: str = ""


@dataclass
class Fig:
    """A figure: inlined in HTML; in Markdown ``figures/<filename>`` (written with the report), or ``link``
    (a path relative to the report folder) for a PNG that already lies inside that folder."""
    title: str
    png: bytes
    filename: str
    link: str | None = None


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
.notes{background:#fbfbf2;border-left:3px solid #cc9;padding:.1em .8em}.notes table td{text-align:left}
details summary{cursor:pointer;font-weight:600}
"""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "run"


# ---- rendering ----------------------------------------------------------------------------------------

_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def _notes_html(text: str, shift: int) -> str:
    """notes.md → HTML elements (``<h*>``, ``<p>``, ``<ul>``, ``<table>``, ``<pre><code>``); raw HTML is escaped."""
    tokens = _MD.parse(text)
    for t in tokens:
        if t.type in ("heading_open", "heading_close"):
            t.tag = f"h{min(6, int(t.tag[1:]) + shift)}"
    return _MD.renderer.render(tokens, _MD.options, {})


def _notes_md(text: str, shift: int) -> str:
    """notes.md for the Markdown twin: ATX/setext headings rewritten ``shift`` levels down (capped at 6)."""
    lines = text.rstrip().splitlines()
    tokens = _MD.parse(text)
    for i, t in enumerate(tokens):
        if t.type == "heading_open" and t.map and shift:
            start, end = t.map
            level = min(6, int(t.tag[1:]) + shift)
            lines[start:end] = ["#" * level + " " + tokens[i + 1].content] + [""] * (end - start - 1)
    return "\n".join(lines)

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
            parts.append(f'<div class="notes">{_notes_html(b.text, b.shift)}</div>')
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
        elif isinstance(b, Para):
            parts.append(b.text.rstrip())
        elif isinstance(b, Verbatim):
            parts.append(_notes_md(b.text, b.shift))
        elif isinstance(b, Code):
            parts.append(f"<details><summary>{b.summary}</summary>\n\n```{b.lang}\n{b.text.rstrip()}\n```\n\n"
                         "</details>")
        elif isinstance(b, Fig):
            parts.append(f"![{b.title}]({b.link or 'figures/' + b.filename})")
        else:
            parts.append(_md_table(b))
    return "\n\n".join(parts) + "\n"


# ---- content --------------------------------------------------------------------------------------------

def _add_table(blocks: list[Block], t: T.Table | None) -> None:
    if t is not None and t.rows:
        blocks.append(t)


def _warnings(runs: Sequence[RunData]) -> list[Block]:
    """The report's first lines: :func:`cadx.report.checklist.run_warnings` of each run (degenerate sensitivity /
    specificity, zero-width CIs, skipped bootstrap resamples, external cohorts overlapping training)."""
    lines = [f"WARNING ({r.name}): {w}" for r in runs
             for w in run_warnings(r.metrics, external_results(r.path))]
    return [Para(line) for line in lines]


def _checklist(runs: Sequence[RunData], blocks: Sequence[Block]) -> list[Block]:
    """The reporting checklist (:func:`cadx.report.checklist.checklist`) of each run, last in the report; the
    multiplicity item counts the p-values of this report's paired table."""
    paired = [b for b in blocks if isinstance(b, T.Table) and b.title.startswith("Paired bootstrap comparison")]
    n = sum(2 * len(t.rows) for t in paired)
    comparisons = (n, "Holm and Bonferroni adjusted over the paired table's p-values") if n else None
    out: list[Block] = [Heading(2, "Reporting checklist")]
    for r in runs:
        items = checklist(r.path, comparisons)
        out.append(T.Table(f"{r.name}: reporting checklist (TRIPOD+AI / CLAIM items read from the run folder)",
                           ["Item", "Answer"], [[k, v] for k, v in items]))
    return out


def _overview(runs: Sequence[RunData], title: str) -> list[Block]:
    blocks: list[Block] = [Heading(1, title), *_warnings(runs), Para("Runs: " + ", ".join(r.name for r in runs))]
    for r in runs:
        m = r.metrics
        pooled = m.get("pooled") or {}
        counts = [f"{n} {what}" for key, what in (("n_studies", "studies"), ("n_patients", "patients"))
                  if (n := m.get(key, pooled.get(key))) is not None]
        bits = [f"{r.name}: " + ", ".join(counts)] if counts else [r.name]
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
    _add_table(blocks, T.lesion_split_table(runs))
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


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (POSIX) when it lies inside it, else None."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def _selection_table(run: RunData) -> T.Table | None:
    """"Which data chose what": one row per entry of ``metrics.json`` ``selection`` (epoch, decision,
    calibration, ...) with the split that made the choice, the rule and its per-fold values; the note says how the
    test items were used. None when the run records no selection (older runs)."""
    sel = run.metrics.get("selection")
    if not isinstance(sel, dict) or not sel:
        return None
    rows = []
    for key, e in sel.items():
        if not isinstance(e, dict):
            continue
        vals = e.get("values") if isinstance(e.get("values"), dict) else None
        value = (", ".join(f"fold {k}: {T.fmt(v)}" for k, v in vals.items()) if vals
                 else T.fmt(e["value"]) if "value" in e and not isinstance(e["value"], dict | list) else "")
        rows.append([str(key), str(e.get("split", "none")), str(e.get("rule", "")), value])
    note = f"Test items: {sel['test_used']}." if sel.get("test_used") else ""
    if sel.get("folds_without_record"):
        note += f" Folds without a record: {', '.join(map(str, sel['folds_without_record']))}."
    return T.Table(f"{run.name}: which data chose what", ["Choice", "Split", "Rule", "Value"], rows,
                   note=note.strip())


def _run_section(run: RunData, out: Path) -> list[Block]:
    s = _slug(run.name)
    blocks: list[Block] = [Heading(2, f"Run {run.name}")]
    if run.notes:
        blocks += [Heading(3, "Notes"), Verbatim(run.notes, shift=3)]
    blocks.append(Heading(3, "Metrics"))
    _add_table(blocks, T.fold_table(run))
    _add_table(blocks, T.splits_table(run))
    _add_table(blocks, _selection_table(run))
    cm = T.confusion_table(run)
    if cm is not None:
        _add_table(blocks, cm)
        pooled = run.metrics.get("pooled") or {}
        classes = [c.removeprefix("pred ") for c in cm.columns[1:]]
        png = F.confusion_png(pooled["confusion_matrix"], classes, f"{run.name} (pooled)")
        blocks.append(Fig(f"{run.name}: confusion matrix (pooled)", png, f"{s}_confusion.png"))
    cal = calibration_section(run)  # Brier, ECE with CIs, scaling per fold, reliability diagram
    if cal is not None:
        blocks += [Heading(3, "Calibration"), Para(cal.text), cal.table]
        blocks += [Fig(cal.title, cal.png, f"{s}_reliability.png")] if cal.png else []
    blocks.append(Heading(3, "Training curves"))
    curves = F.training_png(run.histories, f"{run.name}: training curves per fold")
    if curves:
        if not F.has_validation(run.histories):
            blocks.append(Para("No validation set in this run (no validation loss, AUC or accuracy in "
                               "fold_<k>/history.csv): the panel shows the training loss only."))
        blocks.append(Fig(f"{run.name}: training curves per fold", curves, f"{s}_training.png"))
    elif run.histories:
        blocks.append(Para("The training histories (fold_<k>/history.csv) hold no loss or validation values."))
    else:
        blocks.append(Para("No training history (fold_<k>/history.csv) in this run."))
    for t in T.extra_tables(run):
        _add_table(blocks, t)
    for i, f in enumerate(run.extra("figures")):
        p = run.path / str(f.get("path", ""))
        if p.is_file() and p.suffix.lower() == ".png":
            blocks.append(Fig(str(f.get("title", p.stem)), p.read_bytes(), f"{s}_extra{i}_{_slug(p.name)}",
                              link=_inside(p, out)))
        else:
            blocks.append(Para(f"Figure '{f.get('title', '')}' not found ({f.get('path')}); PNG files only."))
    external = external_tables(run)
    if external:
        blocks += [Heading(3, "External validation"), *external]
    if run.config_text is not None:
        blocks.append(Code(f"Resolved configuration (config.yaml, {run.name})", run.config_text, "yaml"))
    if run.missing:
        blocks.append(Para("Not in this run folder: " + ", ".join(run.missing) + "."))
    return blocks


# ---- the no-overwrite rule --------------------------------------------------------------------------------

_META = re.compile(r'<meta name="cadx-report" content="([^"]*)">')
_MD_META = re.compile(r"<!-- cadx-report (\{.*?\}) -->")
_MD_TABLE_RULE = re.compile(r"^\|[\s:|-]*-[\s:|-]*\|\s*$", re.M)


@dataclass
class _Holds:
    """What a report holds: its runs (None: a file cadx did not write) and its items (tables, figures, notes)."""
    runs: list[str] | None
    items: int


def _holds(runs: Sequence[RunData], blocks: Sequence[Block]) -> _Holds:
    items = sum(isinstance(b, Fig | Verbatim) or (isinstance(b, T.Table) and bool(b.rows)) for b in blocks)
    return _Holds([r.name for r in runs], int(items))


def _old_holds(path: Path) -> _Holds | None:
    """What an existing report.html/.md holds: from its cadx-report marker, else (reports written before the
    marker) its ``Runs:`` line and a count of its tables, images and notes. None when there is no file."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    is_html = path.suffix == ".html"
    m = (_META if is_html else _MD_META).search(text)
    if m:
        try:
            meta = json.loads(html.unescape(m.group(1)))
            return _Holds([str(x) for x in meta["runs"]], int(meta["items"]))
        except (ValueError, KeyError, TypeError):
            pass
    runs_line = re.search(r"^(?:<p>)?Runs: (.*?)(?:</p>)?$", text, re.M)
    if is_html:
        items = text.count("<table") + text.count("<img") + text.count('class="notes"')
    else:
        items = len(_MD_TABLE_RULE.findall(text)) + text.count("![")
    runs = [html.unescape(x).strip() for x in runs_line.group(1).split(",")] if runs_line else None
    return _Holds(runs, items)


def _check_no_loss(out: Path, new: _Holds) -> None:
    """Refuse (CadxDataError naming the file) to replace a report that names a run the new one lacks, holds
    more items, or was not written by cadx."""
    hint = "pass --force to replace it or --out to write elsewhere"
    new_runs = new.runs or []
    for f in (out / "report.html", out / "report.md"):
        old = _old_holds(f)
        if old is None:
            continue
        if old.runs is None:
            raise CadxDataError(f"exists and was not written by cadx report; {hint}", path=f)
        lost = [r for r in old.runs if r not in new_runs]
        if lost:
            raise CadxDataError(f"holds a report of {', '.join(lost)}, which this one ({', '.join(new_runs)}) "
                                f"would drop; {hint}", path=f)
        if old.items > new.items:
            raise CadxDataError(f"holds a richer report ({old.items} tables/figures/notes) than this one "
                                f"({new.items}); {hint}", path=f)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 title: str | None = None, *, keep_richer: bool = False) -> tuple[Path, Path]:
    """Render ``report.html`` (self-contained) and ``report.md`` (+ ``figures/*.png``) for run folders.

    ``run_dirs``: run folders (each needs a ``metrics.json`` with results; other files are optional) or folders
    of runs (e.g. ``runs/demo``: every run folder directly inside is reported, see
    :func:`cadx.report.runs.expand_run_dirs`).
    ``out_dir``: defaults to the folder given when there is one (a run or a folder of runs), else
    ``<common parent>/report``.
    ``keep_richer`` (``cadx report`` sets it unless --force): an existing report in ``out_dir`` that names a run
    this one lacks, holds more tables/figures/notes, or was not written by cadx is kept, and CadxDataError
    raised. Off for the pipelines, which report the folder whose results they have just written.
    Everything is rendered before anything is written; each file goes through a temporary file + rename
    (figures first, then report.html, then report.md), so a failure never leaves half a file.
    Returns ``(html_path, md_path)``. Raises CadxDataError for a folder that is neither a run nor holds runs.
    """
    if not run_dirs:
        raise ValueError("write_report needs at least one run folder")
    runs = [load_run(d) for d in expand_run_dirs(list(run_dirs))]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # keep names (and figure files) unique
        if names.count(r.name) > 1:
            r.name = f"{r.name}#{i + 1}"
    if out_dir is not None:
        out = Path(out_dir)
    elif len(run_dirs) == 1:
        out = Path(run_dirs[0])
    else:
        out = Path(os.path.commonpath([str(r.path.resolve()) for r in runs])) / "report"
    figdir = out / "figures"
    title = title or "cadx report: " + ", ".join(r.name for r in runs)
    blocks = _overview(runs, title) + _results(runs)
    for r in runs:
        blocks += _run_section(r, out)
    blocks += _checklist(runs, blocks)
    holds = _holds(runs, blocks)
    if keep_richer:
        _check_no_loss(out, holds)
    meta = json.dumps({"runs": holds.runs, "items": holds.items}, ensure_ascii=False)
    page = _to_html(blocks, title).replace(
        "<title>", f'<meta name="cadx-report" content="{html.escape(meta)}"><title>', 1)
    md_text = f"<!-- cadx-report {meta} -->\n" + _to_md(blocks)
    for b in blocks:
        if isinstance(b, Fig) and b.link is None:
            atomic_write_bytes(figdir / b.filename, b.png)
    html_path = atomic_write_text(out / "report.html", page)
    md_path = atomic_write_text(out / "report.md", md_text)
    return html_path, md_path
