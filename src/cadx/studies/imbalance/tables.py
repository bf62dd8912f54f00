"""Figures, the "which method wins where" table and the evidence for A.2's five conclusions, all computed from
``results.csv`` of :func:`cadx.studies.imbalance.study.run_imbalance_study`; written through
:mod:`cadx.report.studies`.

Method roles are read from the method definitions, not from their names: *baseline* = plain training with
argmax; *oversampling*/*undersampling* = fixed-sampler training at ratio 1 (partial ratios are the variants of
conclusion iii); thresholded variants share a model with their argmax twin (same AUC, different accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy import stats

from cadx.report.studies import Section, new_figure, save_figure, write_study_notes
from cadx.studies.imbalance.variants import MethodSpec, StudySettings
from cadx.utils import atomic_write_json, dumps_json


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of auc/accuracy per (kind, rho, mu, method); ``n`` = number of seeds."""
    d = df.copy()
    d["mu"] = d["mu"].fillna(-1.0)
    g = d.groupby(["kind", "rho", "mu", "method"], sort=True)
    out = g.agg(auc=("auc", "mean"), auc_std=("auc", "std"), accuracy=("accuracy", "mean"),
                accuracy_std=("accuracy", "std"), n=("seed", "nunique")).reset_index()
    return out


def roles(methods: dict[str, MethodSpec]) -> dict[str, Any]:
    """Names of the baseline, oversampling/undersampling per ratio, and the argmax-trained methods."""
    def plain(m: MethodSpec) -> bool:
        return m.objective is None and m.two_phase is None

    out: dict[str, Any] = {"baseline": None, "over": {}, "under": {}, "trained": []}
    for name, m in methods.items():
        if m.decision == "argmax":
            out["trained"].append(name)
        if not plain(m) or m.decision != "argmax":
            continue
        if m.sampler.kind == "plain" and out["baseline"] is None:
            out["baseline"] = name
        elif m.sampler.kind in ("oversample", "undersample"):
            out["over" if m.sampler.kind == "oversample" else "under"].setdefault(float(m.sampler.ratio), name)
    return out


