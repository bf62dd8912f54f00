"""``run_demo``: the synthetic adrenal CT cohort, 5-fold CV of a ResNet-18 baseline and DMRN, one report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cadx.config import load_config, packaged_config_path
from cadx.runs.folder import write_run_report
from cadx.runs.cv import run_cv
from cadx.utils import atomic_write_json

DEMO_CONFIGS = ("demo_resnet", "demo_dmrn")
_SHOWN = ("accuracy", "auc", "sensitivity", "specificity", "f1")


def run_demo(out_dir: str | Path, overrides: list[str] | None = None, console: Console | None = None
             ) -> dict[str, Any]:
    """Build ``out_dir/data`` (synthetic DICOM cohort), cross-validate the packaged demo configs into
    ``out_dir/<run name>/``, write ``out_dir/metrics.json`` (each run's pooled metrics) and
    ``out_dir/report.html``; print the comparison table and the report path.

    ``overrides`` (``--set`` style) apply to both configs (e.g. ``["train.epochs=2"]`` for a quick look).
    Re-running in the same folder continues (finished folds are reused); a changed config is refused.
    Returns ``{"runs": {name: pooled}, "run_dirs": [...], "report": path or None, "seconds": s}``.
    """
    con = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_root = out_dir / "data"
    runs: dict[str, Any] = {}
    run_dirs: list[Path] = []
    for name in DEMO_CONFIGS:
        cfg = load_config(packaged_config_path(name), [f"data.root={data_root}", *(overrides or [])])
        run_dir = out_dir / cfg.name
        t1 = time.perf_counter()
        con.print(f"[bold]{cfg.name}[/bold]: {cfg.model.name}, {cfg.cv.folds}-fold patient-level CV → {run_dir}")
        metrics = run_cv(cfg, run_dir, resume=True)
        pooled = metrics["pooled"]
        runs[cfg.name] = {k: pooled.get(k) for k in (*_SHOWN, "precision", "n_studies", "n_patients")}
        runs[cfg.name]["ci"] = pooled.get("ci", {})
        runs[cfg.name]["seconds"] = round(time.perf_counter() - t1, 1)
        run_dirs.append(run_dir)
    report = write_run_report(run_dirs, out_dir)
    result = {"runs": runs, "run_dirs": [str(p) for p in run_dirs],
              "report": str(report[0]) if report else None, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out_dir / "metrics.json", result)
    table = Table("run", "accuracy (95% CI)", "AUC (95% CI)", "F1", "s",
                  title="synthetic adrenal CT, pooled out-of-fold")
    for name, m in runs.items():
        cells = []
        for k in ("accuracy", "auc"):
            v, ci = m.get(k), m["ci"].get(k)
            band = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci and None not in ci else ""
            cells.append("n/a" if v is None else f"{v:.3f}{band}")
        f1 = m.get("f1")
        table.add_row(name, *cells, "n/a" if f1 is None else f"{f1:.3f}", f"{m['seconds']:.0f}")
    con.print(table)
    con.print(f"report: {result['report'] or '(report module not installed)'}  ·  metrics: {out_dir / 'metrics.json'}"
              f"  ·  {result['seconds']:.0f} s")
    return result
