"""Issue #6 measurements: U-Net (A.3) and SCNet on LGG and BUSI through the engine, reduced for a CPU.

Each run of :data:`~cadx.studies.segmentation.variants.RUNS` is a normal ``cadx cv`` run folder under
``work_dir/<name>`` (resumable); after each run :func:`~cadx.studies.segmentation.tables.summarize` writes
``summary.json``/``summary.md`` into ``results_dir`` with per-run Dice (mean, median, 95 % CIs), accuracy, wall
time and input size, the paired 2-step comparison and the BUSI grouped-vs-naive inflation, beside copies of each
run's small files (metrics, predictions, notes, figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cadx.runs.cv import run_cv
from cadx.studies.segmentation.tables import compare_paired, summarize
from cadx.studies.segmentation.variants import resolve_names, run_config
from cadx.utils import atomic_write_text, read_json

__all__ = ["compare_paired", "run_one", "run_segmentation_study"]


def run_one(name: str, work_dir: Path, project: Path) -> dict[str, Any]:
    """Run (or resume) one named run into ``work_dir/name``; a run the study finished before is not rerun.
    Returns its metrics."""
    out = work_dir / name
    if (out / "metrics.json").is_file() and (out / "DONE_STUDY").is_file():
        return read_json(out / "metrics.json")
    m = run_cv(run_config(name, project), out, resume=out.exists())
    atomic_write_text(out / "DONE_STUDY", "done\n")
    return m


def run_segmentation_study(work_dir: str | Path, results_dir: str | Path, names: Sequence[str] | None = None,
                           project: str | Path = ".",
                           on_run: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the named runs (run or group names, see :func:`~cadx.studies.segmentation.variants.resolve_names`;
    default all, in order), summarising into ``results_dir`` after each; ``on_run(name, metrics)`` is called after
    each run. Returns the summary (``runs``, ``comparisons``)."""
    work, res, proj = Path(work_dir), Path(results_dir), Path(project).resolve()
    res.mkdir(parents=True, exist_ok=True)
    for name in resolve_names(list(names or [])):
        m = run_one(name, work, proj)
        if on_run is not None:
            on_run(name, m)
        summarize(work, res)
    return summarize(work, res)