def panels(agg: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(title, kind, mu) of each figure panel: one per step μ, then linear. ρ=1 (balanced) joins every panel."""
    out = [(f"step, μ={mu:g}", "step", float(mu)) for mu in sorted(agg.loc[agg.kind == "step", "mu"].unique())]
    if (agg.kind == "linear").any():
        out.append(("linear", "linear", -1.0))
    return out


def panel_table(agg: pd.DataFrame, kind: str, mu: float) -> pd.DataFrame:
    sel = agg[((agg.kind == kind) & (agg.mu == mu)) | (agg.kind == "balanced")]
    return sel.sort_values("rho")


def plot_metric(agg: pd.DataFrame, metric: str, methods: list[str], path: Path, title: str) -> Path | None:
    """A.2 Figs. 3–6 style: ``metric`` (mean ± std over seeds) against ρ (log scale), one panel per μ / linear."""
    pans = panels(agg)
    if not pans:
        return None
    fig = new_figure(4.2 * len(pans), 3.6)
    axes = fig.subplots(1, len(pans), squeeze=False, sharey=True)
    for ax, (ptitle, kind, mu) in zip(axes[0], pans, strict=True):
        t = panel_table(agg, kind, mu)
        for m in methods:
            r = t[t.method == m]
            if r.empty:
                continue
            ax.errorbar(r.rho, r[metric], yerr=r[f"{metric}_std"].fillna(0), marker="o", ms=3, capsize=2, label=m)
        ax.set_xscale("log")
        ax.set_title(ptitle)
        ax.set_xlabel("imbalance ratio ρ")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("multi-class ROC AUC" if metric == "auc" else "accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def winners(agg: pd.DataFrame, methods: list[str], tol: float) -> pd.DataFrame:
    """Per setting: the best method by mean AUC among ``methods`` and every method within ``tol`` of it."""
    rows = []
    for (kind, rho, mu), t in agg[agg.method.isin(methods)].groupby(["kind", "rho", "mu"], sort=True):
        t = t.sort_values("auc", ascending=False)
        best = t.iloc[0]
        ties = t[t.auc >= best.auc - tol].method.tolist()
        rows.append({"kind": kind, "rho": rho, "mu": mu, "best": best.method, "best_auc": best.auc,
                     "within_tol": ties})
    return pd.DataFrame(rows)


def conclusions(df: pd.DataFrame, agg: pd.DataFrame, methods: dict[str, MethodSpec], tol: float
                ) -> dict[str, Any]:
    """Evidence for A.2's conclusions (i)–(v), each with the numbers it rests on and a verdict (or None when
    the grid lacks the methods/settings it needs)."""
    r = roles(methods)
    base, over, under = r["baseline"], r["over"].get(1.0), r["under"].get(1.0)
    imb = agg[agg.rho > 1]
    out: dict[str, Any] = {}
    # (i) imbalance hurts: baseline AUC at ρ=1 vs the largest ρ of each panel
    if base is not None:
        drops: list[dict[str, Any]] = []
        for ptitle, kind, mu in panels(agg):
            t = panel_table(agg, kind, mu)
            t = t[t.method == base]
            if len(t) >= 2:
                drops.append({"panel": ptitle, "auc_rho1": float(t.auc.iloc[0]), "rho_max": float(t.rho.iloc[-1]),
                              "auc_rho_max": float(t.auc.iloc[-1]),
                              "spearman_auc_vs_rho": float(t[["rho", "auc"]].corr("spearman").iloc[0, 1])
                              if len(t) > 2 else None})
        out["i_imbalance_hurts"] = {"baseline": base, "panels": drops,
                                    "supported": all(float(d["auc_rho_max"]) < float(d["auc_rho1"])
                                                     for d in drops) if drops else None}
    # (ii) oversampling dominates: wins / within-tolerance counts over settings with ρ > 1
    trained = [m for m in r["trained"] if m in set(agg.method)]
    w = winners(imb, trained, tol) if not imb.empty else pd.DataFrame()
    if not w.empty:
        wins = {m: int((w.best == m).sum()) for m in trained}
        ties = {m: int(w.within_tol.apply(lambda x, m=m: m in x).sum()) for m in trained}
        out["ii_oversampling_dominates"] = {"settings": len(w), "wins": wins, "wins_or_ties": ties,
                                            "tolerance": tol,
                                            "supported": None if over is None else
                                            bool(ties.get(over, 0) == max(ties.values()))}
    # (iii) oversample fully; undersampling's best ratio depends on the imbalance
    iii: dict[str, Any] = {}
    for kind_name, variants in (("oversampling", r["over"]), ("undersampling", r["under"])):
        if len(variants) < 2:
            continue
        per = []
        for keys, t in imb[imb.method.isin(variants.values())].groupby(["kind", "rho", "mu"]):
            kind, rho, mu = cast(tuple[str, float, float], keys)
            by = {float(ratio): float(t.loc[t.method == name, "auc"].mean()) for ratio, name in variants.items()
                  if (t.method == name).any()}
            if len(by) >= 2:
                per.append({"kind": kind, "rho": rho, "mu": None if mu < 0 else mu,
                            "best_ratio": max(by, key=lambda k: by[k]), "auc_by_ratio": by})
        iii[kind_name] = {"settings": per, "best_ratio_counts":
                          pd.Series([p["best_ratio"] for p in per]).value_counts().to_dict() if per else {}}
    if iii:
        ov = iii.get("oversampling", {}).get("settings", [])
        iii["full_oversampling_best_fraction"] = float(np.mean([p["best_ratio"] == 1.0 for p in ov])) if ov else None
        out["iii_resampling_ratio"] = iii
    # (iv) oversampling does not overfit: train−test accuracy gap and drop from the best epoch, vs baseline
    if base is not None and over is not None:
        d = df[(df.rho > 1) & df.method.isin([base, over])].copy()
        d["gap"] = d.train_accuracy - d.accuracy_argmax
        d["peak_drop"] = [(max(c) - c[-1]) if c else np.nan for c in
                          (_curve(v) for v in d.auc_curve.fillna("").astype(str))]
        g = d.groupby("method")[["gap", "peak_drop", "auc"]].mean()
        if {base, over} <= set(g.index):
            out["iv_no_overfitting"] = {
                "train_minus_test_accuracy": {m: float(g.loc[m, "gap"]) for m in (base, over)},
                "auc_drop_from_best_epoch": {m: float(g.loc[m, "peak_drop"]) for m in (base, over)},
                "supported": bool(g.loc[over, "peak_drop"] <= g.loc[base, "peak_drop"] + tol)
                if np.isfinite(g.loc[over, "peak_drop"]) else None}
    # (v) thresholding by priors raises accuracy (baseline, oversampling) but not after undersampling
    v: dict[str, Any] = {}
    for role, name in (("baseline", base), ("oversampling", over), ("undersampling", under)):
        d = df[(df.rho > 1) & (df.method == name)]
        if name is not None and not d.empty:
            diff = d.accuracy_prior - d.accuracy_argmax
            v[role] = {"accuracy_argmax": float(d.accuracy_argmax.mean()),
                       "accuracy_prior": float(d.accuracy_prior.mean()), "mean_gain": float(diff.mean()),
                       "runs_improved": int((diff > 0).sum()), "runs": len(d)}
    if v:
        v["supported"] = bool(v["baseline"]["mean_gain"] > 0) if "baseline" in v else None
        out["v_thresholding_accuracy"] = v
    return out


#: The strict rule's confidence level (two-sided).
STRICT_LEVEL = 0.95


def paired_seed_ci(a: np.ndarray, b: np.ndarray, level: float = STRICT_LEVEL) -> dict[str, Any]:
    """Mean of the seed-paired differences ``a − b`` (same seed, same split, same imbalanced training set) with
    its Student-t CI over seeds (``n − 1`` df) and the strict verdict: ``"win"`` when the CI lies above 0,
    ``"loss"`` below, ``"tie"`` otherwise (also with fewer than 2 seeds: no CI). ``a``/``b``: shape (n_seeds,).
    Our choice (the thesis gives no rule): the runs keep no per-image predictions (``keep_runs: false``), so the
    spread is over training seeds on the one fixed test set, not a bootstrap over test images."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "diff": mean, "ci": None, "verdict": "tie"}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    lo, hi = mean - half, mean + half
    return {"n": n, "diff": mean, "ci": [lo, hi], "verdict": "win" if lo > 0 else "loss" if hi < 0 else "tie"}


