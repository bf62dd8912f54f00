"""Paper 001 (Khan & Yong 2017, "A Deep Learning Architecture for Classifying Medical Images of Anatomy Object"):
the proposed anatomy CNN against LeNet, AlexNet and GoogLeNet — Table II and Figs. 7–11 — on MedNIST.

:func:`run_anatomy_study` trains every net through the engine (:func:`cadx.runs.cv.run_cv`, one run folder per
net under ``out_dir/runs``) on one fixed group-aware split (written to each run's ``splits.json`` first, so all nets
share it), optionally again on the naive per-image split, and writes a combined folder ``out_dir`` with Table II
(``table_ii.csv`` and ``metrics.json`` ``extra.tables``), the first-layer filters and feature maps of each trained
net (``extra.figures``), ``notes.md`` and the report. Nets, input sizes and the split: :mod:`.variants`;
tables, figures and notes: :mod:`.tables`.

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
from cadx.pipeline.preprocess import StudyPreprocessor
from cadx.runs.cv import run_cv
from cadx.runs.folder import finished_run, load_cohort
from cadx.studies.anatomy.tables import net_figures, write_table_ii
from cadx.studies.anatomy.variants import (
    NETS,
    PAPER_ORDER,
    InputMode,
    fixed_split,
    naive_config,
    net_config,
    net_input_size,
)
from cadx.utils import atomic_write_text, read_json

__all__ = ["run_anatomy_study", "run_summary"]


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
    write_table_ii(cfg, out, df, figs, input_mode, sizes, cohort.info, time.perf_counter() - t0)
    return df


def _example_image(cfg: ExperimentConfig, cohort: Any, splits: Any) -> np.ndarray:
    """The preprocessed first test study (by sorted study id) as ``(C, H, W)``: the input of the feature-map figures."""
    idx = int(splits[0].indices(cohort, "test")[0])
    items, _, _ = StudyPreprocessor(cfg.input).study_items(cohort[idx])
    return np.asarray(items[0], dtype=np.float32)


