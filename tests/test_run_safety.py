"""Run-folder safety (issue 13): the exclusive run lock (a second writer is refused in one line naming the holder, a
stale lock of a killed process is taken over), ``seconds`` accumulating across resumes, truncated / foreign
checkpoints as one error line, and ``--allow-partial`` for runs with an unfinished fold."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.errors import CadxDataError
from cadx.runs import evaluate_run, run_cv, train_final
from cadx.runs.folder import run_models, run_seconds
from cadx.runs.lock import LOCK_NAME, CadxRunLockedError, holds_lock, read_holder, run_lock
from helpers import tiny_config, tiny_volume

LOCK_PY = Path(__file__).resolve().parents[1] / "src" / "cadx" / "runs" / "lock.py"
# another process holding a run folder's lock through the real cadx.runs.lock (loaded from its file: importing the
# cadx.runs package would take seconds), until its stdin closes
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cadx_lock", {lock!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
with mod.run_lock({run!r}):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold_lock(run: Path) -> subprocess.Popen[str]:
    """A child process that holds ``run``'s lock until its stdin is closed (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(lock=str(LOCK_PY), run=str(run))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cadx ARGS`` through the console entry point in this process: (exit code, stdout, stderr)."""
    from cadx.cli import main

    old = sys.argv
    sys.argv = ["cadx", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ---------------------------------------------------------------------------------------------------- the lock


def test_second_writer_is_refused_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        info = read_holder(run)
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
        with pytest.raises(CadxRunLockedError) as e:
            run_cv(tiny_config("train.epochs=1"), run)
        msg = str(e.value)
        assert "\n" not in msg
        assert f"pid {holder.pid} on host {socket.gethostname()} since {info['started']}" in msg
        assert str(run) in msg
        assert not (run / "config.yaml").exists()  # refused before anything was written
        with pytest.raises(CadxRunLockedError, match=f"pid {holder.pid}"):
            train_final(tiny_config("train.epochs=1"), run)  # `cadx train` takes the same lock
        assert not (run / "final").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert read_holder(run) == {}  # released cleanly: the lock file is emptied
    with run_lock(run):
        assert read_holder(run)["pid"] == os.getpid()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    holder = hold_lock(run)
    holder.kill()  # SIGKILL: the kernel drops the flock, the lock file still names the dead holder
    holder.wait(10)
    assert read_holder(run)["pid"] == holder.pid
    with run_lock(run):
        assert read_holder(run)["pid"] == os.getpid()
        assert holds_lock(run)
    err = capsys.readouterr().err
    assert f"took over a stale lock of pid {holder.pid} on host {socket.gethostname()}" in err
    assert err.count("\n") == 1
    assert f"pid {holder.pid}" in (run / "lock_takeovers.log").read_text()
    assert not holds_lock(run) and read_holder(run) == {}


def test_lock_naming_a_live_process_without_flock_is_not_taken(tmp_path: Path) -> None:
    """A lock file naming a live process on this host while the flock is free (a filesystem without flock):
    refused, with a hint; a dead pid in the same file is taken over."""
    run = tmp_path / "run"
    run.mkdir()
    info = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z"}
    (run / LOCK_NAME).write_text(json.dumps(info))
    with pytest.raises(CadxRunLockedError, match=f"pid {os.getppid()} .*delete it if"):
        with run_lock(run):
            pass
    (run / LOCK_NAME).write_text(json.dumps({**info, "pid": dead_pid()}))
    with run_lock(run):
        pass
    assert read_holder(run) == {}


def test_lock_is_reentrant_and_released_on_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with run_lock(run):
            with run_lock(run):  # start_run inside a run kind
                assert holds_lock(run)
            assert holds_lock(run)  # the inner exit keeps the outer hold
            raise RuntimeError("boom")
    assert not holds_lock(run) and read_holder(run) == {}
    holder = hold_lock(run)  # another process can take it now
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)


# ------------------------------------------------------------------------------------------- seconds across resumes


