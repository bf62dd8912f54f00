"""Training of the A.9 inpainting GAN (WGAN-GP): alternating critic/generator steps, seeded, checkpointed, resumable.

One *iteration* = ``n_critic`` critic steps (each on a fresh batch) then one generator step; an *epoch* =
``iters_per_epoch`` iterations. Every draw of an epoch comes from ``np.random.default_rng([seed, epoch])`` (patches,
holes) and a ``torch.Generator`` seeded with ``(seed, epoch)`` (gradient-penalty interpolation), so a run resumed
after epoch ``k`` takes exactly the step an uninterrupted run takes. After each epoch the generator, both critics,
both Adam states and the history are written atomically to ``checkpoint_last.pt`` (and ``checkpoint_best.pt`` when
the validation hole MSE improves), ``history.csv`` alongside.

Validation (optional): the hole MSE of the completed patch (intensities in [0, 1]) on a fixed set of normal
patches of validation patients (drawn once from ``default_rng([seed, 1_000_000])``); the best epoch by it is
the checkpoint the heatmaps use. The paper trains 2 000 000 iterations with batch 9, Adam lr 1e-4; Adam betas
(0.5, 0.9) are Yu et al.'s code's; ``n_critic`` is not given by the paper (5 is Gulrajani et al.'s default).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models.inpaint import InpaintGAN, crop_local
from cadx.objectives.inpaint import (
    InpaintWeights,
    discounted_l1,
    gradient_penalty,
    known_l1,
    spatial_discount,
    wgan_critic_loss,
    wgan_generator_loss,
)
from cadx.pipeline.normal_patches import NormalPatchSampler
from cadx.utils import atomic_write_bytes, atomic_write_text, progress_console

__all__ = ["HISTORY_COLUMNS", "GanTrainConfig", "load_gan_checkpoint", "to_model_range", "train_inpaint_gan"]

HISTORY_COLUMNS = ["epoch", "d_loss", "gp", "g_adv", "l_mask", "l_fov", "g_loss", "val_hole_mse", "seconds"]


@dataclass(frozen=True)
class GanTrainConfig:
    """Training settings (see the module doc); ``weights``: the loss weights of Eq. 5."""

    epochs: int = 5
    iters_per_epoch: int = 100
    batch_size: int = 8
    n_critic: int = 5
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    val_patches: int = 64
    weights: InpaintWeights = field(default_factory=InpaintWeights)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities → the generator's [-1, 1]."""
    return x * 2.0 - 1.0


