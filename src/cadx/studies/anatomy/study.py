"""Paper 001 (Khan & Yong 2017, "A Deep Learning Architecture for Classifying Medical Images of Anatomy Object"):
the proposed anatomy CNN against LeNet, AlexNet and GoogLeNet — Table II and Figs. 7–11 — on MedNIST.

:func:`run_anatomy_study` trains every net through the engine (:func:`cadx.runs.cv.run_cv`, one run folder per
net under ``out_dir/runs``) on one fixed group-aware split (written to each run's ``splits.json`` first, so all nets
share it), optionally again on the naive per-image split, and writes a combined folder ``out_dir`` with Table II
(``table_ii.csv`` and ``metrics.json`` ``extra.tables``), the first-layer filters and feature maps of each trained
net (``extra.figures``), ``notes.md`` and the report. Nets, input sizes and the split: :mod:`.anatomy_setup`.

Table II columns: runtime = training wall time (sum of the epochs' seconds, validation included, as DIGITS reports),
validation loss/accuracy at the epoch whose checkpoint is tested (best validation loss), test accuracy with a
95 % group-bootstrap CI. The paper does not say which epoch it reports; we test the best-validation-loss epoch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import ExperimentConfig
from cadx.runs.cv import run_cv
from cadx.runs.folder import finished_run, load_cohort
from cadx.studies.anatomy.setup import (
    NETS,
    PAPER_ORDER,
    PAPER_TABLE_II,
    InputMode,
    fixed_split,
    naive_config,
    net_config,
    net_input_size,
)
from cadx.utils import atomic_write_json, atomic_write_text, read_json

__all__ = ["net_figures", "run_anatomy_study", "run_summary", "study_notes"]


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "not run"
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Table II numbers of one engine run folder (one holdout fold)."""
    m = read_json(run_dir / "metrics.json")
    hist = pd.read_csv(run_dir / "fold_0" / "history.csv")
    done = read_json(run_dir / "fold_0" / "DONE")
    best = int(done.get("best_epoch", -1))
    row = hist[hist["epoch"] == best]
    row = row if len(row) else hist.tail(1)
    p = m["pooled"]
    lo, hi = p.get("ci", {}).get("accuracy", [float("nan"), float("nan")])
    return {"runtime_s": round(float(hist["seconds"].sum()), 1), "epochs": len(hist), "best_epoch": best,
            "val_loss": float(row["val_loss"].iloc[0]), "val_accuracy": float(row["val_accuracy"].iloc[0]),
            "test_accuracy": float(p["accuracy"]), "test_ci_low": float(lo), "test_ci_high": float(hi),
            "test_auc": float(p.get("auc") if p.get("auc") is not None else "nan"),
            "train_items": int(done.get("train_items", 0)),
            "val_items": int(done.get("val_items", 0)), "test_items": int(done.get("test_items", 0)),
            "test_groups": int(p.get("n_patients", 0)), "fold_seconds": float(done.get("seconds", float("nan")))}


