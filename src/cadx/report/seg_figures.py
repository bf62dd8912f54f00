"""Report material of a segmentation run: Dice vs lesion size (SCNet Fig. 5), overlays (Fig. 4), tables, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cadx.config import ExperimentConfig
from cadx.data.study import Cohort
from cadx.pipeline.seg_items import SegData, lesion_channel, load_study_arrays, num_seg_classes, seg_settings
from cadx.utils import save_figure

__all__ = ["dice_size_png", "overlay_png", "pick_cases", "seg_extra", "segmentation_notes"]


def _figure(width: float, height: float) -> Figure:
    """A matplotlib Figure on its own Agg canvas (pyplot's global state is not touched, as in report.figures)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def dice_size_png(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Bar per study (sorted by ground-truth lesion size) of its Dice, lesion size on a second axis."""
    d = df[df["lesion_voxels"] > 0].sort_values("lesion_voxels")
    fig = _figure(max(5.0, 0.12 * len(d) + 2), 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(d))
    ax.bar(x, d["dice"].to_numpy(float), color="#4c72b0", label="Dice")
    ax.set_ylim(0, 1)
    ax.set_xlabel("studies with a lesion, by lesion size (ground-truth voxels)")
    ax.set_ylabel("Dice")
    ax2 = ax.twinx()
    ax2.plot(x, d["lesion_voxels"].to_numpy(float), color="#dd8452", marker=".", label="lesion size")
    ax2.set_ylabel("lesion voxels")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def pick_cases(df: pd.DataFrame, n: int) -> list[str]:
    """``n`` studies with a lesion spread over the Dice range (worst … best), by study id."""
    d = df[df["lesion_voxels"] > 0].sort_values("dice")
    if n <= 0 or d.empty:
        return []
    idx = np.unique(np.linspace(0, len(d) - 1, min(n, len(d))).round().astype(int))
    return [str(v) for v in d["study_id"].to_numpy()[idx]]


def overlay_png(cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> Path:
    """One panel per case ``(title, image 2D, ground truth 2D, prediction 2D)``: ground truth green, prediction
    red contours."""
    fig = _figure(2.6 * len(cases), 2.9)
    axes = fig.subplots(1, len(cases), squeeze=False)
    for ax, (title, img, gt, pred) in zip(axes[0], cases, strict=True):
        ax.imshow(img, cmap="gray")
        for m, col in ((gt, "#2ca02c"), (pred, "#d62728")):
            if m.any() and not m.all():
                ax.contour(m.astype(float), levels=[0.5], colors=col, linewidths=1.0)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle("green: ground truth, red: prediction", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _overlay_cases(cfg: ExperimentConfig, cohort: Cohort, df: pd.DataFrame, out_dir: Path
                   ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    seg = seg_settings(cfg)
    cases = []
    for sid in pick_cases(df, seg.overlays):
        row = df[df["study_id"] == sid].iloc[0]
        npz = out_dir / f"fold_{int(row['fold'])}" / "pred_masks.npz"
        idx = cohort.study_ids.index(sid)
        if not npz.is_file():
            continue
        with np.load(npz) as z:
            if f"s{idx}" not in z:
                continue
            pred = z[f"s{idx}"]
        arr, gt = load_study_arrays(cohort[idx], cfg.input)
        ch = min(seg.tissue_channel, arr.shape[0] - 1)
        if gt.ndim == 3:
            zi = int(gt.reshape(gt.shape[0], -1).sum(1).argmax())
            img, gt2, pr2 = arr[ch, zi], gt[zi], pred[zi]
            where = f" z={zi}"
        else:
            img, gt2, pr2 = arr[ch], gt, pred
            where = ""
        cases.append((f"{sid}{where}\nDice {float(row['dice']):.2f}", img, gt2, pr2))
    return cases


def seg_extra(cfg: ExperimentConfig, cohort: Cohort, data: SegData, df: pd.DataFrame, metrics: dict[str, Any],
              out_dir: Path) -> dict[str, Any]:
    """Tables and figures for ``metrics.json`` ``extra`` (figures written under ``out_dir/figures``)."""
    pooled = metrics["pooled"]
    ci = pooled.get("ci", {})
    d = df["dice"].to_numpy(float)
    has = df["lesion_voxels"].to_numpy() > 0
    rows = [["all studies", len(df), pooled.get("dice_mean"), ci.get("dice_mean", [None, None])[0],
             ci.get("dice_mean", [None, None])[1], pooled.get("dice_median"),
             ci.get("dice_median", [None, None])[0], ci.get("dice_median", [None, None])[1]]]
    if has.any() and (~has).any():
        rows.append(["with a lesion", int(has.sum()), float(d[has].mean()), None, None, float(np.median(d[has])),
                     None, None])
        rows.append(["without a lesion", int((~has).sum()), float(d[~has].mean()), None, None,
                     float(np.median(d[~has])), None, None])
    tables = [{"title": "Dice per volume", "columns": ["studies", "n", "mean", "mean CI lo", "mean CI hi", "median",
                                                       "median CI lo", "median CI hi"], "rows": rows,
               "note": "cadx.evaluation.dice at the original resolution (both empty = 1, one empty = 0); 95% "
                       "patient-bootstrap CIs on all studies"}]
    if has.sum() >= 3:
        sub = df[has].copy()
        sub["tercile"] = pd.qcut(sub["lesion_voxels"].rank(method="first"), 3, labels=["small", "medium", "large"])
        trows = [[str(t), len(g), int(g["lesion_voxels"].min()), int(g["lesion_voxels"].max()),
                  float(g["dice"].mean()), float(g["dice"].median())]
                 for t, g in sub.groupby("tercile", observed=True)]
        tables.append({"title": "Dice by lesion size (terciles of ground-truth voxels)",
                       "columns": ["size", "n", "min voxels", "max voxels", "mean Dice", "median Dice"],
                       "rows": trows})
    if "vote_fallback" in df.columns:
        tables.append({"title": "Classification vote", "columns": ["studies", "fallback (no lesion slice)",
                                                                   "mean voting slices"],
                       "rows": [[len(df), int(df["vote_fallback"].astype(bool).sum()),
                                 float(df["vote_slices"].mean())]]})
    figs = []
    if has.any():
        p = dice_size_png(df, out_dir / "figures" / "dice_vs_lesion_size.png",
                          f"{cfg.name}: Dice per study vs lesion size")
        figs.append({"title": "Dice per study against lesion size (SCNet Fig. 5)", "path": str(p.relative_to(out_dir))})
    cases = _overlay_cases(cfg, cohort, df, out_dir)
    if cases:
        p = overlay_png(cases, out_dir / "figures" / "overlays.png")
        figs.append({"title": "Prediction vs ground truth (SCNet Fig. 4)", "path": str(p.relative_to(out_dir))})
    return {"tables": tables, "figures": figs,
            "segmentation": {**seg_settings(cfg).model_dump(), "num_seg_classes": num_seg_classes(cfg),
                             "lesion_channel": lesion_channel(cfg), "items": len(data.store)}}


def segmentation_notes(cfg: ExperimentConfig, data: SegData, metrics: dict[str, Any]) -> str:
    """The segmentation choices of the run, for ``notes.md``."""
    s = seg_settings(cfg)
    nsc = num_seg_classes(cfg)
    two_step = cfg.model.kwargs.get("two_step", True) if cfg.model.name == "scnet" else None
    lines = ["", "## Segmentation", "",
             f"- Items: every slice of each volume (2D images: the whole image), resized to {cfg.input.size} "
             f"(masks nearest); {len(data.store)} items. `input.roi` is not used.",
             "- Targets: " + ("background 0 / tissue 1 / lesion 2, tissue = normalised channel "
                               f"{s.tissue_channel} > {s.tissue_threshold} (an intensity mask of the head; the lesion "
                               "overrides it)" if s.tissue_class else "background 0 / lesion 1")
             + f"; the model has S = {nsc} output channel(s), lesion = channel {lesion_channel(cfg)}"
             + (" (sigmoid > 0.5)." if nsc == 1 else " (argmax)."),
             f"- Training slices: tissue fraction ≥ {s.min_tissue_fraction} (lesion slices always kept); each lesion "
             f"slice repeated {s.oversample_lesion}× (copies differ through the on-the-fly augmentation: "
             + ("on" if cfg.input.augment.enabled else "off") + ").",
             "- Test: probabilities resized back to the original in-plane size, thresholded, slices stacked; "
             + (f"largest {'3D' if data.gt and data.gt[0].ndim == 3 else '2D'} connected component kept "
                f"(connectivity {s.connectivity})" if s.largest_component else "no connected-component filtering")
             + ".",
             "- Dice per volume = cadx.evaluation.dice (both empty → 1.0, one empty → 0.0); pooled mean/median "
             "with 95% patient-bootstrap CIs.",
             ]
    if two_step is not None:
        lines.append(f"- SCNet 2-step segmentation: {'on' if two_step else 'off (ternary loss only)'}; objective "
                     f"{list(cfg.objective)}. ClsNet trains on every slice with the study's label (the paper does not "
                     "say which slices train it).")
    if cfg.task.classification:
        lines.append(f"- Study label: majority vote of the slices with ≥ {s.vote_min_pixels} predicted lesion "
                     "pixels (after post-processing); when no slice has one, all slices vote (`vote_fallback`). "
                     "Probabilities = vote fractions; ties → higher mean probability.")
    sec = metrics.get("run", {}).get("seconds")
    lines.append(f"- Wall time of the run: {sec} s.")
    return "\n".join(lines) + "\n"
