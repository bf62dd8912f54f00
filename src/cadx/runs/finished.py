"""Reading a finished run folder back: which model folders predict (:func:`run_models`, :func:`model_dirs`,
:func:`fold_dir`, :func:`done_folds`) and the config they were trained with (:func:`run_config`).

Light on purpose (pathlib, the config schema, json): ``cadx predict`` / ``cadx serve`` / ``cadx export`` read run
folders through here without importing what writing one needs (the data check, the splits, the report writer,
scikit-learn, Lightning); :mod:`cadx.runs.folder` imports these functions from here (one implementation).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cadx.config import ExperimentConfig, load_config
from cadx.errors import CadxDataError
from cadx.utils import read_json

__all__ = ["done_folds", "fold_dir", "model_dirs", "run_config", "run_models"]


def done_folds(run_dir: Path) -> list[Path]:
    """Fold folders of a run with a ``DONE`` marker, in fold order."""
    folds = [p for p in Path(run_dir).glob("fold_*") if (p / "DONE").is_file()]
    return sorted(folds, key=lambda p: int(read_json(p / "DONE").get("fold", 0)))


def run_models(run_dir: str | Path, allow_partial: bool = False) -> list[Path]:
    """Model folders to predict with: ``final/`` when trained, else every finished ``fold_<k>/``. A folder that
    only holds run folders (the demo's) raises an error naming them. A run with a fold of its ``splits.json``
    unfinished (no ``DONE``) raises unless ``allow_partial``, which uses the finished folds and says how many on
    stderr."""
    run_dir = Path(run_dir)
    if (run_dir / "final" / "DONE").is_file():
        return [run_dir / "final"]
    folds = done_folds(run_dir)
    if not folds:
        inner = [d for d in sorted(run_dir.iterdir()) if d.is_dir() and ((d / "final" / "DONE").is_file()
                 or done_folds(d))] if run_dir.is_dir() else []
        if inner:  # a folder of runs (e.g. the demo's): say which run folders inside it to use
            names = ", ".join(d.name for d in inner)
            raise CadxDataError(f"holds no model itself but the run folders {names}: use one of them, e.g. "
                                f"{inner[0]}", path=run_dir)
        raise CadxDataError("no trained model (no final/DONE and no fold_<k>/DONE)", path=run_dir)
    listed = run_dir / "splits.json"
    nums = [fd.get("fold", i) for i, fd in enumerate(read_json(listed).get("folds", []))] if listed.is_file() else []
    n_folds = max(len(nums), len(folds))
    done = {p.name for p in folds}
    missing = [f"fold_{k}" for k in nums if f"fold_{k}" not in done]
    if missing:
        used = f"{len(folds)} of {n_folds} folds ({', '.join(p.name for p in folds)})"
        if not allow_partial:
            raise CadxDataError(f"incomplete run: only {used} finished, {', '.join(missing)} not; finish it "
                                "(cadx cv --resume) or pass --allow-partial", path=run_dir, field="folds")
        print(f"note: {run_dir}: partial run, using {used}; unfinished: {', '.join(missing)}", file=sys.stderr)
    return folds


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """The finished ``fold_<fold>/`` of a run; CadxDataError (field ``fold``) when it is missing or unfinished."""
    for d in done_folds(Path(run_dir)):
        if d.name == f"fold_{int(fold)}":
            return d
    raise CadxDataError(f"no finished fold {fold} (fold_{fold}/DONE)", path=run_dir, field="fold")


def model_dirs(run_dir: str | Path, fold: int | None = None, allow_partial: bool = False) -> list[Path]:
    """The model folders to predict with: ``[fold_<fold>/]`` when ``fold`` is given (it must be finished), else
    :func:`run_models` (``final/`` when trained, else every finished fold; a run with an unfinished fold is
    refused unless ``allow_partial``)."""
    return run_models(run_dir, allow_partial) if fold is None else [fold_dir(run_dir, fold)]


def run_config(run_dir: Path, model_dirs: list[Path], check_options: bool = True) -> ExperimentConfig:
    """The config the models in ``model_dirs`` were trained with (``final/config.yaml`` or the run's);
    ``check_options=False``: without re-checking ``model.kwargs`` / ``data.options`` against the registries
    (:func:`cadx.config.load_config`; ``cadx predict``)."""
    p = model_dirs[0] / "config.yaml"
    return load_config(p if p.is_file() else run_dir / "config.yaml", check_options=check_options)
