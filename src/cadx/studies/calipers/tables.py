"""Tables, figure and report of the calipers study (thesis A.5): per-mode Dice (mean and median with bootstrap CIs
over near-duplicate groups), paired mode differences with bootstrap p-values (Holm-adjusted over the pairs), the
same split by caliper source, the detector's precision/recall, the approximate masks' own Dice, and the learning
curve (``learning_curve.png``). Written as ``summary.json`` and ``report.md`` through :mod:`cadx.report.studies`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.evaluation import multiplicity
from cadx.report.studies import markdown_table, new_figure, save_figure, write_study_notes
from cadx.utils import atomic_write_json, read_json

__all__ = ["group_bootstrap", "holm", "mode_summary", "paired_tests", "write_tables"]


def group_bootstrap(values: np.ndarray, groups: np.ndarray, stat: Callable[[np.ndarray], float],
                    n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """``(stat(values), lo, hi)``: percentile CI of ``stat`` over resamples of whole groups (near-duplicate
    groups) with replacement. ``values`` ``(N,)``; ``groups`` ``(N,)``."""
    v = np.asarray(values, float)
    g = np.asarray(groups)
    uniq, inv = np.unique(g, return_inverse=True)
    members = [np.nonzero(inv == i)[0] for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for b in range(n_resamples):
        pick = rng.integers(0, len(uniq), len(uniq))
        out[b] = stat(v[np.concatenate([members[i] for i in pick])])
    return float(stat(v)), float(np.quantile(out, alpha / 2)), float(np.quantile(out, 1 - alpha / 2))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order
    (:func:`cadx.evaluation.multiplicity.holm`)."""
    return [float(v) for v in multiplicity.holm(pvalues)]


