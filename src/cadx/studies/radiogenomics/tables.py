"""Tables of the radiogenomics study: the 10-hypothesis Fisher table, Table 3 AUCs, the power analysis, the
segmentation Dice table, the A.4 transfer comparison, and the report that holds them.

Choices (the paper is silent; tested in ``tests/test_radiogenomics.py``):

* **Quartile bins** are computed over the patients of each test (those with both the feature and the subtype),
  ``pandas.qcut(feature, 4)``: bin sizes differ by at most one; bins that collapse on tied values are merged
  (``duplicates="drop"``), so a table can have fewer than 4 rows — the table's shape is reported.
* **Exclusions** are per test: a patient without the feature (no mask slice, mask empty after post-processing,
  too small for the feature, no out-of-fold prediction) or without the subtype value is left out of that test
  only and named with the reason in the table's ``excluded`` column and the report's notes.
* Bonferroni and Holm are applied over the hypotheses of one mask source (automatic or manual).
* **Table 3**: AUC of the raw feature value as the score of "cluster vs rest" (Mann–Whitney, ties 1/2),
  percentile CI over patient bootstrap resamples (:func:`cadx.evaluation.bootstrap.bootstrap_ci`). Gender's
  score is its ``data.csv`` code (1/2), so its AUC below 0.5 means the cluster has more patients coded 1.
* **Power**: features drawn N(0, 1) with one cluster shifted by ``delta`` SD (each cluster in turn), the observed
  cluster counts of the column, quartile bins, Fisher's test (Monte Carlo, ``power_fisher_samples`` tables);
  power = share of data sets with p below ``alpha / m`` (Bonferroni) and below ``alpha``. The one-vs-rest AUC of
  a ``delta`` shift is ``Phi(delta / sqrt 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.exact import bonferroni, fisher_exact_rxc, holm
from cadx.evaluation.metrics import roc_auc
from cadx.evaluation.multiplicity import format_p
from cadx.report.studies import Section, markdown_table, write_study_notes
from cadx.runs.folder import done_folds
from cadx.runs.segmentation import evaluate_seg
from cadx.studies.radiogenomics.variants import FEATURES, RadiogenomicsConfig
from cadx.utils import read_json

__all__ = ["CLUSTER_PREFIX", "auc_table", "cluster_name", "dice_table", "hypothesis_table", "power_table",
           "quartile_bins", "transfer_tables", "write_report"]

CLUSTER_PREFIX = {"RNASeqCluster": "R", "COCCluster": "coc", "miRNACluster": "mi", "CNCluster": "C",
                  "MethylationCluster": "M", "OncosignCluster": "OSC", "RPPACluster": "RPPA"}
SOURCES = {"automatic": "Deep learning", "manual": "Manual"}


def cluster_name(column: str, code: Any) -> str:
    """``RNASeqCluster`` code 2 → ``R2``; other columns ``<column>=<code>``."""
    c = int(code) if float(code) == int(code) else code
    return f"{CLUSTER_PREFIX[column]}{c}" if column in CLUSTER_PREFIX else f"{column}={c}"


def quartile_bins(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Quartile bin 0..3 of each value (``pandas.qcut``; tied edges merged, see the module docstring)."""
    v = pd.Series(np.asarray(values, dtype=np.float64))
    return np.asarray(pd.qcut(v, 4, labels=False, duplicates="drop"), dtype=np.int64)


def _contingency(bins: np.ndarray, groups: np.ndarray) -> np.ndarray:
    _, gi = np.unique(groups, return_inverse=True)
    _, bi = np.unique(bins, return_inverse=True)
    t = np.zeros((bi.max() + 1, gi.max() + 1), np.int64)
    np.add.at(t, (bi, gi), 1)
    return t


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _usable(features: pd.DataFrame, source: str, feature: str, column: str
            ) -> tuple[pd.DataFrame, list[str]]:
    """Patients of ``source`` with a finite ``feature`` and a ``column`` value, and the named exclusions."""
    f = features[features["source"] == source]
    excluded, keep = [], []
    for _, r in f.iterrows():
        if not _finite(r.get(feature)):
            excluded.append(f"{r['patient']} ({r.get('reason') or 'no ' + FEATURES[feature]})")
        elif not _finite(r.get(column)):
            excluded.append(f"{r['patient']} ({column} missing)")
        keep.append(_finite(r.get(feature)) and _finite(r.get(column)))
    return f[np.asarray(keep, bool)], excluded


