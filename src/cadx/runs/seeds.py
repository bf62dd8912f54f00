"""Seed repeats: one config trained with several training seeds on the SAME splits (``cadx cv CONFIG --seeds 0,1,2``).

``DIR/seed_<s>/`` is a full run folder of the config with ``train.seed = s`` (the top-level ``seed`` — splits,
patient subsets, bootstrap resamples — stays the config's, so every seed sees identical ``splits.json``; this is
checked). ``DIR/ensemble/`` is the seed ensemble: :func:`cadx.runs.ensemble.ensemble_runs` (equal-weight mean of
the seeds' study probabilities, the same metric functions and patient-bootstrap CIs as a run). ``DIR/seeds.json``
and ``DIR/report.md`` give, per pooled metric, each seed's value, mean ± SD over seeds (sample SD, ``ddof=1``;
``None`` with one seed) and the ensemble's value with its CI; Brier and ECE too when the runs measured calibration
(``metrics.json`` ``calibration``). Resumable: a finished seed folder (same config,
every fold ``DONE``) is reused as it is; an interrupted one continues (``resume``). With ``--executor ray`` the
seeds run side by side as Ray tasks, their folds sharing the pool (:func:`run_seeds`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig, derive
from cadx.errors import CadxConfigError, CadxDataError
from cadx.report.studies import markdown_table, study_notes_text
from cadx.runs.cv import run_cv, start_executor
from cadx.runs.ensemble import ensemble_runs
from cadx.runs.executors import Executor
from cadx.runs.folder import finished_run
from cadx.utils import atomic_write_json, atomic_write_text, read_json

__all__ = ["parse_seeds", "run_seeds", "seed_config", "seed_summary", "with_calibration"]

#: Pooled scalar metrics summarised over seeds, in this order (others with a float value follow, sorted).
_FIRST = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "brier", "ece", "dice_mean",
          "dice_median")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; empty, non-integer, negative or repeated seeds raise CadxConfigError."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise CadxConfigError(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CadxConfigError(f"--seeds: {text!r} needs distinct non-negative integers, e.g. 0,1,2")
    return seeds


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``cfg`` with ``train.seed = seed`` (the training seed only; ``cfg.seed`` keeps choosing the splits)."""
    return derive(cfg, source=f"{cfg.name} (seed {seed})", train={"seed": int(seed)})


def _splits_key(run_dir: Path) -> str:
    data = read_json(run_dir / "splits.json")
    folds = [{k: sorted(map(str, f.get(k, []))) for k in ("train", "val", "test")} for f in data.get("folds", [])]
    return json.dumps(folds, sort_keys=True)


def _scalars(pooled: dict[str, Any]) -> dict[str, float]:
    vals = {k: float(v) for k, v in pooled.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("n_")}
    order = [k for k in _FIRST if k in vals] + sorted(k for k in vals if k not in _FIRST)
    return {k: vals[k] for k in order}


