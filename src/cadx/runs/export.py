"""``cadx export RUN --format onnx``: a run's models as ONNX files with everything the prediction path needs.

:func:`export_run` writes one folder per model — the fold ensemble (each finished fold's ``checkpoint_best.ckpt``),
or ``final/`` when the run has a final model (:func:`cadx.runs.final.train_final`), or the one model named by
``fold`` — each with ``model.onnx`` (the cadx model spec in its metadata), the model's ``metrics.json`` (its
``decision_fit`` and, when the run calibrates, ``calibration_fit``) and ``svm.pkl`` when the run classifies with
an SVM; beside them ``config.yaml`` (the run's resolved config: the preprocessing) and ``export.json`` (see
:func:`export_run`). ``cadx predict EXPORT --backend onnx`` then runs the same prediction path
(:mod:`cadx.runs.inference`) with onnxruntime sessions (:mod:`cadx.runs.onnx_backend`) instead of the torch
modules; it needs onnxruntime and cadx's preprocessing, not the checkpoints or Lightning.

Exporter (a choice, measured with torch 2.13): the TorchScript-based ``torch.onnx.export(..., dynamo=False)``,
opset 17 by default. It exports every network tried (ResNet-18 2D, the 3D CNN, DMRN, U-Net) with max abs
differences ≤ 1e-6 on random input; the dynamo exporter (``dynamo=True``, opset 18) exported ResNet-18, DMRN and
the U-Net to the same precision but failed on the 3D CNN (``ConversionError``) and took 4-5x longer. Only the
batch axis is dynamic: the item size is fixed by the run's ``input`` section (a U-Net's padding is traced for that
size), and an item of another shape is refused by name.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from cadx.config import ExperimentConfig
from cadx.errors import CadxConfigError, CadxDataError
from cadx.runs.finished import fold_dir, model_dirs, run_config
from cadx.runs.onnx_backend import EXPORT_FILE, MODEL_FILE, OUTPUTS, OnnxModule
from cadx.training.checkpoint import load_module
from cadx.utils import atomic_write_json, dumps_json, read_json

__all__ = ["FORMATS", "export_model", "export_run", "max_abs_diff", "positive_class"]

FORMATS = ("onnx",)
#: Max abs difference between onnxruntime and torch outputs on the export check input above which export fails.
TOLERANCE = 1e-4


class _Outputs(torch.nn.Module):
    """A cadx model as a tuple of tensors in ``names`` order (``embedding`` = the last stage embedding)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out["embeddings"][-1] if n == "embedding" else out[n] for n in self.names)


def _output_names(out: dict[str, Any]) -> list[str]:
    """The exportable outputs of one forward pass, in :data:`OUTPUTS` order (training-only lists are left out)."""
    have = {k for k, v in out.items() if isinstance(v, torch.Tensor)}
    if isinstance(out.get("embeddings"), list | tuple) and out["embeddings"]:
        have.add("embedding")
    return [n for n in OUTPUTS if n in have]


