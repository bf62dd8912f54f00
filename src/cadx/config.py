"""Experiment configuration: a pydantic v2 schema, YAML loading and ``--set key=value`` overrides.

Precedence: packaged defaults (``cadx/configs/default.yaml``) → the experiment file → ``--set`` overrides
(dotted keys, values parsed as YAML, e.g. ``train.epochs=3``, ``model.kwargs.width=16``). Every section
forbids unknown keys, so a typo fails with a :class:`~cadx.errors.CadxConfigError` naming the key.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cadx.errors import CadxConfigError
from cadx.registry import lookup
from cadx.utils import atomic_write_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which cohort: a registered dataset name, its root folder/file, adapter options."""

    dataset: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    max_patients: int | None = Field(None, ge=1)
    """A seeded, class-stratified subset of this many patients (quick looks and smoke runs only)."""
    checked: bool = False
    """The cohort already passed ``cadx datasets check``: skip the full check before training (recorded in the run
    folder's ``data_check.json``)."""
    allow_unlabelled: bool = False
    """Unlabelled studies (empty / NaN / NA / None labels) are allowed; otherwise the check refuses them."""


class TaskConfig(_Section):
    """What to predict (any combination): the class, attribute scores, a lesion mask.

    ``score`` names an attribute or numeric metadata field (in [0, 1], e.g. LIDC's ``malignancy_score``) used as
    the ranking target ``batch["score"]``.
    """

    classification: bool = True
    attributes: list[str] | Literal["all"] = Field(default_factory=list)
    segmentation: bool = False
    score: str | None = None


class AugmentConfig(_Section):
    """Training augmentation, drawn per (seed, epoch, batch) so runs are reproducible and resumable.

    ``flip``: random flips of every spatial axis; ``rot90``: random quarter turns in-plane; ``rotate``:
    max rotation in degrees; ``scale``: max relative zoom; ``translate``: max shift as a fraction of the size;
    ``intensity``: max relative gain/bias jitter; ``noise``: std of additive Gaussian noise.
    """

    enabled: bool = False
    flip: bool = True
    rot90: bool = False
    rotate: float = Field(0.0, ge=0, le=180)
    scale: float = Field(0.0, ge=0, lt=1)
    translate: float = Field(0.0, ge=0, lt=1)
    intensity: float = Field(0.0, ge=0, lt=1)
    noise: float = Field(0.0, ge=0)


