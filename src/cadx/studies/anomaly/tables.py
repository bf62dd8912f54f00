"""The A.9 anomaly study's outputs: per-image rows, the ratio table (the paper's Table 2 layout), pixel AUROC,
heatmap overlays, ``report.md`` and ``metrics.json``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from cadx.evaluation.anomaly import box_ratio, lesion_boxes, pixel_auroc, ratio_table
from cadx.explain.anomaly import SCORES, Heatmaps
from cadx.pipeline.normal_patches import Slice2D
from cadx.report.studies import markdown_table, new_figure, save_figure, write_study_notes
from cadx.studies.anomaly.variants import MAPS, AnomalyConfig
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["PAPER_TABLE2", "image_rows", "overlay_figure", "pooled_auroc", "write_outputs"]

#: Table 2 of the paper (non-averaged heatmaps, FOV 256, mask 64 / 128): mean ratio (SD).
PAPER_TABLE2 = {"mse": ((1.93, 0.87), (2.11, 1.01)), "critic": ((1.47, 0.38), (1.46, 0.34)),
                "dmse": ((2.54, 2.92), (2.77, 1.79))}


def image_rows(sl: Slice2D, hm: Heatmaps, fg_threshold: float) -> list[dict[str, Any]]:
    """One row per (score, map) of a test slice: ``ratio`` (inside ÷ outside the lesion boxes, foreground = image >
    ``fg_threshold``), ``auroc`` (pixel level against the mask), ``covered_lesion`` (fraction of lesion pixels with a
    finite heatmap value)."""
    fg = sl.image > fg_threshold
    boxes = lesion_boxes(sl.lesion)
    rows = []
    for kind in MAPS:
        maps = hm.raw if kind == "raw" else hm.averaged
        for score in SCORES:
            m = maps[score]
            covered = float(np.isfinite(m)[sl.lesion].mean()) if sl.lesion.any() else float("nan")
            rows.append({"study_id": sl.study_id, "patient_id": sl.patient_id, "slice": sl.index, "label": sl.label,
                         "lesion_pixels": int(sl.lesion.sum()), "boxes": len(boxes), "score": score, "map": kind,
                         "ratio": box_ratio(m, boxes, fg), "auroc": pixel_auroc(m, sl.lesion, fg),
                         "covered_lesion": covered})
    return rows


def pooled_auroc(slices: Sequence[Slice2D], heatmaps: Sequence[Heatmaps], fg_threshold: float
                 ) -> dict[str, dict[str, float]]:
    """Pixel AUROC with every test slice's foreground pixels pooled, per map and score."""
    if not slices:
        return {}
    lesion = np.stack([s.lesion for s in slices])
    fg = np.stack([s.image > fg_threshold for s in slices])
    out: dict[str, dict[str, float]] = {}
    for kind in MAPS:
        out[kind] = {score: pixel_auroc(np.stack([(h.raw if kind == "raw" else h.averaged)[score]
                                                  for h in heatmaps]), lesion, fg) for score in SCORES}
    return out


