"""Tables, figures and notes of the anatomy study (Khan & Yong 2017): Table II and Figs. 7–11 of
:func:`~cadx.studies.anatomy.study.run_anatomy_study`, Fig. 13 of
:func:`~cadx.studies.anatomy.curve.run_learning_curve`; notes and figure files through :mod:`cadx.report.studies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

from cadx.config import ExperimentConfig
from cadx.explain import feature_maps_figure, first_conv, first_layer_filters_figure
from cadx.report import write_report
from cadx.report.studies import new_figure, save_figure, write_study_notes
from cadx.studies.anatomy.variants import NETS, PAPER_ORDER, PAPER_TABLE_II, InputMode, net_input_size
from cadx.training.trainer import load_module
from cadx.utils import atomic_write_json

__all__ = ["curve_figure", "net_figures", "study_notes", "write_learning_curve", "write_table_ii"]


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "not run"
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def net_figures(run_dir: Path, net: str, image: np.ndarray, fig_dir: Path, max_maps: int = 32) -> list[dict[str, str]]:
    """Figs. 7–11: first-layer filters of the trained net and the feature maps of its first convolution (after the
    in-place ReLU/tanh, Caffe's ``conv1`` blob) for ``image`` ``(C, H, W)``. Returns ``extra.figures`` entries
    (paths relative to ``fig_dir.parent``)."""
    model, _ = load_module(run_dir / "fold_0" / "checkpoint_best.ckpt")
    label = NETS[net]["label"]
    conv_name, conv = first_conv(model)
    f1 = first_layer_filters_figure(model, fig_dir / f"filters_{net}.png",
                                    title=f"{label}: first-layer filters {tuple(conv.weight.shape)}")
    f2 = fig_dir / f"feature_maps_{net}.png"
    feature_maps_figure(model, image, conv_name, f2, max_maps=max_maps,
                        title=f"{label}: feature maps of {conv_name} (first {max_maps}) for one test image")
    rel = fig_dir.name
    return [{"title": f"{label}: first-layer filters", "path": f"{rel}/{f1.name}"},
            {"title": f"{label}: first-convolution feature maps", "path": f"{rel}/{f2.name}"}]


def _ordering(df: pd.DataFrame) -> tuple[list[str], bool]:
    present = [n for n in PAPER_ORDER if n in set(df["net"])]
    acc = df.set_index("net")["test_accuracy"]
    ours = sorted(present, key=lambda n: -float(acc[n]))
    return ours, ours == present


def study_notes(cfg: ExperimentConfig, df: pd.DataFrame, input_mode: InputMode, sizes: Mapping[str, int | None],
                cohort_info: Mapping[str, Any], wall_s: float) -> list[str]:
    """The bullets of ``notes.md`` of the combined folder: grouping, inputs, reductions, the ordering against the
    paper."""
    ours, holds = _ordering(df)
    k = 6
    lines = [
        "- MedNIST has **no patient ids**. Images were grouped into near-duplicate groups (perceptual hash, Hamming "
        f"≤ {cohort_info.get('dedup_threshold')} bits, confirmed by NCC ≥ {cohort_info.get('dedup_min_ncc')}; "
        f"{cohort_info.get('dedup_groups')} groups for 12000 images, {cohort_info.get('mixed_label_groups')} with "
        "mixed labels) and the group is used as the patient for every split, so no near-duplicate straddles "
        "train/val/test.",
        f"- Fixed stratified holdout over the groups (seed {cfg.seed}): test fraction {cfg.cv.test_fraction}, "
        f"validation fraction {cfg.cv.val_fraction} of the rest; reduced run, images per part (whole groups, "
        "class-balanced; groups larger than a class quota left out): "
        + (", ".join(f"{p} {n}" for p, n in sizes.items() if n is not None) or "none (full split)") + ". "
        "All nets share the same split (the same `splits.json`).",
        f"- Training (all nets alike): {cfg.optim.name.upper()} lr {cfg.optim.lr}, momentum {cfg.optim.momentum}, "
        f"weight decay {cfg.optim.weight_decay} (paper Table I), {cfg.train.epochs} epochs (paper: 30–60), batch "
        f"{cfg.train.batch_size}, no augmentation, per-image min-max intensities; the tested checkpoint is the epoch "
        "with the lowest validation loss. GoogLeNet trains with its two auxiliary heads (0.3-weighted CE); its "
        "validation loss is the main head's CE.",
        f"- Input mode `{input_mode}`: " + ", ".join(
            f"{NETS[n]['label']} {net_input_size(n, input_mode)} px" for n in df["net"]) + " (from the 64 px "
        "images; `paper` resizes to 227/224/32 px inside each model, `reduced` keeps ≈ native size for CPU runs).",
        "- Runtime = training wall time (sum of epoch times incl. validation) on this machine; not comparable to "
        "the paper's GPU seconds, only between nets.",
        f"- Test accuracy ordering here: {' > '.join(NETS[n]['label'] for n in ours)}; the paper's: "
        f"{' > '.join(NETS[n]['label'] for n in PAPER_ORDER if n in ours)} → "
        + ("**holds**." if holds else "**does not hold**."),
    ]
    for _, r in df.iterrows():
        if r["val_accuracy"] <= 1 / k + 0.05:
            lines.append(f"- {NETS[r['net']]['label']} stayed at chance level on validation "
                         f"({100 * r['val_accuracy']:.1f} %, chance {100 / k:.1f} %): it did not start to learn "
                         "within this budget (from-scratch deep nets at lr 0.01 need more updates).")
    if "naive_test_accuracy" in df.columns:
        gap = (df["naive_test_accuracy"].astype(float) - df["test_accuracy"]) * 100
        lines.append("- Naive per-image split (`data.options.group: image`, same sizes, leaky: near-duplicates of "
                     "training images are in its test set): accuracy minus grouped accuracy per net: "
                     + ", ".join(f"{NETS[n]['label']} {g:+.1f} pp"
                                 for n, g in zip(df["net"], gap, strict=True) if np.isfinite(g)) + ".")
    lines.append(f"- Wall time: grouped-split runs {df['fold_seconds'].sum():.0f} s (train + test, sum over nets)"
                 + (f", naive-split training {df['naive_runtime_s'].sum():.0f} s" if "naive_runtime_s" in df.columns
                    else "") + f"; this call {wall_s:.0f} s (finished runs are reused).")
    return lines


def _table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    cols = ["Model", "Input px", "Runtime (s)", "Epochs", "Validation loss", "Validation accuracy (%)",
            "Test accuracy (%) [95% CI]"]
    naive = "naive_test_accuracy" in df.columns
    if naive:
        cols.append("Naive per-image split test accuracy (%) [95% CI]")
    rows = []
    for _, r in df.iterrows():
        row = [r["model"], int(r["input_px"]), r["runtime_s"], int(r["epochs"]), round(float(r["val_loss"]), 3),
               round(100 * float(r["val_accuracy"]), 1), _fmt_ci(r["test_accuracy"], r["test_ci_low"],
                                                                 r["test_ci_high"])]
        if naive:
            row.append(_fmt_ci(r["naive_test_accuracy"], r["naive_ci_low"], r["naive_ci_high"]))
        rows.append(row)
    return cols, rows


def write_table_ii(cfg: ExperimentConfig, out: Path, df: pd.DataFrame, figs: list[dict[str, str]],
                    input_mode: InputMode, sizes: Mapping[str, int | None], info: Mapping[str, Any],
                    wall_s: float) -> None:
    cols, rows = _table_rows(df)
    paper = [[NETS[n]["label"], *PAPER_TABLE_II[n]] for n in PAPER_ORDER if n in set(df["net"])]
    tables = [{"title": "Table II on MedNIST (grouped holdout; this run)", "columns": cols, "rows": rows},
              {"title": "Table II as printed in the paper (its own 5-anatomy NLM data, GPU runtimes; for reference)",
               "columns": ["Model", "Runtime (s)", "Validation loss", "Validation accuracy (%)", "Test accuracy (%)"],
               "rows": paper}]
    i_best = int(np.argmax(df["test_accuracy"].to_numpy(dtype=float)))
    metrics = {"best": {"net": str(df["net"].iloc[i_best]),
                        "test_accuracy": float(df["test_accuracy"].iloc[i_best])},
               "run": {"name": cfg.name, "dataset": cfg.data.dataset, "model": "; ".join(df["model"]),
                       "folds": 1, "seconds": round(wall_s, 1), "input_mode": input_mode,
                       "sizes": {k: v for k, v in sizes.items() if v is not None}},
               "extra": {"tables": tables, "figures": figs}}
    atomic_write_json(out / "metrics.json", metrics)
    write_study_notes(out, f"{cfg.name}: paper 001 Table II on MedNIST",
                      [(None, study_notes(cfg, df, input_mode, sizes, info, wall_s))])
    write_report([out], out)


def curve_figure(df: pd.DataFrame, path: Path) -> Path:
    """Accuracy (with 95 % CI bars) against training images, one line per net (Fig. 13)."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for net in [n for n in PAPER_ORDER if n in set(df["net"])]:
        d = df[df["net"] == net].sort_values("size_images")
        x = d["train_images"].astype(float)
        y = 100 * d["accuracy"].astype(float)
        err = [y - 100 * d["ci_low"].astype(float), 100 * d["ci_high"].astype(float) - y]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=NETS[net]["label"])
    ax.set_xscale("log")
    ticks = sorted({int(v) for v in df["train_images"].astype(float)})
    ax.xaxis.set_major_locator(FixedLocator(ticks))   # label the measured sizes, not log-decade minors
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs training-set size (fixed grouped test set)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def write_learning_curve(cfg: ExperimentConfig, out: Path, df: pd.DataFrame, fig: Path, input_mode: InputMode,
           wall_s: float) -> None:
    cols = ["Model", "Training groups", "Training images", "Test accuracy (%) [95% CI]", "Seconds"]
    rows = [[NETS[r["net"]]["label"], int(r["train_groups"]), int(r["train_images"]),
             f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]", r["seconds"]]
            for _, r in df.sort_values(["net", "size_images"]).iterrows()]
    metrics = {"run": {"name": f"{cfg.name}_learning_curve", "dataset": cfg.data.dataset,
                       "model": ", ".join(sorted(set(df["net"]))), "folds": 1, "seconds": round(wall_s, 1),
                       "input_mode": input_mode},
               "extra": {"tables": [{"title": "Fig. 13: accuracy against training-set size", "columns": cols,
                                     "rows": rows}],
                         "figures": [{"title": "Fig. 13: accuracy against training-set size", "path": fig.name}]}}
    atomic_write_json(out / "metrics.json", metrics)
    test_n = int(df["test_images"].iloc[0]) if len(df) else 0
    notes = ["- Sizes count images, drawn as whole near-duplicate **groups** (MedNIST has no patient ids; groups "
             "stand in for patients), balanced over the classes; exact counts per size are in the table.",
             f"- {cfg.cv.val_fraction:.0%} of each size's images (whole groups) validate (best validation loss "
             f"checkpoint); the test set is fixed ({test_n} images) for every size and net.",
             f"- {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {cfg.optim.name} lr {cfg.optim.lr}; input "
             f"mode `{input_mode}`. Wall time {wall_s:.0f} s."]
    write_study_notes(out, f"{cfg.name}: accuracy against training-set size (paper 001 Fig. 13)", [(None, notes)])
    write_report([out], out)
