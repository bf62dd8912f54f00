"""Executors (cadx.runs.executors): serial vs Ray give the same run folder; resume, errors, options, train.devices.

The Ray tests share one local Ray instance (2 CPUs) and one tiny synthetic cohort (12 patients, 16 px, 1 epoch,
2 folds); they are ``slow`` (Ray's start and each worker's first torch/Lightning import take tens of seconds on
the shared 2-core machine) and ``ci`` (the identical-results test is a deliverable of issue 19).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.errors import CadxConfigError, CadxDataError
from cadx.runs.cv import run_cv
from cadx.runs.executors import WARM_MODULES, RayExecutor, SerialExecutor, make_executor, warm_up
from cadx.runs.lock import LOCK_NAME, holds_lock
from cadx.training.trainer import RankBatches, ddp_settings

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.options={n_patients: 12}", "input.size=16", "train.epochs=1", "train.batch_size=16",
        "train.progress=false", "cv.folds=2", "eval.bootstrap=50", "model.kwargs={width: 4, stem: small}"]


# --- no Ray ------------------------------------------------------------------------------------------------------
def test_serial_map_runs_in_order_in_this_process() -> None:
    seen: list[int] = []

    def f(a: int, b: int) -> tuple[int, int]:
        seen.append(a)
        return a * b, os.getpid()

    got = list(SerialExecutor().map(f, [(1, 2), (3, 4), (5, 6)]))
    assert got == [(0, (2, os.getpid())), (1, (12, os.getpid())), (2, (30, os.getpid()))]
    assert seen == [1, 3, 5]
    assert list(SerialExecutor().map(f, [])) == []


def test_make_executor_options_are_checked() -> None:
    assert make_executor().name == "serial"
    ray_ex = make_executor("ray", "ray://head.example:10001", 2, progress=False)
    assert isinstance(ray_ex, RayExecutor) and ray_ex.cpus_per_task == 2 and ray_ex.address == "ray://head.example:10001"
    assert make_executor("ray", "auto").address == "auto"  # type: ignore[attr-defined]
    assert make_executor("ray", "10.0.0.5:6379").address == "10.0.0.5:6379"  # type: ignore[attr-defined]
    with pytest.raises(CadxConfigError, match=r"--executor: 'dask' is not one of serial, ray"):
        make_executor("dask")
    with pytest.raises(CadxConfigError, match="--address: only with --executor ray"):
        make_executor("serial", "auto")
    with pytest.raises(CadxConfigError, match="--address: 'http://x' is not"):
        make_executor("ray", "http://x")
    with pytest.raises(CadxConfigError, match="--cpus-per-task: must be at least 1, got 0"):
        make_executor("ray", None, 0)
    with pytest.raises(CadxConfigError, match="exceeds the 2 CPUs"):
        RayExecutor(cpus_per_task=3, num_cpus=2)
    # a copy sent to a task never owns (and so never shuts down) the driver's Ray instance
    ex = RayExecutor(progress=False)
    ex._started = True
    import pickle

    copy = pickle.loads(pickle.dumps(ex))  # also: the start thread and its events never travel
    assert copy._started is False and copy._starter is None and copy.cpus_per_task == ex.cpus_per_task
    nested = ex.nested()
    assert isinstance(nested, RayExecutor) and nested.progress is False and nested.address is None


def test_train_devices_validation_on_cpu() -> None:
    cfg_path = ROOT / "configs" / "synthetic_resnet18.yaml"
    assert load_config(cfg_path).train.devices == 1
    assert ddp_settings(load_config(cfg_path)) == {}
    with pytest.raises(CadxConfigError, match=r"train\.devices: Input should be greater than or equal to 1"):
        load_config(cfg_path, ["train.devices=0"])
    with pytest.raises(CadxConfigError, match="devices: 2 \\(DDP over GPUs\\) needs accelerator auto, gpu or cuda"):
        load_config(cfg_path, ["train.devices=2", "train.accelerator=cpu"])
    two = load_config(cfg_path, ["train.devices=2"])
    if torch.cuda.device_count() < 2:
        with pytest.raises(CadxConfigError, match=r"train\.devices: 2 \(DDP\) needs 2 CUDA GPUs"):
            ddp_settings(two)
    else:
        assert ddp_settings(two) == {"strategy": "ddp_spawn"}


class _Epochs:
    """A batch sampler whose epoch ``e`` yields 7 batches ``[[10e + b] for b in 0..6]``."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter([[10 * self.epoch + b] for b in range(7)])

    def __len__(self) -> int:
        return 7