def _paired(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n: int, seed: int) -> dict[str, Any]:
    """Mean of ``a − b`` with a group-bootstrap CI and the two-sided p = min(1, 2·min(P(d ≤ 0), P(d ≥ 0)))
    over the resampled mean differences (the rule of :func:`cadx.evaluation.bootstrap.paired_bootstrap_pvalue`)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    uniq, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=d, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(float)
    rng = np.random.default_rng(seed)
    w = np.stack([np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq)) for _ in range(n)])
    means = (w @ sums) / (w @ counts)
    p = float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
    return {"diff_mean": float(d.mean()), "diff_ci": [float(np.quantile(means, 0.025)),
                                                      float(np.quantile(means, 0.975))],
            "diff_median": float(np.median(d)), "wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum()),
            "p": p}


def mode_summary(df: pd.DataFrame, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """Per mode: n, Dice mean and median each with a 95 % group-bootstrap CI."""
    rows = []
    for mode, g in df.groupby("mode", sort=False):
        v, grp = g["dice"].to_numpy(float), g["group"].astype(str).to_numpy()
        m = group_bootstrap(v, grp, np.mean, n_resamples, seed)
        md = group_bootstrap(v, grp, np.median, n_resamples, seed)
        rows.append({"mode": mode, "n": len(v), "dice_mean": m[0], "dice_mean_ci": [m[1], m[2]],
                     "dice_median": md[0], "dice_median_ci": [md[1], md[2]]})
    return rows


def paired_tests(df: pd.DataFrame, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """Every pair of modes on the images both scored: mean difference, CI, p and Holm-adjusted p."""
    wide = df.pivot_table(index=["study_id", "group"], columns="mode", values="dice").reset_index()
    modes = [m for m in df["mode"].unique() if m in wide.columns]
    pairs = [(a, b) for a, b in itertools.combinations(modes, 2)]
    rows = []
    for a, b in pairs:
        ok = wide[a].notna() & wide[b].notna()
        rows.append({"a": a, "b": b, "n": int(ok.sum()),
                     **_paired(wide.loc[ok, a].to_numpy(), wide.loc[ok, b].to_numpy(),
                               wide.loc[ok, "group"].astype(str).to_numpy(), n_resamples, seed)})
    for r, adj in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = adj
    return rows


def _f(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_f(x) for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _curve_figure(lc: pd.DataFrame, out: Path) -> Path | None:
    if lc.empty:
        return None
    fig = new_figure(5.5, 3.8)
    ax = fig.add_subplot(111)
    for mode, g in lc.groupby("mode", sort=False):
        s = g.groupby("fraction")["dice_mean"].agg(["mean", "std", "count"]).reset_index()
        ax.errorbar(s["fraction"] * 100, s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=mode)
    ax.set_xlabel("training set used (% of fold-0 training groups)")
    ax.set_ylabel("mean Dice on fold-0 test images (expert masks)")
    ax.set_title("A.5 learning curve (mean ± sd over repeats)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out / "learning_curve.png")


def write_tables(cfg: Any, out: Path, df: pd.DataFrame, lc: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and ``learning_curve.png`` into ``out`` from the per-image Dice
    table ``df`` and the learning-curve table ``lc``; returns the summary."""
    n, seed = cfg.bootstrap, cfg.seed
    det = read_json(out / "detector.json")
    approx = pd.read_csv(out / "approx_masks.csv")
    summary: dict[str, Any] = {
        "detector": det, "modes": mode_summary(df, n, seed), "paired": paired_tests(df, n, seed),
        "by_caliper_source": {src: mode_summary(g, n, seed) for src, g in df.groupby("caliper_source")},
        "approx_masks": {src: {"n": len(g), "dice_mean": float(g["approx_dice_input"].mean()),
                               "dice_median": float(g["approx_dice_input"].median())}
                         for src, g in approx.groupby("caliper_source")},
        "learning_curve": [] if lc.empty else
        lc.groupby(["mode", "fraction"])["dice_mean"].agg(["mean", "std", "count"]).reset_index()
        .to_dict("records"),
        "seconds": round(seconds, 1), "config": cfg.model_dump(mode="json")}
    atomic_write_json(out / "summary.json", summary)
    fig = _curve_figure(lc, out)
    det_tab = markdown_table(
        ["tolerance px", "annotated points", "detected", "TP", "FP", "FN", "precision", "recall",
         "fold thresholds"],
        [[det["tolerance_px"], det["points_annotated"], det["points_detected"], det["tp"], det["fp"], det["fn"],
          det["precision"], det["recall"], json.dumps(det["fold_thresholds"])]])
    img_lines = [
        f"- images annotated: {det['images']}; with calipers (by hand): {det['images_with_calipers_annotated']}, "
        f"usable (2 or 4) by hand: {det['images_usable_annotated']}; usable per the detector (out of fold): "
        f"{det['images_usable_detected']}; images with any detection: {det['images_with_detections']}; "
        f"detections on images without calipers: {det['false_positive_points_on_images_without_calipers']}",
        *(f"- approximate masks from {src} calipers: {v['n']} lesion images, Dice vs expert mean "
          f"{v['dice_mean']:.3f}, median {v['dice_median']:.3f}" for src, v in summary["approx_masks"].items())]
    mode_tab = markdown_table(["mode", "n", "Dice mean [95% CI]", "Dice median [95% CI]"],
                              [[r["mode"], r["n"], f"{_f(r['dice_mean'])} {_f(r['dice_mean_ci'])}",
                                f"{_f(r['dice_median'])} {_f(r['dice_median_ci'])}"] for r in summary["modes"]])
    p_bonf = multiplicity.bonferroni([r["p"] for r in summary["paired"]])
    pair_tab = markdown_table(["a − b", "n", "mean diff [95% CI]", "median diff", "wins/losses", "p", "p (Holm)",
                               "p (Bonferroni)"],
                              [[f"{r['a']} − {r['b']}", r["n"], f"{_f(r['diff_mean'])} {_f(r['diff_ci'])}",
                                r["diff_median"], f"{r['wins']}/{r['losses']}", multiplicity.format_p(r["p"]),
                                multiplicity.format_p(r["p_holm"]), multiplicity.format_p(pb)]
                               for r, pb in zip(summary["paired"], p_bonf, strict=True)])
    src_tab = markdown_table(["caliper source", "mode", "n", "Dice mean [95% CI]", "Dice median"],
                             [[src, r["mode"], r["n"], f"{_f(r['dice_mean'])} {_f(r['dice_mean_ci'])}",
                               r["dice_median"]] for src, rs in summary["by_caliper_source"].items() for r in rs])
    lc_tab = markdown_table(["mode", "fraction", "mean Dice (over repeats)", "sd", "repeats"],
                            [[r["mode"], r["fraction"], r["mean"], r["std"], r["count"]]
                             for r in summary["learning_curve"]])
    t = cfg.train
    sections = [
        ("Caliper detector (out of fold)", [*det_tab, "", *img_lines]),
        ("Dice on the expert masks of the lesion test images (3-fold CV over near-duplicate groups)", mode_tab),
        ("Paired differences (bootstrap over near-duplicate groups; Holm over the pairs)", pair_tab),
        ("By caliper source", src_tab),
        ("Learning curve (fold 0)", lc_tab + ([f"![learning curve]({fig.name})"] if fig else [])),
        ("Settings (reduced for a CPU)", [
            f"- input {t.size}×{t.size} (paper 320), U-Net base {t.base_filters}, {t.levels} levels "
            f"(paper 32–256, 4), max {t.epochs} epochs, patience {t.patience} (paper 100/10), batch "
            f"{t.batch_size}, Adam lr {t.lr}, augmentation: flip={t.flip}, shift ≤ {t.shift:g}·side "
            "(paper: 90° rotation, 32 px shift, 10 % scale)",
            f"- learning curve: fractions {cfg.learning_curve.fractions}, {cfg.learning_curve.repeats} repeats, "
            f"base {cfg.learning_curve.base_filters}, max {cfg.learning_curve.epochs} epochs (paper: 10 %…100 %, "
            "10 repeats, full net)",
            f"- wall time of this invocation: {seconds:.0f} s"])]
    write_study_notes(out, "Thesis A.5 on BUSI: caliper detection, approximate masks, three U-Net modes",
                      sections, filename="report.md")
    return summary
