"""Thesis A.2 class-imbalance study: imbalance grid × methods × seeds on one fixed split of a balanced cohort.

A study config (YAML) has three parts: ``name``, ``experiment`` (an ordinary cadx experiment config: data, input,
model, optim, train — merged over the packaged defaults) and ``study`` (:class:`StudySettings`: grid, seeds,
methods). The cohort is split once, group-aware (``holdout_split``: patients = MedNIST near-duplicate groups);
every study is preprocessed once into an :class:`~cadx.engine.store.ItemStore`. For each imbalance setting
(balanced ρ=1; step ρ×μ; linear ρ) and seed the **training** studies are subsampled with ``step_imbalance`` /
``linear_imbalance`` (the test set never changes); each method trains through the engine's
:func:`~cadx.engine.trainer.fit` (models shared between methods that differ only in the decision rule) and is
evaluated on the fixed test set: macro one-vs-rest ROC AUC and accuracy. One row per (kind, ρ, μ, method, seed) is
appended to ``results.csv`` atomically after each run; rows already there are skipped (resumable).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.config import ExperimentConfig, SamplerConfig, TwoPhaseConfig, apply_override, config_from_dict
from cadx.errors import CadxConfigError
from cadx.utils import atomic_write_text

RESULT_COLUMNS = ["key", "kind", "rho", "mu", "method", "seed", "auc", "accuracy", "accuracy_argmax",
                  "accuracy_prior", "train_auc", "train_accuracy", "n_train", "n_fit", "class_counts", "epochs",
                  "seconds", "reused", "auc_curve"]

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

    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
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
    kinds: list[Literal["step", "linear"]] = Field(default_factory=lambda: ["step", "linear"])
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
    study: StudySettings = Field(default_factory=StudySettings)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def load_study_config(path: str | Path | None, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study YAML (None = all defaults) and apply ``--set`` overrides: keys starting with ``study.`` or
    ``experiment.`` (or ``name``) address those parts; any other key (``train.epochs=2``, ``data.root=DIR``) goes
    to the experiment. Raises CadxConfigError for unknown keys or bad values."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise CadxConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise CadxConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise CadxConfigError(f"{path}: expected a mapping at the top level")
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
    from cadx.data.samplers import linear_imbalance, step_imbalance

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
    from cadx.data.samplers import oversample_indices, undersample_indices

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


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()[:16]


# --- training + evaluation ---------------------------------------------------------------------------------

class TestCurve(Callback):
    """Test-set ROC AUC after every training epoch (monitoring only; restores each module's train/eval flag)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, study: np.ndarray) -> None:
        self.images, self.labels, self.study = images, labels, study
        self.auc: list[float] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        model = pl_module.model
        flags = [m.training for m in model.modules()]
        self.auc.append(evaluate_model(model, self.images, self.labels, self.study)[0])
        for m, f in zip(model.modules(), flags, strict=True):
            m.training = f


def evaluate_model(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, study: np.ndarray,
                   batch_size: int = 512) -> tuple[float, np.ndarray, np.ndarray]:
    """(macro one-vs-rest AUC, study-level probabilities (S, K), study labels (S,)) of ``model`` on items."""
    import warnings

    from cadx.engine.inference import infer
    from cadx.engine.module import study_level
    from cadx.evaluation import roc_auc

    proba = infer(model, images, batch_size)["proba"]
    ps, ys = study_level(proba, labels, study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc = roc_auc(ys, ps) if np.unique(ys).size > 1 else float("nan")
    return float(auc), ps, ys


@dataclass
class Trained:
    model: torch.nn.Module
    test: tuple[float, np.ndarray, np.ndarray]
    train: tuple[float, np.ndarray, np.ndarray]
    curve: list[float]
    epochs: int
    n_fit: int
    seconds: float


class StudyRunner:
    """Trains and evaluates the methods of one study; trained models are cached per (setting, seed)."""

    def __init__(self, cfg: StudyConfig, store: Any, train_studies: np.ndarray, test_items: np.ndarray,
                 runs_dir: Path) -> None:
        self.cfg, self.st, self.store = cfg, cfg.study, store
        self.train_studies = train_studies
        self.test_items = test_items
        self.runs_dir = runs_dir
        self.cache: dict[str, Trained] = {}

    def _epochs(self, n: int) -> int:
        st, bs = self.st, self.cfg.experiment.train.batch_size
        if st.iterations is None:
            return self.cfg.experiment.train.epochs
        return int(min(st.max_epochs, max(1, math.ceil(st.iterations / max(1, math.ceil(n / bs))))))

    def _exp(self, spec: MethodSpec, epochs: int, sampler: SamplerConfig) -> ExperimentConfig:
        d = self.cfg.experiment.to_dict()
        d["train"].update(epochs=epochs, progress=False, two_phase=None)
        d["sampler"] = sampler.model_dump()
        if spec.objective is not None:
            d["objective"] = spec.objective
        if spec.two_phase is not None:
            d["train"]["two_phase"] = spec.two_phase.model_dump()
        return ExperimentConfig.model_validate(d)

    def _evaluate(self, model: torch.nn.Module, items: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        st = self.store
        return evaluate_model(model, st.images[items], st.item_labels(items), st.study[items])

    def _curve(self) -> TestCurve:
        st, te = self.store, subsample(self.test_items, self.st.curve_items, 0)
        return TestCurve(st.images[te], st.item_labels(te), st.study[te])

    def _fit(self, cfg: ExperimentConfig, items: np.ndarray, key: str, seed: int,
             phase1: torch.nn.Module | None = None) -> tuple[torch.nn.Module, list[float]]:
        """Train through the engine (``fit``, or ``fit_two_phase`` when ``cfg.train.two_phase``) in a scratch
        run folder (removed afterwards unless ``keep_runs``); returns the model and its per-epoch test AUC."""
        from cadx.engine.trainer import fit
        from cadx.engine.two_phase import fit_two_phase

        run_dir = self.runs_dir / key
        shutil.rmtree(run_dir, ignore_errors=True)
        curve = self._curve()
        cbs: list[Callback] = [curve] if self.st.epoch_curve else []
        empty = np.zeros(0, np.int64)
        if cfg.train.two_phase is not None:
            module = fit_two_phase(cfg, self.store, items, empty, run_dir, seed, callbacks=cbs, phase1=phase1)
        else:
            module = fit(cfg, self.store, items, empty, run_dir, seed, callbacks=cbs)
        if not self.st.keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)
        return module.model, curve.auc

    def trained(self, setting: Setting, seed: int, spec: MethodSpec, tr_items: np.ndarray) -> tuple[Trained, bool]:
        """The model of ``spec`` on the imbalanced items ``tr_items`` (cached; second value = reused).

        ``fixed`` resampling trains on the resampled item list with a plain sampler; ``epoch`` passes the
        sampler to the engine. Two-phase methods reuse a cached phase-1 model (the same over/undersampled
        training) when there is one."""
        y = self.store.item_labels(tr_items)
        fixed = self.st.resample == "fixed"
        tp = spec.two_phase
        samp = spec.sampler if tp is None else SamplerConfig(kind=tp.sampler, ratio=tp.ratio)
        if fixed:
            items = tr_items[resample_items(y, samp.kind, samp.ratio, seed, setting)]
            n, run_sampler = int(items.size), SamplerConfig()
            if self.st.iterations is not None:  # fit the budget into max_epochs by repeating small sets
                bs = self.cfg.experiment.train.batch_size
                items = np.tile(items, max(1, math.ceil(self.st.iterations * bs / (n * self.st.max_epochs))))
        else:
            items, run_sampler = tr_items, samp
            n = int(items.size) if samp.kind in ("plain", "balanced") else int(resample_items(
                y, samp.kind, samp.ratio, seed, setting).size)
        epochs = self._epochs(int(items.size) if fixed else n)
        base_spec = MethodSpec(objective=spec.objective)
        key1 = _digest(items, self.cfg.experiment.to_dict(), base_spec.train_spec(), run_sampler.model_dump(),
                       epochs, seed, setting.label())
        key = key1 if tp is None else _digest(key1, spec.train_spec(), tr_items)
        if key in self.cache:
            return self.cache[key], True
        tseed = int(np.random.SeedSequence([seed, 4242]).generate_state(1)[0] % (2**31 - 1))
        t0 = time.perf_counter()
        if tp is None:
            model, curve = self._fit(self._exp(base_spec, epochs, run_sampler), items, key1, tseed)
        else:
            cfg = self._exp(spec, epochs, run_sampler)
            phase1 = self.cache[key1].model if key1 in self.cache else None
            curve1 = self.cache[key1].curve if key1 in self.cache else []
            if fixed:  # phase 1 on the fixed balanced list, phase 2 on the original imbalanced items
                from cadx.engine.two_phase import finetune, phase_configs

                c1, c2 = phase_configs(cfg)
                if phase1 is None:
                    phase1, curve1 = self._fit(c1.model_copy(update={"sampler": SamplerConfig()}), items, key1,
                                               tseed)
                rc = self._curve()
                model = finetune(c2, self.store, phase1, tp.trainable, tr_items, np.zeros(0, np.int64),
                                 self.runs_dir / key, tseed, callbacks=[rc] if self.st.epoch_curve else []).model
                shutil.rmtree(self.runs_dir / key, ignore_errors=True)
                curve = [*curve1, *rc.auc]
            else:
                model, curve = self._fit(cfg, tr_items, key, tseed, phase1=phase1)
            epochs += tp.epochs
        tr_eval = subsample(tr_items, self.st.train_eval_items, seed)
        res = Trained(model, self._evaluate(model, self.test_items), self._evaluate(model, tr_eval), curve,
                      epochs, n, round(time.perf_counter() - t0, 2))
        self.cache[key] = res
        return res, False


def decide_accuracy(proba: np.ndarray, y: np.ndarray, rule: str, priors: np.ndarray) -> float:
    from cadx.evaluation.thresholds import decide

    pred = decide(proba, "prior", priors=priors) if rule == "prior" else decide(proba, "argmax")
    return float((pred == y).mean())


def method_row(setting: Setting, method: str, seed: int, spec: MethodSpec, res: Trained, reused: bool,
               priors: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    """One results.csv row (accuracy = under the method's decision rule; both rules are kept)."""
    auc, ps, ys = res.test
    tr_auc, tr_ps, tr_ys = res.train
    acc_arg = decide_accuracy(ps, ys, "argmax", priors)
    acc_pri = decide_accuracy(ps, ys, "prior", priors)
    return {"key": row_key(setting, method, seed), "kind": setting.kind, "rho": setting.rho,
            "mu": np.nan if setting.mu is None else setting.mu, "method": method, "seed": seed, "auc": auc,
            "accuracy": acc_pri if spec.decision == "prior" else acc_arg, "accuracy_argmax": acc_arg,
            "accuracy_prior": acc_pri, "train_auc": tr_auc,
            "train_accuracy": decide_accuracy(tr_ps, tr_ys, "argmax", priors), "n_train": int(counts.sum()),
            "n_fit": res.n_fit, "class_counts": ";".join(str(int(c)) for c in counts), "epochs": res.epochs,
            "seconds": 0.0 if reused else res.seconds, "reused": reused,
            "auc_curve": ";".join(f"{a:.5f}" for a in res.curve)}


def run_imbalance_study(cfg: StudyConfig | str | Path, out_dir: str | Path, resume: bool = True,
                        overrides: list[str] | None = None, cohort: Any = None,
                        progress: bool = True) -> pd.DataFrame:
    """Run (or continue) the study into ``out_dir`` and return the results table (one row per kind, ρ, μ,
    method, seed). Writes ``study_config.yaml``, ``splits.json``, ``results.csv`` (after every run) and, at the
    end, the figures, ``summary.md`` and ``conclusions.json`` (:mod:`cadx.studies.imbalance_report`).
    ``cohort``: an in-memory cohort instead of ``experiment.data``. Without ``resume`` an existing results.csv
    is refused; with it, its rows are kept and skipped (the saved config must match)."""
    from cadx.data.splits import Splits, holdout_split
    from cadx.engine.cv import load_cohort
    from cadx.engine.store import build_store
    from cadx.studies.imbalance_report import write_study_outputs

    if not isinstance(cfg, StudyConfig):
        cfg = load_study_config(cfg, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.csv"
    _check_saved(cfg, out, resume and res_path.is_file(), res_path.is_file() and not resume)
    atomic_write_text(out / "study_config.yaml", cfg.to_yaml())
    st = cfg.study
    methods = st.active_methods()
    cohort = cohort if cohort is not None else load_cohort(cfg.experiment, out)
    sp_path = out / "splits.json"
    splits = Splits.load(sp_path) if sp_path.is_file() else holdout_split(cohort, st.test_fraction, st.split_seed)
    splits.check(cohort)
    splits.save(sp_path)
    fold = splits.folds[0]
    store = build_store(cohort, cfg.experiment, progress=progress)
    train_studies = fold.indices(cohort, "train")
    test_items = store.items_of_studies(fold.indices(cohort, "test"))
    done = pd.read_csv(res_path) if res_path.is_file() else pd.DataFrame(columns=RESULT_COLUMNS)
    done_keys = set(done["key"].astype(str))
    rows = done.to_dict("records")
    runner = StudyRunner(cfg, store, train_studies, test_items, out / "runs")
    grid = [(s, seed) for s in make_grid(st) for seed in st.seeds]
    k = len(store.classes)
    with _progress(progress) as bar:
        task = bar.add_task("imbalance study", total=len(grid) * len(methods))
        for setting, seed in grid:
            todo = [m for m in methods if row_key(setting, m, seed) not in done_keys]
            bar.advance(task, len(methods) - len(todo))
            if not todo:
                continue
            y_pool = store.labels[train_studies]
            kept = train_studies[imbalanced_studies(setting, y_pool, seed, st)]
            counts = np.bincount(store.labels[kept], minlength=k)
            priors = counts / counts.sum()
            tr_items = store.items_of_studies(kept)
            for m in todo:
                bar.update(task, description=f"{setting.label()} seed {seed} {m}")
                res, reused = runner.trained(setting, seed, methods[m], tr_items)
                rows.append(method_row(setting, m, seed, methods[m], res, reused, priors, counts))
                atomic_write_text(res_path, pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False))
                bar.advance(task)
            runner.cache.clear()
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if (out / "runs").is_dir() and not any((out / "runs").iterdir()):
        (out / "runs").rmdir()
    write_study_outputs(df, out, st)
    return df


def _check_saved(cfg: StudyConfig, out: Path, resuming: bool, refuse: bool) -> None:
    """Refuse to overwrite results without ``resume``; on resume the protocol (experiment + study settings other
    than the grid lists, seeds and method selection) and the definition of every kept method must be unchanged."""
    if refuse:
        raise CadxConfigError(f"{out}/results.csv exists; pass resume=True (continue) or use another folder")
    saved = out / "study_config.yaml"
    if not (resuming and saved.is_file()):
        return
    old = yaml.safe_load(saved.read_text(encoding="utf-8"))
    new = cfg.model_dump(mode="json")
    old_methods = old["study"].get("methods") or {}
    changed = [m for m, spec in cfg.study.methods.items()
               if m in old_methods and MethodSpec.model_validate(old_methods[m]) != spec]
    for part in (old, new):
        part["experiment"]["train"].pop("progress", None)
        for k_ in ("seeds", "rhos", "mus", "kinds", "select", "tie_tolerance", "keep_runs", "methods"):
            part["study"].pop(k_, None)
    if old != new or changed:
        o, n = old["study"], new["study"]
        diff = sorted(k_ for k_ in set(o) | set(n) if o.get(k_) != n.get(k_))
        raise CadxConfigError(f"{saved}: the study was started with a different protocol (study {diff}, experiment "
                              f"changed: {old['experiment'] != new['experiment']}) or method definitions {changed}; "
                              "resume with the same config (the grid, seeds and methods may grow)")


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled)