def test_rank_batches_share_each_epoch_between_ranks() -> None:
    inner = _Epochs()
    r0, r1 = RankBatches(inner, 0, 2), RankBatches(inner, 1, 2)
    assert list(r0) == [[0], [2], [4]] and list(r1) == [[1], [3], [5]]  # batch 6 dropped: equal step counts
    assert len(r0) == len(r1) == 3 and r0.sampler is r0
    r1.set_epoch(2)
    assert list(r0) == [[20], [22], [24]] and list(r1) == [[21], [23], [25]]
    assert list(RankBatches(inner)) == [[20 + b] for b in range(7)] and len(RankBatches(inner)) == 7


def test_warm_up_imports_what_it_can_and_returns_its_pid() -> None:
    import sys

    sys.modules.pop("colorsys", None)
    assert warm_up(["colorsys", "cadx_no_such_module"]) == os.getpid()  # a missing module is skipped
    assert "colorsys" in sys.modules
    assert WARM_MODULES[0] == "torch" and "cadx.runs.cv" in WARM_MODULES


def test_ray_start_returns_at_once_and_map_reraises_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``start()`` runs Ray's start on a thread (returns before it finishes); the start's error reaches the caller
    from the next ``map``, and ``close`` after a failed start is harmless."""
    import threading
    import time

    release = threading.Event()

    def slow_fail(self: RayExecutor) -> Any:
        release.wait(5)
        raise CadxConfigError("--address 10.0.0.9:6379: Ray did not start or connect (ConnectionError: no)")

    monkeypatch.setattr(RayExecutor, "_ray", slow_fail)
    ex = RayExecutor(address="10.0.0.9:6379", progress=False)
    t0 = time.perf_counter()
    ex.start(["json"])
    ex.start()  # idempotent: still one starter thread
    assert time.perf_counter() - t0 < 1.0 and ex._starter is not None and ex._starter.is_alive()
    release.set()
    with pytest.raises(CadxConfigError, match=r"^--address 10.0.0.9:6379: Ray did not start"):
        dict(ex.map(lambda k: k, [(1,)]))
    ex.close()
    assert SerialExecutor().start(["json"]) is None  # the serial executor has nothing to start


# --- Ray ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_ex() -> Iterator[RayExecutor]:
    ex = RayExecutor(num_cpus=2, cpus_per_task=1, progress=True)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    root = tmp_path_factory.mktemp("synthetic")
    return load_config(ROOT / "configs" / "synthetic_resnet18.yaml", [f"data.root={root}", *TINY])


@pytest.fixture(scope="module")
def both_runs(tiny: ExperimentConfig, ray_ex: RayExecutor, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    base = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial folds use the threads the Ray tasks use (cpus_per_task = 1)
    try:
        serial = run_cv(tiny, base / "serial")
    finally:
        torch.set_num_threads(threads)
    ray = run_cv(tiny, base / "ray", executor=ray_ex)
    return base / "serial", base / "ray", serial, ray


def _numbers(df: pd.DataFrame) -> pd.DataFrame:
    return df.select_dtypes("number")


def _same(a: Any, b: Any) -> bool:
    """Equal metric dicts, NaN == NaN (an undefined per-class precision is NaN in both)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow
