"""Time-to-accuracy curves: a recipe's metric against the CPU-minutes that bought it (issue #19 item 4).

Each point is one finished run folder (``cadx cv``/``--seeds``/``cadx ensemble``): its pooled metric with the
run's bootstrap CI (``metrics.json``), at the CPU-minutes of its training. Where the folds' ``history.csv`` have a
validation metric per epoch, the curve of the validation metric (mean over folds) against the cumulative CPU of
all folds up to that epoch is drawn too, dashed: it is what a shorter schedule would have seen on validation.

CPU-minutes, in order of preference:
1. the sum of ``cpu_seconds`` over every fold's ``history.csv`` (process CPU time, recorded since 2026-12-02);
2. a figure given on the command line (``LABEL=PATH@MINUTES``), measured with ``/usr/bin/time -v`` (user + sys)
   for runs made before (1) existed — say where it comes from in ``--note``; the validation curve's epochs
   (wall seconds) are then rescaled so that they add up to that figure;
3. otherwise wall seconds of training × ``--threads`` (marked "wall × threads" in the JSON: an upper bound on a
   shared machine).
An ensemble's CPU is the sum of its members' training: give it as ``LABEL=PATH@MINUTES``.

    .venv/bin/python benchmarks/time_to_accuracy.py --name lgg_unet --metric dice_mean --target 0.80 \
        --paper 0.82 --run "96 px=benchmarks/results/radiogenomics/seg_run@40" ...

Writes ``benchmarks/results/time_to_accuracy/<name>.json`` and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.report.studies import new_figure
from cadx.utils import atomic_write_json, read_json, save_figure

OUT = Path(__file__).resolve().parent / "results" / "time_to_accuracy"
VAL_COLUMN = {"auc": "val_auc", "accuracy": "val_accuracy"}


def fold_histories(run: Path) -> list[pd.DataFrame]:
    """The ``history.csv`` of each ``fold_*`` folder of ``run`` (empty list when none)."""
    return [pd.read_csv(h) for h in sorted(run.glob("fold_*/history.csv"))]


def run_cpu_minutes(run: Path, given: float | None, threads: int) -> tuple[float, str]:
    """CPU-minutes of ``run``'s training and how they were obtained (see the module docstring)."""
    hist = fold_histories(run)
    if hist and all("cpu_seconds" in h and h["cpu_seconds"].notna().all() for h in hist):
        return sum(float(h["cpu_seconds"].sum()) for h in hist) / 60.0, "history cpu_seconds"
    if given is not None:
        return given, "given (see note)"
    if hist:
        return sum(float(h["seconds"].sum()) for h in hist) * threads / 60.0, f"wall × {threads} threads"
    metrics = read_json(run / "metrics.json")
    return float(metrics.get("run", {}).get("seconds", math.nan)) * threads / 60.0, f"run wall × {threads} threads"


def run_point(label: str, run: Path, metric: str, given: float | None, threads: int) -> dict[str, Any]:
    """One run: pooled ``metric`` and its CI, CPU-minutes, and the validation curve when the histories have one."""
    pooled = read_json(run / "metrics.json")["pooled"]
    if metric == "lesion_dice_mean":  # segmentation with lesion-free cases: Dice over the lesion cases only
        lesion = pooled.get("lesion_split", {}).get("lesion", {})
        value, ci = lesion.get("dice_mean"), lesion.get("ci_dice_mean")
    else:
        value, ci = pooled.get(metric), pooled.get("ci", {}).get(metric)
    if value is None:
        raise SystemExit(f"{run / 'metrics.json'}: pooled has no '{metric}' (has {sorted(pooled)})")
    cpu, how = run_cpu_minutes(run, given, threads)
    point: dict[str, Any] = {"label": label, "run": str(run), "metric": metric, "value": float(value),
                             "ci": [float(c) for c in ci] if ci else None, "cpu_minutes": round(cpu, 2),
                             "cpu_source": how, "n_patients": pooled.get("n_patients")}
    col = VAL_COLUMN.get(metric)
    hist = fold_histories(run)
    if col and hist and all(col in h and h[col].notna().any() for h in hist):
        n = min(len(h) for h in hist)
        per_epoch_cpu = [h["cpu_seconds"] if "cpu_seconds" in h else h["seconds"] * threads for h in hist]
        cum = np.sum([c.iloc[:n].cumsum().to_numpy() for c in per_epoch_cpu], axis=0) / 60.0
        if how.startswith("given") and cum[-1] > 0:  # wall-time epochs rescaled to the measured CPU total
            cum = cum * (cpu / cum[-1])
        val = np.mean([h[col].iloc[:n].to_numpy() for h in hist], axis=0)
        point["validation_curve"] = {"column": col, "cpu_minutes": [round(float(c), 3) for c in cum],
                                     "value": [float(v) for v in val]}
    return point


