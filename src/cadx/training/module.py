"""One LightningModule for every registry model and objective (plain or Siamese-paired batches)."""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from cadx.config import OptimConfig, ScheduleConfig
from cadx.errors import CadxConfigError
from cadx.evaluation.aggregation import aggregate_proba
from cadx.evaluation.metrics import accuracy, roc_auc


def validation_metrics(proba: np.ndarray, labels: np.ndarray, study: np.ndarray,
                       aggregation: str = "mean") -> tuple[float, float]:
    """Study-level accuracy and ROC AUC of item probabilities ``(N, K)`` with item labels ``(N,)`` (-1 = missing)
    and study ids ``(N,)``: the run's ``aggregation`` (``eval.aggregation``: mean | vote | max, with its tie rule)
    and :func:`~cadx.evaluation.metrics.roc_auc` of the evaluation package (the same functions as cv; binary: AUC
    of class 1, multi-class: macro one-vs-rest).
    Unlabelled studies are left out; NaN when none is left, AUC NaN (no warning) when a class is missing."""
    agg = aggregate_proba(proba, study, aggregation)
    y = np.asarray(labels)[agg.first]
    ok = y >= 0
    if not ok.any():
        return float("nan"), float("nan")
    acc = accuracy(y[ok], agg.pred[ok])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # one class present → NaN, expected in small validation sets
        auc = roc_auc(y[ok], agg.proba[ok])
    return acc, float(auc)


class CadxModule(L.LightningModule):
    """Trains ``model`` with ``objective``; logs ``train_loss`` and ``val_loss``/``val_accuracy``/``val_auc``.

    Paired batches (keys ``image_b``, ``label_b``, ...) run the same (shared-weight) model on both members and call
    ``objective(out, batch, out_b, batch_b)``. The torch/numpy/python RNG states go into every checkpoint and are
    restored on resume, so a resumed run continues exactly like an uninterrupted one.
    """

    def __init__(self, model: nn.Module, objective: Any, optim: OptimConfig, schedule: ScheduleConfig,
                 max_epochs: int, model_spec: dict[str, Any] | None = None, aggregation: str = "mean") -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.optim_cfg = optim
        self.schedule_cfg = schedule
        self.max_epochs = int(max_epochs)
        self.aggregation = aggregation
        self.model_spec = dict(model_spec or {})
        self._val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.has_val = False

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return self.model(x)

    # -- steps ----------------------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        out = self.model(batch["image"])
        if "image_b" in batch:
            out_b = self.model(batch["image_b"])
            batch_b = {k[:-2]: v for k, v in batch.items() if k.endswith("_b")}
            loss, parts = self.objective(out, batch, out_b, batch_b)
        else:
            loss, parts = self.objective(out, batch)
        return loss, parts, out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts, _ = self._loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, batch "
                                     f"{batch_idx} (lower optim.lr?)")
        bs = int(batch["image"].shape[0])
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        if len(parts) > 1:
            for k, v in parts.items():
                self.log(f"train_{k}", v.detach(), on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, _, out = self._loss(batch)
        bs = int(batch["image"].shape[0])
        self.log("val_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        if "logits" in out:
            p = torch.softmax(out["logits"].float(), dim=1).cpu().numpy()
            self._val.append((p, batch["label"].cpu().numpy(), batch["study_index"].cpu().numpy()))

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        p = np.concatenate([v[0] for v in self._val])
        y = np.concatenate([v[1] for v in self._val])
        s = np.concatenate([v[2] for v in self._val])
        acc, auc = validation_metrics(p, y, s, self.aggregation)
        self.log("val_accuracy", acc, prog_bar=True)
        self.log("val_auc", auc)
        self._val = []

    # -- optimiser --------------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups: each ``optim.groups`` entry claims the parameters whose name starts with one of its
        prefixes (first match wins); the rest use ``optim.lr``. A prefix matching nothing is a config error."""
        cfg = self.optim_cfg
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        taken: set[str] = set()
        groups: list[dict[str, Any]] = []
        for i, g in enumerate(cfg.groups):
            params = [p for n, p in named if n not in taken and any(n.startswith(pre) for pre in g.prefixes)]
            names = [n for n, _ in named if n not in taken and any(n.startswith(pre) for pre in g.prefixes)]
            if not params:
                raise CadxConfigError(f"optim.groups[{i}].prefixes {g.prefixes} match no parameter of the model")
            taken.update(names)
            wd = cfg.weight_decay if g.weight_decay is None else g.weight_decay
            groups.append({"params": params, "lr": g.lr, "weight_decay": wd})
        rest = [p for n, p in named if n not in taken]
        if rest:
            groups.insert(0, {"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
        return groups

    def configure_optimizers(self) -> Any:
        cfg, sch = self.optim_cfg, self.schedule_cfg
        groups = self.param_groups()
        if cfg.name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                                         nesterov=cfg.nesterov and cfg.momentum > 0)
        elif cfg.name == "adam":
            opt = torch.optim.Adam(groups, lr=cfg.lr)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr)
        if sch.name == "none":
            return opt
        if sch.name == "step":
            s: Any = torch.optim.lr_scheduler.StepLR(opt, step_size=sch.step_size, gamma=sch.gamma)
        elif sch.name == "cosine":
            s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs), eta_min=sch.min_lr)
        else:
            s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=sch.gamma, patience=sch.patience,
                                                           min_lr=sch.min_lr)
            monitor = "val_loss" if self.has_val else "train_loss"
            return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "monitor": monitor, "interval": "epoch"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "epoch"}}

    # -- checkpoint RNG state ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cadx_rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
                                  "python": random.getstate(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        checkpoint["cadx_model"] = self.model_spec

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        st = checkpoint.get("cadx_rng")
        if not st:
            return
        torch.set_rng_state(st["torch"])
        np.random.set_state(st["numpy"])  # noqa: NPY002
        random.setstate(st["python"])
        if st.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda"])
