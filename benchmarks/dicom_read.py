"""Benchmark: slices/s of ``cadx.data.readers.read_dicom_series`` against a naive per-file pydicom loop.

Run: ``.venv/bin/python benchmarks/dicom_read.py [--repeats 3] [--slices 200]``. Cases: the shared real CT
series (20 slices, JPEG 2000, skipped when ../shared/data is absent) and a 200-slice 512×512 uncompressed
series written with ``write_dicom_series`` into a temporary folder. Each reader runs once to warm the file
cache, then ``repeats`` times interleaved; the ratio (naive median time / cadx median time) is measured in the
same run. SimpleITK's GDCM ``ImageSeriesReader`` is timed too, for reference. Every reader's volume is checked
against the naive one. Writes ``benchmarks/results/dicom_read.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from cadx.data.dicom_write import write_dicom_series
from cadx.data.readers import read_dicom_series
from cadx.data.readers_dicom import naive_read_series
from cadx.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CADX_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "dicom_read.json"


def _sitk_read(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))  # GDCM sorts along the normal
    reader.SetFileNames(names)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(reader.Execute())


def _time(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench(name: str, folder: Path, repeats: int) -> dict:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    n = len(files)
    readers: dict[str, Callable[[], np.ndarray]] = {
        "naive_pydicom": lambda: naive_read_series(files),
        "cadx": lambda: read_dicom_series(folder).array[0],
        "simpleitk_gdcm": lambda: _sitk_read(folder),
    }
    ref = readers["naive_pydicom"]()  # warm-up + reference volume
    equal = {}
    for key, fn in readers.items():
        if key != "naive_pydicom":
            equal[key] = bool(np.array_equal(fn(), ref))  # warm-up + correctness
    times: dict[str, list[float]] = {k: [] for k in readers}
    for _ in range(repeats):
        for key, fn in readers.items():
            times[key].append(_time(fn)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    ts = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    res = {
        "case": name, "slices": n, "shape": list(ref.shape), "transfer_syntax": ts.name,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "slices_per_s_median": {k: round(n / t, 1) for k, t in med.items()},
        "ratio_cadx_vs_naive": round(med["naive_pydicom"] / med["cadx"], 2),
        "ratio_simpleitk_vs_naive": round(med["naive_pydicom"] / med["simpleitk_gdcm"], 2),
        "equal_to_naive": equal,
    }
    print(f"{name}: {n} slices {ts.name}: " + ", ".join(f"{k} {v} sl/s" for k, v in
                                                       res["slices_per_s_median"].items())
          + f"; cadx/naive x{res['ratio_cadx_vs_naive']}; equal {equal}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slices", type=int, default=200)
    args = ap.parse_args()
    cases = []
    ct = SHARED / "ct_examples" / "example_ct_dicom"
    if ct.is_dir():
        cases.append(bench("shared_ct_20", ct, args.repeats))
    else:
        print(f"skipping the shared CT series: {ct} not found")
    with tempfile.TemporaryDirectory(prefix="cadx_bench_") as tmp:
        rng = np.random.default_rng(0)
        vol = rng.integers(-1024, 2000, (args.slices, 512, 512)).astype(np.float64)
        write_dicom_series(vol, (1.0, 0.7, 0.7), Path(tmp), patient_id="BENCH", uid_seed="bench",
                           shuffle_files=True)
        del vol
        cases.append(bench(f"synthetic_{args.slices}x512x512", Path(tmp), args.repeats))
    load = os.getloadavg()
    result = {
        "benchmark": "dicom_read", "repeats": args.repeats, "cases": cases,
        "machine": {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load],
                    "python": platform.python_version(), "pydicom": pydicom.__version__,
                    "simpleitk": sitk.Version.VersionString()},
        "command": ".venv/bin/python benchmarks/dicom_read.py" + (f" --repeats {args.repeats}"
                                                                 if args.repeats != 3 else ""),
    }
    atomic_write_json(OUT, result)
    print(f"wrote {OUT} (load average {load[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
