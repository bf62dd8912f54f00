"""How the calipers study (thesis A.5) is configured and which training modes it derives.

:class:`CalipersConfig` is the whole study YAML (``configs/papers/calipers_busi.yaml``): the data, the caliper
annotations, the detector's tolerance and folds, the reduced U-Net training (input size, epochs, patience, folds)
and the learning curve. :data:`MODES` are the three training modes of the paper, all the same U-Net
(``create_model("unet")``, Dice loss, early stopping on the validation loss):

- ``approx``: approximate (caliper) masks as targets, image input (1 channel);
- ``expert``: expert masks as targets, image input;
- ``expert+approx``: expert masks as targets, the approximate mask as a second input channel.

Every mode is scored on the **expert** masks of the test images. Relative paths in the config are resolved against
the project folder (the command's ``--project``, default the current folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.errors import CadxConfigError

__all__ = ["MODES", "CalipersConfig", "DetectorSettings", "LearningCurveSettings", "TrainSettings",
           "load_calipers_config"]

#: mode → (input channels, target) — target ``approx`` or ``expert``; input channel 2 = the approximate mask
MODES: dict[str, tuple[int, str]] = {"approx": (1, "approx"), "expert": (1, "expert"), "expert+approx": (2, "expert")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorSettings(_Strict):
    """Caliper detector evaluation: match tolerance ``tol`` (px), ``folds`` for the threshold choice (grouped by
    near-duplicate group), threshold ``grid`` (lo, hi, step), ``min_distance`` between detections, ``max_points``
    per image."""

    tol: float = Field(default=5.0, gt=0)
    folds: int = Field(default=5, ge=2)
    grid: tuple[float, float, float] = (0.05, 0.6, 0.01)
    min_distance: int = Field(default=6, ge=1)
    max_points: int = Field(default=8, ge=1)


class TrainSettings(_Strict):
    """The reduced U-Net training: ``size`` (input side; the paper 320), ``base_filters``/``levels`` (the paper
    32/4), ``epochs`` (max; the paper 100), ``patience`` (the paper 10), ``batch_size``, ``lr`` (Adam; the paper
    does not state its optimiser), ``val_fraction`` of the training groups for early stopping, ``shift``
    (augmentation: random shift up to this fraction of the side; the paper 32/320 px), ``flip`` (random
    horizontal flip), ``folds`` (cross-validation folds over near-duplicate groups), ``threads`` (torch)."""

    size: int = Field(default=48, ge=16)
    base_filters: int = Field(default=32, ge=1)
    levels: int = Field(default=4, ge=1)
    epochs: int = Field(default=5, ge=1)
    patience: int = Field(default=3, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    shift: float = Field(default=0.1, ge=0, lt=0.5)
    flip: bool = True
    folds: int = Field(default=3, ge=2)
    threads: int = Field(default=1, ge=0)


class LearningCurveSettings(_Strict):
    """Training fractions × repeats on fold 0 (test set fixed), ``base_filters`` may be smaller than the main
    runs' to fit a CPU budget (the report says so); ``modes`` to run (default all)."""

    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0])
    repeats: int = Field(default=2, ge=1)
    base_filters: int = Field(default=16, ge=1)
    epochs: int = Field(default=5, ge=1)
    modes: list[str] = Field(default_factory=lambda: list(MODES))
    enabled: bool = True


class CalipersConfig(_Strict):
    """The calipers study: ``data_root`` (BUSI folder), ``annotations`` (hand-annotated caliper CSV:
    ``file, x, y, n_calipers``), ``classes`` (lesion classes used for segmentation), ``seed``, ``bootstrap``
    resamples, and the :class:`DetectorSettings`, :class:`TrainSettings`, :class:`LearningCurveSettings`."""

    name: str = "calipers_busi"
    data_root: str = "../shared/data/busi"
    annotations: str = "tests/data/busi_calipers.csv"
    classes: list[str] = Field(default_factory=lambda: ["benign", "malignant"])
    modes: list[str] = Field(default_factory=lambda: list(MODES))
    seed: int = 0
    bootstrap: int = Field(default=2000, ge=100)
    detector: DetectorSettings = Field(default_factory=lambda: DetectorSettings())
    train: TrainSettings = Field(default_factory=lambda: TrainSettings())
    learning_curve: LearningCurveSettings = Field(default_factory=lambda: LearningCurveSettings())

    def model_post_init(self, __context: Any) -> None:
        bad = [m for m in [*self.modes, *self.learning_curve.modes] if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode(s) {bad}; modes: {list(MODES)}")

    def resolve(self, project: str | Path) -> tuple[Path, Path]:
        """``(data_root, annotations)`` resolved against ``project``."""
        proj = Path(project)
        return tuple(p if p.is_absolute() else (proj / p).resolve()  # type: ignore[return-value]
                     for p in (Path(self.data_root), Path(self.annotations)))


def load_calipers_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CalipersConfig:
    """Read the study YAML (``overrides``: dotted keys, e.g. ``{"train.epochs": 2}``); a missing file, bad YAML or
    an unknown/invalid field raise one-line :class:`CadxConfigError` naming the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise CadxConfigError(f"{p}: calipers study config not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise CadxConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CadxConfigError(f"{p}: expected a mapping at the top level")
    for key, value in (overrides or {}).items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return CalipersConfig(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "config"
        raise CadxConfigError(f"{p}: field {field}: {err['msg']}") from None
