"""Typed model and dataset options: every registry entry declares them, configs are checked when loaded (a typo
or a wrong type names the option, the model/dataset and the file), command-line strings are coerced."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cadx.config import load_config
from cadx.data.datasets import DATASETS, load_dataset
from cadx.data.dedup import DEFAULT_MIN_NCC, DEFAULT_THRESHOLD
from cadx.errors import CadxConfigError
from cadx.models import MODELS, create_model
from cadx.registry import Options, lookup


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TYPO_YAML = """name: typo
data: {dataset: synthetic, root: cohort}
input: {size: 8}
model:
  name: resnet18
  kwargs: {widht: 8, stem: small}
"""


@pytest.mark.parametrize("registry", [MODELS, DATASETS], ids=["models", "datasets"])
def test_every_entry_declares_its_options_and_the_factory_takes_exactly_them(registry) -> None:
    skip = 4 if registry is MODELS else 1  # (num_classes, in_channels, spatial_dims, num_attributes) / (root)
    assert len(registry.names()) >= (20 if registry is MODELS else 7)
    for e in registry:
        assert e.options is not None and issubclass(e.options, Options), e.name
        assert e.options.model_config["extra"] == "forbid", e.name
        params = list(inspect.signature(e.factory).parameters.values())[skip:]
        if any(p.kind is p.VAR_KEYWORD for p in params):  # manifest: forwards to load_manifest, which validates
            continue
        assert {p.name for p in params} == set(e.options.model_fields), e.name


def test_defaults_are_those_of_the_former_factory_signatures() -> None:
    def defaults(reg, name: str) -> dict:
        return reg.options(name).model_dump()

    assert defaults(MODELS, "resnet18") == {"pretrained_path": None, "width": 64, "stem": "imagenet", "dropout": 0.0}
    assert defaults(MODELS, "dmrn") == {"pretrained_path": None, "depth": 18, "width": 64, "stem": "imagenet",
                                        "multiscale": True}
    assert defaults(MODELS, "scnet") == {
        "pretrained_path": None, "num_seg_classes": 3, "depth": 50, "width": 64, "output_stride": 2,
        "ppm_ratios": (2, 4, 8), "two_step": True, "seg_channels": 32, "cls_blocks": 2, "cls_channels": None,
        "dropout": 0.1}
    assert defaults(MODELS, "lenet")["input_size"] == "paper" and defaults(MODELS, "alexnet")["input_size"] == 227
    assert defaults(MODELS, "cnn3d")["fc_dims"] == (256, 128) and defaults(MODELS, "sdl")["dropout"] == 0.5
    assert defaults(MODELS, "hc_svm") == {"kernel": "linear", "C": 1.0, "lbp_patch": 64, "hog_patch": 32,
                                          "size": 192}
    assert defaults(DATASETS, "lidc") == {"labelling": "mtmr", "aggregate": "mean", "rescale_attributes": None,
                                          "attribute_aggregate": None}  # A.6: the heads' own aggregation
    assert defaults(DATASETS, "mednist") == {"group": "dedup", "dedup_threshold": DEFAULT_THRESHOLD,
                                             "dedup_min_ncc": DEFAULT_MIN_NCC, "cache": True}


def test_strings_from_the_command_line_are_coerced() -> None:
    o = MODELS.options("scnet", {"depth": "18", "width": "4", "ppm_ratios": "2,4", "two_step": "false",
                                 "cls_channels": "8", "dropout": "0.25"})
    assert (o.depth, o.width, o.ppm_ratios, o.two_step, o.cls_channels, o.dropout) == (18, 4, (2, 4), False, 8, 0.25)
    assert [MODELS.options("vgg19", {"batch_norm": v}).batch_norm for v in ("true", "yes", "1", "On", "false",
                                                                          "no", "0", "off")] == [True] * 4 + [False] * 4
    assert MODELS.options("lenet", {"input_size": "28"}).input_size == 28
    assert MODELS.options("lenet", {"input_size": "none"}).input_size is None
    syn = DATASETS.options("synthetic", {"n": "3", "seed": "7", "shape": "16x48x48", "classes": "ACA,PCC"})
    assert (syn.n_patients, syn.seed, syn.shape, syn.classes) == (3, 7, (16, 48, 48), ["ACA", "PCC"])
    lidc = DATASETS.options("lidc", {"labelling": "NONE", "rescale_attributes": "true"})
    assert (lidc.labelling, lidc.rescale_attributes) == ("none", True)
    assert DATASETS.options("busi", {"channels": 1, "dedup_min_ncc": "none"}).model_dump()["channels"] == "1"
    # coerced strings build the same network as typed values
    torch.manual_seed(0)
    a = create_model("vgg19", 2, width="8", batch_norm="false", pool_size="1", fc_dim="16")
    torch.manual_seed(0)
    b = create_model("vgg19", 2, width=8, batch_norm=False, pool_size=1, fc_dim=16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_wrong_type_or_typo_names_the_option_and_the_entry() -> None:
    with pytest.raises(CadxConfigError, match=r"model 'resnet18': option 'width': .*integer.*'abc'"):
        create_model("resnet18", 2, width="abc")
    with pytest.raises(CadxConfigError, match=r"model 'vgg19': option 'batch_norm': .*'flase'"):
        create_model("vgg19", 2, batch_norm="flase")  # a typo of a boolean is an error, not False
    with pytest.raises(CadxConfigError, match=r"option 'widht': unknown option \(known: .*width"):
        create_model("resnet18", 2, widht=8)
    with pytest.raises(CadxConfigError, match=r"dataset 'mednist': option 'dedup_threshold': .*'ten'"):
        DATASETS.options("mednist", {"dedup_threshold": "ten"})
    with pytest.raises(CadxConfigError, match=r"dataset 'lidc': option 'labeling': unknown option"):
        load_dataset("lidc", ".", labeling="none")
    with pytest.raises(CadxConfigError, match="hc_svm is not a network"):
        create_model("hc_svm", 2)
    with pytest.raises(CadxConfigError, match=r"model 'hc_svm': option 'kernel'"):
        MODELS.options("hc_svm", {"kernel": "poly"})


def test_typo_in_a_yaml_file_is_one_line_naming_option_model_and_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "typo.yaml", TYPO_YAML)
    with pytest.raises(CadxConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert msg == (f"{f}: model.kwargs: model 'resnet18': option 'widht': unknown option "
                   "(known: pretrained_path, width, stem, dropout)")
    with pytest.raises(CadxConfigError, match=rf"^{f}: model.kwargs: model 'resnet18': option 'width': "):
        load_config(f, ["model.kwargs={width: abc}"])
    with pytest.raises(CadxConfigError, match=rf"^{f}: data.options: dataset 'synthetic': option 'nn': unknown"):
        load_config(f, ["model.kwargs={}", "data.options={nn: 3}"])
    with pytest.raises(CadxConfigError, match=rf"^{f}: model.name: unknown model 'resnt18' \(known: "):
        load_config(f, ["model.name=resnt18", "model.kwargs={}"])
    with pytest.raises(CadxConfigError, match=rf"^{f}: data.options: dataset 'synthetic': option 'flag'"):
        load_config(f, ["model.kwargs={}", "data.dataset=synthetic:big"])  # name:flag sets option flag
    ok = load_config(f, ["model.kwargs={width: '8', stem: small}", "data.options={n: '6'}"])
    assert ok.model.kwargs == {"width": "8", "stem": "small"}  # the config keeps what was written ...
    assert MODELS.options(ok.model.name, ok.model.kwargs).width == 8  # ... the model gets the typed value


def test_cadx_cv_refuses_a_typo_before_training(tmp_path: Path) -> None:
    """The real console entry point: exit code 2, one line on stderr, no traceback, no run folder, no cohort."""
    f = _write(tmp_path / "typo.yaml", TYPO_YAML)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", "from cadx.cli import main; main()", "cv", str(f), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"error: {f}: model.kwargs: model 'resnet18': option 'widht': unknown option "
        "(known: pretrained_path, width, stem, dropout)"]
    assert not out.exists() and not (tmp_path / "cohort").exists()


def test_lookup_finds_the_registries_by_kind() -> None:
    assert lookup("model") is MODELS and lookup("dataset") is DATASETS
    with pytest.raises(CadxConfigError, match="no widget registry"):
        lookup("widget")
