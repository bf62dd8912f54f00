"""Serial vs Ray-local wall time of one 5-fold CV, or of a seeds × folds grid (issue 19 item 2; target ≥ 1.6× on 2
cores).

The same config is cross-validated twice, back to back, into two run folders: first serially in this process
(torch 1 thread), then with :class:`cadx.runs.executors.RayExecutor` (local Ray on ``--ray-cpus`` CPUs, 1 CPU and
1 torch thread per fold task, so two folds run side by side on 2 cores). Recorded per run: wall seconds,
``os.getloadavg()`` before and after (the machine is shared: other users' load changes what each run gets), CPU
seconds (serial: this process; Ray: this process + every Ray process it started, read with psutil before Ray shuts
down: raylet, GCS and the workers, so Ray's own overhead is counted), each fold's ``DONE`` seconds, and for Ray the
seconds until Ray ran and its workers were warm (``RayExecutor.start_seconds``; Ray starts on a thread while the
cohort loads, so this overlaps the run). Also the cost of what a fold task receives: the
cloudpickle size and time of ``(config, cohort, ItemStore)``, which ``ray.put`` serialises once per run. Then the
two runs' ``predictions.csv`` are compared (max |difference| of every numeric column) and their pooled metrics.

Config: ``configs/synthetic_resnet18.yaml`` (100 synthetic patients, ResNet-18 width 32, 32 px slices) with
``train.epochs`` = ``--epochs`` (default 3: about 1.2 CPU-minutes per fold on this machine), ``eval.bootstrap``
200, ``data.checked: true`` (the full data check is run once before both runs and kept out of the timing: in one
process its cache would otherwise favour the second run).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/ray_speedup.py \\
        --data-root runs/data/synthetic --work /tmp/ray_bench --out benchmarks/results/ray

``--seeds 0,1,2``: the grid ``cadx cv --seeds 0,1,2`` instead (:func:`cadx.runs.seeds.run_seeds`: serially, seed
after seed; with Ray every seed is a coordinator task and all seeds' folds share the 2 slots), compared per seed
and for the seed ensemble.

``--final``: the CV trains the final model too (``cadx cv --final``, ``cv.final: true``): serially after the
folds, with Ray as a sixth task, which fills the slot a 5-fold CV leaves idle in its last round. The final
models' weights are compared too.

Writes ``OUT/speedup.json`` and, per run (``serial``, ``ray``), ``OUT/<run>/{config.yaml, splits.json,
predictions.csv, metrics.json, fold_<k>/DONE}`` (the checkpoints stay in ``--work``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.pipeline.items import build_store
from cadx.runs.cv import run_cv
from cadx.runs.executors import RayExecutor
from cadx.runs.folder import check_data, load_cohort
from cadx.runs.seeds import run_seeds
from cadx.utils import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("config.yaml", "splits.json", "predictions.csv", "metrics.json")


def bench_config(data_root: Path, epochs: int, extra: list[str] | None = None) -> ExperimentConfig:
    """The benchmark's config (see the module docstring); ``extra`` = more ``--set`` overrides (a smoke run)."""
    return load_config(ROOT / "configs" / "synthetic_resnet18.yaml",
                       [f"data.root={data_root}", f"train.epochs={epochs}", "train.progress=false",
                        "eval.bootstrap=200", "data.checked=true", *(extra or [])])


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _fold_seconds(run: Path) -> dict[str, float]:
    return {p.parent.relative_to(run).as_posix(): float(read_json(p)["seconds"])
            for p in sorted([*run.glob("fold_*/DONE"), *run.glob("seed_*/fold_*/DONE"), *run.glob("final/DONE"),
                             *run.glob("seed_*/final/DONE")])}


def _run(cfg: ExperimentConfig, run: Path, seeds: list[int] | None, executor: RayExecutor | None = None
         ) -> dict[str, Any]:
    """One CV (``seeds`` None) or the seed grid; returns the pooled metrics (the seed ensemble's for a grid)."""
    if seeds is None:
        return run_cv(cfg, run, executor=executor)
    run_seeds(cfg, seeds, run, report=False, executor=executor)
    return read_json(run / "ensemble" / "metrics.json")


