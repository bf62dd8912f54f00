"""Report from two small fake run folders: numbers with CIs, embedded PNGs, no external links, MD twin."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadx.errors import CadxDataError
from cadx.evaluation.summary import evaluate_predictions
from cadx.report import load_run, write_report
from cadx.report.tables import fmt_ci
from cadx.utils import atomic_write_json, atomic_write_text

CLASSES = ["benign", "malignant"]


def _make_run(root: Path, name: str, seed: int, history: bool, notes: str | None = None,
              extra: bool = False, classes: list[str] = CLASSES) -> Path:
    rng = np.random.default_rng(seed)
    run = root / name
    n, k = 60, len(classes)
    y = np.random.default_rng(100).integers(0, k, n)  # same studies and truth in every run
    p = rng.dirichlet(np.ones(k), n) + 0.8 * np.eye(k)[y]
    p /= p.sum(1, keepdims=True)
    df = pd.DataFrame({"study_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                       "fold": (np.arange(n) // 2) % 2, "y_true": [classes[i] for i in y],
                       **{f"p_{c}": p[:, j] for j, c in enumerate(classes)},
                       "pred_spiculation": rng.random(n), "true_spiculation": rng.random(n)})
    df["y_pred"] = [classes[i] for i in p.argmax(1)]
    run.mkdir(parents=True)
    df.to_csv(run / "predictions.csv", index=False)
    metrics = evaluate_predictions(df, classes, n_bootstrap=100, seed=0,
                                   attribute_ranges={"spiculation": [1, 5]})
    if extra:
        from cadx.report.figures import confusion_png

        (run / "extra.png").write_bytes(confusion_png([[1, 2], [3, 4]], ["a", "b"], "extra"))
        metrics["extra"] = {"tables": [{"title": "Ablation", "columns": ["Variant", "AUC"],
                                        "rows": [["no ranking loss", 0.9612]]}],
                            "figures": [{"title": "Saliency examples", "path": "extra.png"},
                                        {"title": "Absent figure", "path": "nope.png"}]}
    atomic_write_json(run / "metrics.json", metrics)
    atomic_write_text(run / "config.yaml", f"model: {name}\nseed: {seed}\noptim:\n  lr: 0.001\n")
    atomic_write_json(run / "fingerprint.json", {
        "name": "toy", "studies": n, "patients": n // 2, "classes": classes,
        "class_counts": {c: int((y == j).sum()) for j, c in enumerate(classes)},
        "channels": [1], "shape": {"min": [32, 32], "median": [48, 48], "max": [64, 64]},
        "spacing": {"min": [0.5, 0.5], "median": [0.7, 0.7], "max": [1.0, 1.0]},
        "intensity": {"p0.5": -1000.0, "p50": 20.0, "p99.5": 400.0}})
    atomic_write_json(run / "splits.json", {"folds": [{"fold": 0, "train": ["a"] * 15, "val": [], "test": ["b"] * 15},
                                                      {"fold": 1, "train": ["b"] * 15, "val": [], "test": ["a"] * 15}],
                                            "seed": 0, "kind": "patient_kfold"})
    if history:
        for k in range(2):
            h = pd.DataFrame({"epoch": range(1, 6), "train_loss": np.linspace(1, 0.3, 5),
                              "val_loss": np.linspace(1.1, 0.5, 5), "val_accuracy": np.linspace(0.5, 0.8, 5),
                              "val_auc": np.linspace(0.5, 0.85, 5), "lr": 1e-3, "seconds": 1.0})
            (run / f"fold_{k}").mkdir()
            h.to_csv(run / f"fold_{k}" / "history.csv", index=False)
    if notes:
        atomic_write_text(run / "notes.md", notes)
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    root = tmp_path_factory.mktemp("runs")
    a = _make_run(root, "mtmr_full", 0, history=True, notes="Deviation: 2-D slices, 3 of 5 folds.\n- item",
                  extra=True)
    b = _make_run(root, "mtmr_no_rank", 1, history=False)
    html_path, md_path = write_report([a, b], out_dir=root / "out", title="Toy comparison")
    return html_path, md_path, [a, b]


def test_html_is_self_contained_with_numbers_and_cis(report: tuple[Path, Path, list[Path]]) -> None:
    html_path, _, runs = report
    text = html_path.read_text(encoding="utf-8")
    assert "Toy comparison" in text and "mtmr_full" in text and "mtmr_no_rank" in text
    for run in runs:
        pooled = load_run(run).metrics["pooled"]
        for key in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
            cell = fmt_ci(pooled[key], pooled["ci"][key])
            assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cell)
            assert cell in text
        assert f"{pooled['abe']['spiculation']:.3f}" in text
    assert text.count("data:image/png;base64,") >= 5  # ROC, 2 confusion, training, extra figure
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", text)
    assert "http" not in text
    assert "<details>" in text and "lr: 0.001" in text  # config, collapsible
    assert "Deviation: 2-D slices" in text  # notes verbatim
    assert "no ranking loss" in text and "0.961" in text  # extra table from metrics.json
    assert "Absent figure" in text
    assert "No training history" in text  # second run has none
    assert "Paired bootstrap comparison with mtmr_full" in text and "p (AUC)" in text


def test_markdown_twin_has_the_same_table_rows(report: tuple[Path, Path, list[Path]]) -> None:
    html_path, md_path, _ = report
    md = md_path.read_text(encoding="utf-8")
    html = html_path.read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("| mtmr_")]
    assert len(rows) >= 4  # comparison + ABE rows per run
    for row in rows:
        for cell in (c.strip() for c in row.strip("|").split("|")):
            assert cell in html
    assert "Deviation: 2-D slices, 3 of 5 folds.\n- item" in md  # verbatim
    assert "```yaml" in md
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    assert links and all((md_path.parent / link).is_file() for link in links)
    assert "http" not in md


def test_single_run_defaults_to_run_folder_and_missing_files(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "solo", 3, history=False)
    (run / "predictions.csv").unlink()
    (run / "fingerprint.json").unlink()
    html_path, md_path = write_report([run])
    assert html_path == run / "report.html" and md_path == run / "report.md"
    text = html_path.read_text(encoding="utf-8")
    assert "predictions.csv" in text and "fingerprint.json" in text  # listed as missing
    assert "data:image/png;base64," in text  # the confusion matrix still renders
    (tmp_path / "empty").mkdir()
    with pytest.raises(CadxDataError, match=r"empty: no metrics\.json .* and no run folders inside"):
        write_report([tmp_path / "empty"])
    (tmp_path / "empty" / "metrics.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(CadxDataError, match=r"metrics\.json: invalid JSON"):
        write_report([tmp_path / "empty"])


def test_multiclass_run_has_per_class_table_and_ovr_roc(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "dmrn", 4, history=True, classes=["ACA", "NAA", "GN", "AM"])
    html_path, md_path = write_report([run], out_dir=tmp_path / "rep")
    md = md_path.read_text(encoding="utf-8")
    assert "| Sen | GN |" in md and "| true AM |" in md
    assert (md_path.parent / "figures" / "dmrn_roc_ovr.png").is_file()
    assert "AM vs rest" not in md  # legends live inside the PNG
    pooled = load_run(run).metrics["pooled"]
    assert fmt_ci(pooled["auc"], pooled["ci"]["auc"]) in html_path.read_text(encoding="utf-8")


def test_number_formatting_edge_cases() -> None:
    from cadx.report.tables import fmt

    assert fmt_ci(0.8534, [0.8011, 0.8969]) == "0.853 [0.801, 0.897]"
    assert fmt_ci(None, [0.1, 0.2]) == "n/a"  # NaN in metrics.json is written as null
    assert fmt_ci(0.5, [None, 0.7]) == "0.500"  # no finite CI → value only
    assert fmt_ci(0.5, []) == "0.500"
    assert fmt(float("nan")) == "n/a" and fmt(12) == "12" and fmt("x") == "x"


# ---- notes as Markdown, curves without validation, the no-overwrite rule ------------------------------------

NOTES_MD = """# toy_run

