"""Where the time of the LGG U-Net recipe goes (issue #14): the phases of one run, measured on the shared data.

Phases: reading the 28 volumes (decode every TIFF), the full data check, preprocessing into 96 px items, one
training step per setting (U-Net 4 levels, batch 16, Adam; CPU seconds per image, fp32 vs bf16 autocast, at
64 / 96 / 128 px and 16 / 32 base filters) and the prediction of one volume. CPU time (``time.process_time``) is
reported beside wall time because other processes share the machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lgg_seg_profile.py [--root ../shared/data/lgg] [--steps 4]

Writes ``benchmarks/results/lgg_unet_recipe/profile.json``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cadx.config import load_config
from cadx.data.check import check_cohort
from cadx.data.datasets import load_dataset
from cadx.models.registry import create_model
from cadx.pipeline.seg_items import build_seg_data
from cadx.runs.segmentation import predict_volume
from cadx.utils import atomic_write_json

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "lgg_unet_recipe" / "profile.json"
CONFIG = HERE.parent / "configs" / "papers" / "unet_lgg_recipe.yaml"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall s, CPU s)`` of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def step_cost(size: int, base: int, bf16: bool, steps: int) -> float:
    """Best CPU seconds per image of a U-Net training step (batch 16, 3 channels) after 2 warm-up steps."""
    torch.manual_seed(0)
    m = create_model("unet", in_channels=3, num_classes=2, num_seg_classes=1, base_filters=base, levels=4,
                     batch_norm=True)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x, y = torch.randn(16, 3, size, size), (torch.rand(16, 1, size, size) > 0.9).float()
    best = float("inf")
    for i in range(steps + 2):
        c = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m(x)["seg_logits"]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            best = min(best, (time.process_time() - c) / 16)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(HERE.parent.parent / "shared" / "data" / "lgg"))
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, [f"data.root={args.root}"])
    cohort = load_dataset("lgg", args.root)
    res: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, torch threads 1",
                           "config": str(CONFIG.relative_to(HERE.parent)), "phases": {}}
    _, w, c = timed(lambda: [s.image().load() for s in cohort])
    res["phases"]["read_28_volumes"] = {"wall_s": round(w, 2), "cpu_s": round(c, 2)}
    _, w, c = timed(lambda: check_cohort(cohort, workers=1))
    res["phases"]["data_check"] = {"wall_s": round(w, 2), "cpu_s": round(c, 2)}
    data, w, c = timed(lambda: build_seg_data(cohort, cfg))
    res["phases"]["preprocess_96px"] = {"wall_s": round(w, 2), "cpu_s": round(c, 2), "items": len(data.store)}
    model = create_model("unet", in_channels=3, num_classes=2, **cfg.model.kwargs).eval()
    items = data.study_items(0)
    gt = data.gt[0]
    _, w, c = timed(lambda: predict_volume(cfg, [model], data.store.images[items], gt.shape, gt))
    res["phases"]["predict_one_volume"] = {"wall_s": round(w, 2), "cpu_s": round(c, 2), "slices": int(items.size)}
    res["train_step_cpu_ms_per_image"] = {
        f"{size}px_base{base}_{'bf16' if bf16 else 'fp32'}": round(1000 * step_cost(size, base, bf16, args.steps), 1)
        for size in (64, 96, 128) for base in (16, 32) for bf16 in (False, True)}
    atomic_write_json(OUT, res)
    print(res)


if __name__ == "__main__":
    main()
