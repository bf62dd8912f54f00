"""`cadx study` is the one face of the paper studies: its help lists every study of the registry, each study
subpackage has the same shape, and no module but the CLI parses arguments."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadx.cli import app
from cadx.studies import STUDIES

SRC = Path(__file__).resolve().parents[1] / "src" / "cadx"
PAPER_STUDIES = ["anatomy", "learning-curve", "dmrn", "mtmr", "imbalance", "segmentation", "points-lidc", "anomaly",
                 "calipers", "multitask", "radiogenomics", "detection"]


def _help(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def test_study_help_lists_every_paper_study_with_its_description() -> None:
    text = _help("study")
    assert list(STUDIES) == PAPER_STUDIES
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", text, flags=re.M)
    assert listed == PAPER_STUDIES  # exactly the registry, in its order
    for info in STUDIES.values():
        assert info.description[:40] in " ".join(text.split())


def test_old_faces_are_gone_from_the_top_level() -> None:
    top = re.findall(r"^│ ([a-z][a-z-]+) ", _help(), flags=re.M)
    assert "study" in top and "imbalance-study" not in top and "learning-curve" not in top
    res = CliRunner().invoke(app, ["imbalance-study", "x.yaml"])
    assert res.exit_code != 0 and "No such command" in res.output


@pytest.mark.parametrize("name", PAPER_STUDIES)
def test_every_study_subpackage_has_the_same_shape(name: str) -> None:
    info = STUDIES[name]
    pkg = importlib.import_module(info.package)
    folder = SRC / "studies" / info.package.rsplit(".", 1)[1]
    assert {"variants.py", "study.py", "tables.py", "__init__.py"} <= {p.name for p in folder.glob("*.py")}
    assert callable(getattr(pkg, info.entry)) and callable(pkg.run) and isinstance(pkg.Config, type)
    assert pkg.DESCRIPTION == (pkg.__doc__ or "").strip() and "\n" not in pkg.DESCRIPTION
    if info.entry == "run":
        assert pkg.DESCRIPTION == info.description
    options = _help("study", name)
    assert "--out" in options or "--work" in options


def _parsing_sites(path: Path) -> list[str]:
    """argparse imports, ``sys.argv`` reads and ``__main__`` guards in one source file (from its syntax tree)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("argparse", "optparse", "getopt")
                                                for a in node.names):
            found.append(f"{path.name}:{node.lineno} import argparse")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("argparse", "optparse"):
            found.append(f"{path.name}:{node.lineno} from argparse")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "argv" for a in node.names):
            found.append(f"{path.name}:{node.lineno} from sys import argv")
        elif isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            found.append(f"{path.name}:{node.lineno} sys.argv")
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
            found.append(f"{path.name}:{node.lineno} __main__ guard")
    return sorted(found, key=lambda s: int(s.split(":")[1].split(" ")[0]))


def test_the_finder_sees_each_kind_of_parsing(tmp_path: Path) -> None:
    f = tmp_path / "face.py"
    f.write_text("import argparse\nimport sys\nfrom sys import argv\nx = sys.argv[1:]\n"
                 "if __name__ == '__main__':\n    pass\n")
    assert [s.split(" ", 1)[1] for s in _parsing_sites(f)] == [
        "import argparse", "from sys import argv", "sys.argv", "__main__ guard"]


def test_no_argument_parsing_outside_the_cli() -> None:
    sites = [s for p in sorted(SRC.rglob("*.py")) if p != SRC / "cli.py" for s in _parsing_sites(p)]
    assert sites == []
