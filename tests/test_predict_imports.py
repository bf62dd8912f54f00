"""``cadx predict`` imports only what predicting uses (issue 19, item 3: one study in <= 3 s, process start
included, is mostly import time), and the preprocessing that no longer imports MONAI computes what MONAI did.

1. The array operations of :mod:`cadx.pipeline.preprocess` (window/min-max/percentile scaling, z-score, crop with
   padding, nearest/trilinear resize) equal the MONAI array transforms they replace, value for value and dtype for
   dtype (MONAI imported here, in the test, as the reference).
2. A tiny run (the ``_test_tiny`` cohort, LeNet-5 (no MONAI block), 2 folds, 1 epoch) and its ONNX export predict a
   6-slice DICOM series through ``cadx predict`` in a fresh process; afterwards Lightning, MONAI, scikit-learn,
   matplotlib, scikit-image, SimpleITK, nibabel and SciPy are absent from
   ``sys.modules`` for both backends. torch stays for the ONNX backend: the items are made by torch's antialiased
   bilinear resize (as in training) and held as tensors. The same holds for a ResNet run (ResNet-10, width 4) with
   the torch backend: cadx's ResNet is written with torch.nn only (``tests/test_resnet_native.py`` pins it to
   MONAI's), so it imports no MONAI either.
3. The probabilities printed are those of an independent reference: the series read, windowed with MONAI's
   ``ScaleIntensityRange``, resized with ``F.interpolate`` (antialiased bilinear), each fold's checkpoint run
   through :func:`cadx.training.trainer.load_module`, softmax averaged over slices and folds (1e-6); ONNX = torch
   to 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import get_track_meta, set_track_meta
from monai.transforms import BorderPad, NormalizeIntensity, Resize, ScaleIntensityRange, SpatialCrop
from monai.utils import convert_to_numpy

from cadx.config import InputConfig
from cadx.data.dicom_write import write_dicom_series
from cadx.data.readers import read_image
from cadx.pipeline.preprocess import crop_pad, normalize_intensity, resize, scale_to_unit
from cadx.runs import run_cv
from cadx.runs.export import export_run
from cadx.training.trainer import load_module
from helpers import tiny_config, tiny_volume

#: Packages ``cadx predict`` must not import (either backend; LeNet and cadx's ResNet have no MONAI block).
ABSENT = ("lightning", "pytorch_lightning", "monai", "sklearn", "matplotlib", "skimage", "SimpleITK", "nibabel",
          "scipy")
WINDOW = (0.0, 400.0)   # input.window=[200, 400] → 0 … 400 HU
SIZE = 32


# -- 1. the preprocessing equals the MONAI transforms it replaces ----------------------------------------------
@pytest.fixture()
def plain_monai() -> Any:
    previous = get_track_meta()
    set_track_meta(False)   # MONAI's transforms return plain tensors, as cadx's plain_tensors() did
    yield
    set_track_meta(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16])
def test_scaling_equals_monai_scale_intensity_range(plain_monai: None, dtype: type) -> None:
    a: np.ndarray = np.random.default_rng(0).normal(0, 500, (2, 17, 23)).astype(dtype)
    for lo, hi in ((-1350.0, 150.0), (-160.0, 240.0), (0.123, 7.7)):
        ref = convert_to_numpy(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(a))
        got = scale_to_unit(a, lo, hi)
        assert got.dtype == ref.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
    hand = scale_to_unit(np.array([[0, 300, 600, 2000]], dtype), 0.0, 1200.0)   # by hand: 300 / 1200 = 0.25
    np.testing.assert_array_equal(hand, np.array([[0.0, 0.25, 0.5, 1.0]], np.float32))


def test_zscore_equals_monai_normalize_intensity(plain_monai: None) -> None:
    a = np.random.default_rng(1).normal(3, 2, (1, 30, 40)).astype(np.float32)
    flat = a.ravel()
    # MONAI takes scalar statistics too (its annotation lists only sequences/arrays)
    z = NormalizeIntensity(subtrahend=float(flat.mean()), divisor=float(flat.std()))  # type: ignore[arg-type]
    ref = convert_to_numpy(z(a))
    got = normalize_intensity(a, InputConfig.model_validate({"normalize": "zscore"}))
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    assert abs(float(got.mean())) < 1e-5 and abs(float(got.std()) - 1) < 1e-5


@pytest.mark.parametrize("shape", [(1, 30, 40), (2, 9, 10, 11)])
def test_crop_pad_equals_monai_spatial_crop_and_border_pad(plain_monai: None, shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(2).random(shape).astype(np.float32)
    nd = arr.ndim - 1
    for st, sp in (([-3] * nd, [5] * nd), ([2] * nd, [6] * nd), ([4] * nd, [40] * nd)):
        lo = [min(max(x, 0), n) for x, n in zip(st, arr.shape[1:], strict=True)]
        hi = [min(max(x, 0), n) for x, n in zip(sp, arr.shape[1:], strict=True)]
        border = [p for x, y, l0, h0 in zip(st, sp, lo, hi, strict=True) for p in (l0 - x, y - h0)]
        out = SpatialCrop(roi_start=lo, roi_end=hi)(torch.as_tensor(arr))
        ref = convert_to_numpy(BorderPad(spatial_border=border, mode="constant", value=-0.7)(out)
                               if any(border) else out)
        got = crop_pad(arr, st, sp, -0.7)
        assert got.dtype == ref.dtype and not np.shares_memory(got, arr)
        np.testing.assert_array_equal(got, ref)
    # wholly outside: all fill (no MONAI call possible on an empty crop)
    np.testing.assert_array_equal(crop_pad(arr, [-9] * nd, [-5] * nd, 2.5), np.full((shape[0], *[4] * nd), 2.5))


def test_resize_equals_monai_resize(plain_monai: None) -> None:
    rng = np.random.default_rng(3)
    vol = rng.random((1, 9, 14, 15)).astype(np.float32)
    for size in ((5, 6, 7), (20, 28, 31)):
        ref = convert_to_numpy(Resize(size, mode="trilinear", align_corners=False)(torch.from_numpy(vol)))
        np.testing.assert_array_equal(resize(vol, size), ref)
        m = (vol > 0.5).astype(np.float32)
        ref_m = convert_to_numpy(Resize(size, mode="nearest", align_corners=None)(torch.from_numpy(m)))
        np.testing.assert_array_equal(resize(m, size, mask=True), ref_m)
    m2 = (rng.random((1, 30, 40)) > 0.5).astype(np.float32)
    ref2 = convert_to_numpy(Resize((16, 16), mode="nearest", align_corners=None)(torch.from_numpy(m2)))
    np.testing.assert_array_equal(resize(m2, (16, 16), mask=True), ref2)
    with pytest.raises(ValueError, match="2 target sizes for an array with 3 spatial axes"):
        resize(vol, (4, 4), mask=True)


# -- 2./3. cadx predict in a fresh process ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A 2-fold LeNet run of the tiny cohort, its ONNX export, and a 6-slice int16 DICOM series to predict."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict_imports")
    cfg = tiny_config("model.name=lenet", f"input.size={SIZE}", "input.roi=none", "input.window=[200, 400]",
                      "train.epochs=1", "eval.decision=argmax")
    run = root / "run"
    run_cv(cfg, run)
    export_run(run)
    vol, _, _ = tiny_volume(1, np.random.default_rng(7))
    hu = np.round(vol[0] + 200.0).astype(np.int16)     # (6, 20, 20), lesion ~350 HU on ~200 HU
    write_dicom_series(hu, (2.0, 1.0, 1.0), root / "series", patient_id="IMPORTS", uid_seed="imports")
    return run, root / "series", hu


def _predict_in_fresh_process(run: Path, series: Path, backend: str) -> tuple[dict[str, Any], list[str]]:
    """``cadx predict RUN --study SERIES --json --backend B`` via ``cadx.cli.main`` in a new interpreter: the
    printed result and which of :data:`ABSENT` (and torch, onnxruntime) were imported."""
    probe = ("import sys, json, atexit\n"
             f"names = {[*ABSENT, 'torch', 'onnxruntime']!r}\n"
             "atexit.register(lambda: sys.stderr.write('LOADED ' + json.dumps([n for n in names if n in sys.modules])"
             " + '\\n'))\n"
             "from cadx.cli import main\n"
             f"sys.argv = ['cadx', 'predict', {str(run)!r}, '--study', {str(series)!r}, '--json', '--backend', "
             f"{backend!r}]\n"
             "main()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = json.loads(next(line for line in res.stderr.splitlines() if line.startswith("LOADED "))[7:])
    return json.loads(res.stdout), loaded


def _reference_probabilities(run: Path, hu: np.ndarray) -> np.ndarray:
    """Class probabilities of the series computed without cadx's preprocessing: MONAI window scaling, torch
    antialiased bilinear resize, each fold's checkpoint, softmax; mean over the 6 slices and the 2 folds."""
    previous = get_track_meta()
    set_track_meta(False)
    try:
        x = convert_to_numpy(ScaleIntensityRange(a_min=WINDOW[0], a_max=WINDOW[1], b_min=0.0, b_max=1.0,
                                                 clip=True)(hu[None].astype(np.float32)))
    finally:
        set_track_meta(previous)
    items = F.interpolate(torch.from_numpy(x[0])[:, None], size=(SIZE, SIZE), mode="bilinear",
                          align_corners=False, antialias=True)            # (6, 1, 32, 32): one item per slice
    probs = []
    for k in (0, 1):
        model, _ = load_module(run / f"fold_{k}" / "checkpoint_best.ckpt")
        with torch.no_grad():
            probs.append(torch.softmax(model(items)["logits"].float(), 1).numpy().mean(0))
    return np.mean(probs, axis=0)