def with_calibration(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with its ``calibration`` block's Brier score and ECE (and their CIs) copied into ``pooled``
    (and ``pooled.ci``), so :func:`seed_summary` treats them like every other metric; unchanged without one."""
    cal = metrics.get("calibration")
    if not isinstance(cal, dict):
        return metrics
    pooled = dict(metrics.get("pooled") or {})
    ci = dict(pooled.get("ci") or {})
    for k in ("brier", "ece"):
        if isinstance(cal.get(k), int | float):
            pooled[k] = float(cal[k])
            if (cal.get("ci") or {}).get(k):
                ci[k] = list(cal["ci"][k])
    pooled["ci"] = ci
    return {**metrics, "pooled": pooled}


def seed_summary(per_seed: dict[int, dict[str, Any]], ensemble: dict[str, Any] | None) -> dict[str, Any]:
    """Per metric: ``{"seeds": {s: value}, "mean", "sd" (ddof=1; None for one seed), "min", "max",
    "ensemble", "ensemble_ci"}`` from each seed's and the ensemble's pooled metrics. A metric missing (or NaN) in
    a seed is left out of that seed's values and the mean/SD (``n`` says how many entered)."""
    pooled = {s: _scalars(m.get("pooled", {})) for s, m in per_seed.items()}
    names: list[str] = []
    for p in pooled.values():
        names += [k for k in p if k not in names]
    ens = (ensemble or {}).get("pooled", {})
    out: dict[str, Any] = {}
    for k in names:
        vals = {s: p[k] for s, p in pooled.items() if k in p and math.isfinite(p[k])}
        v = list(vals.values())
        ci = (ens.get("ci") or {}).get(k)
        out[k] = {"seeds": {str(s): x for s, x in vals.items()}, "n": len(v),
                  "mean": statistics.fmean(v) if v else None,
                  "sd": statistics.stdev(v) if len(v) > 1 else None,
                  "min": min(v) if v else None, "max": max(v) if v else None,
                  "ensemble": float(ens[k]) if isinstance(ens.get(k), int | float) else None,
                  "ensemble_ci": [float(c) for c in ci] if ci else None}
    return out


def _report(cfg: ExperimentConfig, seeds: Sequence[int], summary: dict[str, Any], record: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    rows = []
    for k, m in summary.items():
        spread = f"{f(m['mean'])} ± {f(m['sd'])}" if m["sd"] is not None else f(m["mean"])
        ens = f(m["ensemble"]) + (f" [{f(m['ensemble_ci'][0])}, {f(m['ensemble_ci'][1])}]" if m["ensemble_ci"]
                                  else "")
        rows.append([k, *[f(m["seeds"].get(str(s))) for s in seeds], spread, ens])
    head = ["metric", *[f"seed {s}" for s in seeds], "mean ± SD", "seed ensemble [95 % CI]"]
    text = [
        f"Config `{cfg.name}` trained with training seeds {', '.join(map(str, seeds))} (`train.seed`) on the same "
        f"splits (made with `seed: {cfg.seed}`; identical `splits.json` in every `seed_<s>/`, checked). Pooled "
        "out-of-fold (or official test) metrics per seed; mean ± sample SD over seeds; the seed ensemble is the "
        "equal-weight mean of the seeds' study probabilities (`ensemble/`, nothing fitted), scored by the same "
        f"metric functions with {record['bootstrap']} patient-bootstrap resamples.",
        "", *markdown_table(head, rows)]
    folders = [f"- `seed_{s}/`: {record['runs'][str(s)]['status']}; the run's own time "
               f"{record['runs'][str(s)]['run_seconds']} s (metrics.json run.seconds)" for s in seeds]
    return study_notes_text(f"Seeds: {cfg.name}", [(None, text), ("Run folders", [*folders, "- `ensemble/`"])])


def _run_seed(scfg: ExperimentConfig, run_dir: Path, executor: Executor | None) -> float:
    """One seed's run (started or resumed) into ``run_dir``; returns its wall seconds. A Ray seed task calls it
    as a coordinator: its folds go to ``executor`` (the nested Ray executor), side by side with other seeds'."""
    t0 = time.perf_counter()
    run_cv(scfg, run_dir, resume=True, executor=executor)
    return round(time.perf_counter() - t0, 1)


def run_seeds(cfg: ExperimentConfig, seeds: Sequence[int], out_dir: str | Path, report: bool = True,
              executor: Executor | None = None) -> dict[str, Any]:
    """Run ``cfg`` once per training seed into ``out_dir/seed_<s>/`` (finished folders are skipped), check their
    splits are identical, evaluate the seed ensemble into ``out_dir/ensemble/`` and write ``seeds.json`` and
    ``report.md``. Returns the ``seeds.json`` record. ``report``: also write each ensemble's HTML/MD run report.

    ``executor`` (:mod:`cadx.runs.executors`): serial (default) runs the seeds one after another in this process.
    With Ray every unfinished seed is a coordinator task (no CPU reserved) that holds its own run folder's lock,
    loads and checks the cohort and sends its folds to the Ray pool, so seeds × folds run side by side (15 fold
    tasks for 3 seeds of a 5-fold CV fill every slot, where one CV's 5 folds leave slots idle in the last
    round). Each seed's folder and numbers equal the serial run's (same ``cpus_per_task`` threads per fold).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise CadxConfigError(f"{cfg.name}: seeds must be distinct and at least one: {seeds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    per_seed: dict[int, dict[str, Any]] = {}
    dirs = [out / f"seed_{s}" for s in seeds]
    configs = {s: seed_config(cfg, s) for s in seeds}
    todo = [s for s, d in zip(seeds, dirs, strict=True) if not finished_run(configs[s], d)]
    seconds: dict[int, float] = {}
    if executor is not None and executor.name != "serial" and todo:
        start_executor(executor, cfg)
        calls = [(configs[s], out / f"seed_{s}", executor.nested()) for s in todo]
        for i, sec in executor.map(_run_seed, calls, labels=[f"seed {s}" for s in todo], cpus=0,
                                   description="seeds"):
            seconds[todo[i]] = sec
    else:
        for s in todo:
            seconds[s] = _run_seed(configs[s], out / f"seed_{s}", executor)
    for s, d in zip(seeds, dirs, strict=True):
        per_seed[s] = with_calibration(read_json(d / "metrics.json"))
        runs[str(s)] = {"dir": d.name, "status": "run" if s in seconds else "reused (finished before)",
                        "seconds": seconds.get(s, 0.0), "run_seconds": per_seed[s].get("run", {}).get("seconds")}
    keys = {s: _splits_key(d) for s, d in zip(seeds, dirs, strict=True)}
    differing = [s for s in seeds if keys[s] != keys[seeds[0]]]
    if differing:
        raise CadxDataError(f"seed_{differing[0]}/splits.json differs from seed_{seeds[0]}'s (a seed repeat needs "
                            "the same splits; remove the folder or use another --out)", path=out, field="splits")
    ensemble = with_calibration(ensemble_runs(dirs, out / "ensemble", report=report))
    summary = seed_summary(per_seed, ensemble)
    record = {"config": cfg.name, "split_seed": cfg.seed, "training_seeds": seeds, "bootstrap": cfg.eval.bootstrap,
              "sd": "sample SD over seeds (ddof=1)", "runs": runs, "metrics": summary,
              "ensemble": {"dir": "ensemble", "rule": ensemble.get("run", {}).get("decision", {}).get("rule")}}
    atomic_write_json(out / "seeds.json", record)
    atomic_write_text(out / "report.md", _report(cfg, seeds, summary, record))
    return record
