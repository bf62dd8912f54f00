"""Reading a run folder (docs/contracts.md "Run folder") into one object for the report."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cadx.errors import CadxDataError

__all__ = ["RunData", "expand_run_dirs", "is_run_folder", "load_run"]

# metrics.json keys that make a folder a run folder (something to report), not a folder of runs
_RESULT_KEYS = ("pooled", "folds", "extra", "tables", "figures")


@dataclass
class RunData:
    """Everything the report shows about one run; optional parts are None/empty when absent."""

    name: str
    path: Path
    metrics: dict[str, Any]
    config_text: str | None = None
    fingerprint: dict[str, Any] | None = None
    splits: dict[str, Any] | None = None
    predictions: pd.DataFrame | None = None
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: str | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        cls = self.metrics.get("classes") or self.metrics.get("pooled", {}).get("classes") or []
        return [str(c) for c in cls]

    def extra(self, kind: str) -> list[dict[str, Any]]:
        """Paper-specific ``tables``/``figures`` from metrics.json (``extra.<kind>`` or top-level ``<kind>``)."""
        items = list(self.metrics.get(kind) or [])
        ex = self.metrics.get("extra")
        if isinstance(ex, dict):
            items += list(ex.get(kind) or [])
        return [i for i in items if isinstance(i, dict)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CadxDataError(f"invalid JSON ({e.msg}, line {e.lineno})", path=path) from None


def load_run(path: str | Path) -> RunData:
    """Load a run folder. ``metrics.json`` is required (CadxDataError otherwise); every other file is optional
    and its absence is recorded in ``RunData.missing``."""
    p = Path(path)
    if not p.is_dir():
        raise CadxDataError("run folder does not exist", path=p)
    mpath = p / "metrics.json"
    if not mpath.is_file():
        raise CadxDataError("no metrics.json (run not evaluated yet?)", path=p)
    metrics = _read_json(mpath)
    if not isinstance(metrics, dict):
        raise CadxDataError("metrics.json must hold an object", path=mpath)
    run = RunData(name=p.resolve().name, path=p, metrics=metrics)
    for fname, attr in (("fingerprint.json", "fingerprint"), ("splits.json", "splits")):
        f = p / fname
        if f.is_file():
            setattr(run, attr, _read_json(f))
        else:
            run.missing.append(fname)
    for fname, attr in (("config.yaml", "config_text"), ("notes.md", "notes")):
        f = p / fname
        if f.is_file():
            setattr(run, attr, f.read_text(encoding="utf-8"))
        elif fname == "config.yaml":
            run.missing.append(fname)
    f = p / "predictions.csv"
    if f.is_file():
        run.predictions = pd.read_csv(f, dtype={"y_true": str, "y_pred": str, "study_id": str,
                                                "patient_id": str})
    else:
        run.missing.append("predictions.csv")
    fold_dirs = sorted((d for d in p.glob("fold_*") if d.is_dir() and re.fullmatch(r"fold_\d+", d.name)),
                       key=lambda d: int(d.name.split("_")[1]))
    for d in fold_dirs:
        h = d / "history.csv"
        if h.is_file():
            run.histories[d.name.split("_")[1]] = pd.read_csv(h)
    if not run.histories:
        run.missing.append("fold_*/history.csv")
    return run


def is_run_folder(path: str | Path) -> bool:
    """True when ``path/metrics.json`` holds something to report (``pooled``, ``folds``, ``extra``, ``tables`` or
    ``figures``); False for a missing or unreadable metrics.json and for a folder-of-runs summary (the demo's)."""
    f = Path(path) / "metrics.json"
    if not f.is_file():
        return False
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(m, dict) and any(k in m for k in _RESULT_KEYS)


def _child_runs(p: Path) -> list[Path]:
    """Run folders directly inside ``p``; in the order of ``metrics.json`` ``run_dirs`` when it lists them
    (``cadx demo`` does), the rest by name."""
    found = sorted((d for d in p.iterdir() if d.is_dir() and is_run_folder(d)), key=lambda d: d.name)
    order: list[str] = []
    f = p / "metrics.json"
    if f.is_file():
        try:
            listed = json.loads(f.read_text(encoding="utf-8")).get("run_dirs") or []
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            listed = []
        order = [Path(str(x)).name for x in listed if isinstance(x, str)]
    rank = {n: i for i, n in enumerate(order)}
    return sorted(found, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def expand_run_dirs(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Run folders to report: each path that is a run folder (:func:`is_run_folder`) as is; a folder of runs
    (no run results of its own, e.g. ``runs/demo``) becomes the run folders directly inside it.

    Raises CadxDataError for a missing folder, a folder whose metrics.json is not valid JSON, and a folder that
    is neither a run nor holds any (the message names the folder)."""
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        if not p.is_dir():
            raise CadxDataError("run folder does not exist", path=p)
        mpath = p / "metrics.json"
        if mpath.is_file():
            _read_json(mpath)  # invalid JSON: say so instead of treating the folder as a parent
        if is_run_folder(p):
            out.append(p)
            continue
        children = _child_runs(p)
        if not children:
            why = ("metrics.json holds no run results (no pooled/folds/extra) and no folder inside is a run"
                   if mpath.is_file() else "no metrics.json (run not evaluated yet?) and no run folders inside")
            raise CadxDataError(why, path=p)
        out += children
    return out
