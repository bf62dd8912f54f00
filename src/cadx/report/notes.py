"""``notes.md``: the choices a run made, in words (written beside its results)."""

from __future__ import annotations

from pathlib import Path

import torch

from cadx.config import ExperimentConfig
from cadx.data.splits import Splits
from cadx.data.study import Cohort
from cadx.pipeline.items import ItemStore
from cadx.training.trainer import trainer_settings
from cadx.utils import atomic_write_text, read_json

_AGG = {"mean": "mean of the item (slice) probabilities", "vote": "majority vote of the items' argmax classes "
        "(ties: higher mean probability)", "max": "per-class maximum item probability"}
_DEC = {"argmax": "argmax of the study probabilities", "prior": "argmax of probabilities divided by the training "
        "class frequencies of the fold", "youden": "threshold maximising Youden's J, fitted per fold on the validation "
        "studies (training studies when there is no validation set)",
        "sensitivity": "the highest threshold reaching eval.target_sensitivity on the validation studies of the fold "
        "(training studies when there is no validation set)",
        "auto": "binary: threshold maximising Youden's J on the validation studies of the fold (training studies when "
        "there is no validation set; the highest threshold reaching eval.target_sensitivity when set); multi-class: "
        "argmax of the study probabilities"}


def _data_check_line(out_dir: Path) -> str:
    """What ``data_check.json`` says: the full check before training, or that ``data.checked`` skipped it."""
    path = out_dir / "data_check.json"
    if not path.is_file():
        return "- Data check: no record (run started before `data_check.json` existed)."
    rec = read_json(path)
    if rec.get("skipped"):
        return f"- Data check: SKIPPED ({rec.get('reason', 'data.checked: true')}); images were not checked in full."
    warn = rec.get("warnings") or []
    return (f"- Data check: every image and mask of the {rec.get('studies')} studies opened and checked in full "
            f"before training ({rec.get('seconds')} s): no errors, {len(warn)} warning(s)"
            + (f", e.g. `{warn[0]}`" if warn else "") + ".")


def write_notes(out_dir: Path, cfg: ExperimentConfig, cohort: Cohort, store: ItemStore, splits: Splits) -> Path:
    """Write ``out_dir/notes.md`` describing data, preprocessing, training, checkpoint choice and evaluation."""
    has_val = any(f.val for f in splits)
    es = cfg.train.early_stopping
    ts = trainer_settings(cfg)
    lines = [
        f"# {cfg.name}", "",
        f"- Cohort `{cohort.name}` ({cfg.data.dataset}): {len(cohort)} studies, {len(cohort.patients)} patients, "
        f"classes {store.classes}; {len(store)} input items of shape {tuple(store.images.shape[1:])}.",
        f"- Splits: {len(splits)} fold(s), kind `{splits.kind}`, made on patients (seed {splits.seed}); "
        "splits.json is the source of truth and was checked for leakage.",
        _data_check_line(out_dir),
        f"- Input: `{cfg.input.kind}`, ROI `{cfg.input.roi}` ("
        + (f"fixed {cfg.input.fov_mm} mm field of view" if cfg.input.fov_mm else f"margin {cfg.input.margin}")
        + (f", plus a {cfg.input.context_fov_mm} mm context channel" if cfg.input.context_fov_mm else "")
        + (f", plus constant channels of {'log ' if cfg.input.covariate_log else ''}"
           f"{', '.join(cfg.input.covariate_channels)}" if cfg.input.covariate_channels else "")
        + f"), size {cfg.input.size}, "
        f"{store.in_channels} channel(s)"
        + ("; channels converted where an image's count differed from input.channels (input.convert_channels: "
           "RGB → grey as the mean of the first 3 channels, grey repeated, extra channels dropped)"
           if cfg.input.convert_channels else "")
        + "; intensity "
        + (f"window {cfg.input.window}" if cfg.input.window is not None else f"`{cfg.input.normalize}` per image")
        + "; preprocessing done once per run, in memory.",
        f"- Model `{cfg.model.name}` {cfg.model.kwargs or ''}; objective {cfg.objective}; pairs `{cfg.pairs}`; "
        f"sampler `{cfg.sampler.kind}` (ratio {cfg.sampler.ratio}); augmentation "
        + ("on" if cfg.input.augment.enabled else "off") + ".",
        f"- Optimiser {cfg.optim.name} lr {cfg.optim.lr} wd {cfg.optim.weight_decay}; schedule `{cfg.schedule.name}`; "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}; precision {ts['precision']} on "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}; deterministic algorithms (warn-only).",
        "- Checkpoint used for the test predictions: "
        + (f"`checkpoint_best.ckpt` = the epoch with the best {es.monitor} on the validation patients"
           + (f" (early stopping after {es.patience} epochs without improvement)" if es.patience is not None else "")
           if has_val else "`checkpoint_best.ckpt` = the **last** epoch (no validation set, cv.val_fraction = 0)")
        + ".",
        "- Classifier: " + ("a linear SVM (scikit-learn SVC, Platt-scaled probabilities) fitted per fold on the "
                            f"training items' `{cfg.eval.svm_features}` embeddings" if cfg.eval.classifier == "svm"
                            else "the network's own head") + ".",
        f"- Study-level aggregation: {_AGG[cfg.eval.aggregation]}; decision: {_DEC[cfg.eval.decision]}.",
        f"- Metrics: pooled out-of-fold over all test patients; 95% CIs by patient bootstrap "
        f"({cfg.eval.bootstrap} resamples, seed {cfg.seed}).",
        "", "| fold | best epoch | train items | test items | seconds |", "|---|---|---|---|---|",
    ]
    for f in splits:
        done = out_dir / f"fold_{f.fold}" / "DONE"
        if done.is_file():
            d = read_json(done)
            lines.append(f"| {f.fold} | {d.get('best_epoch')} | {d.get('train_items')} | {d.get('test_items')} | "
                         f"{d.get('seconds')} |")
    final = out_dir / "final" / "DONE"
    if final.is_file():  # cv.final (cadx cv --final) or cadx train into the run folder
        d = read_json(final)
        lines += ["", f"Final model: `final/`, trained on all {d.get('studies')} studies ({d.get('items')} items, "
                  f"{d.get('seconds')} s), last epoch, decision fitted on all studies; `cadx predict` and "
                  "`cadx export` use it instead of the fold models. The CV metrics above are the folds'."]
    return atomic_write_text(out_dir / "notes.md", "\n".join(lines) + "\n")
