"""``run_demo``: the embedded demo — a synthetic adrenal CT cohort, patient-level CV of a ResNet-18 baseline and
DMRN on the same input, one comparison report, and the command that predicts a study with either run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cadx.config import ExperimentConfig, load_config, packaged_config_path
from cadx.data.synthetic import META_FILE
from cadx.errors import CadxConfigError
from cadx.runs.cv import run_cv
from cadx.runs.folder import write_run_report
from cadx.utils import atomic_write_json, read_json

DEMO_CONFIGS = ("demo_resnet", "demo_dmrn")
_KEPT = ("accuracy", "auc", "sensitivity", "specificity", "precision", "f1", "n_studies", "n_patients")


def demo_configs(data_root: str | Path, overrides: list[str] | None = None) -> list[ExperimentConfig]:
    """The packaged demo configs with ``data.root=data_root`` and ``overrides`` (``--set`` style) applied to
    each. Raises :class:`CadxConfigError` when they would not read the same cohort (they share ``data_root``)."""
    cfgs = [load_config(packaged_config_path(n), [f"data.root={data_root}", *(overrides or [])])
            for n in DEMO_CONFIGS]
    first = cfgs[0].data.model_dump()
    for c in cfgs[1:]:
        if c.data.model_dump() != first:
            raise CadxConfigError(f"demo configs {DEMO_CONFIGS}: data sections differ ({first} vs "
                                  f"{c.data.model_dump()}); both runs must read the one demo cohort")
    return cfgs


def example_study(data_root: str | Path) -> dict[str, str]:
    """The first study of the synthetic cohort in ``data_root``: ``{"study_id", "label", "class_name", "image"
    (DICOM series folder), "mask" (NIfTI)}``, paths joined onto ``data_root`` as given (relative stays relative)."""
    root = Path(data_root)
    meta = read_json(root / META_FILE)
    rec = meta["studies"][0]
    return {"study_id": rec["study_id"], "label": rec["label"],
            "class_name": meta.get("class_names", {}).get(rec["label"], rec["label"]),
            "image": str(root / rec["image"]), "mask": str(root / rec["mask"])}


def _cell(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    band = f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci and None not in ci else ""
    return f"{value:.2f}{band}"


def run_demo(out_dir: str | Path, overrides: list[str] | None = None, console: Console | None = None
             ) -> dict[str, Any]:
    """Build ``out_dir/data`` (synthetic DICOM cohort), cross-validate the packaged demo configs into
    ``out_dir/<run name>/``, write ``out_dir/metrics.json`` and ``out_dir/report.html``; print the comparison
    table (pooled out-of-fold accuracy and AUC with 95 % patient-bootstrap CIs), the report path and a
    ``cadx predict`` command for one of the demo's studies.

    ``overrides`` (``--set`` style) apply to both configs (e.g. ``["train.epochs=2"]`` for a quick look).
    Re-running in the same folder continues (finished folds are reused); a changed config is refused.
    ``out_dir`` itself is no run: the run folders inside it are (``cadx predict|report|evaluate`` take those).
    Returns ``{"runs": {name: pooled metrics + "ci" + "seconds"}, "run_dirs", "report", "chance",
    "example", "predict", "seconds"}``; ``chance`` = accuracy of always answering the largest class.
    """
    con = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_root = out_dir / "data"
    runs: dict[str, Any] = {}
    run_dirs: list[Path] = []
    for cfg in demo_configs(data_root, overrides):
        run_dir = out_dir / cfg.name
        t1 = time.perf_counter()
        con.print(f"[bold]{cfg.name}[/bold]: {cfg.model.name}, {cfg.cv.folds}-fold patient-level CV → {run_dir}")
        pooled = run_cv(cfg, run_dir, resume=True)["pooled"]
        runs[cfg.name] = {k: pooled.get(k) for k in _KEPT}
        runs[cfg.name]["ci"] = pooled.get("ci", {})
        runs[cfg.name]["seconds"] = round(time.perf_counter() - t1, 1)
        run_dirs.append(run_dir)
    report = write_run_report(run_dirs, out_dir)
    meta = read_json(data_root / META_FILE)
    counts: dict[str, int] = meta["class_counts"]
    chance = max(counts.values()) / sum(counts.values())
    ex = example_study(data_root)
    predict = f"cadx predict {run_dirs[0]} --study {ex['image']} --mask {ex['mask']}"
    result = {"runs": runs, "run_dirs": [str(p) for p in run_dirs], "report": str(report[0]),
              "classes": list(counts), "class_counts": counts, "chance": {"accuracy": round(chance, 4), "auc": 0.5},
              "example": ex, "predict": predict, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out_dir / "metrics.json", result)

    n_pat = next(iter(runs.values())).get("n_patients")
    table = Table("run", "accuracy [95% CI]", "AUC [95% CI]", "F1", "s",
                  title=f"synthetic adrenal CT: {' vs '.join(counts)} ({n_pat} patients), pooled out-of-fold",
                  caption=f"chance: accuracy {chance:.2f} (largest class), AUC 0.50")
    for name, m in runs.items():
        f1 = m.get("f1")
        table.add_row(name, _cell(m.get("accuracy"), m["ci"].get("accuracy")), _cell(m.get("auc"), m["ci"].get("auc")),
                      "n/a" if f1 is None else f"{f1:.2f}", f"{m['seconds']:.0f}")
    con.print(table)
    con.print(f"report: {result['report']}  ·  metrics: {out_dir / 'metrics.json'}  ·  {result['seconds']:.0f} s")
    con.print(f"run folders (each a full `cadx cv` run; {out_dir} itself holds no model): "
              + ", ".join(str(p) for p in run_dirs))
    con.print(f"predict one study ({ex['study_id']}, truly {ex['label']} = {ex['class_name']}) with the "
              f"{run_dirs[0].name} fold models:", soft_wrap=True)
    con.print(f"  {predict}", soft_wrap=True, markup=False, highlight=False)
    return result
