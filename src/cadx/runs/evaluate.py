"""External validation (``cadx evaluate``): apply a trained run to a cohort and score it exactly as the run's
cross-validation scored its test folds.

- **Dataset options**: a cohort loaded with the run's own dataset adapter (same ``data.dataset`` name before any
  ``:flag``) gets the run's ``data.options``; explicit ``options`` override them key by key. The options used,
  the inherited ones and the overrides are recorded in ``metrics.json`` ``external`` and in the report.
- **Models** (``fold``): ``None`` → ``final/`` when trained, else the mean of the fold models (decision
  parameters: the mean of the folds' fitted priors / Youden thresholds); ``k`` → fold k's model and decision
  parameters; ``"own"`` → each patient with the model of the fold whose test set held it out (a patient in no
  test set of ``splits.json`` is an error). On the run's own cohort ``"own"`` reproduces ``predictions.csv``.
- **Rows**: a network run goes through the CV's prediction path (:func:`~cadx.runs.inference.predict_rows`: item
  outputs → aggregation → decision with the models' fitted parameters); a segmentation run through
  :func:`cadx.runs.segmentation.predict_fold` (full volume, original grid, the same post-processing and per-volume
  Dice).

- **External is external**: the cohort's patients are compared with the training (train + val) patients of the
  model(s) that score them (:func:`patient_overlap`): by image content (SHA-1 of every image array of a study
  against the run's training studies, so renamed or id-less copies are caught) and by patient id when the cohort
  is loaded exactly as the run's own (same adapter, root and options: the ids then name the same patients).
  A cohort whose every patient overlaps is refused (one CadxDataError line); a partial overlap is the first line
  logged and is recorded in ``metrics.json`` ``external`` (``n_patients_overlap``, ``overlap_fraction``) and
  printed first in the run's report. ``--fold own`` scores each patient with the model that held it out, so the
  run's own cohort has no overlap there (it re-scores the CV; the report says so). Patient ids that merely match
  (another cohort of the same adapter) are reported as ``n_patients_in_training`` but are not counted as overlap
  when the images differ.

Output: ``run_dir/external/<name>/{predictions.csv, predictions_slices.csv, metrics.json}`` (segmentation also
``pred_masks.npz``); the run's report is rewritten with its external-validation section
(:mod:`cadx.report.external`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from cadx.config import EvalConfig, ExperimentConfig
from cadx.data.check import require_clean
from cadx.data.datasets import load_dataset
from cadx.data.splits import Splits
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError, CadxError
from cadx.pipeline.items import build_store
from cadx.pipeline.seg_items import build_seg_data
from cadx.runs.folder import done_folds, evaluate_rows, fold_dir, load_cohort, run_config, run_models, write_run_report
from cadx.runs.inference import load_predictor, predict_rows
from cadx.runs.segmentation import evaluate_seg, load_models, predict_fold, save_masks
from cadx.training.trainer import load_module
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["evaluate_run", "external_name", "model_groups", "patient_overlap", "resolve_options", "study_hashes"]

Group = tuple[int, list[Path], np.ndarray]
"""``(fold label written into the rows, model folders, study indices of the cohort they score)``."""


def external_name(dataset: str, options: dict[str, Any] | None = None, fold: int | str | None = None,
                  tta: str | None = None) -> str:
    """Folder name of an external evaluation, e.g. ``medmnist-breastmnist``, ``lgg-fold1`` or
    ``busi-own-fold-tta-flips`` (safe for file systems): the dataset, the explicit option values, the model
    choice, a test-time augmentation that overrides the run's."""
    parts = [dataset, *(f"{v}" for _, v in sorted((options or {}).items()))]
    if fold is not None:
        parts.append("own-fold" if fold == "own" else f"fold{fold}")
    if tta is not None:
        parts.append(f"tta-{tta}")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-") or "external"