class InputConfig(_Section):
    """How a study becomes network input.

    ``kind``: ``slices2d`` (every axial slice of each lesion's box/mask, carrying the study index; a volume without
    box or mask: every axial slice that is not constant, e.g. the transaxial slices of an AdrenalMNIST3D shape),
    ``roi2d`` (one 2D ROI per study: the box/mask's central slice or the image's centre),
    ``image2d`` (the whole 2D image, or a volume's central slice, resized), ``volume3d`` (a 3D ROI or volume).
    ``size``: output size per spatial axis (int or list). ``channels``: for 2D inputs of volumes, ``k``
    adjacent slices as channels (2.5D, odd ``k``); for RGB images 3 keeps colour, 1 converts to grey.
    Intensities: ``window`` (a preset name from ``cadx.pipeline.preprocess.WINDOW_PRESETS`` or ``[center,
    width]``) maps to [0, 1]; otherwise ``normalize`` (``percentile`` = 0.5–99.5 % → [0, 1], ``zscore``,
    ``minmax``, ``none``), always per image so nothing is fitted on the cohort.
    ``roi``: crop from the study's ``box`` (first lesion for ``roi2d``/``volume3d``), the ``mask``'s bounding box,
    a square of side ``diameter_scale × diameter`` around the lesion centre (``diameter``; the attribute or numeric
    metadata ``diameter_attribute`` in mm, else the box extent; no box: the image centre), or ``none`` (whole
    image). ``margin``: extra context
    around a box, as a fraction of its size. ``fov_mm``: instead, a fixed field of view (mm per axis) centred on the
    lesion, so that its absolute size survives the resize. ``context_fov_mm``: add a second channel group, the same
    slice (or volume) over a fixed field of view of this many mm centred on the lesion, resized to the same size: a
    diameter-adaptive or box ROI normalises the lesion's size away, the context channel keeps it (the ROI's
    channels come first; masks follow the ROI). ``covariate_channels``: names of numeric study attributes or
    metadata (e.g. LIDC's ``diameter_mm``) appended as constant channels, one per name, holding ``log(value)``
    (``covariate_log``, value > 0) or the value, so that any network can use them; a study without one is an
    error naming it. ``max_slices``: keep at most this many evenly spaced
    slices per lesion (``slices2d``; 0 = all).
    """

    kind: Literal["slices2d", "roi2d", "image2d", "volume3d"] = "slices2d"
    size: int | list[int] = 32
    channels: int = Field(1, ge=1)
    window: str | list[float] | None = None
    normalize: Literal["percentile", "zscore", "minmax", "none"] = "percentile"
    normalize_per_channel: bool = False
    """Statistics of ``normalize`` per channel (multi-sequence MRI: each sequence its own range) instead of one
    range over all channels."""
    roi: Literal["box", "mask", "diameter", "none"] = "box"
    margin: float = Field(0.25, ge=0)
    diameter_scale: float = Field(2.0, gt=0)
    diameter_attribute: str = "diameter_mm"
    max_slices: int = Field(0, ge=0)
    fov_mm: float | None = Field(None, gt=0)
    context_fov_mm: float | None = Field(None, gt=0)
    covariate_channels: list[str] = Field(default_factory=list)
    covariate_log: bool = True
    convert_channels: bool = False
    """A 2D image whose channels differ from ``channels`` is an error naming both unless this asks for the
    conversion (RGB → grey = mean of the first 3 channels; grey → repeated; extra channels dropped), which the
    run's notes then state."""
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig.model_validate({}))
    cache: Literal["off", "disk", "auto"] = "auto"
    """The preprocessed items on disk, memory-mapped (:mod:`cadx.pipeline.item_cache`, ``$CADX_CACHE_DIR/items``):
    ``off`` never touches the disk, ``disk`` reads and writes entries, ``auto`` reads them and writes one only when
    the build took at least 2 s. Not part of the experiment (a resume may change it)."""

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_bool(cls, v: Any) -> Any:
        """YAML reads a bare ``off``/``on`` as a boolean: false = ``off``, true = ``disk``."""
        return {False: "off", True: "disk"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: Any) -> Any:
        if isinstance(v, list) and (len(v) != 2 or v[1] <= 0):
            raise ValueError("window must be a preset name or [center, width] with width > 0")
        return v

    def spatial_dims(self) -> int:
        return 3 if self.kind == "volume3d" else 2

    def size_tuple(self) -> tuple[int, ...]:
        nd = self.spatial_dims()
        s = [self.size] * nd if isinstance(self.size, int) else list(self.size)
        if len(s) != nd or any(int(v) < 1 for v in s):
            raise CadxConfigError(f"input.size: need {nd} positive sizes for {self.kind}, got {self.size}")
        return tuple(int(v) for v in s)


class ModelConfig(_Section):
    """A registered model (``cadx models list``) and its keyword arguments."""

    name: str = "resnet18"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SamplerConfig(_Section):
    """Per-epoch resampling of the training items: ``plain`` (shuffle), ``oversample``/``undersample``
    (towards ``ratio`` × the majority/minority count) or ``balanced`` (class-balanced batches)."""

    kind: Literal["plain", "oversample", "undersample", "balanced"] = "plain"
    ratio: float = Field(1.0, gt=0)


class LrGroup(_Section):
    """Parameters whose name starts with one of ``prefixes`` get ``lr`` (and optionally ``weight_decay``)."""

    prefixes: list[str]
    lr: float = Field(gt=0)
    weight_decay: float | None = None


class OptimConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = False
    groups: list[LrGroup] = Field(default_factory=list)


class ScheduleConfig(_Section):
    """``step`` (× ``gamma`` every ``step_size`` epochs), ``cosine`` (to ``min_lr`` over the run) or ``plateau``
    (× ``gamma`` after ``patience`` epochs without a better val loss; train loss without a val set)."""

    name: Literal["none", "step", "cosine", "plateau"] = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    patience: int = Field(5, ge=0)
    min_lr: float = Field(0.0, ge=0)


