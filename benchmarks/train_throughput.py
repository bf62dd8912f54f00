"""Training throughput: cadx (LightningModule + Trainer + the engine's loader, config switches) vs a plain fp32 loop.

Three rows, each trained on in-memory random tensors for the same number of timed steps after the same warm-up:

* ``resnet18_2d`` — registry ``resnet18`` with the stride-1 ``small`` stem (the issue's probe), 64 px, 1 channel,
  batch 64, cross-entropy;
* ``unet_2d`` — registry ``unet`` at the LGG recipe's width (16 → 128 filters, 4 levels, BN), 128 px, 3 channels
  (the recipe's 3 MR sequences), batch 16, the recipe's Dice objective as cadx builds it (``dice``: batch Dice,
  smooth 1; the plain loop calls ``monai.losses.DiceLoss`` with the same options);
* ``resnet18_3d`` — registry ``resnet18`` 3D (width 64, ImageNet stem), 28³, 1 channel, batch 32, cross-entropy;
* ``resnet18_3d_small`` — the same with the stride-1 ``small`` stem, batch 16: the 3D network of the issue's probe
  (11.7 img/s fp32 there; the ImageNet stem shrinks 28³ to 7³ before the first stage, so its steps are small
  tensors and memory traffic, where bf16 helps least). cadx's own 3D configs use the ``pool`` or ``small`` stem
  (``configs/papers/dmrn_adrenalmnist3d.yaml``: the ImageNet stem lost the shape detail at 28³).

Both sides use AdamW (lr 1e-3). The plain loop is always fp32 in the default memory format; cadx runs each
variant of its switches: ``fp32`` (``train.precision=32``: the engine's own overhead), ``mixed``
(``bf16-mixed`` autocast on CPU, ``16-mixed`` on CUDA) and ``mixed_cl`` (+ ``train.channels_last``:
channels_last / channels_last_3d). Runs alternate (plain, cadx fp32, cadx mixed, cadx mixed_cl, plain, ...) so that
load from other processes hits every variant alike; per variant the best repeat is kept, and each row reports
``ratio_best`` = best cadx variant / plain (target ≥ 1.5) and ``ratio_median`` (medians of the same variant).
``loader_images_per_s`` = the engine's train loader alone (batch sampler + in-memory gather), to show whether the
loader limits a step. The first bf16 steps are slow while oneDNN prepares kernels: keep ``--warmup`` ≥ 3.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_throughput.py [--rows resnet18_2d,unet_2d,resnet18_3d]
        [--steps 8] [--warmup 3] [--repeats 2] [--threads 2]

Default settings take about 5–6 minutes on a quiet 2-core machine. Writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from monai.losses import DiceLoss

from cadx.config import load_config
from cadx.models import create_model
from cadx.pipeline.items import ItemStore
from cadx.pipeline.loaders import train_loader
from cadx.training.module import CadxModule
from cadx.training.trainer import (
    build_model,
    build_objective,
    cpu_has_bf16,
    model_spec,
    precision_callbacks,
    resolve_precision,
    trainer_settings,
)
from cadx.utils import atomic_write_json

RESULT = Path(__file__).resolve().parent / "results" / "train_throughput.json"
DICE = {"weight": 1.0, "batch": True, "smooth_nr": 1.0, "smooth_dr": 1.0}


@dataclass(frozen=True)
class Row:
    """One benchmarked network: registry name and options, input ``(channels, size^dims)``, batch, task."""

    model: str
    kwargs: dict[str, Any]
    size: int
    channels: int
    batch: int
    dims: int = 2
    segmentation: bool = False
    note: str = ""
    extra: list[str] = field(default_factory=list)


ROWS: dict[str, Row] = {
    "resnet18_2d": Row("resnet18", {"stem": "small"}, 64, 1, 64, note="ResNet-18 2D, stride-1 stem, 64 px"),
    "unet_2d": Row("unet", {"num_seg_classes": 1, "base_filters": 16, "levels": 4, "batch_norm": True}, 128, 3, 16,
                   segmentation=True, note="U-Net 2D (LGG recipe width 16-128), 128 px, Dice"),
    "resnet18_3d": Row("resnet18", {}, 28, 1, 32, dims=3, note="ResNet-18 3D (width 64, ImageNet stem), 28^3"),
    "resnet18_3d_small": Row("resnet18", {"stem": "small"}, 28, 1, 16, dims=3,
                             note="ResNet-18 3D (width 64, stride-1 stem: the issue's probe), 28^3"),
}


def variants(cuda: bool, dims: int = 2) -> dict[str, list[str]]:
    """cadx's settings per variant (config overrides); 3D rows also try fp32 + channels_last_3d."""
    mixed = "16-mixed" if cuda else "bf16-mixed"
    out = {"fp32": ["train.precision=32", "train.channels_last=false"],
           "mixed": [f"train.precision={mixed}", "train.channels_last=false"],
           "mixed_cl": [f"train.precision={mixed}", "train.channels_last=true"]}
    if dims == 3:
        out["fp32_cl"] = ["train.precision=32", "train.channels_last=true"]
    return out


