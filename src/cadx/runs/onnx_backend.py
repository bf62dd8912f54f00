"""The ONNX backend of the prediction path: an exported model (``cadx export``, :mod:`cadx.runs.export`) run by
onnxruntime behind the interface the torch path uses.

:class:`OnnxModule` is an ``nn.Module`` without parameters whose ``forward(x)`` feeds ``x`` ``(B, C, *spatial)``
to an onnxruntime session and returns the output dict a cadx model returns (``logits``, ``attributes``,
``features``, ``embeddings`` = ``[last stage embedding]``, ``seg_logits``), so :func:`cadx.runs.inference.infer`
(TTA flips, batching, softmax) and everything after it run unchanged. An export folder mirrors a run folder:
``export.json``, ``config.yaml`` and one folder per model (``fold_<k>/`` or ``final/``) holding ``model.onnx`` and
the model's ``metrics.json`` (its ``decision_fit``; ``calibration_fit`` when present) and ``svm.pkl`` when the run
classifies with an SVM, so :func:`cadx.runs.inference.load_predictor` reads the same files either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadx.errors import CadxConfigError, CadxDataError
from cadx.utils import read_json

__all__ = ["EXPORT_FILE", "MODEL_FILE", "OnnxModule", "export_folder", "export_model_dirs", "load_onnx_module"]

EXPORT_FILE = "export.json"
MODEL_FILE = "model.onnx"
#: ONNX output names in the order they are exported (those the model returns).
OUTPUTS = ("logits", "attributes", "features", "embedding", "seg_logits")


class OnnxModule(torch.nn.Module):
    """An onnxruntime session as a cadx model: ``forward(x (B, C, *spatial)) -> {output name: tensor (B, ...)}``
    (``embedding`` comes back as ``embeddings = [tensor]``). Runs on the CPU whatever device ``x`` is on and returns
    tensors on ``x``'s device. ``threads``: onnxruntime intra-op threads (default: ``torch.get_num_threads()``,
    which follows ``OMP_NUM_THREADS``). A batch of another spatial size or channel count than the export's
    ``input_shape`` raises CadxDataError naming the file (the ONNX graph fixes every axis but the batch)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort  # optional dependency: only the ONNX backend needs onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise CadxDataError("ONNX model missing (run cadx export first)", path=self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph classes for foreign files
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CadxDataError(f"unreadable ONNX model: {first[:160]}", path=self.path) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.spec: dict[str, Any] = json.loads(meta.get("cadx_model", "{}"))
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        want = self.input_shape[1:]
        if tuple(x.shape[1:]) != tuple(want):
            raise CadxDataError(f"the exported model takes items of shape {list(want)}, got {list(x.shape[1:])}",
                                path=self.path, field="input_shape")
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        res = self.session.run(self.output_names, {self.input_name: arr})
        out: dict[str, Any] = {}
        for name, val in zip(self.output_names, res, strict=True):
            t = torch.from_numpy(np.asarray(val)).to(x.device)
            if name == "embedding":
                out["embeddings"] = [t]
            else:
                out[name] = t
        return out


def load_onnx_module(path: str | Path) -> tuple[OnnxModule, dict[str, Any]]:
    """The :class:`OnnxModule` of ``path`` and the cadx model spec stored in its metadata (``cadx_model``: name,
    ``in_channels``, ``classes``, ``attributes``, ...); an ONNX file without it raises CadxDataError."""
    module = OnnxModule(path)
    if not module.spec:
        raise CadxDataError("not a cadx ONNX export (no cadx_model metadata; was it written by cadx export?)",
                            path=path, field="cadx_model")
    return module, module.spec


def export_folder(path: str | Path) -> Path:
    """The export folder of ``path``: ``path`` itself when it holds ``export.json``, else ``path/onnx`` (the
    default of ``cadx export``); neither raises CadxConfigError saying how to make one."""
    p = Path(path)
    for cand in (p, p / "onnx"):
        if (cand / EXPORT_FILE).is_file():
            return cand
    raise CadxConfigError(f"{p}: no ONNX export ({EXPORT_FILE} in it or in {p / 'onnx'}); run "
                          f"`cadx export {p} --format onnx` first")


def export_model_dirs(folder: str | Path, fold: int | str | None = None) -> list[Path]:
    """The model folders of an export (in ``export.json`` order): all of them by default, else the one named
    ``fold_<fold>`` (or ``final``). A model the export does not hold raises CadxConfigError naming those it does."""
    folder = Path(folder)
    info = read_json(folder / EXPORT_FILE)
    names = [str(m["name"]) for m in info.get("models", [])]
    if not names:
        raise CadxDataError("export without models", path=folder / EXPORT_FILE, field="models")
    if fold is None:
        return [folder / n for n in names]
    want = "final" if str(fold) == "final" else f"fold_{int(fold)}"
    if want not in names:
        raise CadxConfigError(f"{folder}: the export holds {', '.join(names)}, not {want}; export it with "
                              f"`cadx export RUN --fold {fold}`")
    return [folder / want]
