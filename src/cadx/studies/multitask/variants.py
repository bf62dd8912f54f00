"""How the multi-task study (thesis A.6) derives its configs, and its study settings.

Study YAML: ``name``, ``experiment`` (an experiment config: the ``multihead`` model with one categorical head per
task attribute, objective ``{focal, feature_focal}``, ``sampler: oversample``) and ``study`` (:class:`StudySettings`).

Variants (same patient folds, the second reuses the first's ``splits.json``):

* ``multitask`` — the experiment as given: malignancy head + one categorical head per attribute;
* ``single`` — the same trunk, malignancy head only: ``task.attributes: []``, ``model.kwargs.categories: []`` and
  the ``feature_focal`` term removed (same sampler, optimiser, epochs and seed).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cadx.config import ExperimentConfig, apply_override, config_from_dict, derive, read_yaml
from cadx.errors import CadxConfigError

__all__ = ["VARIANTS", "ReferenceSettings", "RiskSettings", "StudyConfig", "StudySettings", "load_study_config",
           "variant_config"]

#: variant → display name.
VARIANTS: dict[str, str] = {"multitask": "multi-task (malignancy + categorical feature heads)",
                            "single": "single-task (malignancy head only)"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceSettings(_Strict):
    """Leave-one-reader-out reference: median of the *other* readers' ratings ``≥ positive_min`` → malignant,
    ``≤ negative_max`` → benign, in between → excluded; at least ``min_others`` other readers needed."""

    positive_min: float = 4.0
    negative_max: float = 2.0
    min_others: int = Field(default=1, ge=1)


class RiskSettings(_Strict):
    """Probability → DL2–DL5 (``cut_points``, 3 increasing values in (0, 1)) → recommendation with size thresholds
    in cm (``fna_cm`` / ``follow_up_cm``: level → minimum size; ACR TI-RADS TR3–TR5 by default). The size is the
    study metadata ``size_field`` × ``size_scale`` (LIDC ``diameter_mm`` × 0.1 → cm)."""

    cut_points: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    fna_cm: dict[int, float] = Field(default_factory=lambda: {3: 2.5, 4: 1.5, 5: 1.0})
    follow_up_cm: dict[int, float] = Field(default_factory=lambda: {3: 1.5, 4: 1.0, 5: 0.5})
    size_field: str = "diameter_mm"
    size_scale: float = Field(default=0.1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RiskSettings:
        c = self.cut_points
        if len(c) != 3 or any(not 0 < v < 1 for v in c) or any(b <= a for a, b in pairwise(c)):
            raise ValueError(f"cut_points must be 3 increasing values in (0, 1), got {c}")
        return self


class StudySettings(_Strict):
    """``reference`` (leave-one-reader-out rule), ``reader_threshold`` (a reader calls malignant at rating ≥ it),
    ``risk`` (risk levels), ``bootstrap`` resamples and ``seed`` of the study's own statistics."""

    reference: ReferenceSettings = Field(default_factory=lambda: ReferenceSettings())
    reader_threshold: float = 4.0
    risk: RiskSettings = Field(default_factory=lambda: RiskSettings())
    bootstrap: int = Field(default=1000, ge=100)
    seed: int = 0


class StudyConfig(_Strict):
    """The whole study: ``name``, the ``experiment`` config of the multi-task variant and the ``study`` settings."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = "multitask"
    experiment: ExperimentConfig
    study: StudySettings = Field(default_factory=lambda: StudySettings())

    def to_yaml(self) -> str:
        return yaml.safe_dump({"name": self.name, "experiment": self.experiment.to_dict(),
                               "study": self.study.model_dump(mode="json")}, sort_keys=False, allow_unicode=True)


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read the study YAML and apply ``--set`` overrides (``study.*`` addresses the study settings, any other key
    the experiment: ``train.epochs=2``). Raises CadxConfigError naming the file and the key."""
    data: dict[str, Any] = read_yaml(path)
    if "experiment" not in data:
        raise CadxConfigError(f"{path}: missing section 'experiment' (the multi-task experiment config)")
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        apply_override(data if key.startswith("study.") or key == "name" else data["experiment"], item)
    exp = config_from_dict(data["experiment"], source=f"{path} (experiment)")
    unknown = sorted(set(data) - {"name", "experiment", "study"})
    if unknown:
        raise CadxConfigError(f"{path}: unknown top-level key(s) {unknown}")
    try:
        study = StudySettings.model_validate(data.get("study") or {})
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                        f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                        for err in e.errors()[:5])
        raise CadxConfigError(f"{path}: study: {msg}") from None
    cfg = StudyConfig(name=str(data.get("name", "multitask")), experiment=exp, study=study)
    variant_config(cfg.experiment, "single")  # fail early when the objective cannot be reduced
    return cfg


def variant_config(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    """``cfg`` for one of :data:`VARIANTS` (``multitask`` = an equal copy; ``single`` named ``<name>_single``).

    Raises CadxConfigError for an unknown variant, a model other than ``multihead``, or an objective without a
    ``feature_focal`` term."""
    if variant not in VARIANTS:
        raise CadxConfigError(f"unknown multitask variant {variant!r}; choose from {sorted(VARIANTS)}")
    if cfg.model.name != "multihead":
        raise CadxConfigError(f"multitask study: model.name must be 'multihead', got {cfg.model.name!r}")
    if variant == "multitask":
        return derive(cfg, source="<multitask>")
    objective = {k: v for k, v in cfg.objective.items()
                 if k != "feature_focal" and not (isinstance(v, dict) and v.get("loss") == "feature_focal")}
    if len(objective) == len(cfg.objective) or not objective:
        raise CadxConfigError("multitask study: the objective needs a 'feature_focal' term and a malignancy term")
    return derive(cfg, source="<single>", name=f"{cfg.name}_single", objective=objective,
                  task={"attributes": []}, model={"kwargs": {**cfg.model.kwargs, "categories": []}})