def _torch_gen(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def _set_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _critic_step(model: InpaintGAN, opt: torch.optim.Optimizer, x: torch.Tensor, m: torch.Tensor,
                 w: InpaintWeights, gen: torch.Generator) -> tuple[float, float]:
    with torch.no_grad():
        _, fine = model.generator(x, m)
        fake = x * (1 - m) + fine * m
    real_l, fake_l = crop_local(x, m, model.local_size), crop_local(fake, m, model.local_size)
    d_loss = (wgan_critic_loss(model.global_critic(x), model.global_critic(fake))
              + wgan_critic_loss(model.local_critic(real_l), model.local_critic(fake_l)))
    gp = (gradient_penalty(model.global_critic, x, fake, gen)
          + gradient_penalty(model.local_critic, real_l, fake_l, gen))
    opt.zero_grad(set_to_none=True)
    (d_loss + w.gp * gp).backward()
    opt.step()
    return float(d_loss.detach()), float(gp.detach())


def _generator_step(model: InpaintGAN, opt: torch.optim.Optimizer, x: torch.Tensor, m: torch.Tensor,
                    w: InpaintWeights) -> tuple[float, float, float, float]:
    coarse, fine = model.generator(x, m)
    dw = spatial_discount(m, w.gamma)
    l_mask = discounted_l1(coarse, x, m, weights=dw) + discounted_l1(fine, x, m, weights=dw)
    l_fov = known_l1(coarse, x, m) + known_l1(fine, x, m)
    fake = x * (1 - m) + fine * m
    _set_grad(model.local_critic, False)
    _set_grad(model.global_critic, False)
    g_adv = (wgan_generator_loss(model.global_critic(fake))
             + wgan_generator_loss(model.local_critic(crop_local(fake, m, model.local_size))))
    _set_grad(model.local_critic, True)
    _set_grad(model.global_critic, True)
    loss = w.mask * l_mask + w.fov * l_fov + w.gan * g_adv
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(g_adv.detach()), float(l_mask.detach()), float(l_fov.detach()), float(loss.detach())


def _val_hole_mse(model: InpaintGAN, val: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    if val is None:
        return float("nan")
    x, m = val
    with torch.no_grad():
        _, fine = model.generator(to_model_range(x), m)
    err = ((fine + 1) / 2 - x) ** 2 * m
    return float(err.sum() / m.sum().clamp_min(1))


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_gan_checkpoint(path: Path) -> dict[str, Any]:
    """The dict written by :func:`train_inpaint_gan` (``model``, ``opt_g``, ``opt_d``, ``epoch``, ``history``,
    ``config``, ``best``); a missing or unreadable file is one CadxDataError line naming it."""
    if not path.is_file():
        raise CadxDataError("checkpoint missing", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, bad pickle, EOF, ...
        raise CadxDataError(f"unreadable checkpoint ({type(err).__name__})", path=path) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CadxDataError("not an inpainting-GAN checkpoint (no model/epoch)", path=path, field="model")
    return state


@contextmanager
def _progress(enabled: bool, total: int, start: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("inpaint GAN"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=progress_console(), transient=True) as bar:
        task = bar.add_task("train", total=total, completed=start)
        yield lambda: bar.advance(task)


def _resumable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "epochs"} == {k: v for k, v in b.items() if k != "epochs"}


def train_inpaint_gan(model: InpaintGAN, sampler: NormalPatchSampler, out_dir: str | Path, cfg: GanTrainConfig,
                      val_sampler: NormalPatchSampler | None = None, resume: bool = True,
                      progress: bool = True) -> pd.DataFrame:
    """Train ``model`` in place for ``cfg.epochs`` epochs into ``out_dir`` and return the history (one row per epoch,
    :data:`HISTORY_COLUMNS`); at return ``model`` holds the *last* epoch's weights (``checkpoint_best.pt`` holds
    the best validation epoch's).

    With ``resume`` and a ``checkpoint_last.pt`` in ``out_dir`` training continues after its epoch (nothing is
    trained when it already reached ``cfg.epochs``); a checkpoint written with other settings (anything but
    ``epochs``) is a CadxConfigError. ``model`` must have been built with the same options as the checkpoint's.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.epochs < 1 or cfg.iters_per_epoch < 1 or cfg.batch_size < 1 or cfg.n_critic < 1:
        raise CadxConfigError(f"train: epochs, iters_per_epoch, batch_size, n_critic must be >= 1, got {cfg}")
    if sampler.fov != model.fov:
        raise CadxConfigError(f"sampler fov {sampler.fov} differs from the model's {model.fov}")
    if val_sampler is not None and val_sampler.patients & sampler.patients:
        raise CadxDataError("validation patients also train the GAN", path=str(out), field="patient_id")
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    critics = list(model.local_critic.parameters()) + list(model.global_critic.parameters())
    opt_d = torch.optim.Adam(critics, lr=cfg.lr, betas=cfg.betas)
    history: list[dict[str, Any]] = []
    start = 0
    best = {"epoch": -1, "val_hole_mse": float("inf")}
    last = out / "checkpoint_last.pt"
    if resume and last.is_file():
        state = load_gan_checkpoint(last)
        if not _resumable(state.get("config", {}), cfg.as_dict()):
            raise CadxConfigError(f"{last}: written with other training settings ({state.get('config')}); "
                                  "use another folder or resume=False")
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start, history, best = int(state["epoch"]), list(state["history"]), dict(state["best"])
    val = None
    if val_sampler is not None:
        vx, vm = val_sampler.sample(cfg.val_patches, np.random.default_rng([cfg.seed, 1_000_000]))
        val = (torch.from_numpy(vx), torch.from_numpy(vm))
    w = cfg.weights
    with _progress(progress, cfg.epochs * cfg.iters_per_epoch, start * cfg.iters_per_epoch) as tick:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            rng, gen = np.random.default_rng([cfg.seed, epoch]), _torch_gen(cfg.seed, epoch)
            model.train()
            sums = np.zeros(6)
            for _ in range(cfg.iters_per_epoch):
                for _ in range(cfg.n_critic):
                    x, m = (torch.from_numpy(a) for a in sampler.sample(cfg.batch_size, rng))
                    d_loss, gp = _critic_step(model, opt_d, to_model_range(x), m, w, gen)
                sums[:2] += (d_loss, gp)
                x, m = (torch.from_numpy(a) for a in sampler.sample(cfg.batch_size, rng))
                sums[2:] += _generator_step(model, opt_g, to_model_range(x), m, w)
                if tick is not None:
                    tick()
            model.eval()
            means = sums / cfg.iters_per_epoch
            row = {"epoch": epoch, **dict(zip(HISTORY_COLUMNS[1:7], means.tolist(), strict=True)),
                   "val_hole_mse": _val_hole_mse(model, val), "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            state = {"model": model.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                     "epoch": epoch + 1, "history": history, "config": cfg.as_dict(), "best": best}
            if val is None or row["val_hole_mse"] < best["val_hole_mse"]:
                best = {"epoch": epoch, "val_hole_mse": row["val_hole_mse"]}
                state["best"] = best
                _save(out / "checkpoint_best.pt", state)
            _save(last, state)
            atomic_write_text(out / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(index=False))
    model.eval()
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)
