"""The writers every paper study shares: its Markdown notes/summary, Markdown tables, and figure files.

A study folder holds ``notes.md`` (or ``summary.md``) written by :func:`write_study_notes`, figures written by
:func:`save_figure`, and — when it has ``metrics.json`` — the HTML/Markdown report of :func:`cadx.report.write_report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cadx.report.checklist import checklist, merge_checklists
from cadx.utils import atomic_write_text, save_figure

__all__ = ["Section", "checklist_section", "markdown_table", "new_figure", "save_figure", "study_notes_text",
           "write_study_notes"]

#: At most this many run folders enter a study's checklist (the rest are counted).
MAX_CHECKLIST_RUNS = 60
_STUDY_MULTIPLICITY = "not counted here: each table above that prints p-values states its Holm/Bonferroni correction"

#: ``(heading, body)``: heading ``None`` = no ``##`` line; body = one string or lines (bullets are written as given).
Section = tuple[str | None, str | Sequence[str]]


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub Markdown table as lines: floats with 3 decimals, None/NaN as ``–``, ``|`` escaped.

    Raises ValueError when a row's length differs from ``columns``."""
    out = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"markdown_table: row of {len(r)} cells for {len(columns)} columns: {list(r)}")
        out.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return out


def study_notes_text(title: str, sections: Sequence[Section]) -> str:
    """``# title`` then each section (``## heading`` when given) separated by blank lines; ends with a newline."""
    lines = [f"# {title}", ""]
    for heading, body in sections:
        if heading:
            lines += [f"## {heading}", ""]
        lines += [body] if isinstance(body, str) else list(body)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _run_folders(root: Path) -> list[Path]:
    """Run folders (``metrics.json`` + ``splits.json``) in ``root`` and up to three levels below, sorted."""
    found = {p.parent for depth in ("", "*/", "*/*/", "*/*/*/") for p in root.glob(f"{depth}splits.json")
             if (p.parent / "metrics.json").is_file()}
    return sorted(found)


def checklist_section(out_dir: str | Path, multiplicity: str | None = None) -> Section:
    """``("Reporting checklist", lines)`` for a study folder: :func:`cadx.report.checklist.checklist` of every run
    folder inside (at most :data:`MAX_CHECKLIST_RUNS`), merged (an answer shared by every run is printed once).
    ``multiplicity``: the study's own statement (default: each table states its correction). A study folder
    without run folders says so (its splits and CIs are those its sections describe)."""
    root = Path(out_dir)
    runs = _run_folders(root) if root.is_dir() else []
    if not runs:
        return ("Reporting checklist", "No run folder (metrics.json + splits.json) inside this study folder: the "
                                       "items are those the sections above state.")
    named = [(r.relative_to(root).as_posix() or ".", checklist(r, multiplicity or _STUDY_MULTIPLICITY))
             for r in runs[:MAX_CHECKLIST_RUNS]]
    more = len(runs) - len(named)
    lines = [f"TRIPOD+AI / CLAIM items read from the {len(named)} run folder(s) of this study"
             + (f" (and {more} more not shown)" if more else "") + "; an answer shared by every run is printed once.",
             "", *markdown_table(["Item", "Answer"], merge_checklists(named))]
    return ("Reporting checklist", lines)


def write_study_notes(out_dir: str | Path, title: str, sections: Sequence[Section],
                      filename: str = "notes.md", with_checklist: bool = True) -> Path:
    """Write :func:`study_notes_text` atomically to ``out_dir/filename`` (``notes.md``, or ``summary.md``), with
    the reporting checklist (:func:`checklist_section`) as the last section when the study folder holds run folders,
    unless ``with_checklist`` is False or the sections already end with one. A study without run folders (its own
    splits, e.g. the point systems) gets none here: its sections state them."""
    secs = list(sections)
    root = Path(out_dir)
    if (with_checklist and not (secs and secs[-1][0] == "Reporting checklist") and root.is_dir()
            and _run_folders(root)):
        secs.append(checklist_section(root))
    return atomic_write_text(Path(out_dir) / filename, study_notes_text(title, secs))


def new_figure(width: float, height: float) -> Figure:
    """An unattached matplotlib figure (no pyplot state, safe in threads and without a display)."""
    return Figure(figsize=(width, height))