def _run_net(cfg: ExperimentConfig, cohort: Any, sizes: Mapping[str, int] | None, run_dir: Path,
             resume: bool) -> dict[str, Any]:
    """Write the shared fixed split into ``run_dir`` (unless resuming) and run the engine there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and finished_run(cfg, run_dir):
        return run_summary(run_dir)
    if not (run_dir / "splits.json").is_file():
        fixed_split(cohort, cfg, sizes).save(run_dir / "splits.json")
    run_cv(cfg, run_dir, resume=resume)
    return run_summary(run_dir)


def net_figures(run_dir: Path, net: str, image: np.ndarray, fig_dir: Path, max_maps: int = 32) -> list[dict[str, str]]:
    """Figs. 7–11: first-layer filters of the trained net and the feature maps of its first convolution (after the
    in-place ReLU/tanh, Caffe's ``conv1`` blob) for ``image`` ``(C, H, W)``. Returns ``extra.figures`` entries
    (paths relative to ``fig_dir.parent``)."""
    from cadx.explain import feature_maps_figure, first_conv, first_layer_filters_figure
    from cadx.training.trainer import load_module

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
                cohort_info: Mapping[str, Any], wall_s: float) -> str:
    """``notes.md`` of the combined folder: grouping, inputs, reductions, the ordering against the paper."""
    ours, holds = _ordering(df)
    k = 6
    lines = [
        f"# {cfg.name}: paper 001 Table II on MedNIST", "",
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
    return "\n".join(lines) + "\n"


def run_anatomy_study(cfg: ExperimentConfig, out_dir: str | Path, nets: Sequence[str] = tuple(PAPER_ORDER),
                      naive_split: bool = True, input_mode: InputMode = "paper",
                      sizes: Mapping[str, int] | None = None,
                      net_overrides: Mapping[str, Mapping[str, Any]] | None = None, resume: bool = False,
                      figures: bool = True, naive_nets: Sequence[str] | None = None) -> pd.DataFrame:
    """Train ``nets`` on the fixed group-aware split (and the naive per-image split) and write Table II.

    ``sizes``: optional ``{"train", "val", "test": images}``: a reduced class-balanced split of whole groups.
    ``net_overrides``: extra model kwargs per net. ``naive_nets``: the nets that also get the naive split (default:
    all of ``nets`` when ``naive_split``; the others show "not run"). Run folders: ``out_dir/runs/<net>`` and
    ``out_dir/runs/<net>_naive``. Returns Table II as a DataFrame (one row per net, fractions in [0, 1]).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    sizes = dict(sizes or {})
    cohort = load_cohort(cfg, out)
    naive_cohort = load_cohort(naive_config(cfg), out) if naive_split else None
    rows: list[dict[str, Any]] = []
    figs: list[dict[str, str]] = []
    split = fixed_split(cohort, cfg, sizes)
    # the naive split gets as many images per part as the grouped one (its patients are single images)
    naive_sizes = {p: len(split[0].indices(cohort, p)) for p in sizes}
    image = _example_image(cfg, cohort, split) if figures else None
    for net in nets:
        over = (net_overrides or {}).get(net)
        ncfg = net_config(cfg, net, input_mode, over)
        row: dict[str, Any] = {"net": net, "model": NETS[net]["label"],
                               "input_px": net_input_size(net, input_mode)}
        row.update(_run_net(ncfg, cohort, sizes, out / "runs" / net, resume))
        if naive_cohort is not None and (naive_nets is None or net in naive_nets):
            ncfg_naive = net_config(naive_config(cfg), net, input_mode, over)
            s = _run_net(ncfg_naive, naive_cohort, naive_sizes, out / "runs" / f"{net}_naive", resume)
            row.update({"naive_test_accuracy": s["test_accuracy"], "naive_ci_low": s["test_ci_low"],
                        "naive_ci_high": s["test_ci_high"], "naive_runtime_s": s["runtime_s"]})
        rows.append(row)
        if image is not None:
            figs += net_figures(out / "runs" / net, net, image, out / "figures")
    df = pd.DataFrame(rows)
    atomic_write_text(out / "table_ii.csv", df.to_csv(index=False))
    _write_combined(cfg, out, df, figs, input_mode, sizes, cohort.info, time.perf_counter() - t0)
    return df


def _example_image(cfg: ExperimentConfig, cohort: Any, splits: Any) -> np.ndarray:
    """The preprocessed first test study (by sorted study id) as ``(C, H, W)``: the input of the feature-map figures."""
    from cadx.pipeline.preprocess import StudyPreprocessor

    idx = int(splits[0].indices(cohort, "test")[0])
    items, _, _ = StudyPreprocessor(cfg.input).study_items(cohort[idx])
    return np.asarray(items[0], dtype=np.float32)


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


def _write_combined(cfg: ExperimentConfig, out: Path, df: pd.DataFrame, figs: list[dict[str, str]],
                    input_mode: InputMode, sizes: Mapping[str, int | None], info: Mapping[str, Any],
                    wall_s: float) -> None:
    from cadx.report import write_report

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
    atomic_write_text(out / "notes.md", study_notes(cfg, df, input_mode, sizes, info, wall_s))
    write_report([out], out)