def parse_run(spec: str) -> tuple[str, Path, float | None]:
    """``LABEL=PATH`` or ``LABEL=PATH@MINUTES``."""
    if "=" not in spec:
        raise SystemExit(f"--run {spec!r}: expected LABEL=PATH[@CPU_MINUTES]")
    label, rest = spec.split("=", 1)
    path, _, minutes = rest.partition("@")
    run = Path(path)
    if not (run / "metrics.json").is_file():
        raise SystemExit(f"--run {spec!r}: {run / 'metrics.json'} not found")
    return label, run, float(minutes) if minutes else None


def draw(points: list[dict[str, Any]], name: str, metric: str, target: float | None, paper: float | None,
         out: Path) -> Path:
    """Metric (with CI bars) against CPU-minutes, validation curves dashed, target and paper as lines; the
    legend sits outside the axes (it covered points), one tab20 colour per run (up to 20 distinct)."""
    from matplotlib import colormaps

    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = colormaps["tab20"]
    for i, p in enumerate(points):
        lo, hi = p["ci"] if p["ci"] else (p["value"], p["value"])
        bar = ax.errorbar([p["cpu_minutes"]], [p["value"]], yerr=[[p["value"] - lo], [hi - p["value"]]], fmt="o",
                          capsize=3, color=colours(i % 20), label=f"{p['label']} ({p['value']:.3f})")
        if "validation_curve" in p:
            vc = p["validation_curve"]
            ax.plot(vc["cpu_minutes"], vc["value"], "--", lw=1, alpha=0.6, color=bar.lines[0].get_color())
    if target is not None:
        ax.axhline(target, color="tab:red", lw=1, ls=":", label=f"target {target}")
    if paper is not None:
        ax.axhline(paper, color="grey", lw=1, ls="-.", label=f"paper {paper}")
    ax.set_xlabel("CPU-minutes of training")
    ax.set_ylabel(f"{metric} (points: scored run, 95 % CI; dashed: validation per epoch)", fontsize=8)
    ax.set_title(name)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return save_figure(fig, out / f"{name}.png")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--metric", required=True, help="pooled metric key, e.g. auc, dice_mean; lesion_dice_mean = "
                    "pooled.lesion_split.lesion.dice_mean (Dice over the cases with a lesion)")
    ap.add_argument("--run", action="append", required=True, help="LABEL=PATH[@CPU_MINUTES]")
    ap.add_argument("--target", type=float)
    ap.add_argument("--paper", type=float)
    ap.add_argument("--threads", type=int, default=2, help="threads for the wall-time fallback")
    ap.add_argument("--note", default="", help="where the given CPU-minutes come from, the split of each metric")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    points = [run_point(label, run, a.metric, given, a.threads) for label, run, given in map(parse_run, a.run)]
    a.out.mkdir(parents=True, exist_ok=True)
    png = draw(points, a.name, a.metric, a.target, a.paper, a.out)
    atomic_write_json(a.out / f"{a.name}.json", {"name": a.name, "metric": a.metric, "target": a.target,
                                                 "paper": a.paper, "note": a.note, "points": points,
                                                 "figure": png.name})
    print(json.dumps([{k: p[k] for k in ("label", "value", "ci", "cpu_minutes", "cpu_source")} for p in points],
                     indent=1))


if __name__ == "__main__":
    main()
