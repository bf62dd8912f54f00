"""Resume after a real kill: a CV run in a subprocess is SIGKILLed in the middle of a fold (right after that fold's
first ``checkpoint_last.ckpt``), ``run_cv(..., resume=True)`` finishes it, and the predictions/metrics must equal an
uninterrupted run of the same seed exactly.

Also a measurement script on the synthetic DICOM cohort::

    .venv/bin/python tests/test_engine_resume.py OUT_DIR [--set key=value ...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import helpers  # noqa: F401  (registers the tiny stand-ins)
from cadx.config import load_config
from cadx.runs import run_cv
cfg = load_config({cfg!r})
run_cv(cfg, {out!r})
"""


def kill_mid_fold(cfg_path: Path, out: Path, fold: int = 1, timeout: float = 600.0) -> float:
    """Start ``run_cv`` in a subprocess and SIGKILL it once ``fold_<fold>/checkpoint_last.ckpt`` exists (and the fold
    is not done). Returns the seconds until the kill."""
    code = _CHILD.format(tests=str(TESTS), cfg=str(cfg_path), out=str(out))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.perf_counter()
    target = out / f"fold_{fold}" / "checkpoint_last.ckpt"
    try:
        while not target.is_file():
            if proc.poll() is not None:
                raise RuntimeError(f"child ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("no checkpoint appeared")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return time.perf_counter() - t0


def compare(run: Path, ref: Path) -> dict[str, object]:
    """Exact comparison of pooled predictions and metrics of two run folders."""
    a, b = pd.read_csv(run / "predictions.csv"), pd.read_csv(ref / "predictions.csv")
    ma, mb = json.loads((run / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    ma.pop("run", None)
    mb.pop("run", None)
    return {"predictions_equal": a.equals(b), "metrics_equal": ma == mb,
            "accuracy": (ma["pooled"].get("accuracy"), mb["pooled"].get("accuracy")),
            "auc": (ma["pooled"].get("auc"), mb["pooled"].get("auc"))}


@pytest.mark.slow
def test_sigkill_mid_fold_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Slow (a second Python process); CI runs the in-process crash/resume test of test_engine_cv instead."""
    import torch

    from cadx.runs import run_cv
    from helpers import tiny_config

    torch.set_num_threads(1)

    cfg = tiny_config("train.epochs=3", "input.augment.enabled=true", "input.augment.noise=0.05",
                      "model.kwargs={dropout: 0.3}")
    cfg_path = cfg.save(tmp_path / "cfg.yaml")
    run_cv(cfg, tmp_path / "ref")
    kill_mid_fold(cfg_path, tmp_path / "run", fold=1)
    run = tmp_path / "run"
    assert (run / "fold_0" / "DONE").is_file() and not (run / "fold_1" / "DONE").is_file()
    assert not (run / "metrics.json").exists()
    run_cv(cfg, run, resume=True)
    res = compare(run, tmp_path / "ref")
    assert res["predictions_equal"] and res["metrics_equal"], res


def main(argv: list[str]) -> None:
    """Measurement on the synthetic cohort: uninterrupted run vs killed-in-fold-1 + resumed run."""
    from cadx.config import load_config, packaged_config_path
    from cadx.runs import run_cv

    out = Path(argv[0])
    sets = [a for a in argv[1:] if a != "--set"]
    cfg = load_config(packaged_config_path("demo_resnet"), [f"data.root={out / 'data'}", "train.progress=false",
                                                            *sets])
    cfg_path = cfg.save(out / "cfg.yaml")
    t = time.perf_counter()
    run_cv(cfg, out / "ref")
    t_ref = time.perf_counter() - t
    t_kill = kill_mid_fold(cfg_path, out / "run", fold=1)
    epochs = len(pd.read_csv(out / "run" / "fold_1" / "history.csv"))
    t = time.perf_counter()
    run_cv(cfg, out / "run", resume=True)
    res = compare(out / "run", out / "ref")
    res.update(uninterrupted_seconds=round(t_ref, 1), killed_after_seconds=round(t_kill, 1),
               fold1_epochs_done_at_kill=epochs, resume_seconds=round(time.perf_counter() - t, 1))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