def _by_seed(df: pd.DataFrame, method: str, col: str) -> pd.Series:
    return df[df.method == method].set_index("seed")[col]


def strict_conclusions(df: pd.DataFrame, methods: dict[str, MethodSpec], level: float = STRICT_LEVEL
                       ) -> dict[str, Any]:
    """A.2's comparisons under the strict rule of :func:`paired_seed_ci` (A beats B only when the CI of the
    seed-paired difference excludes 0; a tie otherwise), per imbalanced setting (ρ > 1), recomputed from
    ``results.csv`` rows: (i) baseline AUC at each ρ > 1 vs ρ = 1; (ii) oversampling (ratio 1) vs every other
    argmax-trained method (AUC); (iii) oversampling ratio 1 vs 0.5; (v) prior − argmax accuracy of the baseline,
    oversampling and undersampling models. Each part has its per-setting cells and win/tie/loss counts."""
    r = roles(methods)
    base, over, under = r["baseline"], r["over"].get(1.0), r["under"].get(1.0)
    d = df.copy()
    d["mu"] = d["mu"].fillna(-1.0)
    keys = d.loc[d.rho > 1, ["kind", "rho", "mu"]].drop_duplicates().sort_values(["kind", "rho", "mu"])
    settings = [(str(k), float(rho), float(mu)) for k, rho, mu in keys.itertuples(index=False)]

    def cell(t: pd.DataFrame, a: str, b: str, col: str, other: pd.DataFrame | None = None) -> dict[str, Any]:
        sa, sb = _by_seed(t, a, col), _by_seed(t if other is None else other, b, col)
        common = sa.index.intersection(sb.index)
        return paired_seed_ci(sa.loc[common].to_numpy(), sb.loc[common].to_numpy(), level)

    def count(cells: list[dict[str, Any]]) -> dict[str, int]:
        return {v: sum(c["verdict"] == v for c in cells) for v in ("win", "tie", "loss")}

    out: dict[str, Any] = {"rule": f"A beats B when the {100 * level:g} % Student-t CI of the mean seed-paired "
                           "difference (same seed and split) excludes 0; a tie otherwise", "level": level,
                           "settings": len(settings)}
    balanced = d[d.kind == "balanced"]
    trained = [m for m in r["trained"] if m in set(d.method)]
    ii: dict[str, list[dict[str, Any]]] = {m: [] for m in trained if m != over}
    i_cells: list[dict[str, Any]] = []
    iii_cells: list[dict[str, Any]] = []
    v_cells: dict[str, list[dict[str, Any]]] = {k: [] for k in ("baseline", "oversampling", "undersampling")}
    for kind, rho, mu in settings:
        t = d[(d.kind == kind) & (d.rho == rho) & (d.mu == mu)]
        tag = {"kind": kind, "rho": rho, "mu": None if mu < 0 else mu}
        if base is not None and not balanced.empty:
            i_cells.append({**tag, **cell(t, base, base, "auc", balanced)})
        if over is not None:
            for m in ii:
                ii[m].append({**tag, **cell(t, over, m, "auc")})
            half = r["over"].get(0.5)
            if half is not None:
                iii_cells.append({**tag, **cell(t, over, half, "auc")})
        for role, name in (("baseline", base), ("oversampling", over), ("undersampling", under)):
            if name is not None:
                sa = _by_seed(t, name, "accuracy_prior")
                sb = _by_seed(t, name, "accuracy_argmax")
                v_cells[role].append({**tag, **paired_seed_ci(sa.to_numpy(), sb.loc[sa.index].to_numpy(), level)})
    if i_cells:
        out["i_imbalance_hurts"] = {"comparison": f"{base} AUC at ρ minus at ρ=1", "counts": count(i_cells),
                                    "cells": i_cells}
    if over is not None and ii:
        counts = {m: count(c) for m, c in ii.items()}
        out["ii_oversampling_dominates"] = {
            "comparison": f"{over} AUC minus each method's", "counts": counts, "cells": ii,
            "never_beaten": all(c["loss"] == 0 for c in counts.values()),
            "beats_all_strictly": sum(all(ii[m][j]["verdict"] == "win" for m in ii) for j in range(len(settings)))}
    if iii_cells:
        out["iii_full_vs_half_oversampling"] = {"comparison": "oversampling ratio 1 minus ratio 0.5 (AUC)",
                                                "counts": count(iii_cells), "cells": iii_cells}
    if any(v_cells.values()):
        out["v_thresholding_accuracy"] = {"comparison": "accuracy with prior thresholding minus argmax, same model",
                                          "counts": {k: count(c) for k, c in v_cells.items() if c},
                                          "cells": {k: c for k, c in v_cells.items() if c}}
    return out


