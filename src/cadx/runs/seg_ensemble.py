"""Ensembles of finished segmentation runs: the mean of their slice probabilities on the same test studies.

The members may differ in their input (thesis A.3's two networks: the 3-sequence input and FLAIR-only with the
neighbouring FLAIR slices as channels); each member's fold-``k`` model predicts the fold's test studies from its own
items, the lesion probabilities (``(N, 1, h, w)`` per study; every member must share ``input.size`` and the slice
count) are averaged with equal weights, and the first member's post-processing (:func:`final_masks`: decision at
0.5, largest component) gives the mask scored against the original mask. Test noise (``segmentation.test_noise`` of
the first member) is added to every member's input with σ × that member's fold training SD. Nothing is fitted.
Writes a run-like folder: ``predictions.csv``, ``fold_<k>/pred_masks.npz``, ``metrics.json``, ``notes.md`` and a
report. ``cadx ensemble`` calls it when every member is a segmentation run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.errors import CadxDataError
from cadx.evaluation.overlap import dice
from cadx.pipeline.seg_items import SegData, build_seg_data, lesion_channel, seg_settings
from cadx.runs.folder import load_cohort, write_run_report
from cadx.runs.segmentation import (
    evaluate_seg,
    final_masks,
    load_models,
    noise_column,
    predict_items,
    save_masks,
)
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["ensemble_segmentation"]


def _lesion_proba(cfg: ExperimentConfig, models: Sequence[torch.nn.Module], x: torch.Tensor) -> np.ndarray:
    """Lesion probability ``(N, 1, h, w)`` of items ``x`` (sigmoid output, or the lesion channel of a softmax)."""
    seg, _ = predict_items(models, x, cfg.train.eval_batch_size, cfg.eval.tta)
    c = lesion_channel(cfg) if seg.shape[1] > 1 else 0
    return seg[:, c:c + 1]


def ensemble_segmentation(run_dirs: Sequence[str | Path], out_dir: str | Path, n_bootstrap: int | None = None,
                          seed: int | None = None, report: bool = True) -> dict[str, Any]:
    """Evaluate the equal-weight mean of segmentation runs' out-of-fold probabilities into ``out_dir``.

    The runs must have the same ``splits.json`` (same patients per fold) and a ``checkpoint_best.ckpt`` per fold;
    a CadxDataError names the first run that differs. Returns the metrics (as :func:`evaluate_seg`).
    """
    t0 = time.perf_counter()
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise CadxDataError("an ensemble needs at least two runs", field="runs")
    cfgs = [load_config(d / "config.yaml") for d in dirs]
    splits = [json.loads((d / "splits.json").read_text(encoding="utf-8"))["folds"] for d in dirs]
    for d, s, c in zip(dirs[1:], splits[1:], cfgs[1:], strict=True):
        if s != splits[0]:
            raise CadxDataError("its folds differ from the first run's (ensembles need the same splits)",
                                path=d / "splits.json", field="folds")
        if c.input.size_tuple() != cfgs[0].input.size_tuple():
            raise CadxDataError(f"input.size {c.input.size} differs from the first run's {cfgs[0].input.size}",
                                path=d / "config.yaml", field="input.size")
    datas: list[SegData] = [build_seg_data(load_cohort(c), c) for c in cfgs]
    ids = list(datas[0].store.study_ids)
    for d, data in zip(dirs[1:], datas[1:], strict=True):
        if list(data.store.study_ids) != ids:
            raise CadxDataError("its cohort's studies differ from the first run's", path=d, field="study_id")
    cfg0, s0 = cfgs[0], seg_settings(cfgs[0])
    sigmas = list(s0.test_noise)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for fold in splits[0]:
        k = int(fold["fold"])
        test = set(fold["test"])
        members = [load_models([d / f"fold_{k}"], int(data.store.images.shape[1]))[0] for d, data in zip(dirs, datas,
                                                                                                       strict=True)]
        train = set(fold["train"])
        train_studies = [i for i, p in enumerate(datas[0].store.patient_ids) if p in train]
        train_sd = [float(data.store.images[np.isin(data.store.study, train_studies)].std()) for data in datas]
        masks: dict[str, np.ndarray] = {}
        gen = torch.Generator().manual_seed(int(cfg0.seed) * 1000 + k)
        for s, pid in enumerate(datas[0].store.patient_ids):
            if pid not in test:
                continue
            gt = datas[0].gt[s]
            row: dict[str, Any] = {"study_id": ids[s], "patient_id": pid, "fold": k, "y_true": None}
            for j, sigma in enumerate([0.0, *sigmas]):
                probs = []
                for cfg, data, models, sd in zip(cfgs, datas, members, train_sd, strict=True):
                    x = data.store.images[data.study_items(s)]
                    if sigma > 0:
                        x = x + torch.randn(x.shape, generator=gen, dtype=x.dtype) * float(sigma * sd)
                    probs.append(_lesion_proba(cfg, models, x))
                if len({p.shape for p in probs}) != 1:
                    raise CadxDataError(f"members give different slice shapes {[p.shape for p in probs]}",
                                        path=ids[s], field="slices")
                mask = final_masks(np.mean(probs, axis=0), gt.shape, 0, s0.largest_component, s0.connectivity)
                if j == 0:
                    masks[f"s{s}"] = mask
                    row.update({"n_slices": int(gt.shape[0]) if gt.ndim == 3 else 1,
                                "pred_voxels": int(mask.sum()), "dice": dice(mask, gt),
                                "lesion_voxels": int(gt.sum())})
                else:
                    row[noise_column(sigma)] = dice(mask, gt)
            rows.append(row)
        (out / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        save_masks(out / f"fold_{k}" / "pred_masks.npz", masks)
    df = pd.DataFrame(rows)
    nb = n_bootstrap if n_bootstrap is not None else cfg0.eval.bootstrap
    metrics = evaluate_seg(df, [], nb, cfg0.seed if seed is None else seed)
    metrics["run"] = {"name": f"ensemble of {len(dirs)} segmentation runs", "model": "ensemble",
                      "members": [{"run": str(d), "dice_mean": json.loads((d / "metrics.json").read_text(
                          encoding="utf-8"))["pooled"].get("dice_mean") if (d / "metrics.json").is_file() else None}
                          for d in dirs],
                      "folds": len(splits[0]), "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / "predictions.csv", df.to_csv(index=False))
    atomic_write_json(out / "metrics.json", metrics)
    lines = [f"# Ensemble of {len(dirs)} segmentation runs", "",
             "Equal-weight mean of the members' out-of-fold lesion probabilities per slice (each member predicts from "
             "its own input), then the first member's post-processing: decision at 0.5, largest connected component "
             f"({'on' if s0.largest_component else 'off'}, connectivity {s0.connectivity}); nothing fitted. Members "
             "(mean Dice):", ""]
    lines += [f"- `{m['run']}`: {m['dice_mean']}" for m in metrics["run"]["members"]]
    atomic_write_text(out / "notes.md", "\n".join(lines) + "\n")
    if report:
        write_run_report([out], out)
    return metrics
