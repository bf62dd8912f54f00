"""The committed results tell the truth: every relative link in benchmarks/results/**/*.md points to a file
that is committed beside it, and the anatomy README states the numbers of the run folders it describes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANATOMY = RESULTS / "anatomy"
_MD = MarkdownIt("commonmark").enable("table")
_HTML_REF = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")


def relative_links(text: str) -> list[str]:
    """Link and image targets (Markdown and inline HTML) outside code, without URLs, anchors or mailto."""
    refs: list[str] = []
    for tok in _MD.parse(text):
        if tok.type == "html_block":
            refs += _HTML_REF.findall(tok.content)
        for child in tok.children or []:
            if child.type == "link_open":
                refs.append(str(child.attrs.get("href", "")))
            elif child.type == "image":
                refs.append(str(child.attrs.get("src", "")))
            elif child.type == "html_inline":
                refs += _HTML_REF.findall(child.content)
    return [r for r in refs if r and not r.startswith("#") and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", r)]


def test_link_parser_sees_links_and_images_not_code() -> None:
    text = ("# t\n\n![fig](figures/a.png) [csv](b%20c.csv#row) [web](https://x.org) [top](#t)\n\n"
            "`[no](code.png)`\n\n```\n![no](fence.png)\n```\n\n<img src=\"d.png\">\n")
    assert relative_links(text) == ["figures/a.png", "b%20c.csv#row", "d.png"]


MARKDOWN_FILES = sorted(RESULTS.rglob("*.md"))


def test_there_are_committed_reports() -> None:
    assert len(MARKDOWN_FILES) >= 10


@pytest.mark.parametrize("md", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_relative_links_point_to_committed_files(md: Path) -> None:
    broken = [ref for ref in relative_links(md.read_text(encoding="utf-8"))
              if not (md.parent / unquote(ref.split("#", 1)[0])).exists()]
    assert not broken, f"{md.relative_to(ROOT)}: links to missing files {broken}"


def _md_rows(text: str, first: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with ``first``: first cell → other cells."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and cells[0] == first:
            inside, rows = True, {first: cells[1:]}
        elif inside and not cells:
            return rows
        elif inside and not set(cells[0]) <= set("-:"):
            rows[cells[0]] = cells[1:]
    return rows


def test_anatomy_readme_learning_curve_is_its_run() -> None:
    readme = (ANATOMY / "README.md").read_text(encoding="utf-8")
    csv = pd.read_csv(ANATOMY / "learning_curve" / "learning_curve.csv")
    table = json.loads((ANATOMY / "learning_curve" / "metrics.json").read_text())["extra"]["tables"][0]
    rows = _md_rows(readme, "train images")
    sizes = [int(c) for c in rows.pop("train images")]
    assert sizes == sorted(csv["train_images"].unique())
    assert sorted(csv["size_images"].unique()) == [30, 60, 120, 240, 480, 720, 960]
    assert "Seven training sizes of 30–960 images" in readme and "so 24–768 training images" in readme
    reported = {(r[0], int(r[2])): r[3].split()[0] for r in table["rows"]}  # (model, train images) → accuracy %
    assert set(rows) == {m for m, _ in reported}
    for model, cells in rows.items():
        assert cells == [reported[(model, n)] for n in sizes], model
    for net, group in csv.groupby("net"):  # the run's table is its CSV, rounded
        model = {"lenet": "LeNet", "proposed": "Proposed CNN", "alexnet": "AlexNet", "googlenet": "GoogLeNet"}[net]
        for _, r in group.iterrows():
            assert abs(float(reported[(model, int(r["train_images"]))]) - 100 * r["accuracy"]) <= 0.05 + 1e-9
    config = (ROOT / "configs" / "papers" / "anatomy_mednist.yaml").read_text(encoding="utf-8")
    stated = [m.group(1) for line in config.splitlines() if "learning-curve" in line
              for m in [re.search(r"--sizes ([\d,]+)", line)] if m]
    assert stated and all([int(s) for s in x.split(",")] == [30, 60, 120, 240, 480, 720, 960] for x in stated)


def test_anatomy_readme_table_ii_is_its_run() -> None:
    readme = (ANATOMY / "README.md").read_text(encoding="utf-8")
    table = json.loads((ANATOMY / "table_ii" / "metrics.json").read_text())["extra"]["tables"][0]
    rows = _md_rows(readme, "Model")
    rows.pop("Model")
    names = {"LeNet-5": "LeNet"}
    got = {names.get(k, k): v for k, v in rows.items()}
    want = {r[0]: r for r in table["rows"]}  # Model, px, runtime s, epochs, val loss, val acc %, test, naive
    assert set(got) == set(want)
    for model, cells in got.items():
        w = want[model]
        assert cells == [str(w[1]), f"{w[2]:.1f}", f"{w[4]:.3f}", f"{w[5]:.1f}", w[6], w[7]], model
    csv = pd.read_csv(ANATOMY / "table_ii" / "table_ii.csv")
    assert csv["train_items"].unique().tolist() == [1200] and csv["val_items"].unique().tolist() == [300]
    assert csv["test_items"].unique().tolist() == [1200] and csv["test_groups"].unique().tolist() == [656]
    assert csv["epochs"].unique().tolist() == [8]
    assert "1200 train, 300 val, 1200 test images" in readme and "656 test groups" in readme
    assert "**8 epochs**" in readme