def resolve_options(cfg: ExperimentConfig, dataset: str, options: dict[str, Any] | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(options to load the cohort with, the part inherited from the run)``: the run's ``data.options`` when
    ``dataset`` uses the run's adapter (same name before ``:``), updated with the explicit ``options``."""
    same = dataset.split(":")[0] == cfg.data.dataset.split(":")[0]
    inherited = dict(cfg.data.options) if same else {}
    return {**inherited, **(options or {})}, inherited


def parse_fold(fold: int | str | None) -> int | str | None:
    """``None``, a fold number or ``"own"`` (strings from the CLI are converted); anything else raises."""
    if fold is None or isinstance(fold, int):
        return fold
    text = str(fold).strip().lower()
    if text == "own":
        return "own"
    if re.fullmatch(r"\d+", text):
        return int(text)
    raise CadxConfigError(f"--fold: expected a fold number or 'own', got {fold!r}")



def model_groups(run_dir: Path, cohort: Cohort, fold: int | str | None,
                 models: list[Path] | None = None) -> list[Group]:
    """Which models score which studies (see the module docstring for ``fold``); empty groups are left out.
    ``models``: the model folders for ``fold=None`` (default :func:`run_models`)."""
    every = np.arange(len(cohort))
    if fold is None:
        return [(-1, models if models is not None else run_models(run_dir), every)]
    if isinstance(fold, int):
        return [(fold, [fold_dir(run_dir, fold)], every)]
    path = run_dir / "splits.json"
    if not path.is_file():
        raise CadxDataError("no splits.json: --fold own needs the run's folds", path=run_dir, field="splits")
    held_out = {pid: f.fold for f in Splits.load(path) for pid in f.test}
    pids = np.asarray(cohort.patient_ids)
    unknown = sorted({str(p) for p in pids if p not in held_out})
    if unknown:
        raise CadxDataError(f"patients {unknown[:5]}{' …' if len(unknown) > 5 else ''} are in no fold's test set "
                            "(--fold own scores each patient with the model that held it out)", path=path,
                            field="test")
    which = np.array([held_out[p] for p in pids])
    return [(k, [fold_dir(run_dir, k)], every[which == k]) for k in sorted(set(which.tolist()))]


def training_overlap(run_dir: Path, cohort: Cohort, groups: list[Group]) -> int:
    """How many of the cohort's scored patients the model(s) scoring them were trained or validated on (by
    patient id, from ``splits.json``: fold k's train + val parts; ``final/`` was trained on every patient of the
    run). 0 for ``fold="own"``; an evaluation with such patients is not external for them."""
    path = run_dir / "splits.json"
    if not path.is_file():
        return 0
    folds = {f.fold: f for f in Splits.load(path)}
    everyone = {p for f in folds.values() for part in ("train", "val", "test") for p in f.part(part)}
    seen_total: set[str] = set()
    for _, dirs, studies in groups:
        seen: set[str] = set()
        for d in dirs:
            k = d.name.removeprefix("fold_")
            seen |= everyone if not k.isdigit() else set(folds[int(k)].train) | set(folds[int(k)].val)
        seen_total |= {cohort.patient_ids[i] for i in studies} & seen
    return len(seen_total)


def study_hashes(cohort: Cohort, indices: list[int] | np.ndarray | None = None) -> dict[int, str]:
    """``{study index: SHA-1}`` of each study's images (every image by name: its shape, dtype and array bytes);
    ``indices`` default every study. Identical pixel data gives identical hashes whatever the ids or file names."""
    out: dict[int, str] = {}
    for i in (range(len(cohort)) if indices is None else indices):
        h = hashlib.sha1()
        for name in sorted(cohort[int(i)].images):
            arr = np.ascontiguousarray(cohort[int(i)].images[name].load().array)
            h.update(f"{name}|{arr.shape}|{arr.dtype}|".encode())
            h.update(arr.tobytes())
        out[int(i)] = h.hexdigest()
    return out


def _training_parts(run_dir: Path, groups: list[Group]) -> list[set[str]]:
    """Per group: the patient ids its models were trained or validated on (``splits.json``: fold k's train + val;
    ``final/``: every patient of the run); empty sets without ``splits.json``."""
    path = run_dir / "splits.json"
    if not path.is_file():
        return [set() for _ in groups]
    folds = {f.fold: f for f in Splits.load(path)}
    everyone = {p for f in folds.values() for part in ("train", "val", "test") for p in f.part(part)}
    out = []
    for _, dirs, _ in groups:
        seen: set[str] = set()
        for d in dirs:
            k = d.name.removeprefix("fold_")
            seen |= everyone if not k.isdigit() else set(folds[int(k)].train) | set(folds[int(k)].val)
        out.append(seen)
    return out


def patient_overlap(run_dir: Path, cfg: ExperimentConfig, cohort: Cohort, groups: list[Group],
                    same_recipe: bool, run_cohort: Cohort | None = None) -> dict[str, Any]:
    """How many of the cohort's scored patients the model(s) scoring them were trained or validated on:
    ``{"n_patients_same_images", "n_patients_same_ids", "n_patients_overlap", "overlap_fraction", "overlap_ids"
    (first 10), "overlap_rule", "content_checked"}``. Content: a patient overlaps when one of its studies has the
    same :func:`study_hashes` as a study of a training patient (the run's cohort, ``run_cohort`` or
    :func:`cadx.runs.folder.load_cohort` of the run's config; when it cannot be loaded, ``content_checked`` is
    False and says why). Ids count as overlap only when ``same_recipe`` (the cohort is the run's own load)."""
    parts = _training_parts(run_dir, groups)
    pids = cohort.patient_ids
    by_id: set[str] = set()
    for seen, (_, _, studies) in zip(parts, groups, strict=True):
        by_id |= {pids[i] for i in studies} & seen
    by_content: set[str] = set()
    checked: bool | str = True
    if any(parts):
        try:
            rc = run_cohort if run_cohort is not None else load_cohort(cfg, run_dir)
            train_idx = [i for i, p in enumerate(rc.patient_ids) if any(p in s for s in parts)]
            train_hash = study_hashes(rc, train_idx)
            rc_pids = rc.patient_ids
            mine = study_hashes(cohort, sorted({int(i) for _, _, st in groups for i in st}))
            for seen, (_, _, studies) in zip(parts, groups, strict=True):
                hashes = {h for i, h in train_hash.items() if rc_pids[i] in seen}
                by_content |= {pids[int(i)] for i in studies if mine[int(i)] in hashes}
        except (CadxError, OSError) as e:  # the training data moved: say so instead of guessing
            checked = f"not checked: the run's cohort could not be loaded ({' '.join(str(e).split())[:200]})"
    overlap = by_content | (by_id if same_recipe else set())
    n = len({pids[int(i)] for _, _, st in groups for i in st})
    rule = ("same image content (SHA-1 of the image arrays) as a training study"
            + (", or the same patient id (the cohort is loaded as the run's own)" if same_recipe else ""))
    return {"n_patients_same_images": len(by_content), "n_patients_same_ids": len(by_id),
            "n_patients_overlap": len(overlap), "overlap_fraction": len(overlap) / n if n else 0.0,
            "overlap_ids": sorted(overlap)[:10], "overlap_rule": rule, "content_checked": checked}


def _network_rows(cfg: ExperimentConfig, cohort: Cohort, groups: list[Group], spec: dict[str, Any]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]], list[str]]:
    """Slice and study rows of a network run; also the decisions used and the attributes evaluated."""
    classes = list(spec.get("classes", []))
    wanted = list(spec.get("attributes", []))
    attrs = [a for a in wanted if a in cohort.attribute_names()]
    store = build_store(cohort, cfg, classes=classes, attributes=wanted, progress=cfg.train.progress)
    drop = [f"true_{a}" for a in wanted if a not in attrs]  # attributes the cohort lacks: keep predictions only
    all_slices, all_studies, decisions = [], [], []
    for label, dirs, studies in groups:
        res = predict_rows(cfg, store, store.items_of_studies(studies), [load_predictor(d) for d in dirs], label)
        all_slices.append(res.slices.drop(columns=drop, errors="ignore"))
        all_studies.append(res.studies.drop(columns=drop, errors="ignore"))
        decisions.append({"fold": label, **res.decision})
    return pd.concat(all_slices, ignore_index=True), pd.concat(all_studies, ignore_index=True), decisions, attrs


