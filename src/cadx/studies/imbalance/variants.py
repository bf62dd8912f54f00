"""How the thesis A.2 imbalance study derives its runs: the study config, the methods, the imbalance grid.

:class:`StudyConfig` = ``name`` + ``experiment`` (an ordinary :class:`~cadx.config.ExperimentConfig`) + ``study``
(:class:`StudySettings`: grid, seeds, methods); :func:`load_study_config` reads it with the experiment loader's
YAML reader and ``--set`` rules. Each method's training config is derived from the experiment with
:func:`method_config` (:func:`cadx.config.derive`). :func:`make_grid` lists the imbalance settings;
:func:`imbalanced_studies` / :func:`resample_items` draw the training sets with rngs seeded by (seed, setting),
never touching the test set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.config import (
    ExperimentConfig,
    SamplerConfig,
    TwoPhaseConfig,
    apply_override,
    config_from_dict,
    derive,
    read_yaml,
)
from cadx.errors import CadxConfigError
from cadx.pipeline.samplers import linear_imbalance, oversample_indices, step_imbalance, undersample_indices

DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "oversampling": {"sampler": {"kind": "oversample", "ratio": 1.0}},
    "undersampling": {"sampler": {"kind": "undersample", "ratio": 1.0}},
    "two-phase-over": {"two_phase": {"sampler": "oversample", "epochs": 2}},
    "two-phase-under": {"two_phase": {"sampler": "undersample", "epochs": 2}},
    "thresholding": {"decision": "prior"},
    "oversampling+thresholding": {"sampler": {"kind": "oversample", "ratio": 1.0}, "decision": "prior"},
    "focal": {"objective": {"focal": {"weight": 1.0, "gamma": 2.0, "alpha": "balanced"}}},
    "oversampling@0.5": {"sampler": {"kind": "oversample", "ratio": 0.5}},
    "undersampling@0.5": {"sampler": {"kind": "undersample", "ratio": 0.5}},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    """One imbalance method: a training change (``sampler``, ``objective`` — None = the experiment's —,
    ``two_phase``) and the decision rule (``prior`` = softmax ÷ training class priors before resampling)."""

    sampler: SamplerConfig = Field(default_factory=lambda: SamplerConfig(kind="plain", ratio=1.0))
    objective: dict[str, Any] | None = None
    two_phase: TwoPhaseConfig | None = None
    decision: Literal["argmax", "prior"] = "argmax"

    def train_spec(self) -> dict[str, Any]:
        return {"sampler": self.sampler.model_dump(), "objective": self.objective,
                "two_phase": None if self.two_phase is None else self.two_phase.model_dump()}


class StudySettings(_Strict):
    """Grid and protocol. ``base``: per-class count of the balanced base (None = smallest training class).
    ``iterations``: a fixed number of updates per run (A.2), epochs = ceil(iterations / batches per epoch) within
    [1, ``max_epochs``]; None = ``experiment.train.epochs``. ``resample``: ``fixed`` = one resampled index set per
    run (A.2's "replicate"/"remove" examples), ``epoch`` = redrawn every epoch by the engine sampler.
    With ``fixed`` resampling and ``iterations``, a set too small to fit the budget in ``max_epochs`` is repeated
    within an epoch (same updates, fewer epoch overheads). ``epoch_curve``: record the AUC on a fixed random
    subset of ``curve_items`` test items after every epoch (monitoring for conclusion iv; never used to pick a
    model — the last epoch is evaluated). ``train_eval_items``: training-set metrics on at most this many items.
    ``select``: run only these methods. ``tie_tolerance``: AUC difference counted as a tie in the summary."""

    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    base: int | None = Field(None, ge=1)
    rhos: list[float] = Field(default_factory=lambda: [1.0, 2.0, 10.0, 50.0, 100.0])
    mus: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.8])
    kinds: list[Literal["step", "linear"]] = ["step", "linear"]
    minority: Literal["random", "lowest"] = "random"
    iterations: int | None = Field(None, ge=1)
    max_epochs: int = Field(100, ge=1)
    resample: Literal["fixed", "epoch"] = "fixed"
    epoch_curve: bool = True
    curve_items: int = Field(600, ge=1)
    train_eval_items: int = Field(1200, ge=1)
    keep_runs: bool = False
    tie_tolerance: float = Field(0.005, ge=0)
    methods: dict[str, MethodSpec] = Field(
        default_factory=lambda: {k: MethodSpec.model_validate(v) for k, v in DEFAULT_METHODS.items()})
    select: list[str] | None = None

    def active_methods(self) -> dict[str, MethodSpec]:
        if self.select is None:
            return dict(self.methods)
        unknown = [m for m in self.select if m not in self.methods]
        if unknown:
            raise CadxConfigError(f"study.select: unknown methods {unknown} (known: {list(self.methods)})")
        return {m: self.methods[m] for m in self.select}


class StudyConfig(_Strict):
    name: str = "imbalance"
    experiment: ExperimentConfig
    study: StudySettings = Field(default_factory=lambda: StudySettings.model_validate({}))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def load_study_config(path: str | Path | None, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study YAML (None = all defaults) and apply ``--set`` overrides: keys starting with ``study.`` or
    ``experiment.`` (or ``name``) address those parts; any other key (``train.epochs=2``, ``data.root=DIR``) goes
    to the experiment. Raises CadxConfigError for unknown keys or bad values."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data.setdefault("experiment", {})
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if key.startswith(("study.", "experiment.")) or key == "name":
            apply_override(data, item)
        else:
            apply_override(data["experiment"], item)
    src = str(path) if path is not None else "<defaults>"
    exp = config_from_dict(data.get("experiment") or {}, source=f"{src} (experiment)")
    try:
        study = StudySettings.model_validate(data.get("study") or {})
        return StudyConfig(name=str(data.get("name", "imbalance")), experiment=exp, study=study)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                        f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                        for err in e.errors()[:5])
        raise CadxConfigError(f"{src}: study: {msg}") from None


def method_config(experiment: ExperimentConfig, spec: MethodSpec, epochs: int,
                  sampler: SamplerConfig) -> ExperimentConfig:
    """The training config of one method: ``experiment`` with ``epochs`` (no progress bar), ``sampler``, the
    method's objective (when it has one) and its two-phase schedule (None = single phase)."""
    two_phase = None if spec.two_phase is None else spec.two_phase.model_dump(mode="json")
    updates: dict[str, Any] = {"train": {"epochs": epochs, "progress": False, "two_phase": two_phase},
                               "sampler": sampler}
    if spec.objective is not None:
        updates["objective"] = spec.objective
    return derive(experiment, source="imbalance study method", **updates)


# --- grid -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One imbalanced training set: ``kind`` balanced | step | linear, ratio ``rho``, ``mu`` (step only)."""

    kind: str
    rho: float
    mu: float | None = None

    def label(self) -> str:
        mu = "-" if self.mu is None else f"{self.mu:g}"
        return f"{self.kind}|{self.rho:g}|{mu}"

    def code(self) -> list[int]:
        """Integers seeding this setting's draws: independent of ρ, so with one seed the subsets are nested
        across ρ and the minority classes are the same."""
        kind = {"balanced": 0, "step": 1, "linear": 2}[self.kind]
        return [kind, -1 if self.mu is None else round(self.mu * 1000)]


def make_grid(st: StudySettings) -> list[Setting]:
    """Balanced (ρ=1, once — it is the ρ=1 point of every curve), then step ρ×μ and linear ρ for ρ > 1."""
    out = [Setting("balanced", 1.0)] if any(r == 1 for r in st.rhos) else []
    for kind in st.kinds:
        for rho in (r for r in st.rhos if r > 1):
            if kind == "step":
                out += [Setting("step", float(rho), float(mu)) for mu in st.mus]
            else:
                out.append(Setting("linear", float(rho)))
    return out


def row_key(setting: Setting, method: str, seed: int) -> str:
    return f"{setting.label()}|{method}|{seed}"


def imbalanced_studies(setting: Setting, y: np.ndarray, seed: int, st: StudySettings) -> np.ndarray:
    """Positions (into ``y``, the training studies' labels) kept for ``setting`` with ``seed``."""
    rng = np.random.default_rng([seed, *[c + 1000 for c in setting.code()]])
    if setting.kind == "step":
        assert setting.mu is not None
        return step_imbalance(y, setting.rho, setting.mu, rng, minority=st.minority, base=st.base)
    if setting.kind == "linear":
        return linear_imbalance(y, setting.rho, rng, minority=st.minority, base=st.base)
    return step_imbalance(y, 1.0, 0.5, rng, minority=st.minority, base=st.base)  # ρ=1: every class at base


def resample_items(y: np.ndarray, kind: str, ratio: float, seed: int, setting: Setting) -> np.ndarray:
    """Fixed resampling (positions into ``y``): plain = all, else over/undersample with a draw seeded by
    (seed, setting, kind, ratio) only — so methods sharing a sampler share the set."""
    if kind == "plain":
        return np.arange(y.size, dtype=np.int64)
    if kind not in ("oversample", "undersample"):
        raise CadxConfigError(f"study: sampler kind {kind!r} needs study.resample=epoch")
    rng = np.random.default_rng([seed, *[c + 1000 for c in setting.code()], 1 if kind == "oversample" else 2,
                                 round(ratio * 1000)])
    fn = oversample_indices if kind == "oversample" else undersample_indices
    return fn(y, rng, ratio)


def subsample(items: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``items`` (a seeded random subset, ascending; all when there are fewer)."""
    if items.size <= n:
        return items
    return np.sort(np.random.default_rng([seed, 99]).choice(items, size=n, replace=False))


def digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()[:16]