@pytest.mark.ci
def test_ray_two_fold_run_equals_serial(both_runs: tuple[Path, Path, dict[str, Any], dict[str, Any]]) -> None:
    s_dir, r_dir, s_m, r_m = both_runs
    for name in ("predictions.csv", "predictions_slices.csv", "fold_0/predictions.csv", "fold_1/predictions.csv"):
        a, b = pd.read_csv(s_dir / name), pd.read_csv(r_dir / name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0, name
        assert (a.select_dtypes(exclude="number").astype(str).values
                == b.select_dtypes(exclude="number").astype(str).values).all(), name
        np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0,
                                   err_msg=name)
    studies = pd.read_csv(r_dir / "predictions.csv")
    assert len(studies) == 12 and studies["study_id"].is_unique and set(studies["fold"]) == {0, 1}
    assert studies.groupby("patient_id")["fold"].nunique().max() == 1  # patients never cross folds
    assert _same(r_m["pooled"], s_m["pooled"])  # the same metrics, CIs included (same seed, same rows)
    assert r_m["pooled"]["auc"] == s_m["pooled"]["auc"] and np.isfinite(r_m["pooled"]["auc"])
    for k in (0, 1):
        fs, fr = (json.loads((d / f"fold_{k}" / "metrics.json").read_text()) for d in (s_dir, r_dir))
        assert _same(fr, fs)
    assert (r_dir / "splits.json").read_text() == (s_dir / "splits.json").read_text()
    assert not holds_lock(r_dir) and (r_dir / LOCK_NAME).read_text() == ""  # the driver released its lock


@pytest.mark.slow
@pytest.mark.ci
def test_ray_resume_skips_done_folds_and_reproduces(both_runs: tuple[Path, Path, dict[str, Any], dict[str, Any]],
                                                    tiny: ExperimentConfig, ray_ex: RayExecutor,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s_dir, r_dir, _, r_m = both_runs
    run = tmp_path / "resumed"
    shutil.copytree(r_dir, run)
    shutil.rmtree(run / "fold_1")  # fold 1 "killed" before it started; fold 0 DONE
    (run / "predictions.csv").unlink()
    done0 = (run / "fold_0" / "DONE").stat().st_mtime_ns
    m = run_cv(tiny, run, resume=True, executor=ray_ex)
    assert (run / "fold_0" / "DONE").stat().st_mtime_ns == done0  # the DONE fold was read back, not rerun
    assert (run / "fold_1" / "DONE").is_file()
    err = capsys.readouterr().err
    assert "folds (ray, 1 CPU each)" in err and "1/1" in err and "finished fold 1" in err  # the progress bar
    a, b = pd.read_csv(s_dir / "predictions.csv"), pd.read_csv(run / "predictions.csv")
    np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0)
    assert _same(m["pooled"], r_m["pooled"])


