"""train.precision auto-detection (bf16 on CPUs with native bf16), bf16 determinism, the trainer.json record and
train.channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.config import load_config
from cadx.errors import CadxConfigError
from cadx.pipeline.items import build_store
from cadx.training import trainer as tr
from helpers import tiny_cohort, tiny_config

AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
AVX2_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n\n"
# the feature name occurs outside the flags line (e.g. in "bugs"): not a flag
MISLEADING_CPUINFO = "processor\t: 0\nflags\t\t: fpu avx2 avx512f\nbugs\t\t: amx_bf16_fake avx512_bf16\n\n"


@pytest.mark.parametrize(("text", "capability", "expected"), [
    (AMX_CPUINFO, "AVX512", True),
    ("flags : fpu avx512f avx512_bf16\n", "AVX512", True),       # AVX512-BF16 without AMX (e.g. Zen 4)
    (AMX_CPUINFO, "AVX2", False),                                 # ATEN_CPU_CAPABILITY limited to AVX2
    (AMX_CPUINFO, "DEFAULT", False),
    (AVX2_CPUINFO, "AVX2", False),
    (AVX2_CPUINFO, "AVX512", False),
    (MISLEADING_CPUINFO, "AVX512", False),
])
def test_cpu_has_bf16_reads_the_flags_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                           capability: str, expected: bool) -> None:
    p = tmp_path / "cpuinfo"
    p.write_text(text)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert tr.cpu_has_bf16(p) is expected


def test_cpu_has_bf16_without_cpuinfo_is_false(tmp_path: Path) -> None:
    assert tr.cpu_has_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize(("requested", "cuda", "bf16", "accelerator", "expected"), [
    ("auto", False, True, "auto", "bf16-mixed"),
    ("auto", False, True, "cpu", "bf16-mixed"),
    ("auto", False, False, "auto", "32"),
    ("auto", False, True, "mps", "32"),
    ("auto", True, True, "auto", "16-mixed"),          # CUDA: as before
    ("auto", True, True, "cpu", "bf16-mixed"),         # a GPU present but training forced on the CPU
    ("32", False, True, "auto", "32"),                 # explicit values pass through
    ("bf16-mixed", False, False, "auto", "bf16-mixed"),
    ("16-mixed", True, False, "auto", "16-mixed"),
])
def test_resolve_precision(monkeypatch: pytest.MonkeyPatch, requested: str, cuda: bool, bf16: bool,
                           accelerator: str, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(tr, "cpu_has_bf16", lambda *a: bf16)
    cfg = load_config(None, [f"train.precision={requested}", f"train.accelerator={accelerator}"])
    assert tr.resolve_precision(cfg) == expected
    assert tr.trainer_settings(cfg)["precision"] == expected
    assert tr.precision_record(cfg)["precision"] == expected
    assert tr.precision_record(cfg)["precision_requested"] == requested


def test_config_precision_int_and_channels_last_default() -> None:
    cfg = load_config(None, ["train.precision=32"])   # YAML reads 32 as an int
    assert cfg.train.precision == "32"
    assert cfg.train.channels_last == "auto"
    with pytest.raises(CadxConfigError, match=r"train\.precision"):
        load_config(None, ["train.precision=64"])


def _fit(tmp: Path, *overrides: str) -> tuple[dict[str, torch.Tensor], dict[str, object], torch.nn.Module]:
    cfg = tiny_config("train.epochs=2", "input.size=16", "input.augment.enabled=true", "input.augment.flip=true",
                      *overrides)
    store = build_store(tiny_cohort(8), cfg, progress=False)
    module = tr.fit(cfg, store, np.arange(len(store)), np.zeros(0, np.int64), tmp, seed=3)
    record = json.loads((tmp / "trainer.json").read_text())
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}, record, module.model


RESNET = ("model.name=resnet10", "model.kwargs={width: 4, stem: small}")


def test_bf16_run_is_deterministic_and_recorded(tmp_path: Path) -> None:
    a, rec_a, _ = _fit(tmp_path / "a", *RESNET, "train.precision=bf16-mixed")
    b, rec_b, _ = _fit(tmp_path / "b", *RESNET, "train.precision=bf16-mixed")
    f, rec_f, _ = _fit(tmp_path / "f", *RESNET, "train.precision=32")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, bf16: weights differ between two runs"
    floats = [k for k in a if a[k].is_floating_point()]
    # bf16 autocast really ran: the weights differ from the fp32 run's, but only by bf16 rounding-sized steps
    assert any(not torch.equal(a[k], f[k]) for k in floats)
    assert all(v.dtype == f[k].dtype for k, v in a.items())            # master weights stay fp32
    assert rec_a["precision"] == rec_b["precision"] == "bf16-mixed" and rec_f["precision"] == "32"
    # channels_last auto: on for this 2D network in bf16, off in fp32 (resolve_channels_last)
    assert rec_a["precision_requested"] == "bf16-mixed" and rec_a["channels_last"] is True
    assert rec_a["channels_last_requested"] == "auto" and rec_f["channels_last"] is False
    assert rec_a["torch"] == torch.__version__


def test_auto_precision_is_recorded_as_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tr, "cpu_has_bf16", lambda *a: False)
    _, rec, _ = _fit(tmp_path / "auto", *RESNET)
    assert rec["precision_requested"] == "auto" and rec["precision"] == "32"


@pytest.mark.parametrize(("requested", "precision", "dims", "expected"), [
    ("auto", "bf16-mixed", 2, True), ("auto", "16-mixed", 2, True), ("auto", "32", 2, False),
    ("auto", "bf16-mixed", 3, False), ("true", "32", 3, True), ("false", "bf16-mixed", 2, False),
])
def test_channels_last_auto_rule(requested: str, precision: str, dims: int, expected: bool) -> None:
    cfg = load_config(None, [f"train.channels_last={requested}", f"train.precision={precision}"])
    assert tr.resolve_channels_last(cfg, dims) is expected
    assert tr.precision_record(cfg, dims)["channels_last"] is expected
    assert tr.precision_record(cfg, dims)["channels_last_requested"] == requested


def test_channels_last_converts_batches_in_place() -> None:
    batch = {"image": torch.rand(2, 3, 5, 5), "image_b": torch.rand(2, 3, 4, 4, 4), "label": torch.zeros(2)}
    before = {k: v.clone() for k, v in batch.items()}
    tr.ChannelsLast._convert(batch)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) and not batch["image"].is_contiguous()
    assert batch["image_b"].is_contiguous(memory_format=torch.channels_last_3d)
    assert all(torch.equal(batch[k], before[k]) for k in batch)        # same values, other strides


@pytest.mark.parametrize("overrides", [
    RESNET,
    ("input.kind=volume3d", "model.name=cnn3d_small", "model.kwargs={width: 4}"),
], ids=["2d", "3d"])
def test_channels_last_matches_the_default_layout(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    cl, rec, model = _fit(tmp_path / "cl", *overrides, "train.precision=32", "train.channels_last=true")
    plain, _, _ = _fit(tmp_path / "plain", *overrides, "train.precision=32")
    assert rec["channels_last"] is True
    nd = 5 if "input.kind=volume3d" in overrides else 4
    fmt = torch.channels_last_3d if nd == 5 else torch.channels_last
    convs = [p for p in model.parameters() if p.ndim == nd and p.shape[1] > 1 and p.shape[-1] > 1]  # not 1x1
    assert convs and all(p.is_contiguous(memory_format=fmt) and not p.is_contiguous() for p in convs)
    # the same arithmetic up to summation order: 2 epochs of fp32 training agree to float tolerance
    for k in plain:
        if plain[k].is_floating_point():
            torch.testing.assert_close(cl[k], plain[k], rtol=1e-3, atol=1e-4, msg=k)
