"""Wall time of ``cadx`` commands in a cold process each, and ONNX vs PyTorch parity of ``cadx predict``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/predict_latency.py [--work /tmp/cadx_predict_latency]
        [--out benchmarks/results/predict_latency] [--repeats 5]

Builds what it needs in ``--work`` (kept between invocations): a 100-slice CT series (DICOM, 512 x 512, from the
first 100 slices of ../shared/data/ct_examples/example_ct.nii.gz resampled in-plane, written by
``cadx.data.dicom_write``), the 2D model run of ``<out>/config.yaml`` (``cadx cv``, 2 folds: the fold ensemble
predicts) and its ONNX export (``cadx export``). Then times, ``--repeats`` times each in a new process
(``subprocess``, process start included): ``cadx --help``, ``cadx models list``, ``cadx predict --help``,
``cadx predict RUN --study SERIES --json`` (torch) and the same with ``--backend onnx``, interleaved; per run the
wall time, the child's CPU time (user + sys, ``getrusage``) and the load average before it (``os.getloadavg``).
Parity: the two predict outputs' probabilities, and the slice probabilities of both backends' predictors on the
series' 100 items (in this process).
Writes ``<out>/latency.json`` (with ``heavy_imports_of_predict``: which of torch, onnxruntime, MONAI, Lightning,
scikit-learn, SciPy, pandas, matplotlib, scikit-image, SimpleITK, nibabel, pydicom each backend's predict imported),
``<out>/predict_torch.json``, ``<out>/predict_onnx.json`` and ``<out>/importtime_*.txt`` (the 25 slowest imports of
each predict, ``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CADX = [str(Path(sys.executable).parent / "cadx")]  # the console script of this environment
SHARED = Path(os.environ.get("CADX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def make_series(folder: Path, n_slices: int = 100, size: int = 512) -> Path:
    """The first ``n_slices`` of the shared example CT (3 mm, HU) resampled in-plane to ``size`` px (linear), as a
    DICOM series with deterministic UIDs; kept when already written."""
    if len(list(folder.glob("*.dcm"))) == n_slices:
        return folder
    from scipy.ndimage import zoom  # benchmark-only dependency of the series builder

    from cadx.data.dicom_write import write_dicom_series
    from cadx.data.readers import read_image

    img = read_image(SHARED / "ct_examples" / "example_ct.nii.gz")
    vol = np.asarray(img.array[0][:n_slices], np.float32)
    zy, zx = size / vol.shape[1], size / vol.shape[2]
    vol = zoom(vol, (1.0, zy, zx), order=1)
    spacing = (float(img.spacing[0]), float(img.spacing[1]) / zy, float(img.spacing[2]) / zx)
    write_dicom_series(np.round(vol).astype(np.int16), spacing, folder, patient_id="LATENCY", uid_seed="latency")
    return folder


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """``(wall seconds, CPU seconds (user + sys) of the child process), result``; a failure stops the benchmark."""
    c0, t0 = _child_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall, cpu, res


def slowest_imports(cmd: list[str], env: dict[str, str], top: int = 25) -> str:
    """``python -X importtime`` of ``cmd`` (a cadx command): the ``top`` largest cumulative import times."""
    code = "import sys; from cadx.cli import main; sys.argv = ['cadx', *sys.argv[1:]]; main()"
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *cmd], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    rows.sort(reverse=True)
    return "\n".join(f"{c / 1e6:7.3f} s  depth {d:2d}  {name}" for c, d, name in rows[:top]) + "\n"


#: Packages whose import dominated ``cadx predict`` before issue 19 item 3 (reported per backend in latency.json).
HEAVY = ("torch", "onnxruntime", "monai", "lightning", "sklearn", "scipy", "pandas", "matplotlib", "skimage",
         "SimpleITK", "nibabel", "pydicom")


def heavy_imports(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Which of :data:`HEAVY` a cadx command (``cmd`` without the ``cadx``) has imported when it exits."""
    code = ("import sys, json, atexit\n"
            f"atexit.register(lambda: sys.stderr.write('LOADED ' + json.dumps([n for n in {list(HEAVY)!r} "
            "if n in sys.modules]) + '\\n'))\n"
            "from cadx.cli import main; sys.argv = ['cadx', *sys.argv[1:]]; main()\n")
    res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((ln for ln in res.stderr.splitlines() if ln.startswith("LOADED ")), "LOADED []")
    return list(json.loads(line[len("LOADED "):]))


