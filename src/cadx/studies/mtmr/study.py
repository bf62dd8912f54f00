"""MTMR-Net (Liu et al., IEEE TMI 2019) study on LIDC-IDRI: Tables II–IV, Fig. 4 cards and Fig. 5 t-SNE.

:func:`run_mtmr_study` cross-validates the variants of :mod:`cadx.studies.mtmr.variants` through the engine
(:func:`cadx.runs.cv.run_cv`, one run folder per variant under ``out_dir``), all on the **same** patient-level
splits (the first variant's ``splits.json`` is copied to the others). Then :mod:`cadx.studies.mtmr.tables` writes
Table III (ABE per attribute: MTMR-Net, LASSO and elastic net on handcrafted and CNN-embedding features fitted per
fold, the inter-reader row IB), Table IV (RFE relatedness on the predicted attributes), Fig. 5 and Fig. 4-style
cards into ``out_dir/metrics.json`` (``extra.tables``/``extra.figures``), ``notes.md`` and one report.
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
from cadx.studies.mtmr.tables import build_study_outputs
from cadx.studies.mtmr.variants import VARIANTS, variant_config
from cadx.utils import read_json

__all__ = ["run_mtmr_study", "run_variant"]


def run_variant(cfg: ExperimentConfig, out_dir: Path, splits_from: Path | None) -> dict[str, Any]:
    """Run one variant into ``out_dir`` (a finished run of the same config is reused; a started one resumes),
    copying ``splits_from`` there first when given; returns its metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if finished_run(cfg, out_dir):
        return read_json(out_dir / "metrics.json")
    if splits_from is not None and not (out_dir / "splits.json").is_file():
        shutil.copyfile(splits_from, out_dir / "splits.json")
    return run_cv(cfg, out_dir, resume=True)


def run_mtmr_study(cfg: ExperimentConfig, out_dir: str | Path, variants: Sequence[str] = tuple(VARIANTS),
                   regressors: bool = True) -> dict[str, Any]:
    """Run the study into ``out_dir`` (resumable: finished variants are reused) and return its metrics dict.

    ``cfg``: the MTMR experiment config (``configs/papers/mtmr_lidc.yaml``). ``variants``: which of
    :data:`~cadx.studies.mtmr.variants.VARIANTS` to run (``mtmr`` is required: Tables III/IV and the figures use
    it). ``regressors``: fit the LASSO/elastic-net baselines of Table III (the slow part after training).
    """
    t0 = time.perf_counter()
    if "mtmr" not in variants:
        raise CadxConfigError("variants must include 'mtmr'")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise CadxConfigError(f"unknown MTMR variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    splits_from: Path | None = None
    for v in ["mtmr", *[v for v in variants if v != "mtmr"]]:
        tv = time.perf_counter()
        results[v] = run_variant(variant_config(cfg, v), out / v, splits_from)
        seconds[v] = float(results[v].get("run", {}).get("seconds", round(time.perf_counter() - tv, 2)))
        splits_from = out / "mtmr" / "splits.json"
    return build_study_outputs(cfg, out, results, seconds, regressors=regressors, t0=t0)