def hypothesis_table(features: pd.DataFrame, cfg: RadiogenomicsConfig) -> pd.DataFrame:
    """One row per (source, hypothesis): ``source, hypothesis, feature, column, n, table`` (the r x c counts,
    rows = quartile bins, columns = subtype codes in ascending order), ``p, method, p_bonferroni, p_holm,
    significant`` (p < alpha / m) and ``excluded`` (names with reasons)."""
    rows = []
    m = len(cfg.hypotheses)
    for source in [s for s in SOURCES if s in set(features["source"])]:
        block = []
        for h in cfg.hypotheses:
            use, excluded = _usable(features, source, h.feature, h.column)
            row: dict[str, Any] = {"source": source, "hypothesis": h.name, "feature": h.feature, "column": h.column,
                                   "n": len(use), "excluded": "; ".join(excluded)}
            if len(use) >= 4 and use[h.column].nunique() >= 2:
                t = _contingency(quartile_bins(use[h.feature].to_numpy(float)), use[h.column].to_numpy(float))
                fr = fisher_exact_rxc(t, n_samples=cfg.fisher_samples, seed=cfg.seed, max_nodes=cfg.fisher_max_nodes)
                row.update(table=" / ".join(" ".join(str(x) for x in rr) for rr in t.tolist()),
                           shape=f"{t.shape[0]}x{t.shape[1]}", p=fr.pvalue, method=fr.method)
            else:
                row.update(table="", shape="", p=float("nan"),
                           method=f"not tested: {len(use)} patients, {use[h.column].nunique()} subtype values")
            block.append(row)
        p = np.array([b["p"] for b in block], float)
        for b, pb, ph in zip(block, bonferroni(p), holm(p), strict=True):
            b.update(p_bonferroni=pb, p_holm=ph, significant=bool(np.isfinite(b["p"]) and b["p"] < cfg.alpha / m))
        rows += block
    cols = ["source", "hypothesis", "feature", "column", "n", "shape", "table", "p", "method", "p_bonferroni",
            "p_holm", "significant", "excluded"]
    return pd.DataFrame(rows, columns=cols)