def make_store(row: Row, n: int, seed: int = 0) -> ItemStore:
    """``n`` random items ``(n, C, *size)`` with balanced labels (and random blob masks for segmentation)."""
    rng = np.random.default_rng(seed)
    shape = (n, row.channels, *([row.size] * row.dims))
    images = torch.from_numpy(rng.random(shape, dtype=np.float32))
    masks = (images[:, :1] > 0.7).float() if row.segmentation else None
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    return ItemStore(images, masks, np.arange(n), np.zeros(n, np.int64), labels, np.zeros((n, 0), np.float32),
                     np.full(n, np.nan, np.float32), ["a", "b"], [], [f"s{i}" for i in range(n)],
                     [f"p{i}" for i in range(n)])


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (synchronised on CUDA)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = self.t1 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if batch_idx == self.warmup:
            _sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        _sync()
        self.t1 = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cadx_config(row: Row, overrides: list[str]) -> Any:
    base = [f"model.name={row.model}", f"model.kwargs={row.kwargs}", f"train.batch_size={row.batch}",
            "train.epochs=1", "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.0001",
            "train.progress=false", "schedule.name=none"]
    if row.segmentation:
        base += ["task.classification=false", "task.segmentation=true", f"objective={{dice: {DICE}}}"]
    if row.dims == 3:  # a 3D row's config says so (input.kind), as a user's 3D config would
        base += ["input.kind=volume3d"]
    return load_config(None, [*base, *row.extra, *overrides])


def run_cadx(row: Row, store: ItemStore, overrides: list[str], steps: int, warmup: int, seed: int,
             workdir: Path) -> float:
    """Images/s of cadx's training step (Trainer with ``trainer_settings`` + the engine's ``train_loader``)."""
    cfg = cadx_config(row, overrides)
    spec = model_spec(cfg, store)
    items = np.arange(len(store))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        module = CadxModule(build_model(spec), build_objective(cfg, store, items), cfg.optim, cfg.schedule, 1, spec)
        timer = StepTimer(warmup)
        cbs: list[Callback] = [timer, *precision_callbacks(cfg, store.spatial_dims)]
        trainer = L.Trainer(max_steps=warmup + steps, max_epochs=1, callbacks=cbs, default_root_dir=workdir,
                            enable_checkpointing=False, **trainer_settings(cfg))
        trainer.fit(module, train_dataloaders=train_loader(store, items, cfg, seed))
    torch.use_deterministic_algorithms(False)
    return steps * row.batch / (timer.t1 - timer.t0)


def run_plain(row: Row, store: ItemStore, steps: int, warmup: int, seed: int) -> float:
    """Images/s of a plain fp32 PyTorch loop over the same model, loss and optimiser."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(row.model, num_classes=0 if row.segmentation else 2, in_channels=row.channels,
                             spatial_dims=row.dims, **row.kwargs).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
        y_all = torch.from_numpy(store.labels)
        perm = torch.randperm(len(store), generator=torch.Generator().manual_seed(seed))
        t0 = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                _sync()
                t0 = time.perf_counter()
            idx = perm[i * row.batch:(i + 1) * row.batch]
            x = store.images[idx].to(dev)
            out = model(x)
            if row.segmentation:
                assert store.masks is not None
                loss = dice(out["seg_logits"], store.masks[idx].to(dev))
            else:
                loss = torch.nn.functional.cross_entropy(out["logits"], y_all[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync()
        return steps * row.batch / (time.perf_counter() - t0)


def loader_rate(row: Row, store: ItemStore, seed: int = 0) -> float:
    """Images/s of the engine's train loader alone (one epoch over ``store``, no model)."""
    cfg = cadx_config(row, [])
    dl = train_loader(store, np.arange(len(store)), cfg, seed)
    t = time.perf_counter()
    n = sum(int(b["image"].shape[0]) for b in dl)
    return n / (time.perf_counter() - t)


