"""What every study shares: configs derived one way (:func:`cadx.config.derive`) and notes/tables/figures written
through :mod:`cadx.report.studies`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadx.config import SamplerConfig, derive, load_config
from cadx.errors import CadxConfigError
from cadx.report.studies import markdown_table, new_figure, save_figure, study_notes_text, write_study_notes
from cadx.studies.imbalance.variants import MethodSpec, method_config


def test_derive_merges_sections_like_a_config_file_and_leaves_the_original() -> None:
    cfg = load_config(None, ["model.kwargs={width: 8, stem: small}", "data.options={n_patients: 10, seed: 3}"])
    d = derive(cfg, name="v", train={"epochs": 7}, model={"name": "resnet50", "kwargs": {"width": 4}},
               data={"options": {"n_patients": 20}}, objective={"focal": 1.0}, sampler=SamplerConfig(kind="oversample"))
    assert (d.name, d.train.epochs, d.train.batch_size) == ("v", 7, cfg.train.batch_size)  # section merged
    assert d.model.name == "resnet50" and d.model.kwargs == {"width": 4}      # kwargs replaced whole
    assert d.data.options == {"n_patients": 20} and d.data.dataset == cfg.data.dataset  # options replaced whole
    assert d.objective == {"focal": 1.0} and d.sampler.kind == "oversample" and d.sampler.ratio == 1.0
    assert cfg.name != "v" and cfg.model.kwargs == {"width": 8, "stem": "small"} and cfg.train.epochs != 7
    assert derive(cfg).to_dict() == cfg.to_dict()
    with pytest.raises(CadxConfigError, match=r"variant x: train.epochs"):
        derive(cfg, source="variant x", train={"epochs": "many"})
    with pytest.raises(CadxConfigError, match=r"unknown key"):
        derive(cfg, train={"epoch": 2})
    with pytest.raises(CadxConfigError, match=r"unknown config field\(s\) \['trian'\]"):
        derive(cfg, trian={"epochs": 2})


def test_imbalance_method_config_is_derived_from_the_experiment() -> None:
    exp = load_config(None, ["train.epochs=9", "train.progress=true"])
    spec = MethodSpec.model_validate({"objective": {"focal": {"weight": 1.0, "gamma": 2.0}},
                                      "two_phase": {"sampler": "undersample", "epochs": 3}})
    c = method_config(exp, spec, 4, SamplerConfig(kind="oversample", ratio=0.5))
    assert (c.train.epochs, c.train.progress, c.sampler.kind, c.sampler.ratio) == (4, False, "oversample", 0.5)
    assert c.objective == spec.objective and c.train.two_phase == spec.two_phase
    plain = method_config(exp, MethodSpec(), 2, SamplerConfig(kind="plain"))
    assert plain.objective == exp.objective and plain.train.two_phase is None and plain.optim == exp.optim


def test_markdown_table_formats_and_checks_rows() -> None:
    lines = markdown_table(["a", "b|c"], [["x", 0.12345], [None, float("nan")], [3, "p|q"]])
    assert lines == ["| a | b\\|c |", "|---|---|", "| x | 0.123 |", "| – | – |", "| 3 | p\\|q |"]
    with pytest.raises(ValueError, match="row of 1 cells for 2 columns"):
        markdown_table(["a", "b"], [["only"]])


def test_study_notes_sections(tmp_path: Path) -> None:
    text = study_notes_text("T", [(None, ["- a", "- b"]), ("Results", "one line"), ("Empty", [])])
    assert text == "# T\n\n- a\n- b\n\n## Results\n\none line\n\n## Empty\n"
    p = write_study_notes(tmp_path / "s", "T", [(None, "x")], filename="summary.md")
    assert p == tmp_path / "s" / "summary.md" and p.read_text() == "# T\n\nx\n"


def test_save_figure_writes_the_rendered_pixels(tmp_path: Path) -> None:
    fig = new_figure(2, 1)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.zeros((4, 8)), cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.set_axis_off()
    p = save_figure(fig, tmp_path / "f" / "black.png", dpi=50)
    img = np.asarray(Image.open(p).convert("L"))
    assert img.shape[1] >= 100 and img[8:-8, 8:-8].max() < 10  # 2 in × 50 dpi, black inside the tight margin
    assert save_figure(fig, tmp_path / "black.svg").read_text().lstrip().startswith("<?xml")
