"""DMRN (Bi et al.) against its baselines: one base config, per-model variants, the same folds, one report.

:func:`run_dmrn_study` runs the chosen variants (:mod:`cadx.studies.dmrn.variants`) into ``out_dir/<model>/``
through :func:`cadx.runs.cv.run_cv` (``hc_svm`` is the engine's handcrafted run kind), after writing one
``splits.json`` that every run copies (so all models see the same patients in the same folds), adds the t-SNE maps
of the DMRN and ResNet-18 test embeddings (Fig. 5) to those runs, and writes a comparison report, ``summary.csv``
and ``notes.md`` (:mod:`cadx.studies.dmrn.tables`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import ExperimentConfig
from cadx.explain import tsne_figure
from cadx.pipeline.items import build_store
from cadx.report import write_report
from cadx.runs.cv import run_cv
from cadx.runs.folder import done_folds, get_splits, load_cohort
from cadx.runs.inference import infer
from cadx.studies.dmrn.tables import findings, summary_row, table2, write_notes
from cadx.studies.dmrn.variants import DEFAULT_MODELS, TSNE_MODELS, VARIANTS, shared_data_root, variant_config
from cadx.training.trainer import load_module
from cadx.utils import atomic_write_json, atomic_write_text, read_json

__all__ = ["add_extra", "add_tsne", "run_dmrn_study", "run_variant", "shared_splits", "test_embeddings"]


def shared_splits(cfg: ExperimentConfig, out: Path) -> Path:
    """``out/splits.json`` (made once with the engine's rules from ``cfg``; reused when present)."""
    get_splits(cfg, load_cohort(cfg, out), out)
    return out / "splits.json"


def run_variant(cfg: ExperimentConfig, run_dir: Path, splits: Path) -> dict[str, Any]:
    """Run one model into ``run_dir`` with the study's ``splits.json`` (resumes a started run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "splits.json").is_file():
        shutil.copyfile(splits, run_dir / "splits.json")
    resume = any(run_dir.glob("fold_*/DONE")) or any(run_dir.glob("fold_*/checkpoint_last.ckpt"))
    return run_cv(cfg, run_dir, resume=resume)


def test_embeddings(run_dir: Path, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Study-level test embeddings of a finished run (each fold's best model on its own test patients; a study =
    the mean of its slices' ``forward_features``): ``(S, D)``, labels ``(S,)``, classes."""
    cohort = load_cohort(cfg, run_dir)
    store = build_store(cohort, cfg, progress=False)
    feats, labels = [], []
    for fdir in done_folds(run_dir):
        model, _ = load_module(fdir / "checkpoint_best.ckpt")
        studies = pd.read_csv(fdir / "predictions.csv")["study_id"].astype(str).tolist()
        idx = np.array([cohort.study_ids.index(s) for s in studies], dtype=np.int64)
        items = store.items_of_studies(idx)
        f = infer(model, store.images[items], cfg.train.eval_batch_size, features="features")["features"]
        st = store.study[items]
        for s in np.unique(st):
            feats.append(f[st == s].mean(0))
            labels.append(int(store.labels[s]))
    return np.stack(feats), np.asarray(labels), list(store.classes)


def add_tsne(run_dir: Path, cfg: ExperimentConfig, seed: int = 0) -> Path:
    """Fig. 5: t-SNE of the run's study-level test embeddings → ``figures/tsne.png``, listed in metrics.json."""
    x, y, classes = test_embeddings(run_dir, cfg)
    path = run_dir / "figures" / "tsne.png"
    tsne_figure(x, y, classes, path, seed=seed, title=f"{cfg.name}: t-SNE of test embeddings (Fig. 5)")
    add_extra(run_dir, "figures", {"title": f"{cfg.name}: t-SNE of the test-study embeddings (Fig. 5)",
                                   "path": "figures/tsne.png"})
    return path


def add_extra(run_dir: Path, kind: str, item: dict[str, Any]) -> None:
    """Append ``item`` to ``metrics.json`` ``extra[kind]`` (replacing one with the same title)."""
    m = read_json(run_dir / "metrics.json")
    extra = m.setdefault("extra", {})
    items = [e for e in extra.get(kind, []) if e.get("title") != item.get("title")]
    extra[kind] = [*items, item]
    atomic_write_json(run_dir / "metrics.json", m)


def run_dmrn_study(cfg: ExperimentConfig, out_dir: str | Path, models: Sequence[str] | None = None,
                   tsne: bool = True, network_kwargs: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run ``models`` (default :data:`~cadx.studies.dmrn.variants.DEFAULT_MODELS`; ``"all"`` expands to every
    variant) of the DMRN study from the base config ``cfg`` (the DMRN run, e.g. ``dmrn_adrenal.yaml``).

    ``network_kwargs`` update the model kwargs of every network (not ``hc_svm``). Each model → ``out_dir/<model>/``
    (a standard run folder; an interrupted study resumes). Writes ``out_dir/summary.csv``, ``summary.json``,
    ``notes.md`` and ``report/report.{html,md}``. Returns the summary table (one row per model).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(models or DEFAULT_MODELS)
    if "all" in names:
        names = list(VARIANTS)
    base = shared_data_root(cfg, out)
    splits = shared_splits(base, out)
    rows, dirs = [], []
    for m in names:
        mcfg = variant_config(base, m, network_kwargs)
        t0 = time.perf_counter()
        metrics = run_variant(mcfg, out / m, splits)
        if tsne and m in TSNE_MODELS:
            add_tsne(out / m, mcfg, seed=mcfg.seed)
        row = summary_row(m, metrics)
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        dirs.append(out / m)
    df = pd.DataFrame(rows)
    atomic_write_text(out / "summary.csv", df.to_csv(index=False))
    atomic_write_json(out / "summary.json", {"base_config": cfg.to_dict(), "network_kwargs": dict(network_kwargs or {}),
                                             "models": rows, "findings": findings(df)})
    if "dmrn" in names:
        add_extra(out / "dmrn", "tables", table2(df))
    write_notes(out, df, cfg.name, network_kwargs or {})
    write_report(dirs, out / "report", title="DMRN (Bi et al.) against its baselines")
    return df
