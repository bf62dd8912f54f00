"""Paper 001 Fig. 13: test accuracy against training-set size for the four nets (one plot).

The cohort is preprocessed once; the fixed group-aware holdout (:func:`~cadx.studies.anatomy.setup.fixed_split`)
gives the test groups (never changed across sizes) and the training pool (its train + val groups). A size ``n`` is a
number of **images**: whole near-duplicate groups (the MedNIST stand-in for patients) holding about ``n`` images,
balanced over the classes (:func:`~cadx.studies.anatomy.setup.balanced_groups`); as in the paper ("each experiment
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

from cadx.config import ExperimentConfig, load_config
from cadx.data.splits import Fold
from cadx.errors import CadxConfigError
from cadx.evaluation.summary import evaluate_predictions
from cadx.pipeline.items import build_store
from cadx.runs.folder import load_cohort
from cadx.runs.inference import Predictor, fold_decision, predict_rows
from cadx.studies.anatomy.setup import NETS, PAPER_ORDER, InputMode, balanced_groups, fixed_split, net_config
from cadx.training.trainer import fit, fold_seed
from cadx.utils import atomic_write_json, atomic_write_text

__all__ = ["curve_figure", "learning_curve_cli", "render_learning_curve", "run_learning_curve"]

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
    _write(cfg, out, df, fig, input_mode, float(df["seconds"].sum()) if wall_s is None else wall_s)
    return df


def curve_figure(df: pd.DataFrame, path: Path) -> Path:
    """Accuracy (with 95 % CI bars) against training images, one line per net (Fig. 13)."""
    from matplotlib.figure import Figure

    from cadx.explain import save_figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for net in [n for n in PAPER_ORDER if n in set(df["net"])]:
        d = df[df["net"] == net].sort_values("size_images")
        x = d["train_images"].astype(float)
        y = 100 * d["accuracy"].astype(float)
        err = [y - 100 * d["ci_low"].astype(float), 100 * d["ci_high"].astype(float) - y]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=NETS[net]["label"])
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

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


def _write(cfg: ExperimentConfig, out: Path, df: pd.DataFrame, fig: Path, input_mode: InputMode,
           wall_s: float) -> None:
    from cadx.report import write_report

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
    notes = [f"# {cfg.name}: accuracy against training-set size (paper 001 Fig. 13)", "",
             "- Sizes count images, drawn as whole near-duplicate **groups** (MedNIST has no patient ids; groups "
             "stand in for patients), balanced over the classes; exact counts per size are in the table.",
             f"- {cfg.cv.val_fraction:.0%} of each size's images (whole groups) validate (best validation loss "
             f"checkpoint); the test set is fixed ({test_n} images) for every size and net.",
             f"- {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {cfg.optim.name} lr {cfg.optim.lr}; input "
             f"mode `{input_mode}`. Wall time {wall_s:.0f} s."]
    atomic_write_text(out / "notes.md", "\n".join(notes) + "\n")
    write_report([out], out)


def learning_curve_cli(config: str | Path, sizes: str | Sequence[int], out_dir: str | Path,
                       overrides: Sequence[str] | None = None, nets: str | Sequence[str] | None = None,
                       input_mode: InputMode = "paper", test_size: int | None = None) -> pd.DataFrame:
    """CLI entry: ``cadx learning-curve CONFIG --sizes 50,100,... --out DIR [--set k=v] [--nets a,b]
    [--input-mode paper|reduced] [--test-size N]``; ``sizes``/``nets`` may be comma-separated strings."""
    cfg = load_config(config, list(overrides or []))
    size_list = [int(s) for s in sizes.split(",") if s.strip()] if isinstance(sizes, str) else list(sizes)
    net_list = ([n.strip() for n in nets.split(",") if n.strip()] if isinstance(nets, str)
                else list(nets or PAPER_ORDER))
    return run_learning_curve(cfg, size_list, out_dir, nets=net_list, input_mode=input_mode, test_size=test_size)
