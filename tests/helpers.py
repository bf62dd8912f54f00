"""Test-only stand-ins shared by the tests (conftest.py imports this module, so they are registered):
a tiny in-memory CT-like cohort and a 2-layer CNN.

Nothing here ships in ``src``; the tiny model and dataset are registered under names starting with ``_test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cadx.config import ExperimentConfig, load_config
from cadx.data.datasets.base import DATASETS, register_dataset
from cadx.data.image import LazyImage
from cadx.data.study import Cohort, Study
from cadx.models.registry import MODELS, register_model
from cadx.registry import Options


class TinyCNN(nn.Module):
    """conv(8) → ReLU → global pool → linear: ``forward(x) -> {"features" (B, 8), "logits" (B, K)}``."""

    def __init__(self, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, num_attributes: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        self.body = nn.Sequential(conv(in_channels, 8, 3, padding=1), bn(8), nn.ReLU(),
                                  conv(8, 8, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(8, num_classes) if num_classes else None
        self.attr = nn.Linear(8, num_attributes) if num_attributes else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(2).mean(2)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        f = self.forward_features(x)
        out: dict[str, Any] = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(self.drop(f))
        if self.attr is not None:
            out["attributes"] = self.attr(f)
        return out


class TinyOptions(Options):
    dropout: float = 0.0


if "_test_tiny" not in MODELS:
    register_model("_test_tiny", "test stand-in", options=TinyOptions)(TinyCNN)


def tiny_volume(label: int, rng: np.random.Generator, shape: tuple[int, int, int] = (6, 20, 20)
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """A noisy HU-like volume with a lesion whose brightness depends on ``label``; returns (vol, mask, box)."""
    z, y, x = shape
    vol = rng.normal(0.0, 30.0, size=(1, *shape)).astype(np.float32)
    mask = np.zeros((1, *shape), np.uint8)
    cy, cx = int(rng.integers(7, y - 7)), int(rng.integers(7, x - 7))
    mask[0, 1:z - 1, cy - 3:cy + 3, cx - 3:cx + 3] = 1
    vol[mask > 0] += 150.0 if label else -50.0
    box = (1, cy - 3, cx - 3, z - 1, cy + 3, cx + 3)
    return vol, mask, box


def tiny_cohort(n: int = 12, seed: int = 0, attributes: bool = False) -> Cohort:
    """``n`` single-study patients, 2 balanced classes (``benign``/``malignant``), boxes + masks in memory."""
    rng = np.random.default_rng(seed)
    studies = []
    for i in range(n):
        label = i % 2
        vol, mask, box = tiny_volume(label, rng)
        attrs = {"size": float(label) + 0.1 * i / n} if attributes else {}
        studies.append(Study(f"S{i:02d}", f"P{i:02d}", images={"image": LazyImage.from_array(vol, (2.0, 1.0, 1.0))},
                             label=["benign", "malignant"][label], attributes=attrs,
                             masks={"mask": LazyImage.from_array(mask, (2.0, 1.0, 1.0))}, boxes=[box]))
    return Cohort(studies, classes=["benign", "malignant"], name="tiny")


class TinyCohortOptions(Options):
    n: int = 12
    seed: int = 0


if "_test_tiny" not in DATASETS:
    @register_dataset("_test_tiny", "test stand-in: tiny in-memory cohort", options=TinyCohortOptions)
    def _load_tiny(root: Path, *, n: int, seed: int) -> Cohort:
        return tiny_cohort(n, seed)


def tiny_config(*overrides: str) -> ExperimentConfig:
    """A config for the tiny cohort: slices2d 8 px, TinyCNN, 2 folds, 2 epochs, no progress bar."""
    base = ["name=tiny", "data.dataset=_test_tiny", "data.root=.", "input.size=8", "input.window=[0, 400]",
            "model.name=_test_tiny", "train.epochs=2", "train.batch_size=8", "train.progress=false", "cv.folds=2",
            "eval.bootstrap=50", "optim.lr=0.01"]
    return load_config(None, [*base, *overrides])
