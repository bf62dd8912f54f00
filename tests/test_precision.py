"""train.precision auto-detection (bf16 on CPUs with native bf16), bf16 determinism, the trainer.json record and
train.channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.grad import conv3d_weight

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
    # trained in channels_last (the checkpoint saved during fit keeps the strides), returned in the default layout
    state = torch.load(tmp_path / "cl" / "checkpoint_last.ckpt", map_location="cpu", weights_only=False)
    convs = [p for p in state["state_dict"].values() if p.ndim == nd and p.shape[1] > 1 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=fmt) and not p.is_contiguous() for p in convs)  # not 1x1
    assert all(p.is_contiguous() for p in model.parameters())
    # the same arithmetic up to summation order: 2 epochs of fp32 training agree to float tolerance
    for k in plain:
        if plain[k].is_floating_point():
            torch.testing.assert_close(cl[k], plain[k], rtol=1e-3, atol=1e-4, msg=k)


def _conv3d_weight_grads(precision: str, calls: int = 3, guard: bool = False
                         ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Weight gradients of a 3x3x3 conv on a depth-2 input ``(4, 16, 2, 4, 4)`` as the trainer computes them in
    ``precision`` (bf16 autocast or fp32; ``guard``: with :class:`Conv3dGuard`'s forward where the kernel is
    broken), ``calls`` times, and the float64 reference of the same bf16-rounded data."""
    gen = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    if guard and not tr.cpu_bf16_conv3d_ok():
        import types

        conv.forward = types.MethodType(tr._guarded_conv3d_forward, conv)  # type: ignore[method-assign]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen).bfloat16().float())
    x = torch.randn(4, 16, 2, 4, 4, generator=gen).bfloat16().float()
    grad_out = torch.randn(4, 16, 2, 4, 4, generator=gen).bfloat16().float()
    ref = conv3d_weight(x.double(), tuple(conv.weight.shape), grad_out.double(), padding=1)
    grads: list[torch.Tensor] = []
    for _ in range(calls):
        conv.weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
            y = conv(x)
        y.backward(grad_out.to(y.dtype))
        assert conv.weight.grad is not None
        grads.append(conv.weight.grad.detach().clone())
    return grads, ref


