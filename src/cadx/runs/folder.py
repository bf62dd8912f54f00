"""A run folder (see docs/contracts.md): its start (``config.yaml``, ``fingerprint.json``, ``splits.json``), the ONE
fold loop (:func:`run_folds`), the end of every fold (:func:`finish_fold`: study rows, decision, files, ``DONE``),
and reading a finished run back (:func:`done_folds`, :func:`run_models`, :func:`finished_run`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from cadx.config import ExperimentConfig, load_config
from cadx.data.check import require_clean
from cadx.data.datasets import load_dataset
from cadx.data.splits import Fold, Splits, holdout_split, make_splits, subsample_patients
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError
from cadx.evaluation.calibration import calibration_metrics
from cadx.evaluation.summary import evaluate_predictions
from cadx.pipeline.items import ItemStore
from cadx.report import write_report
from cadx.runs import finished as _finished
from cadx.runs.executors import Executor, SerialExecutor
from cadx.runs.inference import Decision, fit_decision, study_predictions
from cadx.runs.lock import run_lock
from cadx.utils import atomic_write_json, atomic_write_text, read_json

# reading a finished run back lives in cadx.runs.finished (light, for cadx predict); re-exported here for callers
done_folds = _finished.done_folds
run_models = _finished.run_models
fold_dir = _finished.fold_dir
model_dirs = _finished.model_dirs
run_config = _finished.run_config


def load_cohort(cfg: ExperimentConfig, out_dir: Path | None = None) -> Cohort:
    """The config's cohort. ``synthetic`` without ``data.root`` is generated under ``out_dir/data``;
    ``data.max_patients`` keeps a seeded stratified subset of the patients (:func:`subsample_patients`)."""
    root = cfg.data.root
    if root is None:
        if cfg.data.dataset.split(":")[0] != "synthetic" or out_dir is None:
            raise CadxConfigError("data.root: not set (use --set data.root=DIR or --data-root)")
        root = str(Path(out_dir) / "data")
    cohort = load_dataset(cfg.data.dataset, root, **cfg.data.options)
    if cfg.data.max_patients is not None:
        cohort = subsample_patients(cohort, cfg.data.max_patients, cfg.seed)
    return cohort


#: Passed data checks of this process (key: dataset, root, options, subset, study ids) → their record.
_CHECKED: dict[str, dict[str, Any]] = {}


def check_data(cfg: ExperimentConfig, cohort: Cohort, out_dir: Path | None = None) -> dict[str, Any]:
    """The full data check (:func:`cadx.data.check.check_cohort`) before any training or inference: the first
    error is raised as one-line CadxDataError; ``data.checked: true`` skips it. The outcome (skipped, or the
    warnings and seconds) goes to ``out_dir/data_check.json`` and is returned."""
    if cfg.data.checked:
        record: dict[str, Any] = {"skipped": True, "reason": "data.checked: true (cohort checked before)",
                                  "studies": len(cohort)}
    else:
        t0 = time.perf_counter()
        root = cfg.data.root or (str(Path(out_dir) / "data") if out_dir is not None else None)
        recipe = ((cfg.data.dataset, root, dict(cfg.data.options))
                  if root is not None and cfg.data.max_patients is None else None)
        allow = cfg.data.allow_unlabelled or not cfg.task.classification
        key = repr((cfg.data.dataset, root, sorted(cfg.data.options.items()), cfg.data.max_patients, cfg.seed,
                    allow, cohort.study_ids)) if root is not None else None
        if key is not None and key in _CHECKED:  # a study's variants share one cohort: check it once per process
            record = {**_CHECKED[key], "reused_from_this_process": True}
        else:
            warnings = require_clean(cohort, allow_unlabelled=allow, recipe=recipe)
            record = {"skipped": False, "studies": len(cohort), "seconds": round(time.perf_counter() - t0, 2),
                      "warnings": [p.line() for p in warnings]}
            if key is not None:
                _CHECKED[key] = record
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "data_check.json", record)
    return record


def record_item_cache(out_dir: Path, store: ItemStore) -> None:
    """Add where the run's items came from (``store.meta["item_cache"]``: mode, status hit/written/built/off, key,
    entry path, seconds) to ``out_dir/data_check.json`` under ``item_cache``."""
    path = Path(out_dir) / "data_check.json"
    record = read_json(path) if path.is_file() else {}
    record["item_cache"] = store.meta.get("item_cache")
    atomic_write_json(path, record)


def _check_resume(cfg: ExperimentConfig, out_dir: Path, resume: bool) -> None:
    started = any(out_dir.glob("fold_*/checkpoint_last.ckpt")) or any(out_dir.glob("fold_*/DONE"))
    if started and not resume:
        raise CadxConfigError(f"{out_dir} already holds a run; pass resume=True (cadx cv --resume) or use another "
                              "folder")
    saved = out_dir / "config.yaml"
    if resume and saved.is_file():
        diff = config_diff(cfg, saved)
        if diff:
            raise CadxConfigError(f"{saved}: the run was started with a different config (sections {diff}); "
                                  "resume with the same config or use another folder")


def config_diff(cfg: ExperimentConfig, saved: Path) -> list[str]:
    """Top-level sections in which ``cfg`` differs from the run's saved ``config.yaml`` (``train.progress``, a
    display flag, ``input.cache``, where the items come from, and ``train.malloc``, which changes no number,
    ignored); empty = the same experiment."""
    old, new = load_config(saved).to_dict(), cfg.to_dict()
    for part in (old, new):
        part["train"].pop("progress", None)
        part["train"].pop("malloc", None)
        part["input"].pop("cache", None)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def finished_run(cfg: ExperimentConfig, run_dir: Path) -> bool:
    """True when ``run_dir`` holds a finished run of ``cfg``: ``metrics.json``, a ``DONE`` marker for every fold
    of its ``splits.json``, and the same config (:func:`config_diff`). Studies reuse such runs as they are."""
    needed = [run_dir / f for f in ("metrics.json", "splits.json", "config.yaml")]
    if not all(p.is_file() for p in needed):
        return False
    n_folds = len(read_json(run_dir / "splits.json").get("folds", []))
    return len(done_folds(run_dir)) == n_folds > 0 and not config_diff(cfg, run_dir / "config.yaml")


def get_splits(cfg: ExperimentConfig, cohort: Cohort, out_dir: Path) -> Splits:
    """``out_dir/splits.json`` when it exists (the single source of truth), else new splits saved there.
    Always checked against the cohort (leakage or unknown patients raise)."""
    path = out_dir / "splits.json"
    if path.is_file():
        splits = Splits.load(path)
        splits.check(cohort, source=path)
        return splits
    if cfg.cv.kind == "holdout" and not (cfg.cv.use_official and cohort.official_split() is not None):
        splits = holdout_split(cohort, test_fraction=cfg.cv.test_fraction, seed=cfg.seed,
                               val_fraction=cfg.cv.val_fraction)
    else:
        splits = make_splits(cohort, folds=cfg.cv.folds, seed=cfg.seed, val_fraction=cfg.cv.val_fraction,
                             use_official=cfg.cv.use_official)
    splits.check(cohort)
    splits.save(path)
    return splits


def start_run(cfg: ExperimentConfig, out_dir: str | Path, resume: bool) -> tuple[Path, Cohort, Splits, float]:
    """The common start of every CV runner: the folder, the resume check, ``config.yaml``, the cohort with its
    ``fingerprint.json``, and ``splits.json`` (reused when present). Returns ``(out_dir, cohort, splits, t0)``."""
    out = Path(out_dir)
    with run_lock(out):  # the run kind holds it for the whole run (reentrant); a second writer is refused here
        _check_resume(cfg, out, resume)
        t0 = time.perf_counter()
        cfg.save(out / "config.yaml")
        cohort = load_cohort(cfg, out)
        check_data(cfg, cohort, out)
        cohort.write_fingerprint(out / "fingerprint.json")
        return out, cohort, get_splits(cfg, cohort, out), t0


def run_folds(splits: Splits, out_dir: Path, resume: bool,
              run_one: Callable[[Fold, Path], tuple[pd.DataFrame, pd.DataFrame]],
              executor: Executor | None = None, final: Callable[[Path], None] | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``run_one(fold, fold_dir) -> (slice rows, study rows)`` for every fold and write the pooled
    ``predictions_slices.csv`` and ``predictions.csv``. When resuming, a fold with a ``DONE`` marker is read back
    from its folder instead of being run again. Returns the pooled ``(slices, studies)``, in fold order.

    ``executor`` (:mod:`cadx.runs.executors`; default serial, in this process): where the folds still to run
    execute. With Ray they run side by side as tasks (``run_one`` and what it closes over are serialised once);
    each writes only its ``fold_<k>/`` while this process keeps the run folder's lock and writes the pooled files,
    so the folder is the one the serial loop writes.

    ``final`` (``cv.final``): ``final(out_dir / "final")`` trains the final model as one more task, queued after
    the folds on the same executor (on 2 Ray slots a 5-fold CV leaves one slot idle in its last round; the final
    model fills it). Skipped when resuming and ``final/DONE`` exists."""
    executor = executor or SerialExecutor()
    parts: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}
    todo: list[tuple[Fold | None, Path]] = []  # (None, final/) = the final model's task
    at: list[int] = []  # position in splits of each fold still to run
    for pos, fold in enumerate(splits):
        fold_dir = out_dir / f"fold_{fold.fold}"
        if resume and (fold_dir / "DONE").is_file():
            parts[pos] = (pd.read_csv(fold_dir / "predictions_slices.csv"), pd.read_csv(fold_dir / "predictions.csv"))
            continue
        fold_dir.mkdir(parents=True, exist_ok=True)
        todo.append((fold, fold_dir))
        at.append(pos)
    labels = [f"fold {f.fold}" for f, _ in todo if f is not None]
    task: Callable[..., Any] = run_one
    if final is not None and not (resume and (out_dir / "final" / "DONE").is_file()):
        todo.append((None, out_dir / "final"))
        labels.append("final model")
        task = partial(_fold_or_final, run_one, final)
    for i, result in executor.map(task, todo, labels=labels, description="folds"):
        if i < len(at):
            parts[at[i]] = result
    all_slices = [parts[pos][0] for pos in sorted(parts)]
    all_studies = [parts[pos][1] for pos in sorted(parts)]
    slices = pd.concat(all_slices, ignore_index=True)
    studies = pd.concat(all_studies, ignore_index=True)
    atomic_write_text(out_dir / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(out_dir / "predictions.csv", studies.to_csv(index=False))
    return slices, studies


def _fold_or_final(run_one: Callable[[Fold, Path], Any], final: Callable[[Path], None], fold: Fold | None,
                   path: Path) -> Any:
    """One task of :func:`run_folds`: a fold, or (``fold`` None) the final model."""
    if fold is None:
        final(path)
        return None
    return run_one(fold, path)


def run_seconds(out_dir: Path, t0: float) -> float:
    """The run's time across resumes: every finished fold's ``DONE`` seconds plus this invocation's own time
    (since ``t0``, a ``time.perf_counter()`` reading) outside the folds it finished itself. The unfinished part of
    a fold interrupted by a kill is not counted (only its resumed part is, in its ``DONE``)."""
    elapsed = time.perf_counter() - t0
    started = time.time() - elapsed
    total = ran_now = 0.0
    for d in done_folds(out_dir):
        s = float(read_json(d / "DONE").get("seconds", 0.0))
        total += s
        if (d / "DONE").stat().st_mtime >= started:
            ran_now += s
    return round(total + max(0.0, elapsed - ran_now), 2)


def evaluate_rows(df: pd.DataFrame, classes: list[str], cfg: ExperimentConfig, n_bootstrap: int,
                  ranges: Any) -> dict[str, Any]:
    """Metrics of study rows (labelled rows only; their ``y_pred`` decisions when present), with ``n_bootstrap``
    patient-bootstrap CIs and ABE on the original ``ranges`` of the attributes. Binary metrics follow
    ``eval.positive``; classification adds ``calibration`` (Brier, ECE with the same patient-bootstrap CIs, the
    reliability curve, ``before`` scaling when ``raw_p_`` columns exist: :func:`cadx.evaluation.calibration.
    calibration_metrics`)."""
    use = list(classes) if cfg.task.classification else []
    if use:
        df = df[df["y_true"].notna()]
    decision = "given" if use and "y_pred" in df.columns else "argmax"
    metrics = evaluate_predictions(df, use, n_bootstrap=n_bootstrap, seed=cfg.seed, decision=decision,
                                   attribute_ranges=ranges, positive=cfg.eval.positive if use else None)
    cal = calibration_metrics(df, use, cfg.eval.positive, cfg.eval.calibration_bins, cfg.eval.calibration_strategy,
                              n_bootstrap, cfg.seed, cfg.eval.calibration) if use else None
    if cal is not None:
        metrics["calibration"] = cal
    return metrics


#: ``selection.test_used`` of every fold: the test items are scored once, with the model chosen before.
TEST_USED = "scored once, after selection"


def fold_selection(cfg: ExperimentConfig, fold: Fold, best_epoch: int, epoch: dict[str, Any] | None = None,
                   decision_fitted: bool = True) -> dict[str, Any]:
    """A fold's ``metrics.json`` ``selection``: which split made each choice. ``epoch``: the trainer's record
    (:func:`cadx.training.trainer.epoch_selection`; None = not recorded by the run kind, kept as such);
    ``decision``: ``eval.decision`` and the split it was fitted on (``decision_fitted``: the runner fitted it on the
    fold's validation items, else its training items; False = :func:`finish_fold`'s default fit on the training
    labels); ``classifier`` when an SVM is fitted (training patients, grouped Platt CV); ``test_used`` and
    ``test_split`` (``official``, ``holdout`` or ``cv fold``). Other entries (``calibration``, ...) are added by
    the code that fits them, under their own keys."""
    has_val = bool(fold.val)
    rule = cfg.eval.decision
    if not cfg.task.classification:
        dec: dict[str, Any] = {"split": "none", "rule": "no classification decision"}
    elif rule == "argmax":
        dec = {"split": "none", "rule": "argmax (nothing fitted)"}
    elif rule == "prior":
        dec = {"split": "train", "rule": "prior: probabilities divided by the training class priors"}
    elif decision_fitted:
        dec = {"split": "validation" if has_val else "train", "rule": "youden threshold on the "
               + ("validation" if has_val else "training") + " studies' scores"}
    else:
        dec = {"split": "train", "rule": "youden (fitted on training labels only; threshold falls back to 0.5)"}
    out: dict[str, Any] = {
        "epoch": epoch if epoch is not None else {"split": "none", "rule": "not recorded by this run kind",
                                                  "value": int(best_epoch)},
        "decision": dec,
        "test_used": TEST_USED,
        "test_split": "official" if cfg.cv.use_official else "holdout" if cfg.cv.kind == "holdout" else "cv fold",
    }
    if cfg.eval.classifier == "svm" and cfg.task.classification:
        out["classifier"] = {"split": "train", "rule": f"linear SVM (C={cfg.eval.svm_c}) on the training items' "
                             "features, Platt probabilities by patient-grouped CV on the training patients"}
    return out


def decision_selection(decision: Decision) -> dict[str, Any]:
    """``selection.decision`` of a fitted decision (:func:`cadx.runs.inference.fit_decision`): its resolved rule, the
    split its threshold was fitted on (``fit_split``; ``train`` when the fold has no validation patients) and the
    threshold as ``value``; a 0.5 fallback is said."""
    rule = str(decision.get("rule"))
    via = " (eval.decision auto)" if decision.get("requested") == "auto" else ""
    if rule == "argmax":
        return {"split": "none", "rule": f"argmax (nothing fitted){via}"}
    split = str(decision.get("fit_split") or "train")
    pos = f" (positive class {decision['positive']})" if decision.get("positive") is not None else ""
    what = ("youden threshold" if rule == "youden" else
            f"highest threshold reaching sensitivity {decision.get('target_sensitivity')}")
    if decision.get("threshold_fallback"):  # nothing usable to fit on: the documented 0.5
        return {"split": str(decision.get("fit_split") or "none"), "value": decision.get("threshold"),
                "rule": f"{what}{pos} not fitted, threshold {decision['threshold_fallback']}{via}"}
    text = f"{what} on the {'validation' if split == 'validation' else 'training'} studies' scores{pos}{via}"
    return {"split": split, "rule": text, "value": decision.get("threshold")}


def run_selection(run_dir: str | Path) -> dict[str, Any]:
    """The run-level ``selection`` summary from its finished folds' ``metrics.json``: per entry (``epoch``,
    ``decision``, ``calibration``, ...) the split(s) that made the choice over the folds (``"validation"`` or
    e.g. ``"validation, train"`` when folds differ), the rule(s), and each fold's ``value`` when recorded;
    plus ``test_used``. Folds without a ``selection`` (older runs) are listed in ``folds_without_record``."""
    per: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    test_used: set[str] = set()
    for d in done_folds(Path(run_dir)):
        sel = read_json(d / "metrics.json").get("selection") if (d / "metrics.json").is_file() else None
        if not isinstance(sel, dict):
            missing.append(d.name)
            continue
        for key, entry in sel.items():
            if key in ("test_used", "test_split"):
                test_used.add(str(sel.get("test_used")))
                continue
            if not isinstance(entry, dict):
                continue
            agg = per.setdefault(key, {"splits": [], "rules": [], "values": {}})
            for k, v in (("splits", entry.get("split")), ("rules", entry.get("rule"))):
                if v is not None and str(v) not in agg[k]:
                    agg[k].append(str(v))
            if "value" in entry:
                agg["values"][d.name.removeprefix("fold_")] = entry["value"]
    out: dict[str, Any] = {key: {"split": ", ".join(a["splits"]) or "none", "rule": "; ".join(a["rules"]),
                                 **({"values": a["values"]} if a["values"] else {})} for key, a in per.items()}
    if test_used:
        out["test_used"] = "; ".join(sorted(test_used))
    if missing:
        out["folds_without_record"] = missing
    return out


def finish_fold(cfg: ExperimentConfig, cohort: Cohort, store: ItemStore, fold: Fold, fold_dir: Path,
                slices: pd.DataFrame, t0: float, best_epoch: int, items: dict[str, int],
                decision: Decision | None = None, selection: dict[str, Any] | None = None) -> pd.DataFrame:
    """The end of every fold runner: the fold's test slice rows → study rows and decision
    (:func:`cadx.runs.inference.study_predictions`, ``eval.aggregation``) → ``predictions_slices.csv``,
    ``predictions.csv``, ``metrics.json`` (no bootstrap; ``decision_fit`` = the decision parameters, which
    ``cadx predict`` and ``cadx evaluate`` reuse) and the ``DONE`` marker (``items`` = train/val/test item counts).
    ``decision``: fitted by the runner (:func:`cadx.runs.inference.fold_decision`); default: fitted on the fold's
    training labels alone (priors; a Youden threshold then falls back to 0.5). ``selection``: the trainer's epoch
    record, written with the decision's split as ``metrics.json`` ``selection`` (:func:`fold_selection`).
    Returns the study rows."""
    classes = store.classes if cfg.task.classification else []
    sel = fold_selection(cfg, fold, best_epoch, selection, decision_fitted=decision is not None)
    if decision is None:
        decision = fit_decision(cfg.eval.decision, classes, store.labels[fold.indices(cohort, "train")],
                                positive=cfg.eval.positive, target_sensitivity=cfg.eval.target_sensitivity)
    studies = study_predictions(slices, classes, cfg.eval.aggregation, decision)
    atomic_write_text(fold_dir / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(fold_dir / "predictions.csv", studies.to_csv(index=False))
    metrics = evaluate_rows(studies, classes, cfg, 0, cohort.info.get("attribute_ranges"))
    metrics["decision_fit"] = decision
    metrics["best_epoch"] = best_epoch
    metrics["selection"] = {**sel, **(metrics.get("selection") or {})}
    if classes and decision.get("rule") in ("argmax", "youden", "sensitivity"):
        metrics["selection"]["decision"] = decision_selection(decision)  # the rule actually fitted (auto resolved)
    cal_fit = decision.get("calibration")
    if cal_fit:  # eval.calibration: the split its map was fitted on (validation only; none = not calibrated)
        metrics["selection"]["calibration"] = {
            "split": cal_fit.get("fit_split", "none"),
            "rule": f"{cal_fit.get('method')} scaling" + ("" if cal_fit.get("fitted") else
                                                           f" not fitted: {cal_fit.get('reason')}")}
    atomic_write_json(fold_dir / "metrics.json", metrics)
    atomic_write_json(fold_dir / "DONE", {"fold": fold.fold, "best_epoch": best_epoch,
                                          "seconds": round(time.perf_counter() - t0, 2), **items})
    return studies


def write_run_report(run_dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """The run's ``report.html`` + ``report.md`` (:func:`cadx.report.write_report`)."""
    return write_report(run_dirs, out_dir)
