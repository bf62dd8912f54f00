"""Thesis A.2 class-imbalance study: imbalance grid × methods × seeds on one fixed split of a balanced cohort.

A study config (YAML) has three parts: ``name``, ``experiment`` (an ordinary cadx experiment config: data, input,
model, optim, train — merged over the packaged defaults) and ``study`` (:class:`StudySettings`: grid, seeds,
methods). The cohort is split once, group-aware (``holdout_split``: patients = MedNIST near-duplicate groups);
every study is preprocessed once into an :class:`~cadx.pipeline.items.ItemStore`. For each imbalance setting
(balanced ρ=1; step ρ×μ; linear ρ) and seed the **training** studies are subsampled with ``step_imbalance`` /
``linear_imbalance`` (the test set never changes); each method trains through the engine's
:func:`~cadx.training.trainer.fit` (models shared between methods that differ only in the decision rule) and is
evaluated on the fixed test set: macro one-vs-rest ROC AUC and accuracy. One row per (kind, ρ, μ, method, seed) is
appended to ``results.csv`` atomically after each run; rows already there are skipped (resumable).
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cadx.config import ExperimentConfig, SamplerConfig, config_from_dict, read_yaml
from cadx.data.splits import Splits, holdout_split
from cadx.errors import CadxConfigError
from cadx.evaluation import roc_auc
from cadx.evaluation.aggregation import aggregate_proba
from cadx.evaluation.thresholds import decide
from cadx.pipeline.items import build_store
from cadx.runs.folder import load_cohort
from cadx.runs.inference import infer
from cadx.studies.imbalance.tables import write_study_outputs
from cadx.studies.imbalance.variants import (
    DEFAULT_METHODS,
    MethodSpec,
    Setting,
    StudyConfig,
    StudySettings,
    digest,
    imbalanced_studies,
    load_study_config,
    make_grid,
    method_config,
    resample_items,
    row_key,
    subsample,
)
from cadx.training.trainer import finetune, fit, fit_two_phase
from cadx.training.two_phase import phase_configs
from cadx.utils import atomic_write_text, progress_console

__all__ = ["DEFAULT_METHODS", "MethodSpec", "Setting", "StudyConfig", "StudySettings", "imbalanced_studies",
           "load_study_config", "make_grid", "rewrite_outputs", "run_imbalance_study"]

RESULT_COLUMNS = ["key", "kind", "rho", "mu", "method", "seed", "auc", "accuracy", "accuracy_argmax",
                  "accuracy_prior", "train_auc", "train_accuracy", "n_train", "n_fit", "class_counts", "epochs",
                  "seconds", "reused", "auc_curve"]

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
    agg = aggregate_proba(infer(model, images, batch_size)["proba"], study, "mean")   # the one aggregation
    ps, ys = agg.proba, np.asarray(labels)[agg.first]
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
        return method_config(self.cfg.experiment, spec, epochs, sampler)

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
            if samp.kind == "balanced":  # class-balanced batches: a batch sampler, not a resampled set
                items, run_sampler = tr_items, samp
            else:
                items = tr_items[resample_items(y, samp.kind, samp.ratio, seed, setting)]
                run_sampler = SamplerConfig(kind="plain", ratio=1.0)
            n = int(items.size)
            if self.st.iterations is not None:  # fit the budget into max_epochs by repeating small sets
                bs = self.cfg.experiment.train.batch_size
                items = np.tile(items, max(1, math.ceil(self.st.iterations * bs / (n * self.st.max_epochs))))
        else:
            items, run_sampler = tr_items, samp
            n = int(items.size) if samp.kind in ("plain", "balanced") else int(resample_items(
                y, samp.kind, samp.ratio, seed, setting).size)
        epochs = self._epochs(int(items.size) if fixed else n)
        base_spec = MethodSpec(objective=spec.objective)
        key1 = digest(items, self.cfg.experiment.to_dict(), base_spec.train_spec(), run_sampler.model_dump(),
                       epochs, seed, setting.label())
        key = key1 if tp is None else digest(key1, spec.train_spec(), tr_items)
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
                c1, c2 = phase_configs(cfg)
                if phase1 is None:
                    c1 = c1.model_copy(update={"sampler": SamplerConfig(kind="plain", ratio=1.0)})
                    phase1, curve1 = self._fit(c1, items, key1, tseed)
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
    end, the figures, ``summary.md`` and ``conclusions.json`` (:mod:`cadx.studies.imbalance.report`).
    ``cohort``: an in-memory cohort instead of ``experiment.data``. Without ``resume`` an existing results.csv
    is refused; with it, its rows are kept and skipped (the saved config must match)."""
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
    rows: list[dict[str, Any]] = [{str(k_): v for k_, v in r.items()} for r in done.to_dict("records")]
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


def rewrite_outputs(out_dir: str | Path) -> dict[str, Any]:
    """Recompute the figures, ``summary.md`` and ``conclusions.json`` of a study folder from its
    ``results.csv`` and ``study_config.yaml`` (no training). Returns the conclusions."""
    out = Path(out_dir)
    saved = read_yaml(out / "study_config.yaml")
    st = StudySettings.model_validate(saved["study"])
    return write_study_outputs(pd.read_csv(out / "results.csv"), out, st)


def _check_saved(cfg: StudyConfig, out: Path, resuming: bool, refuse: bool) -> None:
    """Refuse to overwrite results without ``resume``; on resume the protocol (experiment + study settings other
    than the grid lists, seeds and method selection) and the definition of every kept method must be unchanged."""
    if refuse:
        raise CadxConfigError(f"{out}/results.csv exists; pass resume=True (continue) or use another folder")
    saved = out / "study_config.yaml"
    if not (resuming and saved.is_file()):
        return
    raw = read_yaml(saved)
    # re-validate the saved parts so settings added to the schemas since then compare at their defaults
    old: dict[str, Any] = {
        "name": raw.get("name"), "experiment": config_from_dict(raw["experiment"], defaults=True).to_dict(),
        "study": StudySettings.model_validate(raw["study"]).model_dump(mode="json")}
    new = cfg.model_dump(mode="json")
    old_methods = old["study"].get("methods") or {}
    changed = [m for m, spec in cfg.study.methods.items()
               if m in old_methods and MethodSpec.model_validate(old_methods[m]) != spec]
    for part in (old, new):
        part["experiment"]["train"].pop("progress", None)
        part["experiment"]["input"].pop("cache", None)  # where the items come from, not the protocol
        for k_ in ("seeds", "rhos", "mus", "kinds", "select", "tie_tolerance", "keep_runs", "methods"):
            part["study"].pop(k_, None)
    if old != new or changed:
        o, n = old["study"], new["study"]
        diff = sorted(k_ for k_ in set(o) | set(n) if o.get(k_) != n.get(k_))
        raise CadxConfigError(f"{saved}: the study was started with a different protocol (study {diff}, experiment "
                              f"changed: {old['experiment'] != new['experiment']}) or method definitions {changed}; "
                              "resume with the same config (the grid, seeds and methods may grow)")


def _progress(enabled: bool) -> Any:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, console=progress_console())