def _segmentation_rows(cfg: ExperimentConfig, cohort: Cohort, groups: list[Group], classes: list[str]
                       ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Study rows, slice rows and final masks of a segmentation run (:func:`predict_fold` per group)."""
    data = build_seg_data(cohort, cfg, progress=cfg.train.progress, classes=classes or None)
    all_slices, all_studies, masks = [], [], {}
    for label, dirs, studies in groups:
        models, _ = load_models(dirs, int(data.store.images.shape[1]))
        rows, slices, m = predict_fold(cfg, data, models, studies, label)
        all_studies.append(rows)
        all_slices.append(slices)
        masks.update(m)
    return pd.concat(all_studies, ignore_index=True), pd.concat(all_slices, ignore_index=True), masks


def _models_text(run_dir: Path, groups: list[Group], fold: int | str | None) -> str:
    dirs = [d for _, ds, _ in groups for d in ds]
    if fold == "own":
        return f"own fold per patient ({len(dirs)} fold models)"
    if fold is not None:
        return f"fold {fold}"
    return "final" if dirs[0].name == "final" else f"mean of {len(dirs)} fold models"


def evaluate_run(run_dir: str | Path, dataset: str, root: str | Path, options: dict[str, Any] | None = None,
                 name: str | None = None, fold: int | str | None = None, allow_partial: bool = False,
                 check: bool = True, log: Callable[[str], None] | None = None, tta: str | None = None
                 ) -> dict[str, Any]:
    """Score every study of ``load_dataset(dataset, root, **options)`` with the run's models (see the module
    docstring for the option rule and ``fold``), write ``run_dir/external/<name>/`` and the run's report, and
    return the ``pooled`` metrics. Labels must be among the run's classes (matched by name). A run with an
    unfinished fold is refused (``fold=None``) unless ``allow_partial`` (:func:`run_models`). The cohort must pass
    :func:`cadx.data.check.check_cohort` first unless ``check=False`` (recorded as ``data_checked`` in the info).
    Patients seen in training (:func:`patient_overlap`): all of them → CadxDataError (not an external validation);
    some → ``log`` (e.g. the CLI's print) gets one line saying how many, before anything is scored.
    ``tta`` (``"none"``/``"flips"``): the test-time augmentation of the scoring, instead of the run's ``eval.tta``
    (recorded as ``external.tta``; decision thresholds and SVMs stay the ones the run fitted); with
    ``fold="own"`` on the run's cohort it re-scores the CV with or without the flips."""
    run_dir = Path(run_dir)
    fold = parse_fold(fold)
    dirs = run_models(run_dir, allow_partial) if fold is None else (done_folds(run_dir) or run_models(run_dir))
    cfg = run_config(run_dir, dirs)
    if tta is not None:
        known = get_args(EvalConfig.model_fields["tta"].annotation)  # the config's own choices
        if tta not in known:
            raise CadxConfigError(f"unknown test-time augmentation {tta!r}; use {' or '.join(known)}")
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"tta": tta})})
    _, spec = load_module(dirs[0] / "checkpoint_best.ckpt")
    classes = list(spec.get("classes", [])) if cfg.task.classification else []
    used, inherited = resolve_options(cfg, dataset, options)
    cohort = load_dataset(dataset, root, **used)
    if check:  # the full data check before any inference (one line naming the file and field on failure)
        require_clean(cohort, allow_unlabelled=cfg.data.allow_unlabelled or not cfg.task.classification,
                      recipe=(dataset, str(root), dict(used)))
    unknown = sorted({s.label for s in cohort if s.label is not None} - set(classes)) if classes else []
    if unknown:
        raise CadxDataError(f"labels {unknown} are not classes of the trained run {classes}", path=root,
                            field="label")
    groups = model_groups(run_dir, cohort, fold, dirs if fold is None else None)
    same_adapter = dataset.split(":")[0] == cfg.data.dataset.split(":")[0]  # patient ids comparable
    dest = run_dir / "external" / (name or external_name(dataset, options, fold, tta))
    info: dict[str, Any] = {
        "dataset": dataset, "root": str(root), "options": used, "options_from_run": inherited,
        "options_override": dict(options or {}), "fold": fold, "data_checked": check,
        "models_text": _models_text(run_dir, groups, fold) + ("; test-time flips" if cfg.eval.tta == "flips" else ""),
        "tta": cfg.eval.tta,
        "models": sorted({str(d.relative_to(run_dir)) for _, ds, _ in groups for d in ds}),
        "n_studies": len(cohort), "n_patients": len(set(cohort.patient_ids)),
        "n_patients_in_training": training_overlap(run_dir, cohort, groups) if same_adapter else None}
    same_recipe = (dataset == cfg.data.dataset and cfg.data.root is not None
                   and Path(root).resolve() == Path(cfg.data.root).resolve() and used == dict(cfg.data.options))
    ov = patient_overlap(run_dir, cfg, cohort, groups, same_recipe)
    info.update(ov)
    n_pat = info["n_patients"]
    if n_pat and ov["n_patients_overlap"] == n_pat:
        raise CadxDataError(f"all {n_pat} patients of this cohort were training or validation patients of the "
                            f"model(s) scoring them ({ov['overlap_rule']}): this is not an external validation "
                            "(--fold own re-scores the run's held-out patients)", path=root, field="patients")
    if ov["n_patients_overlap"] and log is not None:
        log(f"Partial overlap: {ov['n_patients_overlap']} of {n_pat} patients ({100 * ov['overlap_fraction']:.0f} %) "
            f"were seen in training by the model scoring them ({ov['overlap_rule']}); for them this evaluation is "
            "not external.")
    if cfg.segmentation is not None:
        studies, slices, masks = _segmentation_rows(cfg, cohort, groups, classes)
        dest.mkdir(parents=True, exist_ok=True)
        save_masks(dest / "pred_masks.npz", masks)
        metrics = evaluate_seg(studies, classes, cfg.eval.bootstrap, cfg.seed)
    else:
        slices, studies, decisions, attrs = _network_rows(cfg, cohort, groups, spec)
        metrics = evaluate_rows(studies, list(spec.get("classes", [])), cfg, cfg.eval.bootstrap,
                                cohort.info.get("attribute_ranges"))
        info["decision"] = decisions[0] if len(decisions) == 1 else decisions
        info["attributes_evaluated"] = attrs
    atomic_write_text(dest / "predictions_slices.csv", slices.to_csv(index=False))
    atomic_write_text(dest / "predictions.csv", studies.to_csv(index=False))
    metrics["external"] = info
    atomic_write_json(dest / "metrics.json", metrics)
    write_run_report([run_dir], run_dir)
    return metrics["pooled"]
