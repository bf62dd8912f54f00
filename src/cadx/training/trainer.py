"""Training one model (a fold, or the final model): model + objective + Lightning Trainer + checkpoints/history.

Checkpoints in the fold folder: ``checkpoint_last.ckpt`` (every epoch, used by ``--resume``) and
``checkpoint_best.ckpt`` — the epoch with the best ``train.early_stopping.monitor`` (default ``val_loss``) when
there is a validation set, otherwise the last epoch. ``history.csv`` is rewritten after every epoch.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.nn.grad import conv3d_weight

from cadx.config import ExperimentConfig
from cadx.errors import CadxConfigError
from cadx.objectives import build_objective as _build
from cadx.pipeline.items import ItemStore
from cadx.pipeline.loaders import eval_loader, train_loader
from cadx.training.checkpoint import build_model, load_module  # noqa: F401  (load_module re-exported: one implementation)
from cadx.training.module import CadxModule
from cadx.training.two_phase import FreezeExceptHead, phase_configs, trainable_prefixes
from cadx.utils import atomic_write_json, atomic_write_text

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "lr", "seconds", "cpu_seconds"]
_QUIET = (".*does not have many workers.*", ".*GPU available but not used.*", ".*TPU available.*",
          ".*is not a TensorBoard.*", ".*Checkpoint directory.*exists and is not empty.*",
          ".*LeafSpec.*", ".*that has `.*` state.*", ".*deterministic.*", ".*was configured so validation will run.*",
          ".*no `val_dataloader`.*")


def fold_seed(seed: int, fold: int) -> int:
    """Seed of fold ``fold`` (the final model uses fold = -1)."""
    return int(np.random.SeedSequence([int(seed), int(fold) + 1]).generate_state(1)[0] % (2**31 - 1))


def training_seed(cfg: ExperimentConfig) -> int:
    """The seed that drives training (``train.seed``; when None, the run's ``seed``, as before it existed).
    Splits, subsets and bootstrap CIs keep using ``cfg.seed``, so runs differing only in ``train.seed`` share
    their splits."""
    return int(cfg.seed if cfg.train.seed is None else cfg.train.seed)


def model_spec(cfg: ExperimentConfig, store: ItemStore) -> dict[str, Any]:
    """Everything ``create_model`` needs, stored in checkpoints so a run folder can rebuild its models."""
    return {"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs),
            "num_classes": len(store.classes) if cfg.task.classification else 0,
            "in_channels": store.in_channels, "spatial_dims": store.spatial_dims,
            "num_attributes": len(store.attribute_names), "classes": list(store.classes),
            "attributes": list(store.attribute_names)}


def build_objective(cfg: ExperimentConfig, store: ItemStore, train_items: np.ndarray) -> Any:
    """``cadx.objectives.build_objective(cfg.objective, **context)``; context: class counts of the training items,
    their priors and inverse-frequency class weights, number of classes/attributes, spatial dims (each passed only
    if the builder accepts it)."""
    y = store.item_labels(train_items)
    k = len(store.classes)
    counts = np.bincount(y[y >= 0], minlength=k).astype(float) if k else np.zeros(0)
    total = max(float(counts.sum()), 1.0)
    context = {"num_classes": k, "num_attributes": len(store.attribute_names), "spatial_dims": store.spatial_dims,
               "class_counts": counts.astype(int).tolist(), "classes": list(store.classes),
               "priors": (counts / total).tolist(),
               "class_weights": (total / (max(k, 1) * np.maximum(counts, 1.0))).tolist()}
    params = inspect.signature(_build).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        context = {k_: v for k_, v in context.items() if k_ in params}
    return _build(cfg.objective, **context)


class History(Callback):
    """Collects one row per epoch (``HISTORY_COLUMNS``) and rewrites ``history.csv``; its rows live in checkpoints.

    ``seconds`` is the epoch's wall time (training + validation), ``cpu_seconds`` the CPU time this process spent
    in it (``time.process_time``: all its threads; data-loader worker processes are not counted), the x axis of
    the time-to-accuracy curves (``benchmarks/time_to_accuracy.py``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._c0 = 0.0
        self._lr = float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        opts = trainer.optimizers
        self._lr = float(opts[0].param_groups[0]["lr"]) if opts else float("nan")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics

        def get(k: str) -> float:
            v = m.get(k)
            return float(v) if v is not None else float("nan")

        row = {"epoch": int(trainer.current_epoch), "train_loss": get("train_loss"), "val_loss": get("val_loss"),
               "val_accuracy": get("val_accuracy"), "val_auc": get("val_auc"), "lr": self._lr,
               "seconds": round(time.perf_counter() - self._t0, 3),
               "cpu_seconds": round(time.process_time() - self._c0, 3)}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        atomic_write_text(self.path, pd.DataFrame(self.rows, columns=HISTORY_COLUMNS).to_csv(index=False))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def ddp_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """Lightning's ``strategy`` for ``train.devices`` > 1: ``ddp_spawn`` (the ranks are spawned for ``fit`` only,
    so the run folder's lock and the fold loop stay in this process); ``{}`` for one device. Fewer CUDA GPUs
    than ``train.devices`` raise one CadxConfigError line. Not exercised here (no GPU): only the checks are
    tested."""
    n = int(cfg.train.devices)
    if n <= 1:
        return {}
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < n or cfg.train.accelerator in ("cpu", "mps"):
        raise CadxConfigError(f"train.devices: {n} (DDP) needs {n} CUDA GPUs and accelerator auto/gpu/cuda; this "
                              f"machine has {have} (accelerator {cfg.train.accelerator})")
    return {"strategy": "ddp_spawn"}


class RankBatches(torch.utils.data.Sampler):
    """DDP share of a batch sampler: rank ``r`` of ``w`` gets batches ``r, r + w, ...`` of each epoch of ``inner``
    (the trailing ``len % w`` batches are dropped so every rank steps the same number of times). Rank and world
    come from ``torch.distributed`` when it is initialised (else ``rank``/``world``, default 0 of 1 = all
    batches). ``set_epoch`` is forwarded, and the wrapper exposes itself as ``.sampler`` as
    :class:`cadx.pipeline.loaders.EpochBatchSampler` does, so Lightning still advances the epoch."""

    def __init__(self, inner: Any, rank: int | None = None, world: int | None = None) -> None:
        self.inner = inner
        self.rank, self.world = rank, world
        self.sampler = self

    def _where(self) -> tuple[int, int]:
        dist = torch.distributed
        if self.rank is None and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return int(self.rank or 0), int(self.world or 1)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Any:
        r, w = self._where()
        batches = list(self.inner)
        return iter(batches[r:len(batches) // w * w:w])

    def __len__(self) -> int:
        return len(self.inner) // self._where()[1]


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively: ``/proc/cpuinfo`` lists ``amx_bf16`` or ``avx512_bf16`` AND torch
    dispatches AVX-512 kernels (``torch.backends.cpu.get_cpu_capability()`` starts with ``AVX512``; a build or an
    ``ATEN_CPU_CAPABILITY`` limited to AVX2 or less gets False). Without a readable ``cpuinfo`` (macOS, Windows):
    False, so ``train.precision: auto`` stays fp32 there (bf16 without hardware support is emulated and slower)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.split(":", 1)[0].strip() == "flags"
             for f in line.split(":", 1)[1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"}) and \
        str(torch.backends.cpu.get_cpu_capability()).upper().startswith("AVX512")


def uses_cuda(cfg: ExperimentConfig) -> bool:
    """Whether training runs on CUDA: a GPU is present and ``train.accelerator`` is auto/gpu/cuda."""
    return torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")


@functools.cache
def cpu_bf16_conv3d_ok() -> bool:
    """Whether this CPU's bf16 ``Conv3d`` weight gradient is right where oneDNN's is known to break: a 3x3x3 conv,
    stride 1, on an input of depth 2 (``1 < D < k_D``; e.g. ResNet's last stage on 28^3 volumes, 2^3 maps).

    oneDNN 3.12 (torch 2.13) on AVX512-BF16 CPUs without AMX (AMD EPYC) runs it with ``jit_bf16:avx512_core_bf16``
    ``backward_weights``, which returns garbage there: wrong by orders of magnitude, often inf/NaN, different on
    every call (memory it never wrote), while the forward pass, the input gradient, other depths and fp32 are right.
    Probe: that conv in bf16 (``(4, 16, 2, 4, 4)`` input, own seeded generator) three times against float64;
    False when any call is off by more than 5 % of the largest entry. Run once per process (~0.05-0.5 s)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 2, 4, 4, generator=gen).bfloat16()
    w = torch.randn(16, 16, 3, 3, 3, generator=gen).bfloat16()
    grad_out = torch.randn(4, 16, 2, 4, 4, generator=gen).bfloat16()
    ref = conv3d_weight(x.double(), tuple(w.shape), grad_out.double(), padding=1)
    with torch.enable_grad(), torch.autocast("cpu", enabled=False):
        for _ in range(3):
            wp = w.clone().requires_grad_(True)
            torch.nn.functional.conv3d(x, wp, padding=1).backward(grad_out)
            assert wp.grad is not None
            err = float((wp.grad.double() - ref).abs().max() / ref.abs().max())
            if not err < 0.05:                              # NaN compares False
                return False
    return True


def resolve_precision(cfg: ExperimentConfig) -> str:
    """Lightning precision of ``train.precision``; ``auto`` = ``16-mixed`` on CUDA (accelerator auto/gpu/cuda with a
    GPU present), ``bf16-mixed`` on a CPU with native bf16 (:func:`cpu_has_bf16`), else ``32`` (also on MPS).
    Explicit values pass through unchanged. On a CPU whose bf16 Conv3d weight gradient is broken
    (:func:`cpu_bf16_conv3d_ok`), bf16 training runs the convolutions that would hit the broken kernel in fp32
    (:class:`Conv3dGuard`, added by :func:`fit`), so 3D inputs keep bf16 everywhere else."""
    precision = str(cfg.train.precision)
    if precision != "auto":
        return precision
    if uses_cuda(cfg):
        return "16-mixed"
    if cfg.train.accelerator in ("auto", "cpu") and cpu_has_bf16():
        return "bf16-mixed"
    return "32"


def needs_small_input(x: torch.Tensor, kernel: tuple[int, ...]) -> bool:
    """Whether a Conv3d input ``(B, C, D, H, W)`` has a spatial extent ``s`` with ``1 < s < k`` for its kernel
    extent ``k``: the shapes whose bf16 weight gradient :func:`cpu_bf16_conv3d_ok` probes (a superset of what was
    seen to break: depth only, stride 1, >= 16 channels)."""
    return any(1 < s < k for s, k in zip(x.shape[2:], kernel, strict=False))


def _guarded_conv3d_forward(self: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled("cpu") and needs_small_input(x, tuple(self.kernel_size)):
        with torch.autocast("cpu", enabled=False):  # fp32 master weights, fp32 input: the fp32 kernels
            return self._conv_forward(x.float(), self.weight, self.bias)
    return self._conv_forward(x, self.weight, self.bias)


class Conv3dGuard(Callback):
    """bf16 autocast on a CPU whose bf16 Conv3d weight gradient is broken (:func:`cpu_bf16_conv3d_ok` False): at
    ``setup`` every ``nn.Conv3d`` of the module gets a forward that runs in fp32 when its input has a spatial
    extent ``1 < s < kernel`` (:func:`needs_small_input`; e.g. ResNet's last stage on 28^3 volumes, 2^3 maps) and
    in bf16 otherwise; ``teardown`` restores the class forward. No-op on CPUs whose kernel is right, on CUDA and
    for models without Conv3d. Measured on the AMD EPYC of 2026-12-02: bf16 is 1.7-2x fp32 for ResNet-18 3D at
    28^3, and the guarded convolutions are the smallest ones."""

    def __init__(self) -> None:
        self.guarded: list[torch.nn.Conv3d] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        convs = [m for m in pl_module.modules() if isinstance(m, torch.nn.Conv3d)]
        if convs and not cpu_bf16_conv3d_ok():
            for m in convs:
                m.forward = types.MethodType(_guarded_conv3d_forward, m)  # type: ignore[method-assign]
            self.guarded = convs

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for m in self.guarded:
            del m.forward
        self.guarded = []


def guards_conv3d(cfg: ExperimentConfig) -> bool:
    """Whether :func:`fit` adds :class:`Conv3dGuard`: bf16 autocast on the CPU (it checks the kernel itself)."""
    return resolve_precision(cfg).startswith("bf16") and not uses_cuda(cfg)


_MEMORY_FORMAT = {4: torch.channels_last, 5: torch.channels_last_3d}


def resolve_channels_last(cfg: ExperimentConfig, spatial_dims: int) -> bool:
    """``train.channels_last``; ``auto`` = on for 2D inputs (``spatial_dims == 2``) when the resolved precision is
    mixed (bf16 on CPU, fp16 on CUDA), else off. Measured (benchmarks/results/train_throughput.json, 2 threads,
    AMX CPU): on top of bf16, channels_last gave 1.26x (ResNet-18 64 px) and 1.39x (U-Net 128 px) in 2D and 0.97x
    in 3D; fp32 was not measured, so ``auto`` leaves it in the default layout. Explicit true/false pass through."""
    value = cfg.train.channels_last
    if value != "auto":
        return bool(value)
    return spatial_dims == 2 and resolve_precision(cfg) != "32"


class ChannelsLast(Callback):
    """``train.channels_last``: the model's 4D/5D weights and buffers in channels_last / channels_last_3d at
    ``setup`` (before the optimiser is built), and every training/validation batch's 4D/5D ``image`` (and Siamese
    ``image_b``) converted in the batch dict Lightning passes on to the step. Values are unchanged, only strides
    (a 2D model gets channels_last, a 3D one channels_last_3d). Only :func:`fit` uses it; prediction
    (``runs/inference.py``) stays in the default layout: ``teardown`` (end of ``trainer.fit``) puts the weights
    back, so the fitted module predicts (fold predictions, SVM features) exactly as its reloaded checkpoint does
    (the fp32 kernels of the two layouts differ in rounding: |dp| up to ~1e-4 on a DMRN + SVM fold, measured)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with torch.no_grad():  # before the optimiser is built; same Parameter objects, new strides
            for t in [*pl_module.parameters(), *pl_module.buffers()]:
                if t.ndim in (4, 5):
                    t.data = t.data.contiguous(memory_format=_MEMORY_FORMAT[t.ndim])

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with torch.no_grad():  # same Parameter objects, default strides again
            for t in [*pl_module.parameters(), *pl_module.buffers()]:
                if t.ndim in (4, 5):
                    t.data = t.data.contiguous()

    @staticmethod
    def _convert(batch: Any) -> None:
        if not isinstance(batch, dict):
            return
        for key in ("image", "image_b"):
            x = batch.get(key)
            if isinstance(x, torch.Tensor) and x.ndim in (4, 5):
                batch[key] = x.contiguous(memory_format=_MEMORY_FORMAT[x.ndim])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._convert(batch)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._convert(batch)


def precision_callbacks(cfg: ExperimentConfig, spatial_dims: int) -> list[Callback]:
    """The callbacks that carry ``train.precision`` / ``train.channels_last`` into a Trainer for inputs of
    ``spatial_dims``: :class:`ChannelsLast` when :func:`resolve_channels_last` says so, :class:`Conv3dGuard` when
    :func:`guards_conv3d` does. Used by :func:`fit` and the throughput benchmark."""
    cbs: list[Callback] = []
    if resolve_channels_last(cfg, spatial_dims):
        cbs.append(ChannelsLast())
    if guards_conv3d(cfg):
        cbs.append(Conv3dGuard())
    return cbs


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
_RETAINED: list[bool] = []


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap for reuse (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD,
    2 GiB)``; see ``train.malloc``). Process-wide, idempotent; True when applied, False where there is no glibc
    (macOS, Windows, musl) or it refused."""
    if not _RETAINED:
        ok = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
            except (OSError, AttributeError):  # no glibc
                ok = False
        _RETAINED.append(ok)
    return _RETAINED[0]


def resolve_malloc(cfg: ExperimentConfig) -> str:
    """``train.malloc`` as used: ``auto`` → ``retain`` when training on the CPU, else ``system``."""
    if cfg.train.malloc == "auto":
        return "system" if uses_cuda(cfg) else "retain"
    return str(cfg.train.malloc)


def apply_malloc(cfg: ExperimentConfig) -> bool:
    """Apply ``train.malloc`` before a training (:func:`retain_freed_memory` when it resolves to ``retain``);
    True when freed memory is retained in this process from now on."""
    return resolve_malloc(cfg) == "retain" and retain_freed_memory()


def precision_record(cfg: ExperimentConfig, spatial_dims: int = 2) -> dict[str, Any]:
    """What a fold's ``trainer.json`` records: the precision requested and used, channels_last requested and used
    (for inputs of ``spatial_dims``), the device, the CPU's bf16 support and torch's version and threads."""
    return {"precision": resolve_precision(cfg), "precision_requested": str(cfg.train.precision),
            "channels_last": resolve_channels_last(cfg, spatial_dims),
            "channels_last_requested": str(cfg.train.channels_last).lower(),
            "conv3d_guard": spatial_dims == 3 and guards_conv3d(cfg) and not cpu_bf16_conv3d_ok(),
            "device": "cuda" if uses_cuda(cfg) else "cpu", "cpu_bf16": cpu_has_bf16(),
            "malloc": "retain" if _RETAINED and _RETAINED[0] else "system",  # process-wide: this process's state
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def trainer_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """Trainer kwargs shared by the engine and the throughput benchmark (GPU + AMP when present, bf16 autocast on
    CPUs with native bf16: :func:`resolve_precision`). ``train.channels_last`` and the Conv3d guard are callbacks
    (:func:`precision_callbacks`), not Trainer kwargs."""
    precision = resolve_precision(cfg)
    ddp = ddp_settings(cfg)
    return {"accelerator": cfg.train.accelerator, "devices": cfg.train.devices, **ddp, "precision": precision,
            "deterministic": "warn",
            "logger": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "use_distributed_sampler": False, "enable_progress_bar": cfg.train.progress,
            "gradient_clip_val": cfg.train.gradient_clip}


def fit(cfg: ExperimentConfig, store: ItemStore, train_items: np.ndarray, val_items: np.ndarray, out_dir: Path,
        seed: int, resume: bool = False, callbacks: list[Callback] | None = None) -> CadxModule:
    """Train on ``train_items`` (validate on ``val_items`` if any) into ``out_dir``; return the module holding the
    **best** checkpoint's weights. With ``resume`` and an existing ``checkpoint_last.ckpt`` training continues from
    it (model, optimiser, scheduler, epoch, history, RNG states). Global torch RNG state is left as it was.
    """
    if cfg.train.two_phase is not None:  # phase 1 balanced, phase 2 head-only (cadx.training.two_phase)
        return fit_two_phase(cfg, store, train_items, val_items, out_dir, seed, resume, callbacks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = model_spec(cfg, store)
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        module = _fit(cfg, store, spec, train_items, val_items, out_dir, seed, resume, callbacks or [])
    finally:
        quiet.setLevel(level)
    return module


def _fit(cfg: ExperimentConfig, store: ItemStore, spec: dict[str, Any], train_items: np.ndarray,
         val_items: np.ndarray, out_dir: Path, seed: int, resume: bool, callbacks: list[Callback]) -> CadxModule:
    has_val = val_items.size > 0
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        for pat in _QUIET:
            warnings.filterwarnings("ignore", message=pat)
        torch.manual_seed(seed)
        module = CadxModule(build_model(spec), build_objective(cfg, store, train_items), cfg.optim, cfg.schedule,
                            cfg.train.epochs, spec, aggregation=cfg.eval.aggregation)
        module.has_val = has_val
        es = cfg.train.early_stopping
        mode = "min" if es.monitor == "val_loss" else "max"
        ckpt = ModelCheckpoint(dirpath=out_dir, filename="checkpoint_best", monitor=es.monitor if has_val else None,
                               mode=mode, save_top_k=1, save_last=True, save_on_train_epoch_end=True,
                               enable_version_counter=False, auto_insert_metric_name=False)
        ckpt.CHECKPOINT_NAME_LAST = "checkpoint_last"
        cbs: list[Callback] = [History(out_dir / "history.csv"), ckpt, *callbacks,
                               *precision_callbacks(cfg, store.spatial_dims)]
        apply_malloc(cfg)
        atomic_write_json(out_dir / "trainer.json", precision_record(cfg, store.spatial_dims))
        if has_val and es.patience is not None:
            cbs.append(EarlyStopping(monitor=es.monitor, mode=mode, patience=es.patience,
                                     check_on_train_epoch_end=True))
        trainer = L.Trainer(max_epochs=cfg.train.epochs, callbacks=cbs, default_root_dir=out_dir,
                            log_every_n_steps=1, **trainer_settings(cfg))
        tl = train_loader(store, train_items, cfg, seed)
        if cfg.train.devices > 1:  # DDP: each rank trains on its share of every epoch's batches
            tl = torch.utils.data.DataLoader(tl.dataset, batch_sampler=RankBatches(tl.batch_sampler),
                                             collate_fn=tl.collate_fn, num_workers=0, generator=tl.generator)
        vl = eval_loader(store, val_items, cfg.train.eval_batch_size, cfg.pairs, seed) if has_val else None
        last = out_dir / "checkpoint_last.ckpt"
        ckpt_path = str(last) if resume and last.is_file() else None
        trainer.fit(module, train_dataloaders=tl, val_dataloaders=vl, ckpt_path=ckpt_path, weights_only=False)
    best = out_dir / "checkpoint_best.ckpt"
    state = torch.load(best if best.is_file() else last, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    module.best_epoch = int(state.get("epoch", -1))  # type: ignore[assignment]
    score = ckpt.best_model_score
    module.selection = epoch_selection(  # type: ignore[assignment]
        cfg, has_val, module.best_epoch, float(score) if has_val and score is not None else None,  # type: ignore[arg-type]
        int(trainer.current_epoch))
    return module.cpu().eval()


def epoch_selection(cfg: ExperimentConfig, has_val: bool, epoch: int, monitor_value: float | None = None,
                    epochs_run: int | None = None) -> dict[str, Any]:
    """The selection record of the kept checkpoint (fold ``metrics.json`` ``selection.epoch``): with validation
    items, ``{"split": "validation", "rule": "best val_loss (min)", "value": epoch, "monitor_value": ...}``
    (early stopping, when on, also watched the validation split); without, ``{"split": "none", "rule": "last
    epoch", ...}`` — no data chose it. ``epoch`` is 0-based (-1 = unknown); ``epochs_run`` = epochs trained
    (Lightning's ``current_epoch`` after ``fit``)."""
    es = cfg.train.early_stopping
    if has_val:
        mode = "min" if es.monitor == "val_loss" else "max"
        rule = f"best {es.monitor} ({mode}) over the epochs"
        if es.patience is not None:
            rule += f"; early stopping on {es.monitor}, patience {es.patience}"
        out: dict[str, Any] = {"split": "validation", "rule": rule, "value": int(epoch),
                               "monitor": es.monitor, "monitor_value": monitor_value}
    else:
        out = {"split": "none", "rule": f"last epoch of {cfg.train.epochs} (no validation set)", "value": int(epoch)}
    if epochs_run is not None:
        out["epochs_run"] = int(epochs_run)
    return out


def finetune(cfg2: ExperimentConfig, store: ItemStore, model: torch.nn.Module, trainable: str | list[str],
             train_items: np.ndarray, val_items: np.ndarray, out_dir: str | Path, seed: int, resume: bool = False,
             callbacks: list[Callback] | None = None) -> CadxModule:
    """Phase 2: train a copy of ``model``'s weights, only ``trainable``, with the phase-2 config ``cfg2`` (see
    :func:`phase_configs`) on ``train_items`` as they are. Returns the module (all parameters trainable again)."""
    prefixes = trainable_prefixes(model, trainable)
    names = [n for n, _ in model.named_parameters() if any(n.startswith(p) for p in prefixes)]
    groups = [g for g in cfg2.optim.groups if any(n.startswith(pre) for n in names for pre in g.prefixes)]
    if len(groups) != len(cfg2.optim.groups):  # lr groups of frozen layers only would match nothing
        cfg2 = cfg2.model_copy(update={"optim": cfg2.optim.model_copy(update={"groups": groups})})
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    module = fit(cfg2, store, train_items, val_items, Path(out_dir), seed, resume=resume,
                 callbacks=[FreezeExceptHead(state, prefixes), *(callbacks or [])])
    for p in module.model.parameters():
        p.requires_grad_(True)
    return module


def fit_two_phase(cfg: ExperimentConfig, store: ItemStore, train_items: np.ndarray, val_items: np.ndarray,
                  out_dir: str | Path, seed: int, resume: bool = False, callbacks: list[Callback] | None = None,
                  phase1: torch.nn.Module | None = None) -> CadxModule:
    """Both phases into ``out_dir`` (phase 1 in ``out_dir/phase1``); ``phase1`` = an already trained phase-1
    model to reuse (phase 1 is then skipped). Returns the phase-2 module (best checkpoint weights)."""
    c1, c2 = phase_configs(cfg)
    out_dir = Path(out_dir)
    sel1: dict[str, Any] | None = None
    if phase1 is None:
        m1 = fit(c1, store, train_items, val_items, out_dir / "phase1", seed, resume=resume, callbacks=callbacks)
        phase1, sel1 = m1.model, getattr(m1, "selection", None)
    tp = cfg.train.two_phase
    assert tp is not None
    module: Any = finetune(c2, store, phase1, tp.trainable, train_items, val_items, out_dir, seed, resume, callbacks)
    if sel1 is not None and isinstance(getattr(module, "selection", None), dict):
        module.selection = {**module.selection, "phase1": sel1}  # phase 1's kept epoch, chosen the same way
    return module