def _runs(run: Path) -> list[Path]:
    """The run folders under ``run``: itself, or its ``seed_<s>/`` and ``ensemble/`` for a grid."""
    grid = sorted(run.glob("seed_*"))
    return [*grid, run / "ensemble"] if grid else [run]


def _keep(run: Path, dest: Path) -> None:
    """Copy the recomputable part of a run folder (no checkpoints) to ``dest`` (each seed folder for a grid)."""
    if run.joinpath("seeds.json").is_file():
        for sub in _runs(run):
            _keep(sub, dest / sub.name)
        shutil.copyfile(run / "seeds.json", dest / "seeds.json")
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (run / name).is_file():  # an ensemble folder has no splits.json / config.yaml
            shutil.copyfile(run / name, dest / name)
    for done in run.glob("fold_*/DONE"):
        (dest / done.parent.name).mkdir(exist_ok=True)
        shutil.copyfile(done, dest / done.parent.name / "DONE")
        shutil.copyfile(done.parent / "predictions.csv", dest / done.parent.name / "predictions.csv")
    if (run / "final" / "DONE").is_file():
        (dest / "final").mkdir(exist_ok=True)
        for name in ("DONE", "metrics.json", "history.csv"):
            shutil.copyfile(run / "final" / name, dest / "final" / name)