def test_cadx_predict_imports_only_what_it_uses(tiny_run: tuple[Path, Path, np.ndarray]) -> None:
    run, series, hu = tiny_run
    assert read_image(series).array.shape == (1, *hu.shape)          # the series reads back as written
    ref = _reference_probabilities(run, hu)
    results = {}
    for backend in ("torch", "onnx"):
        result, loaded = _predict_in_fresh_process(run, series, backend)
        assert [n for n in loaded if n in ABSENT] == [], f"{backend}: cadx predict imported {loaded}"
        assert "torch" in loaded and ("onnxruntime" in loaded) == (backend == "onnx")
        assert result["backend"] == backend and result["models"] == 2 and result["items"] == hu.shape[0]
        results[backend] = result
    p_torch = np.array([results["torch"]["probabilities"][c] for c in ("benign", "malignant")])
    p_onnx = np.array([results["onnx"]["probabilities"][c] for c in ("benign", "malignant")])
    np.testing.assert_allclose(p_torch, ref, atol=1e-6)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert results["torch"]["prediction"] == ["benign", "malignant"][int(np.argmax(ref))]


def test_resnet_run_torch_predict_imports_no_monai(tiny_run: tuple[Path, Path, np.ndarray],
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """A ResNet run's torch predict (issue 19 item 3's benchmark network) imports none of :data:`ABSENT`."""
    _, series, hu = tiny_run
    cfg = tiny_config("model.name=resnet10", "model.kwargs={width: 4, stem: small}", f"input.size={SIZE}",
                      "input.roi=none", "input.window=[200, 400]", "train.epochs=1", "eval.decision=argmax")
    run = tmp_path_factory.mktemp("predict_imports_resnet") / "run"
    run_cv(cfg, run)
    result, loaded = _predict_in_fresh_process(run, series, "torch")
    assert [n for n in loaded if n in ABSENT] == [], f"cadx predict (ResNet run) imported {loaded}"
    assert result["models"] == 2 and result["items"] == hu.shape[0]
    ref = _reference_probabilities(run, hu)
    np.testing.assert_allclose([result["probabilities"][c] for c in ("benign", "malignant")], ref, atol=1e-6)