def strict_lines(sc: dict[str, Any]) -> list[str]:
    """Markdown for :func:`strict_conclusions`: the rule, win/tie/loss counts per conclusion and the verdicts."""
    if not sc:
        return []
    n = sc["settings"]
    out = [f"Rule: {sc['rule']}. Counts over the {n} imbalanced settings (win / tie / loss).", ""]
    if "i_imbalance_hurts" in sc:
        c = sc["i_imbalance_hurts"]["counts"]
        where = "in every setting" if c["loss"] == n else "in part"
        out.append(f"- (i) imbalance hurts the baseline's AUC: lower than at ρ=1 in {c['loss']} of {n} settings "
                   f"(tie {c['tie']}, higher {c['win']}) — supported {where}.")
    if "ii_oversampling_dominates" in sc:
        ii = sc["ii_oversampling_dominates"]
        per = "; ".join(f"{m}: {c['win']}/{c['tie']}/{c['loss']}" for m, c in ii["counts"].items())
        verdict = "never beaten" if ii["never_beaten"] else "beaten in some settings"
        out.append(f"- (ii) oversampling vs each method (AUC): {per}. Oversampling is {verdict}; it beats every "
                   f"other method at once in {ii['beats_all_strictly']} of {n} settings — 'dominates' holds only "
                   "as 'not beaten', mostly by ties.")
    if "iii_full_vs_half_oversampling" in sc:
        c = sc["iii_full_vs_half_oversampling"]["counts"]
        out.append(f"- (iii) full vs half oversampling (AUC): {c['win']}/{c['tie']}/{c['loss']}.")
    if "v_thresholding_accuracy" in sc:
        per = "; ".join(f"{k}: {c['win']}/{c['tie']}/{c['loss']}"
                        for k, c in sc["v_thresholding_accuracy"]["counts"].items())
        out.append(f"- (v) prior thresholding, accuracy gain (raises / no change / lowers): {per}.")
    return out