def test_run_seconds_adds_earlier_folds_to_this_invocation(tmp_path: Path) -> None:
    for k, s in ((0, 5.0), (1, 2.0)):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / "DONE").write_text(json.dumps({"fold": k, "seconds": s}))
    old = time.time() - 3600
    os.utime(tmp_path / "fold_0" / "DONE", (old, old))  # finished by an earlier invocation
    t0 = time.perf_counter() - 3.0  # this invocation: 3 s so far, 2 of them in fold 1
    assert run_seconds(tmp_path, t0) == pytest.approx(5.0 + 2.0 + 1.0, abs=0.05)


def test_metrics_seconds_accumulate_across_resume(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    run = tmp_path / "run"
    run_cv(cfg, run)
    # fold 0 finished in an earlier (killed) invocation that took 100 s; fold 1 was not finished
    done0 = run / "fold_0" / "DONE"
    done0.write_text(json.dumps({**json.loads(done0.read_text()), "seconds": 100.0}))
    old = time.time() - 3600
    os.utime(done0, (old, old))
    (run / "fold_1" / "DONE").unlink()
    (run / "metrics.json").unlink()
    t = time.perf_counter()
    m = run_cv(cfg, run, resume=True)
    wall = time.perf_counter() - t
    fold1 = json.loads((run / "fold_1" / "DONE").read_text())["seconds"]
    assert m["run"]["seconds"] == json.loads((run / "metrics.json").read_text())["run"]["seconds"]
    assert 100.0 + fold1 <= m["run"]["seconds"] <= 100.0 + wall + 0.05
    assert m["run"]["seconds"] > wall  # before: this invocation's time only


# ------------------------------------------------------------------------------------------ checkpoints, partial runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("safety") / "run"
    run_cv(tiny_config("train.epochs=1"), run)
    return run


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    vol, _, _ = tiny_volume(1, np.random.default_rng(9))
    np.save(tmp_path / "study.npy", vol[0])
    return tmp_path / "study.npy"


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("damage", ["truncated", "torch_dict", "text", "wrong_weights"])
def test_bad_checkpoint_via_cadx_predict_is_one_line(tiny_run: Path, tmp_path: Path, study: Path, damage: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(tiny_run, tmp_path)
    ckpt = run / "fold_1" / "checkpoint_best.ckpt"
    data = ckpt.read_bytes()
    if damage == "truncated":  # an interrupted copy
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "torch_dict":  # a Lightning checkpoint of another project
        torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 3}, ckpt)
    elif damage == "text":
        ckpt.write_text("not a checkpoint\n")
    else:  # a cadx checkpoint whose weights belong to another model
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        state["state_dict"] = {"model.other.weight": torch.zeros(3)}
        torch.save(state, ckpt)
    line = _one_error_line(*cli(capsys, "predict", str(run), "--study", str(study), "--json")[::2])
    assert str(ckpt) in line
    expect = {"truncated": "unreadable checkpoint", "torch_dict": "not a cadx checkpoint",
              "text": "unreadable checkpoint", "wrong_weights": "does not load from it"}[damage]
    assert expect in line


