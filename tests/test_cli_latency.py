"""Lazy imports: listing and help load no heavy library (no timing here; the wall times are measured by
benchmarks/predict_latency.py), and the static model catalogue that ``cadx models list`` prints is the registry's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cadx.models import CATALOG, MODELS, catalog_rows
from cadx.models.registry import MODEL_MODULES

HEAVY = ("torch", "monai", "lightning", "sklearn", "matplotlib", "pandas", "scipy", "onnxruntime")

PROBE = """
import json, sys
from typer.testing import CliRunner
from cadx.cli import app
res = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps({"code": res.exit_code, "out": res.output,
                  "heavy": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)}))
"""


def _probe(args: list[str]) -> dict:
    """Run ``cadx ARGS`` in a fresh interpreter; its exit code, output and the heavy modules it imported."""
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], capture_output=True,
                         text=True, timeout=120, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["models", "list"], ["predict", "--help"], ["export", "--help"]],
                         ids=["help", "models-list", "predict-help", "export-help"])
def test_listing_and_help_import_no_heavy_library(args: list[str]) -> None:
    got = _probe(args)
    assert got["code"] == 0, got["out"]
    assert got["heavy"] == []
    if args == ["models", "list"]:
        assert "resnet18" in got["out"] and "yolo_dense" in got["out"]
    if args == ["predict", "--help"]:
        assert "--backend" in got["out"]


def test_importing_cadx_models_loads_no_network() -> None:
    code = ("import sys, cadx.models as m; assert m.CATALOG; "
            "print(sorted(k for k in ('torch', 'monai', 'cadx.models.resnet') if k in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert res.stdout.strip() == "[]"


def test_catalog_equals_the_registry() -> None:
    """The listing's static table = the registry after import (name, module, description, options + defaults)."""
    live = {e.name: (e.factory.__module__.rsplit(".", 1)[-1], e.description, MODELS.describe_options(e.name))
            for e in MODELS if not e.name.startswith("_test")}
    static = {name: tuple(entry) for name, entry in CATALOG.items()}
    missing = sorted(set(live) - set(static))
    assert missing == [], f"add to cadx/models/catalog.py: {({n: live[n] for n in missing})}"
    for name, row in static.items():
        assert row == live.get(name), f"cadx/models/catalog.py {name!r} differs from the registry: {live.get(name)}"
    assert {m for m, _, _ in static.values()} <= set(MODEL_MODULES)
    assert [r[0] for r in catalog_rows()] == sorted(static) and len(static) >= 20
