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

from cadx.utils import atomic_write_text, save_figure

__all__ = ["Section", "markdown_table", "new_figure", "save_figure", "study_notes_text", "write_study_notes"]

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


def write_study_notes(out_dir: str | Path, title: str, sections: Sequence[Section],
                      filename: str = "notes.md") -> Path:
    """Write :func:`study_notes_text` atomically to ``out_dir/filename`` (``notes.md``, or ``summary.md``)."""
    return atomic_write_text(Path(out_dir) / filename, study_notes_text(title, sections))


def new_figure(width: float, height: float) -> Figure:
    """An unattached matplotlib figure (no pyplot state, safe in threads and without a display)."""
    return Figure(figsize=(width, height))