def _auc_cell(y: np.ndarray, score: np.ndarray, groups: np.ndarray, cfg: RadiogenomicsConfig) -> dict[str, Any]:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return {"auc": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n_pos": n_pos, "n": int(y.size)}
    if cfg.bootstrap > 0:
        r = bootstrap_ci(roc_auc, y, score, groups=groups, n_resamples=cfg.bootstrap, seed=cfg.seed)
        return {"auc": r.point, "ci_lo": r.lo, "ci_hi": r.hi, "n_pos": n_pos, "n": int(y.size)}
    return {"auc": roc_auc(y, score), "ci_lo": float("nan"), "ci_hi": float("nan"), "n_pos": n_pos,
            "n": int(y.size)}


def auc_table(features: pd.DataFrame, clinical: pd.DataFrame, cfg: RadiogenomicsConfig) -> pd.DataFrame:
    """Table 3 in long form: one row per (variable, cluster): ``variable, cluster, auc, ci_lo, ci_hi, n_pos, n,
    excluded``. Variables: ``<source> <feature>`` for every mask source and ``auc_features``, then age and
    gender (from ``clinical``: ``patient`` and the columns)."""
    col = cfg.auc_column
    codes = sorted({float(v) for v in clinical[col].dropna()})
    variables: list[tuple[str, pd.DataFrame, str]] = []
    for source in [s for s in SOURCES if s in set(features["source"])]:
        for feat in cfg.auc_features:
            variables.append((f"{SOURCES[source]} {FEATURES[feat]}", features[features["source"] == source], feat))
    variables.append(("Age", clinical.assign(reason=None), cfg.age_column))
    variables.append(("Gender", clinical.assign(reason=None), cfg.gender_column))
    rows = []
    for label, df, var in variables:
        ok = np.array([_finite(r[var]) and _finite(r[col]) for _, r in df.iterrows()], bool)
        excluded = [f"{r['patient']} ({r['reason'] or 'no ' + var})" if not _finite(r[var])
                    else f"{r['patient']} ({col} missing)" for _, r in df[~ok].iterrows()]
        use = df[ok]
        score = use[var].to_numpy(float)
        groups = use["patient"].astype(str).to_numpy()
        for c in codes:
            y = (use[col].to_numpy(float) == c).astype(np.int64)
            rows.append({"variable": label, "cluster": cluster_name(col, c), **_auc_cell(y, score, groups, cfg),
                         "excluded": "; ".join(excluded)})
    return pd.DataFrame(rows)


def power_table(features: pd.DataFrame, cfg: RadiogenomicsConfig, columns: Sequence[str] | None = None
                ) -> pd.DataFrame:
    """Simulated power of the quartile-binned Fisher test for each hypothesis column (or ``columns``), with the
    cluster counts of the manual-mask patients with features (or the automatic ones when there are no manual
    features):
    ``column, n, counts, delta, auc, power_bonferroni, power_alpha, simulations`` (see the module docstring);
    Bonferroni over all ``cfg.hypotheses``."""
    if cfg.power_simulations <= 0:
        return pd.DataFrame()
    src = "manual" if (features["source"] == "manual").any() else "automatic"
    f = features[features["source"] == src]
    f = f[f[["asd", "inv_bevr", "mf"]].notna().any(axis=1)]  # patients who enter at least one test
    rng = np.random.default_rng(cfg.seed)
    m = len(cfg.hypotheses)
    rows = []
    for col in columns or dict.fromkeys(h.column for h in cfg.hypotheses):
        groups = f[col].dropna().to_numpy(float)
        codes, counts = np.unique(groups, return_counts=True)
        if len(codes) < 2:
            continue
        for delta in cfg.power_effects:
            p = []
            for i in range(cfg.power_simulations):
                shifted = codes[i % len(codes)]
                x = rng.normal(size=groups.size) + delta * (groups == shifted)
                t = _contingency(quartile_bins(x), groups)
                p.append(fisher_exact_rxc(t, method="monte-carlo", n_samples=cfg.power_fisher_samples,
                                          seed=int(rng.integers(2**31))).pvalue)
            pa = np.asarray(p)
            rows.append({"column": col, "n": int(groups.size),
                         "counts": " ".join(f"{cluster_name(col, c)}:{k}" for c, k in zip(codes, counts, strict=True)),
                         "delta": delta, "auc": float(norm.cdf(delta / math.sqrt(2))),
                         "power_bonferroni": float(np.mean(pa < cfg.alpha / m)),
                         "power_alpha": float(np.mean(pa < cfg.alpha)), "simulations": cfg.power_simulations})
    return pd.DataFrame(rows)


def dice_table(run_dir: Path, n_bootstrap: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-patient Dice of a segmentation run folder's finished folds: rows ``setting`` (out-of-fold, and each
    test-noise level when recorded), ``n, dice_mean, mean_ci_lo/hi, dice_median, median_ci_lo/hi``; and info
    (``folds_done``, ``folds``, ``seconds``, ``input_size``, ``partial``)."""
    folds = done_folds(run_dir)
    if not folds:
        return pd.DataFrame(), {"folds_done": 0}
    df = pd.concat([pd.read_csv(f / "predictions.csv") for f in folds], ignore_index=True)
    m = evaluate_seg(df, [], n_bootstrap, seed)
    p = m["pooled"]
    ci = p.get("ci", {})
    rows = [{"setting": "out-of-fold", "n": int(p.get("n_dice", len(df))), "dice_mean": p.get("dice_mean"),
             "mean_ci_lo": (ci.get("dice_mean") or [None, None])[0],
             "mean_ci_hi": (ci.get("dice_mean") or [None, None])[1], "dice_median": p.get("dice_median"),
             "median_ci_lo": (ci.get("dice_median") or [None, None])[0],
             "median_ci_hi": (ci.get("dice_median") or [None, None])[1]}]
    for sigma, e in (p.get("noise") or {}).items():
        lo_hi = e.get("ci_dice_mean") or [None, None]
        rows.append({"setting": f"test noise sigma = {sigma} x training SD", "n": e["n"], "dice_mean": e["dice_mean"],
                     "mean_ci_lo": lo_hi[0], "mean_ci_hi": lo_hi[1], "dice_median": e["dice_median"],
                     "median_ci_lo": None, "median_ci_hi": None})
    info: dict[str, Any] = {"folds_done": len(folds), "seconds": sum(float(read_json(f / "DONE").get("seconds", 0))
                                                                    for f in folds)}
    if (run_dir / "metrics.json").is_file():
        run = read_json(run_dir / "metrics.json").get("run", {})
        info.update(folds=run.get("folds"), input_size=run.get("input_size"), seconds=run.get("seconds"))
    info["partial"] = info.get("folds") is None or info["folds_done"] < int(info.get("folds") or 0)
    return pd.DataFrame(rows), info


def transfer_tables(res: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A.4 result of :func:`~cadx.studies.radiogenomics.transfer.run_transfer` → (AUC rows ``task, start, auc,
    ci_lo, ci_hi, n_pos, n_neg``; p-value rows ``task, a, b, p, p_holm``)."""
    aucs, ps = [], []
    for task, t in res.get("tasks", {}).items():
        for start, a in t.get("auc", {}).items():
            aucs.append({"task": task, "start": start, "auc": a.get("auc"), "ci_lo": a.get("ci_lo"),
                         "ci_hi": a.get("ci_hi"), "n_pos": t.get("n_pos"), "n_neg": t.get("n_neg")})
        for q in t.get("pvalues", []):
            ps.append({"task": task, "a": q.get("a"), "b": q.get("b"), "p": q.get("p"), "p_holm": q.get("p_holm")})
    return pd.DataFrame(aucs), pd.DataFrame(ps)


def _ci(v: Any, lo: Any, hi: Any) -> str:
    def f(x: Any) -> str:
        return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.2f}"
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def _p(v: Any) -> str:
    """p-values through :func:`cadx.evaluation.multiplicity.format_p` (``< 0.001``); missing → ``–``."""
    if v is None or not math.isfinite(float(v)):
        return "–"
    return format_p(float(v))