class EarlyStoppingConfig(_Section):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (needs a val set; null = off)."""

    patience: int | None = None
    monitor: Literal["val_loss", "val_accuracy", "val_auc"] = "val_loss"


class TwoPhaseConfig(_Section):
    """Two-phase training (thesis A.2, after Havaei et al. 2017): phase 1 trains ``train.epochs`` on a balanced
    ``sampler`` (oversample|undersample towards ``ratio``) set; phase 2 fine-tunes only ``trainable`` (``head`` = the
    model's classifier layer, or a list of parameter-name prefixes) for ``epochs`` on the original distribution at
    ``lr_factor`` × the learning rate. See :mod:`cadx.training.two_phase`."""

    sampler: Literal["oversample", "undersample"] = "oversample"
    ratio: float = Field(1.0, gt=0, le=1)
    epochs: int = Field(1, ge=1)
    lr_factor: float = Field(0.1, gt=0)
    trainable: Literal["head"] | list[str] = "head"


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    #: Training precision (Lightning ``precision``). ``auto``: 16-mixed on CUDA; on CPU bf16-mixed (autocast) when
    #: the CPU has native bf16 (AMX-BF16 or AVX512-BF16, :func:`cadx.training.trainer.cpu_has_bf16`), else 32
    #: (no measured accuracy loss in small paired checks, benchmarks/results/bf16_accuracy/). On CPUs whose bf16
    #: Conv3d weight gradient is broken (``cpu_bf16_conv3d_ok``), the Conv3d layers whose input is smaller than
    #: their kernel run in fp32 (``Conv3dGuard``). The precision used is
    #: recorded in each fold's ``trainer.json``. YAML ``32`` (an int) is read as ``"32"``.
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    #: Memory format of conv weights and input batches during training: channels_last (2D) / channels_last_3d
    #: (3D). ``auto`` (default): on for 2D inputs trained in mixed precision, off for 3D and fp32
    #: (:func:`cadx.training.trainer.resolve_channels_last`; measured in benchmarks/results/train_throughput.json:
    #: bf16 + channels_last 1.26-1.39x over bf16 alone in 2D, 0.97x in 3D). The value used is in ``trainer.json``.
    channels_last: bool | Literal["auto"] = "auto"
    #: What the C allocator does with freed memory while training on a CPU (Linux/glibc).
    #: ``retain`` keeps it in the process heap (``mallopt``: M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB), so each step
    #: reuses the large activation buffers. glibc's default maps every buffer over 32 MiB afresh, zero-fills it
    #: page by page and unmaps it again, which spent as much CPU in the kernel as in the maths for a 3D CNN at 64³.
    #: ``auto`` (default) = ``retain`` for CPU training; ``system`` leaves the allocator alone. Results are
    #: bit-identical; the process may hold on to up to 2 GiB of freed memory. Applied once per process and not
    #: undone (:func:`cadx.training.trainer.retain_freed_memory`); measured in benchmarks/results/malloc/; the
    #: value used is in ``trainer.json``.
    malloc: Literal["auto", "retain", "system"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    #: GPUs one training uses (Lightning ``devices``); > 1 = data-parallel DDP (``ddp_spawn``, each rank a share of
    #: every epoch's batches), which needs that many CUDA GPUs (checked when training starts). Default 1.
    devices: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _devices_need_gpus(self) -> TrainConfig:
        if self.devices > 1 and self.accelerator in ("cpu", "mps"):
            raise ValueError(f"devices: {self.devices} (DDP over GPUs) needs accelerator auto, gpu or cuda, not "
                             f"{self.accelerator}")
        return self

    @field_validator("precision", mode="before")
    @classmethod
    def _int_precision(cls, v: Any) -> Any:
        return "32" if isinstance(v, int) and not isinstance(v, bool) and v == 32 else v
    early_stopping: EarlyStoppingConfig = Field(default_factory=lambda: EarlyStoppingConfig.model_validate({}))
    gradient_clip: float | None = None
    progress: bool = True
    two_phase: TwoPhaseConfig | None = None
    #: Training seed (weight init, batch order, augmentation, SVM); None = the run's top-level ``seed``, which
    #: alone then drives splits, subsets, training and bootstrap (``cadx cv --seeds`` sets only this one).
    seed: int | None = None


class CVConfig(_Section):
    """``kind: kfold`` = patient-level stratified ``folds``-fold CV; ``kind: holdout`` = one fixed stratified
    patient-level train/val/test split (:func:`cadx.data.splits.holdout_split`, ``test_fraction`` of the patients
    to test; ``folds`` ignored). ``val_fraction`` of each fold's training patients go to validation. ``final``
    (``cadx cv --final``; network runs only): also train the final model on every study into ``final/``, as
    one more task beside the folds (the model ``cadx train`` writes)."""

    folds: int = Field(5, ge=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    use_official: bool = False
    kind: Literal["kfold", "holdout"] = "kfold"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    final: bool = False


class EvalConfig(_Section):
    """Study-level aggregation of slice outputs, the decision rule, bootstrap CIs and the classifier.

    ``classifier: svm`` fits a linear SVM (probabilities by Platt scaling) per fold on the training items'
    ``svm_features`` (``features`` = ``forward_features``, or ``embedding`` = the last stage embedding).
    ``tta: flips`` averages outputs over the identity and each spatial axis flipped (test items and, for the SVM,
    the training items' features too; segmentation runs: the slice probabilities, each view flipped back).

    Positive class and operating point (binary tasks): ``positive`` (class name or index; None = index 1) is the
    clinically positive class that sensitivity/specificity/PPV/NPV and the thresholds refer to. ``decision:
    auto`` (default) = ``youden`` for binary tasks (``sensitivity`` when ``target_sensitivity`` is set) and
    ``argmax`` for multi-class; ``sensitivity`` = the highest threshold whose sensitivity on the fitting studies
    reaches ``target_sensitivity``. Thresholds are fitted on the fold's validation studies (its training studies
    when it has none; ``decision_fit.fit_split`` says which). ``calibration``: a post-hoc map of the study
    probabilities fitted on the fold's validation studies only (none fitted when a fold has none);
    ``calibration_bins`` / ``calibration_strategy``: the ECE and reliability-diagram bins
    (:mod:`cadx.evaluation.calibration`).
    """

    aggregation: Literal["mean", "vote", "max"] = "mean"
    decision: Literal["auto", "argmax", "prior", "youden", "sensitivity"] = "auto"
    positive: str | int | None = None
    target_sensitivity: float | None = Field(None, gt=0, le=1)
    calibration: Literal["none", "temperature", "platt", "isotonic"] = "none"
    calibration_bins: int = Field(10, ge=1)
    calibration_strategy: Literal["uniform", "quantile"] = "uniform"
    bootstrap: int = Field(2000, ge=0)
    classifier: Literal["head", "svm"] = "head"
    svm_c: float = Field(1.0, gt=0)
    svm_features: Literal["features", "embedding"] = "features"
    tta: Literal["none", "flips"] = "none"

    @model_validator(mode="after")
    def _check_operating_point(self) -> EvalConfig:
        if self.decision == "sensitivity" and self.target_sensitivity is None:
            raise ValueError("eval.decision: sensitivity needs eval.target_sensitivity (e.g. 0.9)")
        if self.target_sensitivity is not None and self.decision not in ("auto", "sensitivity"):
            raise ValueError(f"eval.target_sensitivity is set but eval.decision is {self.decision!r} (use auto or "
                             "sensitivity)")
        return self


class SegmentationConfig(_Section):
    """Volume-level segmentation pipeline (:mod:`cadx.runs.segmentation`); the section's presence selects it.

    Every 2D slice of a volume (or the whole 2D image) becomes a resized item with its mask; slice predictions are
    put back into the volume at the original resolution, optionally reduced to the ``largest_component``
    (``connectivity`` 1 = 6-neighbourhood in 3D, A.3) and scored by Dice per volume. Training: slices whose
    ``tissue_channel`` holds less than ``min_tissue_fraction`` tissue (intensity mask, below) are dropped, lesion
    slices are repeated ``oversample_lesion`` times (A.3: 3). ``tissue_class``: add a middle class "tissue" (mask
    value 1, lesion 2; SCNet's ternary background / organ / tumour) from the intensity mask = normalised
    ``tissue_channel`` > ``tissue_threshold``. ``lesion_class``: the output channel that is the lesion (None = the
    last). Classification: majority vote over the slices with at least ``vote_min_pixels`` predicted lesion pixels
    (none: all slices). ``overlays``: cases drawn in the overlay figure."""

    largest_component: bool = True
    connectivity: int = Field(1, ge=1, le=3)
    tissue_class: bool = False
    tissue_channel: int = Field(0, ge=0)
    tissue_threshold: float = Field(0.1, ge=0, le=1)
    min_tissue_fraction: float = Field(0.0, ge=0, lt=1)
    oversample_lesion: int = Field(1, ge=1)
    lesion_class: int | None = Field(None, ge=1)
    vote_min_pixels: int = Field(1, ge=1)
    overlays: int = Field(4, ge=0)
    test_noise: list[float] = Field(default_factory=list)
    """Noise robustness (A.3): each fold's test studies are also predicted with additive Gaussian noise of SD
    ``sigma`` × the SD of the fold's training items (the normalised network input), one ``dice_noise_<sigma>``
    column per value; 0.1 and 0.2 are A.3's 10 % and 20 %."""


class DetectionConfig(_Section):
    """Lesion detection (thesis A.8, :mod:`cadx.runs.detection`); the section's presence selects the run kind.

    Working images: every slice (or the 2D image) is resized so that its longer side is ``size`` px (LGG 256 →
    128 = the paper's 2× downsampling) and zero-padded to a multiple of the model's cell; ``channels`` picks
    image channels (None = all). Training: positive slices = the paper's sqrt(box size) span around each lesion's
    central slice (validation: × ``val_span_factor``), negatives = lesion-free images or slices outside every
    lesion's slice extent, ``negative_ratio`` negatives per positive in a batch; grid-aligned random ``crop`` ×
    ``crop`` px crops that contain the box; ``flip``: random left-right flips. Inference: slice outputs averaged
    over ``splits`` equal parts of the volume (the paper: halves), cells scoring ≥ ``min_score`` become boxes,
    boxes with less than ``min_foreground`` of their pixels in the foreground mask (nonzero after normalisation,
    holes filled, eroded by ``foreground_erosion`` working px, largest component) are dropped, then merge-NMS
    (pairs with score ratio < ``nms_ratio`` and IoU > ``nms_iou`` become their union with the max score).
    FROC: ``distance_px`` (pixels of the original image) and ``z_fraction`` of
    :func:`cadx.evaluation.froc.match_predictions`; lesions of fewer than ``min_voxels`` voxels are not
    targets; sensitivities at ``fp_rates`` FPs per image/volume."""

    size: int = Field(128, ge=16)
    channels: list[int] | None = None
    crop: int = Field(64, ge=16)
    negative_ratio: float = Field(1.0, ge=0)
    val_span_factor: float = Field(0.5, gt=0)
    flip: bool = True
    splits: int = Field(2, ge=1)
    min_score: float = Field(0.001, ge=0, lt=1)
    min_foreground: float = Field(0.5, ge=0, le=1)
    foreground_erosion: int = Field(2, ge=0)
    nms_iou: float = Field(0.5, ge=0, le=1)
    nms_ratio: float = Field(10.0, ge=1)
    distance_px: float = Field(0.0, ge=0)
    z_fraction: float = Field(0.25, gt=0)
    min_voxels: int = Field(1, ge=1)
    fp_rates: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])