def strict_table(sc: dict[str, Any]) -> list[str]:
    """Per-setting cells of (ii) as a Markdown table: oversampling's AUC difference ×100 [95 % CI] vs each method,
    with the verdict (W/T/L)."""
    ii = sc.get("ii_oversampling_dominates")
    if not ii:
        return []
    ms = list(ii["cells"])
    lines = ["| setting | " + " | ".join(f"over − {m}" for m in ms) + " |", "|---" * (len(ms) + 1) + "|"]
    for j, c0 in enumerate(ii["cells"][ms[0]]):
        mu = "" if c0["mu"] is None else f" μ={c0['mu']:g}"
        cells = []
        for m in ms:
            c = ii["cells"][m][j]
            ci = c["ci"]
            cells.append(f"{100 * c['diff']:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] {c['verdict'][0].upper()}"
                         if ci else f"{100 * c['diff']:+.2f} T")
        lines.append(f"| {c0['kind']} ρ={c0['rho']:g}{mu} | " + " | ".join(cells) + " |")
    return lines


def _curve(s: str) -> list[float]:
    return [float(x) for x in s.split(";") if x and x != "nan"]


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{100 * x:.1f}"


def summary_sections(agg: pd.DataFrame, methods: list[str], tol: float, concl: dict[str, Any]) -> list[Section]:
    """``summary.md`` body: mean AUC (×100) per setting and method (best in bold), then the conclusions' evidence."""
    lines = [f"Mean multi-class ROC AUC ×100 over seeds; **bold** = best, ties within {tol * 100:.1f}.", "",
             "| setting | " + " | ".join(methods) + " | best |", "|---" * (len(methods) + 2) + "|"]
    w = winners(agg, methods, tol)
    for _, row in w.iterrows():
        t = agg[(agg.kind == row.kind) & (agg.rho == row.rho) & (agg.mu == row.mu)].set_index("method")
        cells = []
        for m in methods:
            val = _fmt(float(t.auc.get(m, np.nan)))
            cells.append(f"**{val}**" if m in row.within_tol and val else val)
        mu = "" if row.mu < 0 else f" μ={row.mu:g}"
        lines.append(f"| {row.kind} ρ={row.rho:g}{mu} | " + " | ".join(cells) + f" | {row.best} |")
    return [(None, lines), ("A.2 conclusions against this table (lenient: the mean-AUC tie tolerance above, no CIs)",
                            verdict_lines(concl)),
            (None, ["Full evidence (`conclusions.json`):", "", "```json", dumps_json(concl), "```"])]