@pytest.mark.slow
@pytest.mark.ci
def test_ray_cv_final_is_a_third_task_with_the_serial_final_model(
        both_runs: tuple[Path, Path, dict[str, Any], dict[str, Any]], tiny: ExperimentConfig, ray_ex: RayExecutor,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cadx cv --final --executor ray``: the final model is one more Ray task beside the 2 folds; the folds are
    the serial run's and ``final/`` equals ``train_final`` run serially with the task's 1 thread."""
    from cadx.runs import train_final

    s_dir = both_runs[0]
    cfg = tiny.model_copy(update={"cv": tiny.cv.model_copy(update={"final": True})})
    run_cv(cfg, tmp_path / "ray", executor=ray_ex)
    err = capsys.readouterr().err
    assert "folds (ray, 1 CPU each)" in err and "3/3" in err  # 2 folds + the final model, one progress bar
    a, b = pd.read_csv(s_dir / "predictions.csv"), pd.read_csv(tmp_path / "ray" / "predictions.csv")
    np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = train_final(tiny, tmp_path / "serial")
    finally:
        torch.set_num_threads(threads)
    got = [torch.load(d / "checkpoint_last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
           for d in (tmp_path / "ray" / "final", alone)]
    assert got[0].keys() == got[1].keys() and all(torch.equal(got[0][k], got[1][k]) for k in got[0])
    assert (json.loads((tmp_path / "ray" / "final" / "metrics.json").read_text())
            == json.loads((alone / "metrics.json").read_text()))


@pytest.mark.slow
@pytest.mark.ci
def test_cli_cv_executor_ray_writes_the_serial_numbers(both_runs: tuple[Path, Path, dict[str, Any], dict[str, Any]],
                                                       tiny: ExperimentConfig, ray_ex: RayExecutor,
                                                       tmp_path: Path) -> None:
    """``cadx cv CONFIG --executor ray --cpus-per-task 1`` (joins the Ray instance already running here, which
    it then leaves running); bad option values are one line each."""
    from typer.testing import CliRunner

    from cadx.cli import app

    s_dir = both_runs[0]
    cfg_path = tmp_path / "tiny.yaml"
    tiny.save(cfg_path)
    runner = CliRunner()
    res = runner.invoke(app, ["cv", str(cfg_path), "--out", str(tmp_path / "run"), "--executor", "ray",
                              "--cpus-per-task", "1"], terminal_width=200)
    assert res.exit_code == 0, res.output
    a, b = pd.read_csv(s_dir / "predictions.csv"), pd.read_csv(tmp_path / "run" / "predictions.csv")
    np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0)
    import ray  # optional dependency: ray (the test's shared instance must still be up)

    assert ray.is_initialized()
    # (cli.main turns these CadxConfigErrors into one stderr line and exit code 2; app alone lets them through)
    bad = runner.invoke(app, ["cv", str(cfg_path), "--executor", "ray", "--address", "nowhere"])
    assert isinstance(bad.exception, CadxConfigError)
    assert str(bad.exception) == "--address: 'nowhere' is not 'auto', HOST:PORT or ray://HOST:PORT"


@pytest.mark.slow
@pytest.mark.ci
def test_cli_seeds_on_ray_equal_the_serial_seed_runs(tiny: ExperimentConfig, ray_ex: RayExecutor,
                                                      tmp_path: Path) -> None:
    """``cadx cv CONFIG --seeds 0,1 --executor ray``: each seed a coordinator task, the 2 × 2 folds side by side;
    every seed folder, the ensemble and seeds.json equal :func:`run_seeds` run serially (1 thread per fold)."""
    from typer.testing import CliRunner

    from cadx.cli import app
    from cadx.runs.seeds import run_seeds

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_seeds(tiny, [0, 1], tmp_path / "serial", report=False)
    finally:
        torch.set_num_threads(threads)
    cfg_path = tmp_path / "tiny.yaml"
    tiny.save(cfg_path)
    res = CliRunner().invoke(app, ["cv", str(cfg_path), "--out", str(tmp_path / "ray"), "--seeds", "0,1",
                                   "--executor", "ray", "--cpus-per-task", "1"], terminal_width=200)
    assert res.exit_code == 0, res.output
    ray_rec = json.loads((tmp_path / "ray" / "seeds.json").read_text())
    assert [ray_rec["runs"][s]["status"] for s in ("0", "1")] == ["run", "run"]
    for d in ("seed_0", "seed_1", "ensemble"):
        a, b = (pd.read_csv(tmp_path / r / d / "predictions.csv") for r in ("serial", "ray"))
        assert len(a) == len(b) == 12, d
        np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0,
                                   err_msg=d)
    assert _same(ray_rec["metrics"], serial["metrics"])
    p0, p1 = (pd.read_csv(tmp_path / "ray" / d / "predictions.csv").filter(like="p_") for d in ("seed_0", "seed_1"))
    assert p0.shape[1] >= 2 and not np.allclose(p0.to_numpy(), p1.to_numpy())  # the training seed reached the folds
    again = run_seeds(tiny, [0, 1], tmp_path / "ray", report=False, executor=ray_ex)  # finished: nothing rerun
    assert [again["runs"][s]["status"] for s in ("0", "1")] == ["reused (finished before)"] * 2


@pytest.mark.slow
def test_handcrafted_run_kind_on_ray_equals_serial(tiny: ExperimentConfig, ray_ex: RayExecutor,
                                                   tmp_path: Path) -> None:
    """The ``handcrafted`` kind's fold function closes over the features of every item (a nested function):
    it travels to the Ray tasks as it is and gives the serial run's SVM probabilities."""
    from cadx.config import derive

    cfg = derive(tiny, source="hc_svm on the tiny cohort", name="hc_tiny", model={"name": "hc_svm", "kwargs": {}})
    serial = run_cv(cfg, tmp_path / "serial")
    ray = run_cv(cfg, tmp_path / "ray", executor=ray_ex)
    a, b = pd.read_csv(tmp_path / "serial" / "predictions.csv"), pd.read_csv(tmp_path / "ray" / "predictions.csv")
    assert len(a) == 12 and list(a["study_id"]) == list(b["study_id"])
    np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0)
    assert _same(serial["pooled"], ray["pooled"]) and ray["run"]["model"] == "hc_svm"


