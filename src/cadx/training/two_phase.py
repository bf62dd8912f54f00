"""Two-phase training (thesis A.2, after Havaei et al. 2017), selected by ``train.two_phase`` in any config.

Phase 1 trains the whole network for ``train.epochs`` on a balanced set (``two_phase.sampler`` = oversample |
undersample, towards ``two_phase.ratio``) into ``out_dir/phase1``. Phase 2 starts from phase 1's weights and
fine-tunes only ``two_phase.trainable`` (``head`` = the model's classifier layer ``model.head``, or a list of
parameter-name prefixes) for ``two_phase.epochs`` on the original (not resampled) distribution with every learning
rate × ``two_phase.lr_factor`` (A.2: 0.1) and otherwise the same hyperparameters. Phase 2 writes the fold's usual
``checkpoint_*.ckpt``/``history.csv`` into ``out_dir``; frozen layers run in eval mode (no BatchNorm/dropout
updates). This module holds the schedule's pieces (the two phase configs, which parameters train, the freezing
callback); :func:`cadx.training.trainer.fit` runs both phases when ``train.two_phase`` is set
(:func:`cadx.training.trainer.fit_two_phase`, :func:`cadx.training.trainer.finetune`).
"""

from __future__ import annotations

from typing import cast

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cadx.config import ExperimentConfig
from cadx.errors import CadxConfigError


def phase_configs(cfg: ExperimentConfig) -> tuple[ExperimentConfig, ExperimentConfig]:
    """``(phase 1, phase 2)`` configs of a config with ``train.two_phase`` set (both without ``two_phase``).

    Phase 1: ``sampler = two_phase.sampler/ratio``. Phase 2: plain sampler, ``train.epochs = two_phase.epochs``,
    ``optim.lr`` and every ``optim.groups[*].lr`` × ``lr_factor``.
    """
    tp = cfg.train.two_phase
    if tp is None:
        raise CadxConfigError("train.two_phase is not set")
    base = cfg.to_dict()
    base["train"]["two_phase"] = None
    p1 = dict(base, sampler={"kind": tp.sampler, "ratio": tp.ratio})
    p2 = ExperimentConfig.model_validate(dict(base, sampler={"kind": "plain", "ratio": 1.0})).to_dict()
    p2["train"]["epochs"] = tp.epochs
    p2["optim"]["lr"] = p2["optim"]["lr"] * tp.lr_factor
    for g in p2["optim"]["groups"]:
        g["lr"] = g["lr"] * tp.lr_factor
    return ExperimentConfig.model_validate(p1), ExperimentConfig.model_validate(p2)


def trainable_prefixes(model: torch.nn.Module, trainable: str | list[str]) -> list[str]:
    """Parameter-name prefixes trained in phase 2: ``head`` → ``["head."]`` (needs a ``model.head`` with
    parameters), a list → as given; raises CadxConfigError when a prefix matches no parameter."""
    if isinstance(trainable, str):
        if trainable != "head":
            raise CadxConfigError(f"two_phase.trainable: 'head' or a list of prefixes, got {trainable!r}")
        head = getattr(model, "head", None)
        if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
            raise CadxConfigError(f"two_phase.trainable=head: {type(model).__name__} has no classifier head; "
                                  "give parameter-name prefixes instead")
        return ["head."]
    names = [n for n, _ in model.named_parameters()]
    for pre in trainable:
        if not any(n.startswith(pre) for n in names):
            raise CadxConfigError(f"two_phase.trainable: prefix {pre!r} matches no parameter of "
                                  f"{type(model).__name__}")
    return list(trainable)


class FreezeExceptHead(Callback):
    """Loads ``state_dict`` into the module's model before the optimiser is built, freezes every parameter not
    under ``prefixes`` and keeps the frozen part in eval mode during training epochs."""

    def __init__(self, state_dict: dict[str, torch.Tensor], prefixes: list[str]) -> None:
        self.state_dict_ = state_dict
        self.prefixes = prefixes

    def _is_trainable(self, name: str) -> bool:
        return any(name.startswith(p) or f"{name}.".startswith(p) for p in self.prefixes)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model = cast(torch.nn.Module, pl_module.model)
        model.load_state_dict(self.state_dict_)
        for n, p in model.named_parameters():
            p.requires_grad_(self._is_trainable(n))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = cast(torch.nn.Module, pl_module.model)
        model.eval()
        for n, m in model.named_modules():
            if n and self._is_trainable(n):
                m.train()
