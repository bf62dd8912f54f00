"""``cadx study detection CONFIG --out DIR``: the A.8 detector cross-validated with each objectness loss.

Each loss variant (:func:`~cadx.studies.detection.variants.loss_variants`) is a normal ``detection`` run folder
``DIR/runs/<name>`` (``cadx cv`` through :func:`cadx.runs.cv.run_cv`, same seed and patient-level splits for
every loss); a finished run with the same config is reused, an interrupted one resumed. After each run
:func:`~cadx.studies.detection.tables.write_tables` rewrites ``DIR/report.md``, ``DIR/summary.json`` and
``DIR/froc_<unit>.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig
from cadx.runs.cv import run_cv
from cadx.runs.executors import Executor
from cadx.runs.folder import finished_run
from cadx.studies.detection.tables import write_tables
from cadx.studies.detection.variants import loss_variants
from cadx.utils import read_json

__all__ = ["run_detection_study", "run_variant"]


def run_variant(vcfg: ExperimentConfig, run_dir: Path, executor: Executor | None = None) -> dict[str, Any]:
    """One loss variant into ``run_dir``: a finished run of the same config is reused, a started one resumed;
    its folds run on ``executor`` (default serial). Returns its metrics."""
    if finished_run(vcfg, run_dir):
        return read_json(run_dir / "metrics.json")
    return run_cv(vcfg, run_dir, resume=run_dir.exists() and (run_dir / "config.yaml").is_file(), executor=executor)


def run_detection_study(cfg: ExperimentConfig, out_dir: str | Path, losses: Sequence[str] | None = None,
                        main: str = "focal",
                        on_run: Callable[[str, dict[str, Any]], None] | None = None,
                        executor: Executor | None = None) -> dict[str, Any]:
    """Run (or reuse / resume) every loss variant of ``cfg`` into ``out_dir/runs/<name>`` and write the tables;
    ``main`` is the loss whose full FROC table leads the report (the paper's selected model: focal). Returns the
    summary (:func:`~cadx.studies.detection.tables.write_tables`).

    ``executor`` (:mod:`cadx.runs.executors`): with Ray every variant is a coordinator task (no CPU reserved) that
    holds its own run folder's lock and runs that variant's folds as Ray tasks, so variants × folds run side by
    side; tables are rewritten as each variant finishes (in variant order). Serial (default): one after another."""
    out = Path(out_dir)
    variants = loss_variants(cfg, losses)
    runs: dict[str, Path] = {}
    if executor is not None and executor.name != "serial":
        names = list(variants)
        calls = [(vcfg, out / "runs" / vcfg.name, executor.nested()) for vcfg in variants.values()]
        for i, m in executor.map(run_variant, calls, labels=names, cpus=0, description="variants"):
            runs[names[i]] = calls[i][1]
            runs = {k: runs[k] for k in names if k in runs}
            if on_run is not None:
                on_run(names[i], m)
            write_tables(cfg, runs, out, main=main)
        return write_tables(cfg, runs, out, main=main)
    for short, vcfg in variants.items():
        rd = out / "runs" / vcfg.name
        if finished_run(vcfg, rd):
            m = read_json(rd / "metrics.json")
        else:
            m = run_cv(vcfg, rd, resume=rd.exists() and (rd / "config.yaml").is_file())
        runs[short] = rd
        if on_run is not None:
            on_run(short, m)
        write_tables(cfg, runs, out, main=main)
    return write_tables(cfg, runs, out, main=main)