def export_model(model: torch.nn.Module, spec: dict[str, Any], input_shape: tuple[int, ...], path: str | Path,
                 opset: int = 17, seed: int = 0) -> dict[str, Any]:
    """Export ``model`` (eval mode, CPU) to ONNX at ``path`` for items of ``input_shape`` ``(C, *spatial)`` with a
    dynamic batch axis, store ``spec`` as the ``cadx_model`` metadata, and check the file with onnxruntime on a
    seeded random batch of 3 items: returns ``{"file", "outputs", "input_shape", "opset", "check_max_abs_diff"}``.
    A difference above :data:`TOLERANCE` raises CadxDataError (an operator the exporter got wrong); ``opset`` < 17
    raises CadxConfigError."""
    if opset < 17:
        raise CadxConfigError(f"--opset {opset}: cadx exports with opset 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((3, *input_shape), generator=gen)
    with torch.no_grad():
        names = _output_names(model(x[:2]))
        if not names:
            raise CadxDataError("the model returns no exportable output (logits, attributes, features, "
                                "seg_logits)", path=str(path), field="outputs")
        wrapped = _Outputs(model, names).eval()
        tmp = path.with_name(path.name + ".tmp")
        with warnings.catch_warnings():  # shape checks traced as constants: the item shape is fixed by design
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(wrapped, (x[:2],), str(tmp), dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=names, dynamic_axes={n: {0: "batch"} for n in ["image", *names]})
        proto = onnx.load(str(tmp))
        meta = proto.metadata_props.add()
        meta.key, meta.value = "cadx_model", dumps_json(spec)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        tmp.replace(path)
        ref = wrapped(x)
    got = OnnxModule(path, threads=1)(x)
    diff = max(float((got["embeddings"][0] if n == "embedding" else got[n]).sub(r).abs().max())
               for n, r in zip(names, ref, strict=True))
    if not diff <= TOLERANCE:
        raise CadxDataError(f"onnxruntime differs from torch by {diff:.2e} (> {TOLERANCE}) on the check batch",
                            path=path, field="outputs")
    return {"file": path.name, "outputs": names, "input_shape": [int(v) for v in input_shape], "opset": opset,
            "check_max_abs_diff": diff}


def positive_class(cfg: ExperimentConfig, classes: list[str]) -> str | None:
    """The clinically positive class of a binary task (``eval.positive``: a name or an index; None = index 1);
    None for other tasks. A name that is not a class raises CadxConfigError."""
    if len(classes) != 2:
        return None
    pos = getattr(cfg.eval, "positive", None)
    if pos is None:
        return classes[1]
    if isinstance(pos, int) or str(pos).isdigit():
        return classes[int(pos)]
    if str(pos) not in classes:
        raise CadxConfigError(f"eval.positive: {pos!r} is not a class ({', '.join(classes)})")
    return str(pos)


def _chosen_dirs(run_dir: Path, fold: int | str | None, allow_partial: bool) -> list[Path]:
    if fold is None:
        return model_dirs(run_dir, None, allow_partial)
    if str(fold) == "final":
        final = run_dir / "final"
        if not (final / "DONE").is_file():
            raise CadxDataError("no final model (final/DONE); train one with cadx train", path=run_dir,
                                field="final")
        return [final]
    try:
        k = int(fold)
    except ValueError:
        raise CadxConfigError(f"--fold {fold}: a fold number or 'final'") from None
    return [fold_dir(run_dir, k)]


def export_run(run_dir: str | Path, out: str | Path | None = None, fold: int | str | None = None,
               fmt: str = "onnx", opset: int = 17, allow_partial: bool = False) -> Path:
    """Export a trained run's models (module docstring) into the folder ``out`` (default ``<run>/onnx``; a path
    ending in ``.json`` names the ``export.json`` itself) and return that folder.

    ``fold``: None = what ``cadx predict`` uses (``final/`` when trained, else every finished fold; an unfinished
    fold is refused unless ``allow_partial``), ``K`` = fold K's model, ``"final"`` = the final model.
    ``export.json``: ``format, opset, exporter, torch, onnx, run, seconds``; ``models`` (per model: ``name``,
    ``file``, ``outputs``, ``input_shape``, ``check_max_abs_diff``, ``decision_fit``, ``calibration_fit`` (None when
    the run has none), ``svm``); the preprocessing: ``input`` (the run's input section), ``input_shape``
    ``(C, *size)``, ``task``; ``classes``, ``positive_class``, ``attributes``; and the combination: ``aggregation``
    (``eval.aggregation``), ``decision_rule`` (``eval.decision``), ``tta``, ``ensemble`` (how several models are
    combined). Any format but ``onnx`` raises CadxConfigError.
    """
    if fmt not in FORMATS:
        raise CadxConfigError(f"--format {fmt}: cadx exports {', '.join(FORMATS)}")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    dirs = _chosen_dirs(run_dir, fold, allow_partial)
    cfg = run_config(run_dir, dirs)
    folder = Path(out) if out is not None else run_dir / "onnx"
    if folder.suffix == ".json":
        folder = folder.parent
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # a previous export's model folders would be picked up by name
        if old.is_dir() and (old / MODEL_FILE).is_file():
            shutil.rmtree(old)
    models: list[dict[str, Any]] = []
    spec: dict[str, Any] = {}
    for d in dirs:
        model, spec = load_module(d / "checkpoint_best.ckpt")
        shape = (int(spec["in_channels"]), *cfg.input.size_tuple())
        dst = folder / d.name
        info = export_model(model, spec, shape, dst / MODEL_FILE, opset=opset)
        metrics = read_json(d / "metrics.json") if (d / "metrics.json").is_file() else {}
        atomic_write_json(dst / "metrics.json", metrics)
        if (d / "svm.pkl").is_file():
            shutil.copy2(d / "svm.pkl", dst / "svm.pkl")
        models.append({"name": d.name, **info, "file": f"{d.name}/{MODEL_FILE}",
                       "decision_fit": metrics.get("decision_fit"),
                       "calibration_fit": metrics.get("calibration_fit"), "svm": (d / "svm.pkl").is_file()})
    cfg.save(folder / "config.yaml")
    classes = [str(c) for c in spec.get("classes", [])]
    record = {
        "format": fmt, "opset": opset, "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "torch": torch.__version__, "onnx": onnx.__version__, "run": str(run_dir),
        "models": models,
        "input": cfg.input.model_dump(mode="json"),
        "input_shape": models[0]["input_shape"],
        "task": cfg.task.model_dump(mode="json"),
        "classes": classes, "positive_class": positive_class(cfg, classes),
        "attributes": [str(a) for a in spec.get("attributes", [])],
        "aggregation": cfg.eval.aggregation, "decision_rule": cfg.eval.decision, "tta": cfg.eval.tta,
        "calibration": getattr(cfg.eval, "calibration", "none"),
        "ensemble": ("one model" if len(models) == 1 else
                     f"mean of the {len(models)} models' item outputs; decision = mean of their priors / thresholds"),
        "predict": f"cadx predict {folder} --study FILE --backend onnx",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(folder / EXPORT_FILE, record)
    return folder


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Max abs difference over the keys two :func:`cadx.runs.inference.infer` results share (0 when none)."""
    keys = sorted(set(a) & set(b))
    return max((float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in keys), default=0.0)
