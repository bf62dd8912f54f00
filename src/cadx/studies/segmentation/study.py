"""Issue #6 measurements: U-Net (A.3) and SCNet on LGG and BUSI through the engine, reduced for a CPU.

Runs (each a normal ``cadx cv`` run folder under ``work_dir/<name>``, resumable):

- ``unet_lgg``: ``configs/papers/unet_lgg.yaml``;
- ``scnet_lgg`` and ``scnet_lgg_no2step``: ``configs/papers/scnet_lgg.yaml`` with and without the 2-step SegNet
  (``model.kwargs.two_step=false`` and no binary objective term) — the same splits (same seed and cohort);
- ``scnet_busi_grouped`` and ``scnet_busi_naive``: ``configs/papers/scnet_busi.yaml`` with CV grouped by
  near-duplicate groups and by image (``data.options.group=image``).

``REDUCED`` holds the overrides that make each run take minutes on 2 CPU cores (smaller input, narrower nets,
3 folds, few epochs); the summary records them verbatim. ``summary.json``/``summary.md`` in ``results_dir`` hold per
run Dice (mean, median, 95 % CIs), accuracy, wall time and input size, the paired 2-step comparison and the BUSI
grouped-vs-naive inflation; small files of each run (metrics, predictions, notes, figures) are copied beside them.

Usage: ``python -m cadx.studies.segmentation.study WORK_DIR RESULTS_DIR [run names...]`` (one torch thread).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import load_config
from cadx.utils import atomic_write_json, atomic_write_text, read_json

__all__ = ["REDUCED", "RUNS", "compare_paired", "run_segmentation_study", "summarize"]

_SCNET_LGG = ["input.size=64", "model.kwargs={num_seg_classes: 3, depth: 18, width: 8, two_step: true}",
              "cv.folds=3", "train.epochs=12", "train.batch_size=16", "eval.bootstrap=1000"]
_SCNET_BUSI = ["input.size=64", "model.kwargs={num_seg_classes: 2, depth: 18, width: 8, two_step: true}",
               "cv.folds=3", "train.epochs=12", "train.batch_size=16", "eval.bootstrap=1000"]
_NO_BINARY = ("objective={ternary: {loss: scnet, part: ternary, weight: 1.0}, "
              "cls: {loss: scnet, part: cls, weight: 1.0}}")

#: run name → (config file, reduced overrides)
RUNS: dict[str, tuple[str, list[str]]] = {
    "unet_lgg": ("configs/papers/unet_lgg.yaml",
                 ["input.size=80", "model.kwargs={num_seg_classes: 1, base_filters: 12, levels: 4}", "cv.folds=3",
                  "train.epochs=15", "train.batch_size=16", "optim.lr=0.001", "eval.bootstrap=1000"]),
    "scnet_lgg": ("configs/papers/scnet_lgg.yaml", _SCNET_LGG),
    "scnet_lgg_no2step": ("configs/papers/scnet_lgg.yaml",
                          [*_SCNET_LGG, "model.kwargs.two_step=false", _NO_BINARY, "name=scnet_lgg_no2step"]),
    "scnet_busi_grouped": ("configs/papers/scnet_busi.yaml", [*_SCNET_BUSI, "name=scnet_busi_grouped"]),
    "scnet_busi_naive": ("configs/papers/scnet_busi.yaml",
                         [*_SCNET_BUSI, "data.options={group: image}", "name=scnet_busi_naive"]),
}
REDUCED = {k: v[1] for k, v in RUNS.items()}
_COPY = ("metrics.json", "predictions.csv", "notes.md", "config.yaml", "splits.json")


def run_one(name: str, work_dir: Path, project: Path) -> dict[str, Any]:
    """Run (or resume) one named run; returns its metrics."""
    from cadx.runs import run_cv

    path, overrides = RUNS[name]
    cfg = load_config(project / path, [*overrides, "train.progress=false"])
    if cfg.data.root is not None and not Path(cfg.data.root).is_absolute():
        cfg.data.root = str((project / cfg.data.root).resolve())
    out = work_dir / name
    done = (out / "metrics.json").is_file() and (out / "DONE_STUDY").is_file()
    if done:
        return read_json(out / "metrics.json")
    m = run_cv(cfg, out, resume=out.exists())
    atomic_write_text(out / "DONE_STUDY", "done\n")
    return m


def compare_paired(a: pd.DataFrame, b: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired Dice difference ``a − b`` over the studies both tables hold (mean with a patient-bootstrap CI,
    wins/losses/ties) and, when both have ``y_pred``, the accuracy of each on those studies."""
    from cadx.evaluation.bootstrap import bootstrap_mean_ci

    m = a.merge(b, on="study_id", suffixes=("_a", "_b"))
    diff = (m["dice_a"] - m["dice_b"]).to_numpy(float)
    r = bootstrap_mean_ci(diff, m["patient_id_a"].astype(str).to_numpy(), n_resamples=n_bootstrap, seed=seed)
    out: dict[str, Any] = {"n": len(m), "dice_diff_mean": float(diff.mean()), "dice_diff_ci": [r.lo, r.hi],
                           "wins": int((diff > 1e-9).sum()), "losses": int((diff < -1e-9).sum()),
                           "ties": int((np.abs(diff) <= 1e-9).sum())}
    if "y_pred_a" in m.columns and "y_pred_b" in m.columns:
        ok = m["y_true_a"].notna()
        out["accuracy_a"] = float((m.loc[ok, "y_pred_a"] == m.loc[ok, "y_true_a"]).mean())
        out["accuracy_b"] = float((m.loc[ok, "y_pred_b"] == m.loc[ok, "y_true_b"]).mean())
    return out