def test_auto_precision_gives_right_conv3d_weight_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (dmrn_adrenalmnist3d smoke: NaN probabilities on some runs, another AUC on others): on AVX512-BF16
    CPUs without AMX, oneDNN's bf16 Conv3d backward-weights kernel returns garbage for inputs of depth 2 with a
    3x3x3 kernel (ResNet's last stage on 28^3 volumes), so the trainer's guarded Conv3d must run that conv in
    fp32 under bf16 autocast: right and the same on every call."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(None, ["input.kind=volume3d", "train.precision=auto"])
    precision = tr.resolve_precision(cfg)
    assert tr.guards_conv3d(cfg) == precision.startswith("bf16")
    grads, ref = _conv3d_weight_grads(precision, guard=tr.guards_conv3d(cfg))
    for g in grads:
        assert torch.isfinite(g).all(), f"{precision}: non-finite Conv3d weight gradient"
        err = float((g.double() - ref).abs().max() / ref.abs().max())
        assert err < 0.05, f"{precision}: Conv3d weight gradient off by {err:.3g} of its largest entry"
    assert all(torch.equal(g, grads[0]) for g in grads), f"{precision}: Conv3d weight gradient differs per call"


def test_cpu_bf16_conv3d_probe_matches_the_kernel() -> None:
    """The probe says False exactly when bf16 autocast gets this conv's weight gradient wrong."""
    grads, ref = _conv3d_weight_grads("bf16-mixed")
    right = all(bool(torch.isfinite(g).all()) and float((g.double() - ref).abs().max() / ref.abs().max()) < 0.05
                for g in grads)
    assert tr.cpu_bf16_conv3d_ok() is right


@pytest.mark.parametrize(("requested", "conv3d_ok", "guard"), [
    ("auto", False, True), ("auto", True, True), ("bf16-mixed", False, True), ("32", False, False),
])
def test_3d_precision_keeps_bf16_with_the_guard(monkeypatch: pytest.MonkeyPatch, requested: str, conv3d_ok: bool,
                                               guard: bool) -> None:
    """3D inputs keep bf16 on every CPU with native bf16; the guard is added for bf16 on the CPU (it checks the
    kernel itself at setup) and recorded in trainer.json only where the kernel is broken."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tr, "cpu_has_bf16", lambda *a: True)
    monkeypatch.setattr(tr, "cpu_bf16_conv3d_ok", lambda: conv3d_ok)
    cfg = load_config(None, ["input.kind=volume3d", f"train.precision={requested}"])
    assert tr.resolve_precision(cfg) == ("32" if requested == "32" else "bf16-mixed")
    assert tr.guards_conv3d(cfg) is guard
    assert tr.precision_record(cfg, 3)["conv3d_guard"] is (guard and not conv3d_ok)


def test_guard_runs_only_small_inputs_in_fp32() -> None:
    assert tr.needs_small_input(torch.zeros(1, 1, 2, 8, 8), (3, 3, 3))      # depth 2 < kernel 3
    assert tr.needs_small_input(torch.zeros(1, 1, 8, 8, 4), (3, 3, 5))      # width 4 < kernel 5
    assert not tr.needs_small_input(torch.zeros(1, 1, 1, 1, 1), (3, 3, 3))  # 1: a single position
    assert not tr.needs_small_input(torch.zeros(1, 1, 3, 8, 8), (3, 3, 3))


def test_guarded_3d_resnet_gradients_are_right_and_repeatable() -> None:
    """A ResNet-10 (width 16, small stem) on 8^3 volumes (``layer3.0.conv2`` sees 2^3 maps: the guarded conv) one
    step in bf16 autocast with the guard: every conv weight gradient is finite, the same on two calls, and within
    bf16 rounding of the fp32 gradient (relative L2 error < 0.15: measured 0.05-0.09 in the early layers, where
    bf16 rounding accumulates through the backward pass); the guarded conv, computed in fp32, within 0.03 (measured
    0.008; 0.069 unguarded on the AMD EPYC of 2026-12-02, where the kernel is broken)."""
    import types

    from cadx.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("resnet10", num_classes=2, in_channels=1, spatial_dims=3, num_attributes=0, width=16,
                         stem="small")
    x = torch.randn(4, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 0, 1])

    def grads(bf16: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        logits = out["logits"] if isinstance(out, dict) else out
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()
                if p.grad is not None and p.ndim == 5}

    model.eval()  # BN in eval: the same statistics for every call
    ref = grads(False)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    for m in convs:
        m.forward = types.MethodType(tr._guarded_conv3d_forward, m)  # type: ignore[method-assign]
    a, b = grads(True), grads(True)
    assert set(a) == set(ref) and "layer3.0.conv2.weight" in a
    for n, g in a.items():
        assert torch.isfinite(g).all(), n
        assert torch.equal(g, b[n]), f"{n}: differs between calls"
        err = float((g - ref[n]).norm() / ref[n].norm())
        assert err < (0.03 if n == "layer3.0.conv2.weight" else 0.15), f"{n}: relative L2 error {err:.3g}"


def test_3d_auto_run_is_deterministic(tmp_path: Path) -> None:
    """Same seed ⇒ same weights for a 3D network whose third stage sees depth-2 maps (8^3 input), precision auto."""
    over = ("input.kind=volume3d", "input.size=8", "model.name=resnet10", "model.kwargs={width: 4, stem: small}",
            "train.epochs=1")
    a, rec, _ = _fit(tmp_path / "a", *over)
    b, _, _ = _fit(tmp_path / "b", *over)
    if tr.cpu_has_bf16():
        assert rec["precision"] == "bf16-mixed" and rec["conv3d_guard"] is (not tr.cpu_bf16_conv3d_ok())
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())
    assert all(torch.equal(a[k], b[k]) for k in a), f"same seed, {rec['precision']}: weights differ between two runs"


# --- train.malloc ------------------------------------------------------------------------------------------------
_FAULTS = """
import json, resource, sys, torch
from cadx.config import load_config
from cadx.training import trainer as tr

def faults():  # minor page faults of 5 alloc-touch-free cycles of 64 MiB (above glibc's 32 MiB mmap limit)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        t = torch.ones(16 * 2**20)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

cfg = load_config(None, ["train.malloc=" + sys.argv[1]])
before = faults()
applied = tr.apply_malloc(cfg)
for _ in range(3):  # the heap grows for the first few cycles (about 7 here), then every buffer is reused
    faults()
after = faults()
print(json.dumps({"before": before, "applied": applied, "after": after, "record": tr.precision_record(cfg)["malloc"],
                  "resolved": tr.resolve_malloc(cfg)}))
"""


@pytest.mark.parametrize("requested", ["auto", "system"])
def test_malloc_retain_stops_the_page_faults_of_big_buffers(requested: str) -> None:
    """``train.malloc`` in a fresh process (it is process-wide): ``auto`` on the CPU retains freed memory, after
    which reallocating a 64 MiB buffer no longer faults its pages in again; ``system`` leaves glibc alone."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS, requested], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    pages = 5 * 64 * 2**20 // 4096
    assert r["before"] >= 0.9 * pages  # glibc's default: every cycle maps and zero-fills the buffer afresh
    if requested == "auto":
        assert r["resolved"] == "retain" and r["applied"] is True and r["record"] == "retain"
        assert r["after"] < 0.02 * pages
    else:
        assert r["resolved"] == "system" and r["applied"] is False and r["record"] == "system"
        assert r["after"] >= 0.9 * pages


def test_malloc_setting_is_not_part_of_the_experiment(tmp_path: Path) -> None:
    from cadx.runs.folder import config_diff

    load_config(None, ["train.malloc=system"]).save(tmp_path / "config.yaml")
    assert config_diff(load_config(None, []), tmp_path / "config.yaml") == []  # resume across the switch
    assert load_config(None, []).train.malloc == "auto"
    with pytest.raises(CadxConfigError):
        load_config(None, ["train.malloc=jemalloc"])
