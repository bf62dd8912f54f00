"""Experiment config: defaults → file → --set precedence, typo errors naming the key, round trip."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from cadx.config import ExperimentConfig, apply_override, config_from_dict, load_config, packaged_config_path
from cadx.data.datasets import DATASETS
from cadx.errors import CadxConfigError
from cadx.models import MODELS


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["train.epochs=3", "train.batch_size=16", "cv.folds=4", "seed=7", "data.root=/x",
                             "model.kwargs.width=16", "input.size=[24, 24]", "input.window=lung"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.cv.folds, cfg.seed) == (3, 16, 4, 7)
    assert cfg.data.root == "/x"
    assert cfg.model.kwargs == {"width": 16}
    assert cfg.input.size_tuple() == (24, 24)
    assert cfg.input.window == "lung"
    assert cfg.objective == {"ce": 1.0}
    assert cfg.eval.bootstrap == 2000 and cfg.eval.aggregation == "mean"


def test_file_over_defaults_then_set(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "train": {"epochs": 5}, "objective": {"focal": {"weight": 1.0,
                                                                                              "gamma": 2}}}))
    cfg = load_config(p, ["train.epochs=2"])
    assert cfg.name == "x"
    assert cfg.train.epochs == 2                       # --set wins over the file
    assert cfg.train.batch_size == 32                  # default kept
    assert cfg.objective == {"focal": {"weight": 1.0, "gamma": 2}}  # replaced whole, no inherited "ce"


@pytest.mark.parametrize(("override", "key"), [
    ("train.epoch=3", "train.epoch"),
    ("input.kind=pixels", "input.kind"),
    ("train.epochs=0", "train.epochs"),
    ("optim.name=rmsprop", "optim.name"),
    ("bogus=1", "bogus"),
])
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(CadxConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_typo_in_file_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: 2\n  batchsize: 8\n")
    with pytest.raises(CadxConfigError, match=r"bad\.yaml.*train\.batchsize: unknown key"):
        load_config(p)


def test_override_syntax_errors() -> None:
    with pytest.raises(CadxConfigError, match="key=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(CadxConfigError, match="not a section"):
        apply_override({"seed": 1}, "seed.x=2")
    with pytest.raises(CadxConfigError, match="not found"):
        load_config("/nonexistent/cfg.yaml")


def test_consistency_checks() -> None:
    with pytest.raises(CadxConfigError, match="at least one"):
        load_config(None, ["task.classification=false"])
    with pytest.raises(CadxConfigError, match="svm"):
        load_config(None, ["task.classification=false", "task.attributes=[a]", "eval.classifier=svm"])
    with pytest.raises(CadxConfigError, match="window"):
        load_config(None, ["input.window=[40]"])
    with pytest.raises(CadxConfigError, match=r"input\.size"):
        load_config(None, ["input.kind=volume3d", "input.size=[8, 8]"]).input.size_tuple()


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["name=rt", "optim.groups=[{prefixes: [head], lr: 0.1}]"])
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.optim.groups[0].lr == 0.1


@pytest.mark.parametrize("name", ["default", "demo_resnet", "demo_dmrn"])
def test_packaged_configs_validate(name: str) -> None:
    cfg = load_config(packaged_config_path(name))
    assert isinstance(cfg, ExperimentConfig)
    if name == "demo_dmrn":
        assert cfg.pairs == "balanced" and cfg.eval.classifier == "svm" and "contrastive" in cfg.objective


ROOT = Path(__file__).resolve().parents[1]
USER_CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs" / "papers").glob("*.yaml"),
                       *(ROOT / "src" / "cadx" / "configs").glob("*.yaml")])


def test_user_config_list_is_complete() -> None:
    names = {f"{f.parent.name}/{f.stem}" for f in USER_CONFIGS}
    assert len(USER_CONFIGS) >= 17
    assert {"configs/synthetic_resnet18", "papers/dmrn_adrenal", "papers/imbalance_mednist", "papers/unet_lgg",
            "configs/demo_resnet", "configs/default"} <= names


#: Study files in configs/papers/ (read by their study's own config type, not as one experiment) → study package.
STUDY_FILES = {"imbalance_mednist": "imbalance", "multitask_lidc": "multitask", "radiogenomics_lgg": "radiogenomics",
               "calipers_busi": "calipers", "anomaly_lgg": "anomaly", "anomaly_busi": "anomaly"}


def _same(a: object, b: object) -> bool:
    """Equal up to list/tuple (options may store either)."""
    return bool((list(a) if isinstance(a, tuple | list) else a) == (list(b) if isinstance(b, tuple | list) else b))


@pytest.mark.parametrize("path", [p for p in USER_CONFIGS if p.stem in STUDY_FILES], ids=lambda p: p.stem)
def test_study_files_load_through_their_study(path: Path) -> None:
    """A study file is valid for its study's ``Config`` (strict: an unknown key is an error), and it names its
    study's package in STUDY_FILES (a new study file must be added there)."""
    pkg = importlib.import_module(f"cadx.studies.{STUDY_FILES[path.stem]}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    cfg = pkg.Config.model_validate(raw)
    assert getattr(cfg, "name", raw.get("name")) == raw.get("name")
    bad = {**raw, "no_such_key": 1}
    with pytest.raises(Exception, match="no_such_key"):
        pkg.Config.model_validate(bad)


@pytest.mark.parametrize("path", [p for p in USER_CONFIGS if p.stem not in STUDY_FILES or
                                  "experiment:" in p.read_text(encoding="utf-8")],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_user_configs_validate(path: Path) -> None:
    """Each shipped YAML loads (a study file's ``experiment`` section through the same checks), and its model
    kwargs / dataset options are exactly what the file says, typed by the model's / dataset's options."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    exp_raw = raw["experiment"] if "experiment" in raw else raw  # imbalance study file: {name, experiment, study}
    cfg = load_config(path) if exp_raw is raw else config_from_dict(exp_raw, source=str(path))
    assert isinstance(cfg, ExperimentConfig)
    if "name" in exp_raw:
        assert cfg.name == exp_raw["name"]
    model = exp_raw.get("model") or {}
    assert cfg.model.name == model.get("name", "resnet18")
    assert cfg.model.kwargs == (model.get("kwargs") or {})
    opts = MODELS.options(cfg.model.name, cfg.model.kwargs)
    for k, v in cfg.model.kwargs.items():
        assert _same(getattr(opts, k), v), k
    data = exp_raw.get("data") or {}
    assert cfg.data.options == (data.get("options") or {})
    name, _, flag = cfg.data.dataset.partition(":")
    assert name in DATASETS
    dopts = DATASETS.options(name, {**({"flag": flag} if flag else {}), **cfg.data.options})
    for k, v in cfg.data.options.items():
        assert getattr(dopts, k) == v, k