def _ray_cpu_seconds() -> float:
    """CPU seconds (user + system) of every live process under this one (Ray's raylet, GCS, workers)."""
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # exited meanwhile
            continue
    return total


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def serial_run(cfg: ExperimentConfig, run: Path, seeds: list[int] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    rec: dict[str, Any] = {"load_before": _load(), "torch_threads": 1}
    c0, t0 = _own_cpu(), time.perf_counter()
    metrics = _run(cfg, run, seeds)
    rec.update(wall_seconds=round(time.perf_counter() - t0, 1), cpu_seconds=round(_own_cpu() - c0, 1),
               load_after=_load(), fold_seconds=_fold_seconds(run), auc=metrics["pooled"].get("auc"),
               accuracy=metrics["pooled"].get("accuracy"))
    return rec


def ray_run(cfg: ExperimentConfig, run: Path, cpus: int, seeds: list[int] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"load_before": _load(), "ray_cpus": cpus, "cpus_per_task": 1, "torch_threads": 1}
    c0, t0 = _own_cpu(), time.perf_counter()
    ex = RayExecutor(num_cpus=cpus, cpus_per_task=1, progress=False)
    try:
        metrics = _run(cfg, run, seeds, executor=ex)  # starts Ray + warms the workers while the cohort loads
        rec["ray_ready_seconds"] = ex.start_seconds
        rec["ray_processes_cpu_seconds"] = round(_ray_cpu_seconds(), 1)
    finally:
        ex.close()
    rec.update(wall_seconds=round(time.perf_counter() - t0, 1), load_after=_load(), fold_seconds=_fold_seconds(run),
               auc=metrics["pooled"].get("auc"), accuracy=metrics["pooled"].get("accuracy"))
    rec["cpu_seconds"] = round(_own_cpu() - c0 + rec["ray_processes_cpu_seconds"], 1)
    return rec


def pickle_cost(cfg: ExperimentConfig, work: Path) -> dict[str, Any]:
    """Size and time of cloudpickling what a fold task closes over (config, cohort, ItemStore)."""
    cohort = load_cohort(cfg, work)
    store = build_store(cohort, cfg, progress=False)
    t0 = time.perf_counter()
    blob = cloudpickle.dumps((cfg, cohort, store))
    dump_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cloudpickle.loads(blob)
    return {"megabytes": round(len(blob) / 1e6, 2), "dumps_seconds": round(dump_s, 3),
            "loads_seconds": round(time.perf_counter() - t0, 3), "items": len(store),
            "item_tensor_megabytes": round(store.images.numel() * store.images.element_size() / 1e6, 2)}


def compare(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    """``predictions.csv`` of two runs (every seed folder and the ensemble for a grid): the largest difference."""
    if (a_dir / "seeds.json").is_file():
        parts = {sub.name: compare(sub, b_dir / sub.name) for sub in _runs(a_dir)}
        return {"rows": sum(p["rows"] for p in parts.values()),
                "same_study_order": all(p["same_study_order"] for p in parts.values()),
                "max_abs_difference": max(p["max_abs_difference"] for p in parts.values()),
                "same_y_pred": all(p["same_y_pred"] for p in parts.values()), "runs": parts}
    a, b = pd.read_csv(a_dir / "predictions.csv"), pd.read_csv(b_dir / "predictions.csv")
    same_ids = a["study_id"].astype(str).tolist() == b["study_id"].astype(str).tolist()
    num = a.select_dtypes("number").columns
    diff = float(np.nanmax(np.abs(a[num].to_numpy(float) - b[num].to_numpy(float))))
    rec = {"rows": len(a), "same_study_order": same_ids, "max_abs_difference": diff,
           "same_y_pred": bool((a["y_pred"].astype(str) == b["y_pred"].astype(str)).all())}
    if (a_dir / "final" / "checkpoint_last.ckpt").is_file():
        wa, wb = (torch.load(d / "final" / "checkpoint_last.ckpt", map_location="cpu", weights_only=False)
                  ["state_dict"] for d in (a_dir, b_dir))
        rec["final_weights_max_abs_difference"] = max(float((wa[k].double() - wb[k].double()).abs().max())
                                                      for k in wa if wa[k].numel())
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=ROOT / "runs" / "data" / "synthetic")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ray_bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--seeds", default=None, help="a seeds x folds grid, e.g. 0,1,2 (default: one CV)")
    ap.add_argument("--final", action="store_true", help="the CV trains the final model too (cadx cv --final)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config override (smoke runs)")
    args = ap.parse_args()
    if args.final:
        args.sets.append("cv.final=true")
    cfg = bench_config(args.data_root, args.epochs, args.sets)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.perf_counter()
    unchecked = load_config(ROOT / "configs" / "synthetic_resnet18.yaml", [f"data.root={args.data_root}",
                                                                            *args.sets])
    check_data(unchecked, load_cohort(unchecked, args.work), args.work)  # once, outside the timed runs
    prep = {"data_check_seconds": round(time.perf_counter() - t0, 1), "pickle": pickle_cost(cfg, args.work)}
    print("prepared", prep, flush=True)
    serial = serial_run(cfg, args.work / "serial", seeds)
    print("serial", serial, flush=True)
    ray = ray_run(cfg, args.work / "ray", args.ray_cpus, seeds)
    print("ray", ray, flush=True)
    result = {
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/ray_speedup.py "
                   f"--epochs {args.epochs} --ray-cpus {args.ray_cpus}"
                   + (f" --seeds {args.seeds}" if args.seeds else "")
                   + "".join(f" --set '{x}'" for x in args.sets),
        "config": f"configs/synthetic_resnet18.yaml + train.epochs={args.epochs}, eval.bootstrap=200, "
                  "data.checked=true, train.progress=false"
                  + (f"; seeds {args.seeds} x {cfg.cv.folds} folds (cadx cv --seeds)" if seeds else ""),
        "speedup_wall": round(serial["wall_seconds"] / ray["wall_seconds"], 2),
        "target": 1.6, "serial": serial, "ray": ray, "identical": compare(args.work / "serial", args.work / "ray"),
        "prepare": prep, "machine": {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                                     "processor": platform.processor() or platform.machine(),
                                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "ray": version("ray")},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
    }
    for name in ("serial", "ray"):
        _keep(args.work / name, args.out / name)
    atomic_write_json(args.out / "speedup.json", result)
    print(f"speed-up {result['speedup_wall']}x (serial {serial['wall_seconds']} s, ray {ray['wall_seconds']} s); "
          f"max |diff| {result['identical']['max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
