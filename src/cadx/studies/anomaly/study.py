"""Thesis A.9 (Swiecicki et al. 2021) on LGG / BUSI: an inpainting GAN trained on normal tissue only, sliding-window
heatmaps on test lesion images, the inside/outside box ratio and pixel AUROC.

:func:`run_anomaly_study`: load the cohort; one patient-level holdout (``splits.json``, reused on resume); the
normal slices of training patients train the GAN (:func:`cadx.training.gan.train_inpaint_gan`, resumable in
``out/model``), those of validation patients pick the epoch (lowest validation hole MSE); every lesion slice of
the test patients gets MSE / critic / DMSE heatmaps (:func:`cadx.explain.anomaly.anomaly_heatmaps`) scored by
:mod:`cadx.evaluation.anomaly`; :mod:`cadx.studies.anomaly.tables` writes the outputs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cadx.data.datasets import load_dataset
from cadx.data.splits import Splits, holdout_split
from cadx.errors import CadxConfigError
from cadx.explain.anomaly import Heatmaps, anomaly_heatmaps, model_functions
from cadx.models import create_model
from cadx.models.inpaint import InpaintGAN
from cadx.pipeline.normal_patches import NormalPatchSampler, Slice2D, lesion_slices, normal_slices
from cadx.studies.anomaly.tables import image_rows, overlay_figure, pooled_auroc, write_outputs
from cadx.studies.anomaly.variants import AnomalyConfig, train_config
from cadx.training.gan import load_gan_checkpoint, train_inpaint_gan

__all__ = ["build_gan", "largest_lesions", "run_anomaly_study", "study_splits"]


def build_gan(cfg: AnomalyConfig) -> InpaintGAN:
    """The registered ``inpaint_gan`` with ``cfg.model``'s options, initialised from ``cfg.train.seed`` (under
    ``torch.random.fork_rng``: the global generator is left as it was)."""
    m = cfg.model
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        model = create_model("inpaint_gan", 0, 1, 2, fov=m.fov, local_size=cfg.local_size(), width=m.width,
                             contextual_attention=m.contextual_attention)
    assert isinstance(model, InpaintGAN)
    return model


def study_splits(cohort: Any, cfg: AnomalyConfig, out: Path, resume: bool) -> Splits:
    """The study's holdout: ``out/splits.json`` when resuming and present (checked against the cohort), else a new
    :func:`holdout_split` written there."""
    path = out / "splits.json"
    if resume and path.is_file():
        splits = Splits.load(path)
    else:
        s = cfg.split
        splits = holdout_split(cohort, test_fraction=s.test_fraction, seed=s.seed, val_fraction=s.val_fraction)
        splits.save(path)
    splits.check(cohort)
    if not splits.folds[0].val:
        raise CadxConfigError(f"{path}: the split has no validation patients (split.val_fraction)")
    return splits


def _pick_overlays(slices: list[Slice2D], n: int) -> list[int]:
    """Indices of the largest-lesion slice of each of the first ``n`` test patients (by id)."""
    best: dict[str, int] = {}
    for i, s in enumerate(slices):
        j = best.get(s.patient_id)
        if j is None or s.lesion.sum() > slices[j].lesion.sum():
            best[s.patient_id] = i
    return [best[p] for p in sorted(best)[:n]]


def largest_lesions(slices: list[Slice2D], k: int) -> list[Slice2D]:
    """Each patient's ``k`` slices with the most lesion pixels (ties: lower slice index), in the input order."""
    keep: set[tuple[str, int]] = set()
    for pid in {s.patient_id for s in slices}:
        mine = sorted((s for s in slices if s.patient_id == pid), key=lambda s: (-int(s.lesion.sum()), s.index))
        keep |= {(s.study_id, s.index) for s in mine[:k]}
    return [s for s in slices if (s.study_id, s.index) in keep]


def run_anomaly_study(cfg: AnomalyConfig, out_dir: str | Path, resume: bool = True,
                      progress: bool = True) -> dict[str, Any]:
    """Run the study into ``out_dir`` (resumable: the split and the GAN's epochs are reused; heatmaps are recomputed)
    and return its metrics (also in ``out_dir/metrics.json``)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d, m, p = cfg.data, cfg.model, cfg.patches
    cohort = load_dataset(d.dataset, d.root, **d.options)
    fold = study_splits(cohort, cfg, out, resume).folds[0]
    normal_train = normal_slices(cohort, fold.train, fold.test, d.size, d.channel, d.normal_label)
    normal_val = normal_slices(cohort, fold.val, fold.test, d.size, d.channel, d.normal_label)

    def sampler(slices: list[Slice2D]) -> NormalPatchSampler:
        return NormalPatchSampler(slices, m.fov, p.hole_min, p.hole_max, p.fg_threshold, p.fg_fraction,
                                  forbidden_patients=fold.test)

    model = build_gan(cfg)
    t_train = time.perf_counter()
    history = train_inpaint_gan(model, sampler(normal_train), out / "model", train_config(cfg),
                                val_sampler=sampler(normal_val), resume=resume, progress=progress)
    best = load_gan_checkpoint(out / "model" / "checkpoint_best.pt")
    model.load_state_dict(best["model"])
    t_train = time.perf_counter() - t_train

    t_eval = time.perf_counter()
    tests = [s for s in lesion_slices(cohort, fold.test, d.size, d.channel, d.min_lesion_pixels)
             if d.lesion_labels is None or s.label in d.lesion_labels]
    if cfg.eval.slices_per_patient is not None:
        tests = largest_lesions(tests, cfg.eval.slices_per_patient)
    if cfg.eval.max_images is not None:
        tests = tests[:cfg.eval.max_images]
    if not tests:
        raise CadxConfigError(f"{cfg.name}: no test lesion slice with >= {d.min_lesion_pixels} lesion pixels")
    inpaint, critic = model_functions(model)
    heatmaps: list[Heatmaps] = []
    rows: list[dict[str, Any]] = []
    e = cfg.eval
    for sl in tests:
        hm = anomaly_heatmaps(sl.image, inpaint, critic, m.fov, m.hole, e.stride, e.batch_size, e.average_over)
        heatmaps.append(hm)
        rows += image_rows(sl, hm, e.fg_threshold)
    pooled = pooled_auroc(tests, heatmaps, e.fg_threshold)
    figures = []
    picks = _pick_overlays(tests, e.overlays)
    if picks:
        overlay_figure([(tests[i], heatmaps[i]) for i in picks], out / "figures" / "overlays.png")
        figures.append("figures/overlays.png")
    t_eval = time.perf_counter() - t_eval
    info = {"patients": {"train": len(fold.train), "val": len(fold.val), "test": len(fold.test)},
            "test_patients": list(fold.test),
            "normal_slices": {"train": len(normal_train), "val": len(normal_val)}, "test_slices": len(tests),
            "best_epoch": int(best["best"]["epoch"]), "best_val_hole_mse": float(best["best"]["val_hole_mse"]),
            "pooled_auroc": pooled,
            "seconds": {"train": round(t_train, 1), "heatmaps": round(t_eval, 1),
                        "total": round(time.perf_counter() - t0, 1)}}
    return write_outputs(cfg, out, rows, pooled, history, info, figures)