class ExperimentConfig(_Section):
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = Field(default_factory=lambda: DataConfig.model_validate({}))
    task: TaskConfig = Field(default_factory=lambda: TaskConfig.model_validate({}))
    input: InputConfig = Field(default_factory=lambda: InputConfig.model_validate({}))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig.model_validate({}))
    objective: dict[str, Any] = Field(default_factory=lambda: {"ce": 1.0})
    pairs: Literal["none", "balanced", "random"] = "none"
    sampler: SamplerConfig = Field(default_factory=lambda: SamplerConfig.model_validate({}))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig.model_validate({}))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig.model_validate({}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate({}))
    cv: CVConfig = Field(default_factory=lambda: CVConfig.model_validate({}))
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig.model_validate({}))
    segmentation: SegmentationConfig | None = None
    detection: DetectionConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if not (self.task.classification or self.task.attributes or self.task.segmentation
                or self.detection is not None):
            raise ValueError("task: enable at least one of classification, attributes, segmentation")
        if not self.objective:
            raise ValueError("objective: at least one loss is needed")
        if self.eval.classifier == "svm" and not self.task.classification:
            raise ValueError("eval.classifier=svm needs task.classification")
        if self.segmentation is not None and not self.task.segmentation:
            raise ValueError("segmentation: the section needs task.segmentation: true")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML (atomically)."""
        return atomic_write_text(path, self.to_yaml())


# --- loading -----------------------------------------------------------------------------------------------

def packaged_config_path(name: str) -> Path:
    """Path of a YAML shipped in ``cadx/configs`` (``default``, ``demo_resnet``, ``demo_dmrn``)."""
    p = Path(str(resources.files("cadx") / "configs" / f"{name}.yaml"))
    if not p.is_file():
        raise CadxConfigError(f"no packaged config {name!r}")
    return p


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CadxConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise CadxConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CadxConfigError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins; mappings merge, everything else is replaced). Neither input changes.

    ``objective`` and ``*.kwargs``/``*.options`` mappings are replaced whole, so a file's ``objective:
    {focal: 1}`` does not inherit the default ``ce``.
    """
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("objective", "kwargs", "options"):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to ``data`` in place."""
    if "=" not in item:
        raise CadxConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise CadxConfigError(f"--set {item!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise CadxConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def _format_error(e: ValidationError, source: str) -> CadxConfigError:
    msgs = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<config>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msgs.append(f"{loc}: {msg}")
    return CadxConfigError(f"{source}: " + "; ".join(msgs))


def check_options(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Check ``model.kwargs`` / ``data.options`` against the options the model / dataset declares.

    Raises one-line :class:`CadxConfigError` ``"<source>: model.kwargs: model 'x': option 'y': ..."`` for an
    unknown option or a value of the wrong type, ``"<source>: model.name: unknown model 'x' ..."`` for an unknown
    name (``dataset:flag`` sets the dataset option ``flag``).
    The registries are found by kind (:func:`cadx.registry.lookup`), so nothing above this layer is imported here.
    """
    lookup("model").options(cfg.model.name, cfg.model.kwargs, source, "model.name", "model.kwargs")
    name, _, flag = cfg.data.dataset.partition(":")
    options = {"flag": flag, **cfg.data.options} if flag else cfg.data.options
    lookup("dataset").options(name, options, source, "data.dataset", "data.options")


