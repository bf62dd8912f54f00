"""Patient-level cross-validation: ``run_cv(cfg, out_dir, resume)`` → run folder (see docs/contracts.md).

The run kind (:func:`cadx.runs.kinds.kind_of`) picks the registered runner; every runner writes the same folder
through :mod:`cadx.runs.folder` (the one fold loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig
from cadx.errors import CadxConfigError
from cadx.models.catalog import model_module
from cadx.runs import detection, handcrafted, network, segmentation  # noqa: F401  (register the built-in run kinds)
from cadx.runs.executors import Executor
from cadx.runs.kinds import RUN_KINDS, kind_of


def run_cv(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False,
           executor: Executor | None = None) -> dict[str, Any]:
    """Cross-validate ``cfg`` into ``out_dir`` and return the metrics dict (``pooled``, ``folds``, ...).

    ``resume``: folds with a ``DONE`` marker are skipped; an unfinished fold continues from its
    ``checkpoint_last.ckpt``; the config must equal the one saved in the folder. Without ``resume`` a folder that
    already holds fold results is refused. An existing ``splits.json`` is reused (and checked).

    ``executor``: where the folds run (:mod:`cadx.runs.executors`: serial in this process by default, or Ray
    tasks); the folder and its numbers are the same either way. Its :meth:`~cadx.runs.executors.Executor.start`
    is called first, so a Ray instance starts and warms its workers while the cohort is loaded and checked.

    ``cfg.cv.final`` (network runs; else refused before anything runs): the final model too, in ``final/``.
    """
    kind = kind_of(cfg)
    if cfg.cv.final and kind != "network":
        raise CadxConfigError(f"cv.final: only network runs train a final model (this config is a {kind} run)")
    runner = RUN_KINDS.get(kind)
    if executor is None:
        return runner(cfg, out_dir, resume)
    start_executor(executor, cfg)  # Ray warms up while the cohort loads
    return runner(cfg, out_dir, resume, executor=executor)


def start_executor(executor: Executor, cfg: ExperimentConfig) -> None:
    """:meth:`~cadx.runs.executors.Executor.start` with the module that registers ``cfg``'s model, so Ray's
    workers import it while the driver works (no-op for the serial executor)."""
    module = model_module(cfg.model.name)
    executor.start([module] if module else [])