def parity(run_dir: Path, series: Path) -> dict[str, Any]:
    """Max abs difference of the slice probabilities (every item, every fold model) of the torch and ONNX
    predictors on the series, through the prediction path's ``item_outputs``."""
    import torch

    from cadx.data.image import LazyImage
    from cadx.data.readers import read_image
    from cadx.data.study import Cohort, Study
    from cadx.pipeline.items import build_store
    from cadx.runs.folder import model_dirs, run_config
    from cadx.runs.inference import item_outputs, load_predictor
    from cadx.runs.onnx_backend import export_folder, export_model_dirs

    torch.set_num_threads(1)
    dirs = model_dirs(run_dir)
    cfg = run_config(run_dir, dirs)
    img = read_image(series)
    tp = [load_predictor(d) for d in dirs]
    op = [load_predictor(d, "onnx") for d in export_model_dirs(export_folder(run_dir))]
    classes = [str(c) for c in tp[0].spec["classes"]]
    study = Study("series", "series", images={"image": LazyImage(lambda: img, str(series))})
    store = build_store(Cohort([study], classes=classes), cfg, classes=classes, attributes=[], progress=False)
    diffs = []
    for t, o in zip(tp, op, strict=True):
        a, b = item_outputs(cfg, [t], store.images), item_outputs(cfg, [o], store.images)
        diffs.append(float(np.abs(a["proba"] - b["proba"]).max()))
    return {"items": len(store), "models": len(dirs), "max_abs_diff_slice_proba_per_model": diffs,
            "max_abs_diff_slice_proba": max(diffs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cadx_predict_latency"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_latency")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    setup: dict[str, Any] = {}
    series = make_series(work / "ct_series")
    run_dir = work / "run"
    if not (run_dir / "metrics.json").is_file():
        wall, _, _ = run([*CADX, "cv", str(out / "config.yaml"), "--out", str(run_dir), "--data-root",
                       str(work / "synth")], env)
        setup["cv_seconds"] = round(wall, 1)
    wall, _, _ = run([*CADX, "export", str(run_dir), "--format", "onnx"], env)
    setup["export_seconds"] = round(wall, 2)
    predict = [*CADX, "predict", str(run_dir), "--study", str(series), "--json"]
    commands = {"cadx --help": [*CADX, "--help"], "cadx models list": [*CADX, "models", "list"],
                "cadx predict --help": [*CADX, "predict", "--help"],
                "cadx predict (torch)": predict, "cadx predict --backend onnx": [*predict, "--backend", "onnx"]}
    timings: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for _ in range(args.repeats):   # interleaved, so a change of machine load hits every command alike
        for name, cmd in commands.items():
            load = os.getloadavg()
            wall, cpu, res = run(cmd, env)
            t = timings.setdefault(name, {"seconds": [], "cpu_seconds": [], "loadavg_1min_before": []})
            t["seconds"].append(round(wall, 3))
            t["cpu_seconds"].append(round(cpu, 3))
            t["loadavg_1min_before"].append(round(load[0], 2))
            if "predict (" in name or "--backend" in name:
                outputs[name] = json.loads(res.stdout)
    for t in timings.values():
        t["median"] = round(statistics.median(t["seconds"]), 3)
        t["min"] = min(t["seconds"])
        t["median_cpu"] = round(statistics.median(t["cpu_seconds"]), 3)
    p_t, p_o = outputs["cadx predict (torch)"], outputs["cadx predict --backend onnx"]
    study_diff = max(abs(p_t["probabilities"][c] - p_o["probabilities"][c]) for c in p_t["probabilities"])
    (out / "predict_torch.json").write_text(json.dumps(p_t, indent=2) + "\n")
    (out / "predict_onnx.json").write_text(json.dumps(p_o, indent=2) + "\n")
    imported: dict[str, list[str]] = {}
    for name, cmd in (("torch", predict[len(CADX):]), ("onnx", [*predict[len(CADX):], "--backend", "onnx"])):
        (out / f"importtime_{name}.txt").write_text(slowest_imports(cmd, env))
        imported[name] = heavy_imports(cmd, env)
    record = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "threads": env["OMP_NUM_THREADS"], "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]},
        "series": {"path": str(series), "slices": len(list(series.glob("*.dcm"))), "size": "512x512"},
        "run": str(run_dir), "setup": setup, "repeats": args.repeats, "timings": timings,
        "heavy_imports_of_predict": imported,
        "parity": {"max_abs_diff_study_proba": study_diff, **parity(run_dir, series)},
        "same_prediction": p_t["prediction"] == p_o["prediction"],
    }
    (out / "latency.json").write_text(json.dumps(record, indent=2) + "\n")
    for name, t in timings.items():
        print(f"{name:28s} median {t['median']:.2f} s wall, {t['median_cpu']:.2f} s CPU  (runs {t['seconds']}, "
              f"load {t['loadavg_1min_before']})")
    print(f"parity: study {study_diff:.2e}, slices {record['parity']['max_abs_diff_slice_proba']:.2e}")
    for name, mods in imported.items():
        print(f"cadx predict ({name}) imported: {', '.join(mods)}")


if __name__ == "__main__":
    main()