def overlay_figure(items: Sequence[tuple[Slice2D, Heatmaps]], path: Path) -> Path:
    """One row per slice: the image with its lesion boxes, then raw MSE, critic and DMSE heatmaps and the
    averaged DMSE heatmap over the image (NaN borders transparent)."""
    cols = [("image", None, None), ("MSE (raw)", "raw", "mse"), ("critic (raw)", "raw", "critic"),
            ("DMSE (raw)", "raw", "dmse"), ("DMSE (averaged)", "averaged", "dmse")]
    fig = new_figure(2.6 * len(cols), 2.7 * max(len(items), 1))
    for r, (sl, hm) in enumerate(items):
        for c, (title, kind, score) in enumerate(cols):
            ax = fig.add_subplot(len(items), len(cols), r * len(cols) + c + 1)
            ax.imshow(sl.image, cmap="gray", vmin=0, vmax=1)
            if kind is not None and score is not None:
                m = (hm.raw if kind == "raw" else hm.averaged)[score]
                ax.imshow(np.ma.masked_invalid(m), cmap="inferno", alpha=0.55)
            for y0, x0, y1, x1 in lesion_boxes(sl.lesion):
                ax.add_patch(_rect(x0, y0, x1, y1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if r == 0 else "", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{sl.study_id}\nslice {sl.index}", fontsize=7)
    return save_figure(fig, path)


def _rect(x0: int, y0: int, x1: int, y1: int) -> Rectangle:
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1)


def write_outputs(cfg: AnomalyConfig, out: Path, rows: list[dict[str, Any]], pooled: dict[str, dict[str, float]],
                  history: pd.DataFrame, info: dict[str, Any], figures: list[str]) -> dict[str, Any]:
    """Write ``per_image.csv``, ``ratio_table.csv``, ``metrics.json`` and ``report.md``; return the metrics dict."""
    per_image = pd.DataFrame(rows)
    atomic_write_text(out / "per_image.csv", per_image.to_csv(index=False))
    table = ratio_table(per_image) if len(per_image) else pd.DataFrame(
        columns=["score", "map", "images", "excluded", "mean", "sd"])
    auroc = (per_image.groupby(["score", "map"], sort=False)["auroc"].agg(["mean", "std"]).reset_index()
             if len(per_image) else pd.DataFrame(columns=["score", "map", "mean", "std"]))
    table = table.merge(auroc.rename(columns={"mean": "auroc_mean", "std": "auroc_sd"}), on=["score", "map"])
    table["auroc_pooled"] = [pooled.get(m, {}).get(s, float("nan")) for s, m in zip(table["score"], table["map"],
                                                                                      strict=True)]
    atomic_write_text(out / "ratio_table.csv", table.to_csv(index=False))
    metrics = {"study": "anomaly", "name": cfg.name, "config": cfg.model_dump(mode="json"), **info,
               "table": table.to_dict("records"), "history": history.to_dict("records"), "figures": figures}
    atomic_write_json(out / "metrics.json", metrics)
    m, d = cfg.model, cfg.data
    tab_lines = markdown_table(
        ["score", "map", "images", "excluded", "ratio mean", "ratio SD", "pixel AUROC (mean over images)",
         "pixel AUROC (pooled)"],
        [[r["score"], r["map"], r["images"], r["excluded"], r["mean"], r["sd"], r["auroc_mean"], r["auroc_pooled"]]
         for r in table.to_dict("records")])
    paper = markdown_table(["score", "FOV 256 / mask 64", "FOV 256 / mask 128"],
                           [[s.upper(), f"{a[0]:.2f} ({a[1]:.2f})", f"{b[0]:.2f} ({b[1]:.2f})"]
                            for s, (a, b) in PAPER_TABLE2.items()])
    sections: list[tuple[str | None, Any]] = [
        (None, [f"Cohort `{d.dataset}` ({d.root}), slices {d.size}×{d.size} px, field of view {m.fov} px, "
                f"heatmap hole {m.hole} px, stride {cfg.eval.stride} px, generator width {m.width}, contextual "
                f"attention {'on' if m.contextual_attention else 'off'}.",
                f"Patients: {info['patients']['train']} train (normal slices: {info['normal_slices']['train']}), "
                f"{info['patients']['val']} validation (normal slices: {info['normal_slices']['val']}; they chose "
                f"the epoch: {info['best_epoch']}), {info['patients']['test']} test "
                f"({info['test_slices']} lesion slices evaluated). Test patients never give a training patch.",
                f"Wall time: {info['seconds']['total']:.0f} s (training {info['seconds']['train']:.0f} s, "
                f"heatmaps {info['seconds']['heatmaps']:.0f} s)."]),
        ("Inside/outside lesion-box ratio and pixel AUROC", [
            "Ratio = mean heatmap inside the lesion boxes ÷ mean outside, foreground pixels covered by the heatmap "
            "only; mean and SD (ddof 1) over test slices (the paper's Table 2 layout). `raw` = non-averaged maps "
            "(the paper's Table 2), `averaged` = coverage-averaged. Excluded = slices whose box or outside has no "
            "covered foreground pixel.", "", *tab_lines]),
        ("The paper's Table 2 (DBT, non-averaged, mean ratio (SD))", paper),
        ("Training", [f"{len(history)} epochs × {cfg.train.iters_per_epoch} iterations (batch "
                      f"{cfg.train.batch_size}, n_critic {cfg.train.n_critic}); last row: "
                      + (", ".join(f"{k} {v:.4g}" for k, v in history.iloc[-1].items()) if len(history) else "–")]),
        ("Figures", [f"![]({f})" for f in figures] or ["–"]),
        ("Files", ["`per_image.csv` (one row per slice × score × map), `ratio_table.csv`, `splits.json`, "
                   "`model/history.csv`, `model/checkpoint_{best,last}.pt`, `metrics.json`."]),
    ]
    write_study_notes(out, f"Thesis A.9 anomaly heatmaps: {cfg.name}", sections, filename="report.md")
    return metrics