@pytest.mark.slow
@pytest.mark.ci
def test_ray_task_error_reaches_the_driver_as_its_own_one_line_error(ray_ex: RayExecutor) -> None:
    def boom(k: int) -> int:
        if k == 1:
            raise CadxDataError("bad value", path="study_1.nii.gz", field="label")
        return k * 10

    with pytest.raises(CadxDataError) as info:
        dict(ray_ex.map(boom, [(0,), (1,)], labels=["a", "b"]))
    assert str(info.value) == "study_1.nii.gz: label: bad value"

    def pid_threads(k: int) -> tuple[int, int, int]:
        return k, os.getpid(), torch.get_num_threads()

    got = dict(ray_ex.map(pid_threads, [(0,), (1,), (2,)]))
    assert sorted(got) == [0, 1, 2] and all(v[0] == k for k, v in got.items())
    assert all(v[1] != os.getpid() for v in got.values())  # tasks ran in Ray workers, not here
    assert all(v[2] == 1 for v in got.values())  # torch threads = cpus_per_task

    # run_cv started this executor: one warm-up task per CPU slot ran in a worker, which imported torch + cadx
    import ray

    warmed = ray.get(ray_ex._warm_refs)
    assert len(warmed) == 2 and os.getpid() not in warmed


def _detection_manifest(root: Path) -> Path:
    """6 one-patient 3D studies (8 × 64 × 64) with one bright box lesion each: test_detector's cohort."""
    from test_detector import _tiny_manifest

    return _tiny_manifest(root)


@pytest.mark.slow
def test_detection_study_variants_as_ray_tasks_equal_serial(ray_ex: RayExecutor, tmp_path: Path) -> None:
    """``cadx study detection --executor ray``: each loss variant is a coordinator task running its folds as Ray
    tasks; the study's numbers equal the serial study's."""
    from cadx.studies.detection import run_detection_study

    csv = _detection_manifest(tmp_path)
    cfg = load_config(None, [f"data.root={csv}", "data.dataset=manifest", "data.allow_unlabelled=true",
                             "task.classification=false", "model.name=yolo_dense",
                             "model.kwargs={growth_rate: 4, block_config: [1, 1, 1, 1], num_init_features: 8, "
                             "anchor: 16.0}", "objective={det_focal: {weight: 1.0, gamma: 1.0}, det_box_mse: 0.5}",
                             "train.epochs=1", "train.batch_size=4", "train.progress=false", "cv.folds=2",
                             "eval.bootstrap=20", "detection={size: 64, crop: 32}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_detection_study(cfg, tmp_path / "serial", ["bce", "focal"])
    finally:
        torch.set_num_threads(threads)
    finished: list[str] = []
    ray = run_detection_study(cfg, tmp_path / "ray", ["bce", "focal"], executor=ray_ex,
                              on_run=lambda name, m: finished.append(name))
    assert sorted(finished) == ["bce", "focal"] and list(ray["runs"]) == ["bce", "focal"]
    for v in ("bce", "focal"):
        assert _same(ray["runs"][v]["lesion"], serial["runs"][v]["lesion"]), v
        run = f"{cfg.name}_{v}"
        a, b = (pd.read_csv(tmp_path / d / "runs" / run / "predictions_slices.csv") for d in ("serial", "ray"))
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(_numbers(a).to_numpy(float), _numbers(b).to_numpy(float), atol=1e-6, rtol=0)
        assert (tmp_path / "ray" / "runs" / run / LOCK_NAME).read_text() == ""  # the coordinator released it
    assert "| bce |" in (tmp_path / "ray" / "report.md").read_text()  # tables written (seconds differ, by design)