def _row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    p = m["pooled"]
    ci = p.get("ci", {})
    run = m.get("run", {})
    return {"run": name, "studies": p.get("n_dice", p.get("n_studies")), "dice_mean": p.get("dice_mean"),
            "dice_mean_ci": ci.get("dice_mean"), "dice_median": p.get("dice_median"),
            "dice_median_ci": ci.get("dice_median"), "accuracy": p.get("accuracy"),
            "accuracy_ci": ci.get("accuracy"), "folds": run.get("folds"), "items": run.get("items"),
            "input_size": run.get("input_size"), "seconds": run.get("seconds"), "reduced": REDUCED.get(name)}


def _f(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return "[" + ", ".join(_f(x) for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def partial_metrics(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """Metrics of the finished folds of an unfinished run (None when no fold is done); ``run.partial`` says how
    many folds of how many."""
    from cadx.runs.segmentation import evaluate_seg

    cfg = load_config(run_dir / "config.yaml")
    done = sorted(run_dir.glob("fold_*/DONE"))
    if not done:
        return None
    df = pd.concat([pd.read_csv(f.parent / "predictions.csv") for f in done], ignore_index=True)
    classes = [c[2:] for c in df.columns if c.startswith("p_")] if cfg.task.classification else []
    m = evaluate_seg(df, classes, cfg.eval.bootstrap, cfg.seed)
    secs = sum(float(read_json(f).get("seconds", 0.0)) for f in done)
    m["run"] = {"folds": cfg.cv.folds, "items": None, "input_size": list(cfg.input.size_tuple()),
                "seconds": round(secs, 1), "partial": f"{len(done)} of {cfg.cv.folds} folds"}
    return m, df


def summarize(work_dir: Path, results_dir: Path) -> dict[str, Any]:
    """Summary of the finished runs (and copies of their small files) in ``results_dir``; runs still going
    contribute their finished folds, marked ``partial``."""
    rows, preds = [], {}
    for name in RUNS:
        d = work_dir / name
        if not (d / "DONE_STUDY").is_file():
            part = partial_metrics(d) if (d / "config.yaml").is_file() else None
            if part is not None:
                rows.append({**_row(name, part[0]), "partial": part[0]["run"]["partial"]})
                preds[name] = part[1]
            continue
        rows.append(_row(name, read_json(d / "metrics.json")))
        preds[name] = pd.read_csv(d / "predictions.csv")
        dst = results_dir / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in _COPY:
            if (d / f).is_file():
                shutil.copyfile(d / f, dst / f)
        for png in (d / "figures").glob("*.png"):
            (dst / "figures").mkdir(exist_ok=True)
            shutil.copyfile(png, dst / "figures" / png.name)
    out: dict[str, Any] = {"runs": rows, "comparisons": {}}
    if {"scnet_lgg", "scnet_lgg_no2step"} <= set(preds):  # paired: only studies both have predicted
        out["comparisons"]["two_step_minus_ternary_lgg"] = compare_paired(preds["scnet_lgg"],
                                                                          preds["scnet_lgg_no2step"])
    by = {r["run"]: r for r in rows}
    if {"scnet_busi_grouped", "scnet_busi_naive"} <= set(by) and not by["scnet_busi_grouped"].get("partial") \
            and not by["scnet_busi_naive"].get("partial"):
        g, n = by["scnet_busi_grouped"], by["scnet_busi_naive"]
        out["comparisons"]["busi_naive_minus_grouped"] = {
            k: (n[k] - g[k]) if n[k] is not None and g[k] is not None else None
            for k in ("dice_mean", "dice_median", "accuracy")}
    atomic_write_json(results_dir / "summary.json", out)
    lines = ["# Segmentation measurements (issue #6)", "",
             "| run | studies | Dice mean [95% CI] | Dice median [95% CI] | accuracy [95% CI] | folds | input | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tag = f" ({r['partial']})" if r.get("partial") else ""
        lines.append(f"| {r['run']}{tag} | {r['studies']} | {_f(r['dice_mean'])} {_f(r['dice_mean_ci'])} | "
                     f"{_f(r['dice_median'])} {_f(r['dice_median_ci'])} | {_f(r['accuracy'])} "
                     f"{_f(r['accuracy_ci'])} | {r['folds']} | {r['input_size']} | {r['seconds']} |")
    lines += ["", "Comparisons:", "", "```", *(f"{k}: {v}" for k, v in out["comparisons"].items()), "```", "",
              "Reduced settings (overrides of the paper configs):", ""]
    lines += [f"- `{k}`: `{' '.join(v)}`" for k, v in REDUCED.items() if k in by]
    atomic_write_text(results_dir / "summary.md", "\n".join(lines) + "\n")
    return out


def run_segmentation_study(work_dir: str | Path, results_dir: str | Path, names: list[str] | None = None,
                           project: str | Path = ".") -> dict[str, Any]:
    """Run the named runs (default all, in order), summarising after each."""
    work, res, proj = Path(work_dir), Path(results_dir), Path(project).resolve()
    res.mkdir(parents=True, exist_ok=True)
    for name in names or list(RUNS):
        t0 = time.perf_counter()
        run_one(name, work, proj)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        summarize(work, res)
    return summarize(work, res)


if __name__ == "__main__":  # pragma: no cover
    import torch

    torch.set_num_threads(1)  # on a shared 2-core machine one thread per process is many times faster
    run_segmentation_study(sys.argv[1], sys.argv[2], sys.argv[3:] or None)
