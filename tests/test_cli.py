"""The command line: contracts other tools rely on, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cadx.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-c", "from cadx.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_datasets_list_names_every_adapter() -> None:
    res = runner.invoke(app, ["datasets", "list"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("lidc", "medmnist", "mednist", "busi", "lgg", "manifest", "synthetic"):
        assert name in res.output


def test_models_list_has_paper_models() -> None:
    res = runner.invoke(app, ["models", "list"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("resnet18", "dmrn", "mtmr", "anatomy_cnn", "lenet", "alexnet", "googlenet"):
        assert name in res.output


def test_unknown_dataset_is_one_line_error(tmp_path: Path) -> None:
    res = run_cli("datasets", "describe", "nosuchset", "--root", str(tmp_path), "--json")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown dataset 'nosuchset'" in lines[0]


def test_bad_manifest_is_one_line_error_naming_file_and_field() -> None:
    bad = Path(__file__).parent / "data" / "bad"
    manifests = sorted(bad.glob("**/*missing_column*.csv"))
    assert manifests, "bad-input corpus must hold a manifest with a missing column"
    res = run_cli("datasets", "describe", "manifest", "--root", str(manifests[0]), "--json")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert manifests[0].name in lines[0]


def test_splits_contract_on_synthetic(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    res = runner.invoke(app, ["datasets", "describe", "synthetic", "--root", str(data),
                                 "--option", "n_patients=20", "--json"])
    assert res.exit_code == 0, res.output
    desc = json.loads(res.stdout)
    assert {"studies", "patients", "class_counts"} <= set(desc)
    assert sum(desc["class_counts"].values()) == desc["studies"]
    out = tmp_path / "splits.json"
    res = runner.invoke(app, ["splits", "synthetic", "--root", str(data), "--folds", "5", "--seed", "3",
                              "--out", str(out), "--option", "n_patients=20"])
    assert res.exit_code == 0, res.output
    folds = json.loads(out.read_text())["folds"]
    assert [f["fold"] for f in folds] == list(range(5))
    tests = [p for f in folds for p in f["test"]]
    assert len(tests) == len(set(tests)) == desc["patients"]
    for f in folds:
        assert not (set(f["train"]) & set(f["test"]))
        assert not (set(f["val"]) & set(f["test"])) and not (set(f["val"]) & set(f["train"]))


def test_predict_covariate_must_be_a_number(tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", str(tmp_path), "--study", str(tmp_path / "x.png"),
                              "--covariate", "diameter_mm=big"])
    assert res.exit_code == 2 and "diameter_mm=big" in res.output and "not a number" in res.output