def test_checkpoint_cut_anywhere_is_one_data_error(tiny_run: Path, tmp_path: Path) -> None:
    """An interrupted copy of a checkpoint, cut at 60 points from 0 bytes to one byte short: every one is a
    CadxDataError naming the file (never a torch/zip/pickle exception)."""
    from cadx.training.trainer import load_module

    data = (tiny_run / "fold_0" / "checkpoint_best.ckpt").read_bytes()
    ckpt = tmp_path / "checkpoint_best.ckpt"
    cuts = sorted({*(len(data) * k // 60 for k in range(60)), len(data) - 1})
    for n in cuts:
        ckpt.write_bytes(data[:n])
        with pytest.raises(CadxDataError, match="unreadable checkpoint") as e:
            load_module(ckpt)
        assert str(e.value).startswith(f"{ckpt}: ") and "\n" not in str(e.value)
    ckpt.write_bytes(data)
    assert load_module(ckpt)[1]["name"] == "_test_tiny"


def test_partial_run_refused_unless_allow_partial(tiny_run: Path, tmp_path: Path, study: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "fold_1" / "DONE").unlink()  # fold 1 unfinished (killed mid-training)
    line = _one_error_line(*cli(capsys, "predict", str(run), "--study", str(study), "--json")[::2])
    assert str(run) in line and "folds" in line
    assert "only 1 of 2 folds (fold_0) finished, fold_1 not" in line and "--allow-partial" in line
    code, out, err = cli(capsys, "predict", str(run), "--study", str(study), "--json", "--allow-partial")
    assert code == 0, err
    assert json.loads(out)["models"] == 1
    assert "partial run, using 1 of 2 folds (fold_0); unfinished: fold_1" in err
    # evaluate: the same rule
    with pytest.raises(CadxDataError, match="only 1 of 2 folds"):
        evaluate_run(run, "_test_tiny", tmp_path, {"n": 4, "seed": 5})
    code, _, err = cli(capsys, "evaluate", str(run), "--dataset", "_test_tiny", "--root", str(tmp_path),
                       "-o", "n=4", "-o", "seed=5", "--json")
    assert "only 1 of 2 folds" in _one_error_line(code, err)
    code, out, err = cli(capsys, "evaluate", str(run), "--dataset", "_test_tiny", "--root", str(tmp_path),
                         "-o", "n=4", "-o", "seed=5", "--json", "--allow-partial")
    assert code == 0, err
    assert "using 1 of 2 folds" in err
    assert json.loads(out)["n_studies"] == 4
    ext = json.loads((run / "external" / "_test_tiny-4-5" / "metrics.json").read_text())["external"]
    assert ext["models"] == ["fold_0"]
    # --fold of a finished fold needs no flag; a complete run none either
    assert evaluate_run(run, "_test_tiny", tmp_path, {"n": 4, "seed": 5}, fold=0)["n_studies"] == 4
    assert [d.name for d in run_models(tiny_run)] == ["fold_0", "fold_1"]


# --------------------------------------------------------------------------- two real `cadx cv` processes, kill -9

DEMO = Path(__file__).resolve().parents[1] / "src" / "cadx" / "configs" / "demo_resnet.yaml"
SMALL = ["--set", "data.options.n_patients=6", "--set", "cv.folds=2", "--set", "train.epochs=25",
         "--set", "input.size=8", "--set", "eval.bootstrap=20"]


def _cadx(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", "from cadx.cli import main; main()", *args], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow
def test_two_cadx_cv_one_refused_then_kill9_and_resume(tmp_path: Path) -> None:
    """Two `cadx cv` into one folder at once: exactly one is refused, in one line naming the other's pid. The
    other is SIGKILLed mid-run; `cadx cv --resume` takes over its stale lock and finishes the run."""
    run = tmp_path / "run"
    a, b = _cadx("cv", str(DEMO), "--out", str(run), *SMALL), _cadx("cv", str(DEMO), "--out", str(run), *SMALL)
    try:
        t0 = time.perf_counter()
        while a.poll() is None and b.poll() is None:  # the refused one ends first
            assert time.perf_counter() - t0 < 300, "neither process ended"
            time.sleep(0.05)
        loser, winner = (a, b) if a.poll() is not None else (b, a)
        assert loser.stderr is not None
        err = loser.stderr.read()
        assert loser.returncode == 2 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert f"in use by another cadx run: pid {winner.pid} on host {socket.gethostname()}" in err
        assert read_holder(run)["pid"] == winner.pid
        while not list(run.glob("fold_*/checkpoint_last.ckpt")):  # mid-run: a fold is training
            assert winner.poll() is None, "the holder ended before it could be killed"
            time.sleep(0.02)
        os.kill(winner.pid, signal.SIGKILL)
        winner.wait(30)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not (run / "metrics.json").exists() and read_holder(run)["pid"] == winner.pid
    resumed = subprocess.run([sys.executable, "-c", "from cadx.cli import main; main()", "cv", str(DEMO), "--out",
                              str(run), *SMALL, "--resume"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"took over a stale lock of pid {winner.pid}" in resumed.stderr
    assert all((run / f"fold_{k}" / "DONE").is_file() for k in (0, 1))
    m = json.loads((run / "metrics.json").read_text())
    assert m["run"]["folds"] == 2 and m["pooled"]["n_studies"] == 6
    assert read_holder(run) == {}
