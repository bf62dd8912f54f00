"""Calibration (Brier, ECE with patient-bootstrap CIs, reliability diagrams) of committed binary predictions.

Reads the committed AdrenalMNIST3D test predictions (``benchmarks/results/dmrn/<run>/predictions.csv``, positive
class ``adrenal_mass``) without refitting anything — no validation predictions are committed, so no post-hoc
scaling can be fitted honestly here — and writes ``benchmarks/results/calibration/adrenalmnist3d28/``
(``calibration.json``, ``<run>_reliability.png``). Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration_committed.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from cadx.evaluation.calibration import calibration_metrics
from cadx.report.figures import reliability_png

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "results" / "dmrn"
OUT = ROOT / "results" / "calibration" / "adrenalmnist3d28"
RUNS = ["adrenalmnist3d28_cnn3d_small", "adrenalmnist3d28_cnn3d_small_s1", "adrenalmnist3d28_cnn3d_small_s2",
        "adrenalmnist3d28_dmrn3d_ce", "adrenalmnist3d28_ens_cnn3d_3seeds"]
POSITIVE = "adrenal_mass"
N_BOOTSTRAP, SEED, N_BINS = 2000, 0, 10


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result: dict[str, dict] = {}
    for name in RUNS:
        df = pd.read_csv(SRC / name / "predictions.csv", dtype={"study_id": str, "patient_id": str})
        classes = json.loads((SRC / name / "metrics.json").read_text()).get("classes") or ["normal", POSITIVE]
        res: dict[str, dict] = {}
        for strategy in ("uniform", "quantile"):
            cal = calibration_metrics(df, classes, POSITIVE, N_BINS, strategy, N_BOOTSTRAP, SEED, "none")
            assert cal is not None
            res[strategy] = cal
            if strategy == "uniform":
                png = reliability_png({"as predicted": cal}, f"{name} (test, n={cal['n']})")
                assert png is not None
                (OUT / f"{name}_reliability.png").write_bytes(png)
        result[name] = res
        u, q = res["uniform"], res["quantile"]
        print(f"{name}: n={u['n']} Brier {u['brier']:.4f} [{u['ci']['brier'][0]:.4f}, {u['ci']['brier'][1]:.4f}]"
              f"  ECE equal-width {u['ece']:.4f} [{u['ci']['ece'][0]:.4f}, {u['ci']['ece'][1]:.4f}]"
              f"  ECE equal-mass {q['ece']:.4f} [{q['ci']['ece'][0]:.4f}, {q['ci']['ece'][1]:.4f}]")
    (OUT / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wall {time.perf_counter() - t0:.1f} s, CPU {time.process_time() - c0:.1f} s")


if __name__ == "__main__":
    main()
