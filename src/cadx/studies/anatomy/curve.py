"""Paper 001 Fig. 13: test accuracy against training-set size for the four nets (one plot).

The cohort is preprocessed once; the fixed group-aware holdout (:func:`~cadx.studies.anatomy.variants.fixed_split`)
gives the test groups (never changed across sizes) and the training pool (its train + val groups). A size ``n`` is a
number of **images**: whole near-duplicate groups (the MedNIST stand-in for patients) holding about ``n`` images,
balanced over the classes (:func:`~cadx.studies.anatomy.variants.balanced_groups`); as in the paper ("each experiment
was validated using the randomly selected 20 % data from the training data set") groups with ``cv.val_fraction``
of those images validate (checkpoint = best validation loss) and the rest train. Each (net, size) trains through
the engine's :func:`~cadx.training.trainer.fit`; one row per run is appended to ``learning_curve.csv`` (resumable:
rows there are skipped) and checkpoints are deleted after each run (only ``history.csv`` stays).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cadx.config import ExperimentConfig
from cadx.data.splits import Fold
from cadx.errors import CadxConfigError
from cadx.evaluation.summary import evaluate_predictions
from cadx.pipeline.items import build_store
from cadx.runs.folder import load_cohort
from cadx.runs.inference import Predictor, fold_decision, predict_rows
from cadx.studies.anatomy.tables import curve_figure, write_learning_curve
from cadx.studies.anatomy.variants import PAPER_ORDER, InputMode, balanced_groups, fixed_split, net_config
from cadx.training.trainer import fit, fold_seed
from cadx.utils import atomic_write_text

__all__ = ["render_learning_curve", "run_learning_curve"]

COLUMNS = ["net", "size_images", "train_groups", "val_groups", "train_images", "val_images", "test_images",
           "accuracy", "ci_low", "ci_high", "best_epoch", "seconds"]


def run_learning_curve(cfg: ExperimentConfig, sizes: Sequence[int], out_dir: str | Path,
                       nets: Sequence[str] = tuple(PAPER_ORDER), input_mode: InputMode = "paper",
                       test_size: int | None = None,
                       net_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Accuracy on the fixed test groups against the training-set size ``sizes`` (images) for every net.

    ``test_size``: optional class-balanced subsample of the test groups, in images (fixed for all sizes and nets).
    Writes ``learning_curve.csv``, ``learning_curve.png``, ``metrics.json`` (``extra`` table + figure),
    ``notes.md`` and the report into ``out_dir``; returns the table.
    """
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 2:
        raise CadxConfigError(f"sizes must be integers ≥ 2 (images), got {sizes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cohort = load_cohort(cfg, out)
    if test_size is not None:  # a class-balanced test set of whole groups; every other group is the training pool
        test = balanced_groups(cohort, sorted(set(cohort.patient_ids)), test_size, cfg.seed)
        split = Fold(0, sorted(set(cohort.patient_ids) - set(test)), [], test)
    else:
        split = fixed_split(cohort, cfg)[0]
    pool = split.train + split.val
    pool_set = set(pool)
    n_pool = sum(1 for p in cohort.patient_ids if p in pool_set)
    if sizes[-1] > n_pool:
        raise CadxConfigError(f"size {sizes[-1]} > {n_pool} training images available")
    store = build_store(cohort, cfg, progress=cfg.train.progress)
    te = store.items_of_studies(split.indices(cohort, "test"))
    path = out / "learning_curve.csv"
    df = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
    for n in sizes:
        chosen = balanced_groups(cohort, pool, n, cfg.seed)
        val = (balanced_groups(cohort, chosen, max(1, round(cfg.cv.val_fraction * n)), cfg.seed + 1)
               if cfg.cv.val_fraction > 0 and len(chosen) > 1 else [])
        if len(val) >= len(chosen):
            val = val[:-1]
        train = sorted(set(chosen) - set(val))
        fold = Fold(0, train, val, split.test)
        tr, va = (store.items_of_studies(fold.indices(cohort, part)) for part in ("train", "val"))
        for net in nets:
            if ((df["net"] == net) & (df["size_images"] == n)).any():
                continue
            ncfg = net_config(cfg, net, input_mode, (net_overrides or {}).get(net))
            run_dir = out / "runs" / f"{net}_n{n}"
            t1 = time.perf_counter()
            module = fit(ncfg, store, tr, va, run_dir, fold_seed(cfg.seed, n), resume=False)
            pr = Predictor(module.model, source=str(run_dir))   # the prediction path, decided as in cv
            dec = fold_decision(ncfg, store, pr, fold.indices(cohort, "train"), va if va.size else tr, 0)
            studies = predict_rows(ncfg, store, te, [pr], 0, dec).studies
            m = evaluate_predictions(studies, store.classes, n_bootstrap=ncfg.eval.bootstrap, seed=cfg.seed,
                                     decision="given")
            lo, hi = m["pooled"].get("ci", {}).get("accuracy", [float("nan")] * 2)
            for ck in run_dir.glob("*.ckpt"):
                ck.unlink()
            row = {"net": net, "size_images": n, "train_groups": len(train), "val_groups": len(val),
                   "train_images": int(tr.size), "val_images": int(va.size), "test_images": int(te.size),
                   "accuracy": float(m["pooled"]["accuracy"]), "ci_low": float(lo), "ci_high": float(hi),
                   "best_epoch": int(getattr(module, "best_epoch", -1)),
                   "seconds": round(time.perf_counter() - t1, 1)}
            df = pd.concat([df.astype(object), pd.DataFrame([row])], ignore_index=True)
            atomic_write_text(path, df.to_csv(index=False))
    df = df[df["net"].isin(list(nets)) & df["size_images"].isin(sizes)].reset_index(drop=True)
    return render_learning_curve(cfg, out, input_mode, df, time.perf_counter() - t0)


def render_learning_curve(cfg: ExperimentConfig, out_dir: str | Path, input_mode: InputMode,
                          df: pd.DataFrame | None = None, wall_s: float | None = None) -> pd.DataFrame:
    """Figure, ``metrics.json``, ``notes.md`` and report of the rows in ``df`` (default: ``learning_curve.csv``
    in ``out_dir``, e.g. of an interrupted run); ``wall_s`` defaults to the sum of the runs' seconds."""
    out = Path(out_dir)
    if df is None:
        df = pd.read_csv(out / "learning_curve.csv")
    fig = curve_figure(df, out / "learning_curve.png")
    write_learning_curve(cfg, out, df, fig, input_mode, float(df["seconds"].sum()) if wall_s is None else wall_s)
    return df


