"""``train.malloc``: glibc's default vs ``retain`` (freed memory kept in the heap) for training steps on the CPU.

Each case runs in a fresh process (the setting is process-wide): a model from cadx's registry, one torch thread,
bf16 autocast when the CPU has native bf16 (as ``train.precision: auto``), AdamW; one warm-up step, then
``--steps`` timed steps on a fixed random batch. Recorded per case and setting: wall, user and system CPU seconds
and minor page faults of the timed steps (``resource.getrusage``), and the last loss, which must be identical
(the allocator moves no float).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/malloc_retain.py --out benchmarks/results/malloc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: name -> (model, kwargs, spatial dims, batch, input size, segmentation)
CASES = {
    "cnn3d_small_64cube_b32": ("cnn3d_small", {}, 3, 32, 64, False),
    "resnet18_2d_64px_b64": ("resnet18", {"width": 32, "stem": "small"}, 2, 64, 64, False),
    "unet_2d_128px_b16": ("unet", {"num_seg_classes": 1, "base_filters": 16, "levels": 4}, 2, 16, 128, True),
}

STEP = r"""
import json, resource, sys, time, torch
from cadx.config import load_config
from cadx.models import create_model
from cadx.training import trainer as tr
name, kwargs, dims, batch, size, seg, malloc, steps = json.loads(sys.argv[1])
cfg = load_config(None, [f"train.malloc={malloc}"])
applied = tr.apply_malloc(cfg)
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model(name, num_classes=0 if seg else 2, in_channels=1, spatial_dims=dims, **kwargs)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.rand(batch, 1, *([size] * dims))
y = (torch.rand(batch, 1, *([size] * dims)) > 0.7).float() if seg else torch.randint(0, 2, (batch,))
bf16 = tr.cpu_has_bf16()
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
        if seg:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out["seg_logits"].float(), y)
        else:
            loss = torch.nn.functional.cross_entropy(out["logits"].float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)
step()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    last = step()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "bf16": bf16, "wall": round(time.perf_counter() - t0, 3),
                  "user": round(r1.ru_utime - r0.ru_utime, 3), "sys": round(r1.ru_stime - r0.ru_stime, 3),
                  "minor_faults": r1.ru_minflt - r0.ru_minflt, "max_rss_gb": round(r1.ru_maxrss / 2**20, 2),
                  "last_loss": last}))
"""


def run(case: tuple, malloc: str, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", STEP, json.dumps([*case, malloc, steps])], capture_output=True,
                         text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "malloc")
    args = ap.parse_args()
    result: dict = {"command": f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/malloc_retain.py --steps "
                               f"{args.steps} --repeats {args.repeats}",
                    "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                "glibc": platform.libc_ver()[1]},
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                             text=True).stdout.strip(), "cases": {}}
    for name, case in CASES.items():
        rows = {m: [run(case, m, args.steps) for _ in range(args.repeats)] for m in ("system", "retain")}
        best = {m: min(r["wall"] for r in rows[m]) for m in rows}
        result["cases"][name] = {
            "runs": rows, "speedup_best_wall": round(best["system"] / best["retain"], 2),
            "same_loss": len({r["last_loss"] for m in rows for r in rows[m]}) == 1}
        print(name, result["cases"][name]["speedup_best_wall"], result["cases"][name]["same_loss"],
              {m: [(r["wall"], r["sys"], r["minor_faults"]) for r in rows[m]] for m in rows}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "malloc_retain.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
