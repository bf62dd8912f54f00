"""The A.9 anomaly study's config and the table cells it reports.

:class:`AnomalyConfig` (YAML, ``configs/papers/anomaly_lgg.yaml`` / ``anomaly_busi.yaml``): ``data`` (cohort,
channel, image size, which studies are normal / lesion), ``split`` (one patient-level holdout: test patients give
the lesion images, the rest train the GAN on their normal slices, a validation share of them picks the epoch),
``model`` (field of view, centred hole for the heatmaps, width, contextual attention), ``patches`` (training holes
and the foreground check), ``train`` (:class:`cadx.training.gan.GanTrainConfig`) and ``eval`` (stride, foreground
threshold, overlays). :func:`load_study_config` applies ``--set key=value`` overrides (dotted keys).

:data:`VARIANTS`: the (score, map) cells of the ratio table — the paper's Table 2 has the three scores on
non-averaged ("raw") maps; the averaged maps are reported beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.config import apply_override, read_yaml
from cadx.errors import CadxConfigError
from cadx.explain.anomaly import SCORES
from cadx.objectives.inpaint import InpaintWeights
from cadx.training.gan import GanTrainConfig

__all__ = ["MAPS", "VARIANTS", "AnomalyConfig", "load_study_config", "train_config"]

MAPS = ("raw", "averaged")
VARIANTS = [(s, m) for m in MAPS for s in SCORES]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataSettings(_Strict):
    """``dataset``/``root``/``options``: the cohort (``cadx.data.load_dataset``); ``channel``: image channel (None =
    channel mean); ``size``: slices resized to ``size`` square; ``normal_label``: only studies with this label give
    normal slices (None = any study's lesion-free slices); ``lesion_labels``: only these labels' lesion slices are
    evaluated (None = all); ``min_lesion_pixels``: a test slice needs this many lesion pixels after resizing."""

    dataset: str
    root: str
    options: dict[str, Any] = Field(default_factory=dict)
    channel: int | None = None
    size: int = Field(default=128, ge=16)
    normal_label: str | None = None
    lesion_labels: list[str] | None = None
    min_lesion_pixels: int = Field(default=20, ge=1)


class SplitSettings(_Strict):
    """One patient-level holdout (``cadx.data.splits.holdout_split``): ``test_fraction`` of patients to test,
    ``val_fraction`` of the rest to validation."""

    test_fraction: float = Field(default=0.25, gt=0, lt=1)
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    seed: int = 0


class ModelSettings(_Strict):
    """``fov``/``hole``: field of view and the heatmaps' centred hole (px; the paper: 256/128 or 64);
    ``local_size``: the local critic's window (defaults to ``hole``); ``width``; ``contextual_attention``."""

    fov: int = Field(default=64, ge=16)
    hole: int = Field(default=32, ge=2)
    local_size: int | None = None
    width: int = Field(default=8, ge=2)
    contextual_attention: bool = True


class PatchSettings(_Strict):
    """Training holes ``hole_min``..``hole_max`` px (the paper: 16..128 at FOV 256) and the foreground check."""

    hole_min: int = Field(default=8, ge=1)
    hole_max: int = Field(default=32, ge=1)
    fg_threshold: float = 0.05
    fg_fraction: float = Field(default=0.5, ge=0, le=1)


class TrainSettings(_Strict):
    """:class:`cadx.training.gan.GanTrainConfig` fields (the loss weights are the paper's, fixed)."""

    epochs: int = Field(default=5, ge=1)
    iters_per_epoch: int = Field(default=100, ge=1)
    batch_size: int = Field(default=8, ge=1)
    n_critic: int = Field(default=5, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    seed: int = 0
    val_patches: int = Field(default=64, ge=1)


class EvalSettings(_Strict):
    """``stride``: window step (the paper: 8 px); ``fg_threshold``: foreground for the ratio and AUROC = pixels of
    the normalised image above it (the paper: intensity > 0); ``average_over``: fov | hole; ``overlays``: images
    in the overlay figure; ``slices_per_patient``: evaluate only each test patient's k slices with the largest
    lesion (None = every lesion slice; the paper evaluates one slice per volume); ``max_images``: cap on evaluated
    test slices after that (None = all)."""

    stride: int = Field(default=8, ge=1)
    fg_threshold: float = 0.02
    average_over: Literal["fov", "hole"] = "fov"
    batch_size: int = Field(default=128, ge=1)
    overlays: int = Field(default=3, ge=0)
    slices_per_patient: int | None = Field(default=None, ge=1)
    max_images: int | None = None


class AnomalyConfig(_Strict):
    """The whole study config (see the module doc)."""

    name: str = "anomaly"
    data: DataSettings
    split: SplitSettings = Field(default_factory=lambda: SplitSettings())
    model: ModelSettings = Field(default_factory=lambda: ModelSettings())
    patches: PatchSettings = Field(default_factory=lambda: PatchSettings())
    train: TrainSettings = Field(default_factory=lambda: TrainSettings())
    eval: EvalSettings = Field(default_factory=lambda: EvalSettings())

    def local_size(self) -> int:
        return self.model.local_size or self.model.hole


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> AnomalyConfig:
    """Read the YAML at ``path``, apply ``--set`` overrides (``train.epochs=2``), validate. A bad key or value is
    one CadxConfigError naming the file and the key."""
    data: dict[str, Any] = read_yaml(path)
    for item in overrides or []:
        apply_override(data, item)
    try:
        cfg = AnomalyConfig.model_validate(data)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                        f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                        for err in e.errors()[:5])
        raise CadxConfigError(f"{path}: {msg}") from None
    m, p = cfg.model, cfg.patches
    if m.hole >= m.fov or p.hole_max >= m.fov or p.hole_min > p.hole_max:
        raise CadxConfigError(f"{path}: model/patches: need hole ({m.hole}) < fov ({m.fov}) and hole_min "
                              f"({p.hole_min}) <= hole_max ({p.hole_max}) < fov")
    if m.fov % 16 or cfg.local_size() % 16 or cfg.local_size() > m.fov:
        raise CadxConfigError(f"{path}: model: fov ({m.fov}) and local_size ({cfg.local_size()}) must be multiples "
                              "of 16, local_size <= fov")
    if cfg.data.size < m.fov:
        raise CadxConfigError(f"{path}: data.size ({cfg.data.size}) is smaller than model.fov ({m.fov})")
    return cfg


def train_config(cfg: AnomalyConfig) -> GanTrainConfig:
    """The :class:`GanTrainConfig` of ``cfg.train`` with the paper's loss weights."""
    t = cfg.train
    return GanTrainConfig(epochs=t.epochs, iters_per_epoch=t.iters_per_epoch, batch_size=t.batch_size,
                          n_critic=t.n_critic, lr=t.lr, seed=t.seed, val_patches=t.val_patches,
                          weights=InpaintWeights())
