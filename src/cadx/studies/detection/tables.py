"""Tables and figures of the detection study from its run folders: the main loss's FROC table (sensitivity at
each FP rate with the patient-bootstrap 95 % CI, lesion- and patient-based), the four losses at 2 FP, the FROC
curves of every loss; ``report.md`` (through :mod:`cadx.report.studies`), ``summary.json``, ``froc_<unit>.png``.
Every number is read from, or recomputed from, the runs' ``predictions_slices.csv`` / ``lesions.csv`` /
``predictions.csv``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cadx.config import ExperimentConfig
from cadx.evaluation.froc import FrocCurve, froc_curve, plot_froc
from cadx.report.studies import markdown_table, write_study_notes
from cadx.utils import atomic_write_json, read_json

__all__ = ["run_curves", "write_tables"]


def _fmt(v: float, ci: list[float] | None) -> str:
    if ci is None:
        return f"{100 * v:.1f}"
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"


def run_curves(run_dir: Path) -> dict[str, FrocCurve]:
    """``{unit: FrocCurve}`` recomputed from a finished run's box, lesion and study CSVs."""
    boxes = pd.read_csv(run_dir / "predictions_slices.csv")
    boxes["tp"] = boxes["tp"].astype(bool)
    lesions = pd.read_csv(run_dir / "lesions.csv")
    ids = pd.read_csv(run_dir / "predictions.csv")["study_id"].astype(str).tolist()
    return {u: froc_curve(boxes, lesions, ids, unit=u) for u in ("lesion", "patient")}  # type: ignore[arg-type]


def write_tables(cfg: ExperimentConfig, runs: Mapping[str, Path], out_dir: Path, main: str = "focal"
                 ) -> dict[str, Any]:
    """Write ``report.md``, ``summary.json`` and ``froc_lesion.png`` / ``froc_patient.png`` for the finished
    ``runs`` (``{loss short name: run folder}``); returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {k: read_json(d / "metrics.json") for k, d in runs.items() if (d / "metrics.json").is_file()}
    det = cfg.detection
    rates = [str(float(r)) for r in (det.fp_rates if det is not None else [1.0, 2.0, 4.0, 8.0])]
    per = "volume" if cfg.data.dataset.split(":")[0] == "lgg" or "lgg" in cfg.name else "image"
    summary: dict[str, Any] = {"config": cfg.name, "dataset": cfg.data.dataset, "main_loss": main, "runs": {}}
    sections: list[tuple[str | None, Any]] = []
    for k, m in metrics.items():
        summary["runs"][k] = {u: {"sensitivity": m[u]["sensitivity"], "ci": m[u].get("ci", {}),
                                  "n_targets": m[u]["n_targets"], "n_images": m[u]["n_images"]}
                              for u in ("lesion", "patient")}
        summary["runs"][k]["seconds"] = m.get("run", {}).get("seconds")
        summary["runs"][k]["run_dir"] = str(runs[k])
    if main in metrics:
        m = metrics[main]
        rows = [[u, m[u]["n_targets"], m[u]["n_images"]] + [_fmt(m[u]["sensitivity"][r], m[u]["ci"].get(r))
                                                            for r in rates] for u in ("lesion", "patient")]
        sections.append((f"FROC: {main} objectness loss (sensitivity % at k FP per {per}, 95 % CI by patient)",
                         markdown_table(["unit", "targets", f"{per}s"] + [f"{float(r):g} FP" for r in rates],
                                        rows)))
    if metrics:
        two = "2.0"
        rows = [[k, _fmt(m["lesion"]["sensitivity"].get(two, float("nan")), m["lesion"]["ci"].get(two)),
                 _fmt(m["patient"]["sensitivity"].get(two, float("nan")), m["patient"]["ci"].get(two)),
                 m.get("run", {}).get("seconds")] for k, m in metrics.items()]
        sections.append((f"Objectness losses at 2 FP per {per} (sensitivity %, 95 % CI)",
                         markdown_table(["loss", "lesion-based", "patient-based", "run seconds"], rows)))
        figs = []
        for unit in ("lesion", "patient"):
            curves = {k: run_curves(runs[k])[unit] for k in metrics}
            p = plot_froc(curves, out_dir / f"froc_{unit}.png", xlabel=f"mean FPs per {per}")
            figs.append(f"![FROC {unit}]({p.name})")
        summary["figures"] = [f"froc_{u}.png" for u in ("lesion", "patient")]
        sections.append(("FROC curves", figs))
    sections.append(("How to read", [
        f"- Config `{cfg.name}` ({cfg.data.dataset}); {len(metrics)} of {len(runs)} loss runs finished; each run "
        "folder holds `predictions_slices.csv` (one row per predicted box, with `tp` and the matched `lesion`), "
        "`lesions.csv`, `predictions.csv` (one row per study), `metrics.json`, `splits.json`, `config.yaml`.",
        "- A prediction is a TP when its centre is within max(half the lesion's box diagonal, "
        f"{det.distance_px if det else 0:g} px of the original image)"
        + (f" and within {det.z_fraction:g} × the volume's slices of the lesion's central slice"
           if det and per == "volume" else "")
        + "; a second prediction on a detected lesion is neither TP nor FP.",
        "- Lesion-based: every lesion is a target. Patient-based: a patient with a lesion is detected when any "
        "of their lesions is. FPs are counted per " + per + " in both.",
        "- CIs: percentile bootstrap over patients (" + str(cfg.eval.bootstrap) + " resamples)."]))
    atomic_write_json(out_dir / "summary.json", summary)
    write_study_notes(out_dir, f"Thesis A.8 detector: {cfg.name}", sections, filename="report.md")
    return summary
