"""Reading a run folder (docs/contracts.md "Run folder") into one object for the report."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cadx.errors import CadxDataError

__all__ = ["RunData", "load_run"]


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