def config_from_dict(data: dict[str, Any], source: str = "<config>", defaults: bool = True,
                     check: bool = True) -> ExperimentConfig:
    """Validate ``data`` (merged over the packaged defaults when ``defaults``), including the model's and the
    dataset's declared options (:func:`check_options`) unless ``check`` is False (see :func:`load_config`)."""
    merged = deep_merge(_read_yaml(packaged_config_path("default")), data) if defaults else data
    try:
        cfg = ExperimentConfig.model_validate(merged)
    except ValidationError as e:
        raise _format_error(e, source) from None
    if check:
        check_options(cfg, source)
    return cfg


def derive(cfg: ExperimentConfig, source: str | None = None, **updates: Any) -> ExperimentConfig:
    """A validated copy of ``cfg`` with top-level fields updated — the one way studies derive config variants.

    Each keyword names a field of :class:`ExperimentConfig`. A mapping merges into that section the way a config
    file merges over the defaults (:func:`deep_merge`: nested sections merge; ``objective``, ``kwargs`` and
    ``options`` are replaced whole), a pydantic section object replaces the section, anything else replaces the
    field: ``derive(cfg, name="x", model={"name": "resnet18", "kwargs": {"width": 16}}, train={"epochs": 3})``.
    ``cfg`` is not changed. Raises :class:`CadxConfigError` (naming ``source`` and the key) on an unknown field or
    a bad value.
    """
    unknown = sorted(set(updates) - set(ExperimentConfig.model_fields))
    if unknown:
        raise CadxConfigError(f"{source or cfg.name}: unknown config field(s) {unknown}")
    data = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in updates.items()}
    return config_from_dict(deep_merge(cfg.to_dict(), data), source=source or f"{cfg.name} (derived)",
                            defaults=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``{}`` for an empty file); CadxConfigError naming the file if it is
    missing, not YAML or not a mapping."""
    return _read_yaml(Path(path))


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                check_options: bool = True) -> ExperimentConfig:
    """Defaults → the YAML file at ``path`` (None = defaults only) → ``overrides`` (``["train.epochs=3", ...]``).

    Raises :class:`CadxConfigError` naming the file and key for unknown keys or bad values. ``check_options=False``
    skips checking ``model.kwargs`` / ``data.options`` against the registries (which imports every dataset adapter
    and the model's module): for a run folder's saved config read back by ``cadx predict``, which builds the
    network through the model registry (checking its options then) or not at all (ONNX).
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides or []:
        apply_override(data, item)
    return config_from_dict(data, source=str(path) if path is not None else "<defaults>", check=check_options)
