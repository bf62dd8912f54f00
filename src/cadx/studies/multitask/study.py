"""Thesis A.6 multi-task study: single- vs multi-task CNN on the same patient folds, model vs readers, risk levels.

:func:`run_multitask_study` cross-validates the two variants of :mod:`cadx.studies.multitask.variants` through
the engine (:func:`cadx.runs.cv.run_cv`, one run folder per variant under ``out_dir``; the ``single`` variant
copies the ``multitask`` variant's ``splits.json``, so both see the same patient folds), then
:mod:`cadx.studies.multitask.tables` writes the AUC comparison (paired patient bootstrap), the reader comparison
and the risk-level table into ``out_dir`` (``metrics.json``, ``notes.md``, ``report.md``/``report.html``, CSVs).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig
from cadx.errors import CadxConfigError
from cadx.runs.cv import run_cv
from cadx.runs.folder import finished_run
from cadx.studies.multitask.tables import build_study_outputs
from cadx.studies.multitask.variants import VARIANTS, StudyConfig, variant_config
from cadx.utils import read_json

__all__ = ["run_multitask_study", "run_variant"]


def run_variant(cfg: ExperimentConfig, out_dir: Path, splits_from: Path | None) -> dict[str, Any]:
    """Run one variant into ``out_dir`` (a finished run of the same config is reused; a started one resumes),
    copying ``splits_from`` there first when given; returns its metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if finished_run(cfg, out_dir):
        return read_json(out_dir / "metrics.json")
    if splits_from is not None and not (out_dir / "splits.json").is_file():
        shutil.copyfile(splits_from, out_dir / "splits.json")
    return run_cv(cfg, out_dir, resume=True)


def run_multitask_study(cfg: StudyConfig, out_dir: str | Path,
                        variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, Any]:
    """Run the study into ``out_dir`` (resumable: finished variants are reused) and return its metrics dict.

    ``cfg``: :class:`~cadx.studies.multitask.variants.StudyConfig` (``configs/papers/multitask_lidc.yaml``).
    ``variants``: which of :data:`~cadx.studies.multitask.variants.VARIANTS` to run (``multitask`` is required;
    without ``single`` there is no single- vs multi-task comparison, and the notes say so).
    The reader comparison needs per-reader ratings in each study's ``metadata["ratings"]["malignancy"]`` (the
    LIDC adapter provides them); without them that table is skipped and the notes say so.
    """
    t0 = time.perf_counter()
    unknown = [v for v in variants if v not in VARIANTS]
    if "multitask" not in variants or unknown:
        raise CadxConfigError(f"variants must include 'multitask' and come from {sorted(VARIANTS)}, got "
                              f"{list(variants)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    splits_from: Path | None = None
    for v in [v for v in VARIANTS if v in variants]:
        tv = time.perf_counter()
        results[v] = run_variant(variant_config(cfg.experiment, v), out / v, splits_from)
        seconds[v] = float(results[v].get("run", {}).get("seconds", round(time.perf_counter() - tv, 2)))
        splits_from = out / "multitask" / "splits.json"
    return build_study_outputs(cfg, out, results, seconds, t0=t0)