def write_report(out_dir: Path, cfg: RadiogenomicsConfig, cohort_info: dict[str, Any], hyp: pd.DataFrame,
                 auc: pd.DataFrame, power: pd.DataFrame, dice: pd.DataFrame, dice_info: dict[str, Any],
                 transfer: dict[str, Any] | None, notes: list[str]) -> Path:
    """Write every table as CSV and ``report.md`` (cohort, reading, Dice, hypotheses, Table 3, power, A.4,
    notes) into ``out_dir``; returns the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in [("hypotheses", hyp), ("table3_auc", auc), ("power", power), ("dice", dice)]:
        df.to_csv(out_dir / f"{name}.csv", index=False)
    m = len(cfg.hypotheses)
    n = cohort_info["n_patients"]
    sections: list[Section] = [(None, [
        f"Thesis A.3 (Buda, Saha, Mazurowski 2019) on the shared LGG cohort: **{n} patients** (the paper: 110). "
        f"Features from manual masks for {cohort_info['n_manual']} patients and from out-of-fold automatic masks "
        f"for {cohort_info['n_automatic']}."])]
    sections.append(("What 28 patients can and cannot show", [
        f"- With {n} patients a quartile bin holds about {n // 4} patients and a cluster 1–12; Fisher's test "
        f"cannot reach the paper's p < 0.0002 unless the association is nearly perfect. The Bonferroni level is "
        f"{cfg.alpha}/{m} = {cfg.alpha / m:.4g}.",
        "- The power analysis below gives, per subtype column, the chance of a Bonferroni-significant result "
        "for a feature shift of delta SD in one cluster (one-vs-rest AUC Phi(delta/sqrt2)).",
        "- A non-significant p here is not evidence against the paper's associations; a significant one would "
        "need confirmation on the 20 held-out patients (the issue's external check).",
        "- Table 3's CIs are wide (about ±0.2–0.3 with 5–10 positives); AUC differences between mask sources "
        "of less than that are not resolved."]))
    if dice.empty:
        sections.append(("Segmentation (Dice per patient)", "No segmentation run folder with finished folds: no "
                         "automatic masks, so the automatic rows are absent."))
    else:
        rows = [[r["setting"], r["n"], _ci(r["dice_mean"], r["mean_ci_lo"], r["mean_ci_hi"]),
                 _ci(r["dice_median"], r["median_ci_lo"], r["median_ci_hi"])] for _, r in dice.iterrows()]
        head = (f"Run folder `{dice_info.get('run_dir')}`: {dice_info.get('folds_done')} of "
                f"{dice_info.get('folds', '?')} folds finished{' (PARTIAL)' if dice_info.get('partial') else ''}, "
                f"input {dice_info.get('input_size')}, {dice_info.get('seconds')} s. Paper: mean 0.82, median 0.85 "
                "(110 patients, 22 folds).")
        sections.append(("Segmentation (Dice per patient, 95 % patient-bootstrap CIs)",
                         [head, "", *markdown_table(["setting", "patients", "mean Dice", "median Dice"], rows)]))
    for source in [s for s in SOURCES if s in set(hyp["source"])]:
        h = hyp[hyp["source"] == source]
        rows = [[r["hypothesis"], r["column"], r["n"], r["shape"], _p(r["p"]), _p(r["p_bonferroni"]),
                 _p(r["p_holm"]), "yes" if r["significant"] else "no", r["method"]] for _, r in h.iterrows()]
        sections.append((f"Ten hypotheses, {SOURCES[source].lower()} masks (Fisher exact on quartile bins)", [
            *markdown_table(["hypothesis", "column", "n", "table", "p", "p Bonferroni", "p Holm",
                             f"p < {cfg.alpha / m:.4g}", "method"], rows)]))
    if not auc.empty:
        clusters = list(dict.fromkeys(auc["cluster"]))
        rows = []
        for var in dict.fromkeys(auc["variable"]):
            a = auc[auc["variable"] == var].set_index("cluster")
            rows.append([var, *[_ci(a.loc[c, "auc"], a.loc[c, "ci_lo"], a.loc[c, "ci_hi"]) for c in clusters]])
        npos = auc.drop_duplicates("cluster").set_index("cluster")["n_pos"]
        sections.append((f"Table 3: one-vs-rest AUC per {cfg.auc_column} cluster [95 % CI]", [
            "Paper (110 patients): DL 1/BEVR R2 0.80, manual 1/BEVR R2 0.78, DL ASD R2 0.73, age R2 0.66, gender "
            "R2 0.50. MF rows are beyond the paper's table. Positives per cluster (first variable): "
            + ", ".join(f"{c}: {int(npos[c])}" for c in clusters) + ".", "",
            *markdown_table(["variable", *clusters], rows)]))
    if not power.empty:
        rows = [[r["column"], r["counts"], r["delta"], f"{r['auc']:.2f}", f"{r['power_bonferroni']:.2f}",
                 f"{r['power_alpha']:.2f}"] for _, r in power.iterrows()]
        sections.append(("Power of the quartile-binned Fisher test with these cluster counts", [
            f"{int(power['simulations'].iloc[0])} simulated data sets per row; see tables.py for the model.", "",
            *markdown_table(["column", "counts", "shift (SD)", "AUC", f"power at {cfg.alpha / m:.4g}",
                             f"power at {cfg.alpha}"], rows)]))
    if transfer is not None:
        ta, tp = transfer_tables(transfer)
        rows = [[r["task"], r["start"], _ci(r["auc"], r["ci_lo"], r["ci_hi"]), r["n_pos"], r["n_neg"]]
                for _, r in ta.iterrows()]
        prow = [[r["task"], r["a"], r["b"], _p(r["p"]), _p(r["p_holm"])] for _, r in tp.iterrows()]
        exc = "; ".join(f"{e.get('patient')} ({e.get('reason')})" for e in transfer.get("excluded", [])) or "none"
        sections.append(("A.4 transfer learning (pooled-CV AUC, patient bootstrap CIs)", [
            f"{transfer.get('n_patients')} patients, label `{transfer.get('label_column')}`, starts "
            f"{', '.join(transfer.get('starts', []))}; excluded: {exc}. {transfer.get('reduced_vs_paper', '')}", "",
            *markdown_table(["task", "start", "AUC [95% CI]", "positives", "negatives"], rows), "",
            "Paired bootstrap p-values between starts (Holm over the pairs of a task):", "",
            *markdown_table(["task", "a", "b", "p", "p Holm"], prow)]))
    else:
        sections.append(("A.4 transfer learning", "Not run: the config has no `transfer` section and no "
                         "`transfer_results` folder."))
    sections.append(("Notes (exclusions, choices)", [f"- {n_}" for n_ in notes] or ["- none"]))
    return write_study_notes(out_dir, "Radiogenomics of lower-grade glioma (thesis A.3, A.4)", sections,
                             filename="report.md")