def _verdict(v: Any) -> str:
    return "not measured" if v is None else ("supported" if v else "NOT supported")


def verdict_lines(c: dict[str, Any]) -> list[str]:
    """One markdown bullet per conclusion with its headline numbers."""
    out = []
    if "i_imbalance_hurts" in c:
        d = c["i_imbalance_hurts"]
        pans = "; ".join(f"{p['panel']}: {100 * p['auc_rho1']:.1f} → {100 * p['auc_rho_max']:.1f} at ρ="
                         f"{p['rho_max']:g}" for p in d["panels"])
        out.append(f"- (i) imbalance hurts — {_verdict(d['supported'])}: baseline AUC {pans}")
    if "ii_oversampling_dominates" in c:
        d = c["ii_oversampling_dominates"]
        out.append(f"- (ii) oversampling dominates — {_verdict(d['supported'])}: wins or ties (±{d['tolerance']:g}) "
                   f"in {d['settings']} imbalanced settings: {d['wins_or_ties']}")
    if "iii_resampling_ratio" in c:
        d = c["iii_resampling_ratio"]
        f = d.get("full_oversampling_best_fraction")
        under = d.get("undersampling", {}).get("best_ratio_counts", {})
        out.append(f"- (iii) full oversampling best in {'n/a' if f is None else f'{100 * f:.0f} %'} of settings; "
                   f"undersampling's best ratio per setting: {under}")
    if "iv_no_overfitting" in c:
        d = c["iv_no_overfitting"]
        drop = {k: round(v, 4) for k, v in d["auc_drop_from_best_epoch"].items()}
        gap = {k: round(v, 4) for k, v in d["train_minus_test_accuracy"].items()}
        out.append(f"- (iv) oversampling does not overfit — {_verdict(d['supported'])}: AUC drop from the best "
                   f"epoch {drop}, train−test accuracy {gap}")
    if "v_thresholding_accuracy" in c:
        d = c["v_thresholding_accuracy"]
        gains = {k: round(v["mean_gain"], 4) for k, v in d.items() if isinstance(v, dict)}
        out.append(f"- (v) prior thresholding raises accuracy — {_verdict(d['supported'])}: mean accuracy gain "
                   f"(prior − argmax) {gains}")
    return out


def write_study_outputs(df: pd.DataFrame, out: Path, st: StudySettings) -> dict[str, Any]:
    """``imbalance_auc.png``, ``imbalance_accuracy.png``, ``summary.md``, ``conclusions.json`` in ``out``."""
    if df.empty:
        return {}
    methods = {m: s for m, s in st.methods.items() if m in set(df.method)}
    agg = aggregate(df)
    r = roles(methods)
    trained = [m for m in r["trained"] if m in methods]
    plot_metric(agg, "auc", trained, out / "imbalance_auc.png", "ROC AUC vs imbalance (mean ± std over seeds)")
    plot_metric(agg, "accuracy", list(methods), out / "imbalance_accuracy.png", "accuracy vs imbalance")
    concl = conclusions(df, agg, methods, st.tie_tolerance)
    strict = strict_conclusions(df, methods)
    atomic_write_json(out / "conclusions.json", concl)
    atomic_write_json(out / "strict_conclusions.json", strict)
    sections = summary_sections(agg, trained, st.tie_tolerance, concl)
    sections[1:1] = [("A.2 conclusions under the strict rule (CIs per cell)", strict_lines(strict)),
                     (None, ["Oversampling's AUC minus each method's, ×100, mean over seeds [95 % t-CI]; "
                             "W/T/L = win/tie/loss by the rule (`strict_conclusions.json` has every part):", "",
                             *strict_table(strict)])]
    write_study_notes(out, "A.2 class-imbalance study", sections, filename="summary.md")
    return concl