- Cohort `toy`: 60 studies, **30 patients**.
- Splits: 2 folds.

## Checkpoints

| fold | best epoch | seconds |
|---|---|---|
| 0 | 3 | 1.5 |
| 1 | 4 | 1.7 |

<script>alert(1)</script>
"""


def test_notes_are_rendered_as_html_elements(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "noted", 5, history=False, notes=NOTES_MD)
    html_path, md_path = write_report([run])
    text = html_path.read_text(encoding="utf-8")
    notes = text[text.index('<div class="notes">'):]
    notes = notes[:notes.index("</div>")]
    # headings move 3 levels down (the notes sit under "Run noted" h2 / "Notes" h3)
    assert "<h4>toy_run</h4>" in notes and "<h5>Checkpoints</h5>" in notes
    assert "<li>Cohort <code>toy</code>: 60 studies, <strong>30 patients</strong>.</li>" in notes
    assert "<table>" in notes and "<th>best epoch</th>" in notes and "<td>1.7</td>" in notes
    assert "| fold |" not in notes and "# toy_run" not in notes  # no raw Markdown left
    assert "<script>" not in text and "&lt;script&gt;" in notes  # raw HTML in notes is escaped
    md = md_path.read_text(encoding="utf-8")
    assert "\n#### toy_run\n" in md and "\n##### Checkpoints\n" in md and "\n| 1 | 4 | 1.7 |\n" in md


def test_training_panel_without_validation_draws_train_loss(tmp_path: Path) -> None:
    from cadx.report.figures import has_validation, training_figure

    loss = {"0": [0.9, 0.7, 0.5], "1": [1.0, 0.6, 0.4]}
    hist = {k: pd.DataFrame({"epoch": [0, 1, 2], "train_loss": v, "val_loss": np.nan, "val_accuracy": np.nan,
                             "val_auc": np.nan, "lr": 1e-3}) for k, v in loss.items()}
    assert not has_validation(hist)
    fig = training_figure(hist, "t")
    assert fig is not None and len(fig.axes) == 1  # no empty validation panel
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [loss["0"], loss["1"]]
    assert fig.axes[0].get_ylabel() == "training loss"
    assert training_figure({"0": hist["0"].drop(columns="train_loss")}, "t") is None  # nothing to draw
    with_val = {**hist, "1": hist["1"].assign(val_auc=[0.6, 0.7, 0.8])}
    fig2 = training_figure(with_val, "t")
    assert fig2 is not None and len(fig2.axes) == 2
    assert list(fig2.axes[1].get_lines()[0].get_ydata()) == [0.6, 0.7, 0.8]

    run = _make_run(tmp_path, "noval", 6, history=False)
    for k, h in hist.items():
        (run / f"fold_{k}").mkdir()
        h.to_csv(run / f"fold_{k}" / "history.csv", index=False)
    text = write_report([run])[0].read_text(encoding="utf-8")
    assert "No validation set in this run" in text and "noval: training curves per fold" in text


def _demo_like(root: Path) -> tuple[Path, list[Path]]:
    """A folder of runs as ``cadx demo`` leaves it: its own metrics.json (no run results) + run folders."""
    parent = root / "demo"
    runs = [_make_run(parent, "demo_resnet", 7, history=True), _make_run(parent, "demo_dmrn", 8, history=False)]
    atomic_write_json(parent / "metrics.json", {"runs": {"demo_resnet": {}, "demo_dmrn": {}},
                                                "run_dirs": [str(r) for r in runs], "seconds": 1.0})
    return parent, runs


def test_report_of_a_folder_of_runs_reports_every_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cadx.cli import app

    parent, runs = _demo_like(tmp_path)
    res = CliRunner().invoke(app, ["report", str(parent)])
    assert res.exit_code == 0, res.output
    text = (parent / "report.html").read_text(encoding="utf-8")
    assert "<p>Runs: demo_resnet, demo_dmrn</p>" in text  # the order of metrics.json run_dirs
    for r in runs:
        pooled = load_run(r).metrics["pooled"]
        assert fmt_ci(pooled["auc"], pooled["ci"]["auc"]) in text
    assert "n/a studies" not in text
    assert "Paired bootstrap comparison with demo_resnet" in text
    assert CliRunner().invoke(app, ["report", str(parent)]).exit_code == 0  # the same report again: fine


def test_a_richer_report_survives_report_of_missing_runs(tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from cadx.cli import app

    parent, runs = _demo_like(tmp_path)
    write_report([parent])
    before = {f: (parent / f).read_bytes() for f in ("report.html", "report.md")}

    shutil.rmtree(runs[1])  # one run gone: the new report would drop it
    res = CliRunner().invoke(app, ["report", str(parent)])
    assert res.exit_code != 0 and isinstance(res.exception, CadxDataError)
    assert "report.html: holds a report of demo_dmrn, which this one (demo_resnet) would drop" in str(res.exception)
    assert {f: (parent / f).read_bytes() for f in before} == before

    shutil.rmtree(runs[0])  # no run left: a one-line error, the report untouched
    with pytest.raises(CadxDataError, match=r"demo: metrics\.json holds no run results"):
        write_report([parent], keep_richer=True)
    assert {f: (parent / f).read_bytes() for f in before} == before

    # a report written before the cadx-report marker is guarded through its "Runs:" line and its items
    legacy = tmp_path / "legacy"
    run = _make_run(legacy, "solo", 9, history=True)
    write_report([run])
    for f in ("report.html", "report.md"):
        p = run / f
        p.write_text(re.sub(r'<meta name="cadx-report"[^>]*>|<!-- cadx-report .*? -->\n', "",
                            p.read_text(encoding="utf-8")), encoding="utf-8")
    shutil.rmtree(run / "fold_0")
    shutil.rmtree(run / "fold_1")  # no training curves any more: one figure fewer
    kept = (run / "report.html").read_bytes()
    with pytest.raises(CadxDataError,
                       match=r"report\.html: holds a richer report \(\d+ tables/figures/notes\) than this one \(\d+\)"):
        write_report([run], keep_richer=True)
    assert (run / "report.html").read_bytes() == kept
    res = CliRunner().invoke(app, ["report", str(run), "--force"])
    assert res.exit_code == 0 and (run / "report.html").read_bytes() != kept


def test_report_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cadx.report.render as R

    run = _make_run(tmp_path, "atomic", 10, history=False)
    write_report([run])
    before = {f: (run / f).read_bytes() for f in ("report.html", "report.md")}

    def boom(*_: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(R, "_to_md", boom)  # fails after the HTML is rendered, before anything is written
    with pytest.raises(RuntimeError):
        write_report([run])
    assert {f: (run / f).read_bytes() for f in before} == before
    assert not [p.name for p in run.rglob(".*.tmp")]
