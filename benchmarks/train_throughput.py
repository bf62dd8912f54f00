"""Training throughput: cadx's LightningModule under a Trainer with the engine's settings vs a plain PyTorch loop.

Both train the registry's ``resnet18`` (ImageNet stem, width 64) on in-memory 64×64 single-channel images, batch 64,
AdamW, cross-entropy, for the same number of timed steps after the same warm-up. cadx's side uses the engine's real
data path (``train_loader``: epoch batch sampler + batch gather) and ``trainer_settings`` (deterministic algorithms,
precision 32 on CPU / 16-mixed on CUDA, progress bar). Runs alternate (plain, cadx, plain, cadx, ...) so that load
from other processes hits both alike; the best run of each is compared (``ratio`` = cadx / plain, target ≥ 0.95).

    .venv/bin/python benchmarks/train_throughput.py [--steps 12] [--warmup 3] [--repeats 2] [--precision bf16-mixed]

Writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from cadx.config import load_config
from cadx.pipeline.items import ItemStore
from cadx.pipeline.loaders import train_loader
from cadx.training.module import CadxModule
from cadx.training.trainer import build_model, build_objective, model_spec, trainer_settings
from cadx.utils import atomic_write_json

RESULT = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def make_store(n: int, size: int, seed: int = 0) -> ItemStore:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((n, 1, size, size), dtype=np.float32))
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    return ItemStore(images, None, np.arange(n), np.zeros(n, np.int64), labels, np.zeros((n, 0), np.float32),
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


def run_cadx(store: ItemStore, steps: int, warmup: int, batch: int, seed: int, workdir: Path,
             precision: str = "auto") -> dict[str, float]:
    cfg = load_config(None, ["model.name=resnet18", f"train.batch_size={batch}", "train.epochs=1",
                             "optim.name=adamw", "optim.lr=0.001", "train.progress=true",
                             f"train.precision={precision}"])
    spec = model_spec(cfg, store)
    items = np.arange(len(store))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        module = CadxModule(build_model(spec), build_objective(cfg, store, items), cfg.optim, cfg.schedule, 1, spec)
        timer = StepTimer(warmup)
        trainer = L.Trainer(max_steps=warmup + steps, max_epochs=1, callbacks=[timer], default_root_dir=workdir,
                            enable_checkpointing=False, **trainer_settings(cfg))
        t = time.perf_counter()
        trainer.fit(module, train_dataloaders=train_loader(store, items, cfg, seed))
        wall = time.perf_counter() - t
    torch.use_deterministic_algorithms(False)
    return {"images_per_s": steps * batch / (timer.t1 - timer.t0), "fit_seconds": wall}


def run_plain(store: ItemStore, steps: int, warmup: int, batch: int, seed: int) -> dict[str, float]:
    from cadx.models import create_model

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("resnet18", num_classes=2, in_channels=1).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        y_all = torch.from_numpy(store.labels)
        perm = torch.randperm(len(store), generator=torch.Generator().manual_seed(seed))
        t0 = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                _sync()
                t0 = time.perf_counter()
            idx = perm[(i * batch) % len(store):(i * batch) % len(store) + batch]
            x, y = store.images[idx].to(dev), y_all[idx].to(dev)
            loss = torch.nn.functional.cross_entropy(model(x)["logits"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync()
        return {"images_per_s": steps * batch / (time.perf_counter() - t0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--precision", default="auto", help="cadx's train.precision (the plain loop is always fp32)")
    a = ap.parse_args(argv)
    store = make_store(a.batch * (a.steps + a.warmup), a.size)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "cadx_bench_throughput"
    plain, cadx = [], []
    load_before = os.getloadavg()
    for r in range(a.repeats):
        plain.append(run_plain(store, a.steps, a.warmup, a.batch, seed=r)["images_per_s"])
        cadx.append(run_cadx(store, a.steps, a.warmup, a.batch, seed=r, workdir=work,
                             precision=a.precision)["images_per_s"])
        print(f"repeat {r}: plain {plain[-1]:.1f} img/s, cadx {cadx[-1]:.1f} img/s")
    result = {
        "model": "resnet18 (registry, width 64, imagenet stem)", "image_size": a.size, "batch_size": a.batch,
        "timed_steps": a.steps, "warmup_steps": a.warmup, "repeats": a.repeats, "cadx_precision": a.precision,
        "plain_images_per_s": max(plain), "cadx_images_per_s": max(cadx), "ratio": max(cadx) / max(plain),
        "ratio_median": statistics.median(cadx) / statistics.median(plain),
        "plain_runs": plain, "cadx_runs": cadx,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(a.out, result)
    print(f"ratio cadx/plain = {result['ratio']:.3f} (best of {a.repeats}); median ratio {result['ratio_median']:.3f}"
          f" → {a.out}")
    return result


if __name__ == "__main__":
    main()
