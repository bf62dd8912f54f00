"""Tables of the segmentation study from its run folders: per-run Dice/accuracy with CIs (finished folds of an
unfinished run marked ``partial``), the paired 2-step comparison, the BUSI grouped-vs-naive inflation; written as
``summary.json`` and ``summary.md`` (through :mod:`cadx.report.studies`) beside copies of each run's small files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import load_config
from cadx.evaluation.bootstrap import bootstrap_mean_ci
from cadx.report.studies import markdown_table, write_study_notes
from cadx.runs.segmentation import evaluate_seg
from cadx.studies.segmentation.variants import RUNS
from cadx.utils import atomic_write_json, read_json

__all__ = ["compare_paired", "partial_metrics", "summarize"]

_COPY = ("metrics.json", "predictions.csv", "notes.md", "config.yaml", "splits.json")


def compare_paired(a: pd.DataFrame, b: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired Dice difference ``a − b`` over the studies both tables hold (mean with a patient-bootstrap CI,
    wins/losses/ties) and, when both have ``y_pred``, the accuracy of each on those studies."""
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
            "input_size": run.get("input_size"), "seconds": run.get("seconds"),
            "reduced": RUNS[name][1] if name in RUNS else None}


def _f(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return "[" + ", ".join(_f(x) for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def partial_metrics(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """Metrics of the finished folds of an unfinished run (None when no fold is done); ``run.partial`` says how
    many folds of how many."""
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
    table = markdown_table(
        ["run", "studies", "Dice mean [95% CI]", "Dice median [95% CI]", "accuracy [95% CI]", "folds", "input", "s"],
        [[r["run"] + (f" ({r['partial']})" if r.get("partial") else ""), r["studies"],
          f"{_f(r['dice_mean'])} {_f(r['dice_mean_ci'])}", f"{_f(r['dice_median'])} {_f(r['dice_median_ci'])}",
          f"{_f(r['accuracy'])} {_f(r['accuracy_ci'])}", r["folds"], r["input_size"], r["seconds"]] for r in rows])
    comparisons = ["```", *(f"{k}: {v}" for k, v in out["comparisons"].items()), "```"]
    reduced = [f"- `{k}`: `{json.dumps(RUNS[k][1])}`" for k in RUNS if k in by]
    write_study_notes(results_dir, "Segmentation measurements (issue #6)", [
        (None, table), ("Comparisons", comparisons),
        ("Reduced settings (section updates of the paper configs)", reduced)], filename="summary.md")
    return out
