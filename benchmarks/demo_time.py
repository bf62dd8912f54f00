"""Wall and CPU time of the embedded demo (``cadx demo``) run from scratch, and the table it ends with.

Runs :func:`cadx.runs.demo.run_demo` in a fresh temporary folder (cohort generation included, nothing reused) in
this process and records wall seconds, CPU seconds (user + system of this process and its children), the CPUs
and threads it had, the load average before and after (other jobs on the machine inflate the wall time, not the
CPU time) and the demo's pooled out-of-fold metrics with their 95 % CIs. The budget is 180 s on 2 idle cores.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/demo_time.py [--keep runs/demo_bench] [--out PATH]

Writes ``benchmarks/results/demo/demo_time.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cadx.runs.demo import run_demo
from cadx.utils import atomic_write_json

RESULT = Path(__file__).resolve().parent / "results" / "demo" / "demo_time.json"
BUDGET_S = 180.0


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(keep: Path | None = None) -> dict[str, Any]:
    """Run the demo once into ``keep`` (must not exist yet) or a temporary folder that is removed afterwards."""
    if keep is not None and keep.exists():
        raise SystemExit(f"{keep}: exists; the benchmark times a demo from scratch")
    folder = keep or Path(tempfile.mkdtemp(prefix="cadx_demo_"))
    load_before = os.getloadavg()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    try:
        result = run_demo(folder / "demo" if keep is None else folder, console=Console())
    finally:
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    table = {name: {k: m.get(k) for k in ("accuracy", "auc", "f1", "sensitivity", "specificity", "n_patients")}
             | {"ci_accuracy": m["ci"].get("accuracy"), "ci_auc": m["ci"].get("auc"), "seconds": m["seconds"]}
             for name, m in result["runs"].items()}
    return {
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "budget_seconds": BUDGET_S,
        "within_budget": wall <= BUDGET_S,
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "classes": result["classes"], "class_counts": result["class_counts"], "chance": result["chance"],
        "table": table, "python": platform.python_version(), "torch": torch.__version__, "commit": _commit(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="run the demo into this new folder and keep it")
    ap.add_argument("--out", type=Path, default=RESULT, help="where the JSON goes")
    args = ap.parse_args()
    rec = measure(args.keep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, rec)
    print(f"{rec['wall_seconds']} s wall, {rec['cpu_seconds']} s CPU on {rec['cpus_usable']} CPUs "
          f"(load {rec['load_average_before'][0]} → {rec['load_average_after'][0]}) → {args.out}")


if __name__ == "__main__":
    main()