def bench_row(name: str, row: Row, steps: int, warmup: int, repeats: int, work: Path) -> dict[str, Any]:
    """Alternating repeats of plain and every cadx variant for one row; best and median per variant."""
    store = make_store(row, row.batch * (steps + warmup))
    var = variants(torch.cuda.is_available(), row.dims)
    runs: dict[str, list[float]] = {"plain": [], **{v: [] for v in var}}
    for r in range(repeats):
        runs["plain"].append(run_plain(row, store, steps, warmup, seed=r))
        for v, ov in var.items():
            runs[v].append(run_cadx(row, store, ov, steps, warmup, seed=r, workdir=work))
        print(f"{name} repeat {r}: " + ", ".join(f"{k} {x[-1]:.1f}" for k, x in runs.items()) + " img/s", flush=True)
    best = {k: max(x) for k, x in runs.items()}
    med = {k: statistics.median(x) for k, x in runs.items()}
    top = max(var, key=lambda v: best[v])

    def effect(a: str, b: str) -> float | None:
        return best[a] / best[b] if a in best and b in best else None

    return {"note": row.note, "model": row.model, "kwargs": row.kwargs, "image_size": row.size,
            "spatial_dims": row.dims, "channels": row.channels, "batch_size": row.batch,
            "objective": f"dice {DICE}" if row.segmentation else "ce",
            "settings": {v: ov for v, ov in var.items()},
            "plain_images_per_s": best["plain"], "cadx_images_per_s": {v: best[v] for v in var},
            "best_variant": top, "best_settings": var[top], "ratio_best": best[top] / best["plain"],
            "ratio_median": med[top] / med["plain"],
            "ratio_per_variant": {v: best[v] / best["plain"] for v in var},
            "effect_mixed_vs_fp32": effect("mixed", "fp32"),
            "effect_channels_last_vs_mixed": effect("mixed_cl", "mixed"),
            "effect_channels_last_vs_fp32": effect("fp32_cl", "fp32"),
            "loader_images_per_s": loader_rate(row, store), "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the plain probe used 2)")
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--note", default="", help="free text recorded in the result (e.g. the machine's load)")
    a = ap.parse_args(argv)
    names = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    torch.set_num_threads(a.threads)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "cadx_bench_throughput"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows = {n: bench_row(n, ROWS[n], a.steps, a.warmup, a.repeats, work) for n in names}
    result = {
        "note": a.note, "command": "benchmarks/train_throughput.py " + " ".join(argv if argv is not None else
                                                                             sys.argv[1:]),
        "rows": rows, "target_ratio": 1.5, "timed_steps": a.steps, "warmup_steps": a.warmup, "repeats": a.repeats,
        "plain": "fp32, default memory format, same model/loss/AdamW, tensor indexing instead of the loader",
        "auto_precision_here": resolve_precision(load_config(None, [])), "cpu_has_bf16": cpu_has_bf16(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(a.out, result)
    for n, r in rows.items():
        print(f"{n}: plain {r['plain_images_per_s']:.1f} img/s, cadx {r['best_variant']} "
              f"{r['cadx_images_per_s'][r['best_variant']]:.1f} img/s, ratio {r['ratio_best']:.2f} "
              f"(median {r['ratio_median']:.2f}); mixed/fp32 {r['effect_mixed_vs_fp32']}, "
              f"channels_last {r['effect_channels_last_vs_mixed']}, loader {r['loader_images_per_s']:.0f} img/s")
    print(f"wall {result['wall_seconds']} s → {a.out}")
    return result


if __name__ == "__main__":
    main()
