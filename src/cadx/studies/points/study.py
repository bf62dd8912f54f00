"""Point-system runners (thesis A.7): ``cadx points fit|score`` on a feature table, and the LIDC study.

* :func:`run_points_score`: score a table with one system (optionally against a ``baseline`` system: the A.7
  ACR-vs-AI comparison) → AUC of total points with patient-bootstrap CIs, sensitivity/specificity of the FNA
  recommendation, the reclassification table and the paper's two-proportion tests.
* :func:`run_points_fit`: optimise the points with the GA (hyper-parameters by inner CV on the training rows only,
  refit on all training rows) and evaluate baseline vs optimised on the test rows (``--test-split``), or, without a
  test split, out-of-fold (each outer fold tuned and fitted on the others) — never on the rows that chose them.
* :func:`run_points_lidc`: the LIDC point system (8 reader attributes → malignancy): baseline vs GA vs logistic
  regression in patient-level CV (:func:`cadx.data.splits.make_splits`), AUCs with CIs, paired bootstrap p-values.

Tables (see docs/points.md): one column per category, a binary label column, optional ``patient_id`` (rows of a
patient stay in one fold and are resampled together) and a size column (mm).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from cadx.classical.points import (
    PointSystem,
    design_matrix,
    level_of,
    load_system,
    mcnemar_exact,
    norm,
    reclassification_table,
    recommend,
    totals,
    two_proportion_test,
)
from cadx.classical.points_ga import GAParams, TuneResult, tune_and_fit
from cadx.data.datasets import load_dataset
from cadx.data.splits import make_splits
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation import metrics as M
from cadx.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_pvalue
from cadx.studies.points.tables import write_fit_outputs, write_lidc_outputs, write_score_outputs
from cadx.studies.points.variants import PointsConfig, lidc_system_path

__all__ = [
    "PointsTable",
    "compare_systems",
    "holdout_mask",
    "lidc_cohort",
    "lidc_table",
    "read_points_table",
    "run_points_fit",
    "run_points_lidc",
    "run_points_score",
    "synthetic_points_table",
]

_TRUE = {"1", "1.0", "true", "yes", "malignant", "positive"}
_FALSE = {"0", "0.0", "false", "no", "benign", "negative"}


@dataclass
class PointsTable:
    """A parsed feature table: ``X`` ``(N, F)`` design matrix, ``y`` ``(N,)`` 0/1, ``groups`` ``(N,)`` patient
    ids (row numbers when the table has none), ``ids`` ``(N,)`` row ids, ``size_mm`` ``(N,)`` or None."""

    frame: pd.DataFrame
    X: NDArray[np.float64]
    y: NDArray[np.int64]
    groups: NDArray[Any]
    ids: NDArray[Any]
    size_mm: NDArray[np.float64] | None
    source: str


def _column(df: pd.DataFrame, name: str, source: str, option: str) -> str:
    cols = {norm(c): c for c in df.columns}
    if norm(name) not in cols:
        raise CadxDataError(f"{option}: no column {name!r}; columns: {', '.join(map(str, df.columns))}",
                            path=source, field=name)
    return str(cols[norm(name)])


def read_points_table(path_or_frame: str | Path | pd.DataFrame, system: PointSystem, label: str | None,
                      size_column: str | None = None, group_column: str = "patient_id",
                      id_column: str | None = None) -> PointsTable:
    """Parse a feature table (CSV path or DataFrame) for ``system``.

    ``label``: binary column (0/1, true/false, yes/no, benign/malignant; None = unlabelled, ``y`` all −1);
    ``size_column``: maximum size in mm (None = sizes unknown); ``group_column``: patient ids when present.
    Every bad cell raises one :class:`CadxDataError` naming the file, the row (1-based data row) and column.
    """
    if isinstance(path_or_frame, pd.DataFrame):
        df, source = path_or_frame.reset_index(drop=True), "<table>"
    else:
        source = str(path_or_frame)
        if not Path(source).is_file():
            raise CadxDataError("table not found", path=source, field="table")
        try:
            df = pd.read_csv(source, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise CadxDataError(f"not a readable CSV: {' '.join(str(e).split())}", path=source,
                                field="table") from None
    if df.empty:
        raise CadxDataError("the table has no rows", path=source, field="table")
    X = design_matrix(df, system, source)
    n = len(df)
    y = np.full(n, -1, dtype=np.int64)
    if label is not None:
        col = _column(df, label, source, "--label")
        for i, v in enumerate(df[col].tolist()):
            s = str(v).strip().lower()
            if s in _TRUE:
                y[i] = 1
            elif s in _FALSE:
                y[i] = 0
            else:
                raise CadxDataError(f"row {i + 1}: label {v!r} is not binary; allowed: 0/1, true/false, yes/no, "
                                    f"benign/malignant", path=source, field=col)
    size: NDArray[np.float64] | None = None
    if size_column is not None:
        col = _column(df, size_column, source, "--size-column")
        size = np.empty(n)
        for i, v in enumerate(df[col].tolist()):
            try:
                size[i] = float(v)
            except (TypeError, ValueError):
                size[i] = math.nan
            if not math.isfinite(size[i]) or size[i] < 0:
                raise CadxDataError(f"row {i + 1}: size {v!r} is not a number of mm >= 0", path=source, field=col)
    gcols = {norm(c): c for c in df.columns}
    if norm(group_column) in gcols:
        groups = df[gcols[norm(group_column)]].astype(str).to_numpy()
        empty = np.flatnonzero(groups == "")
        if empty.size:
            raise CadxDataError(f"row {empty[0] + 1}: empty patient id", path=source, field=group_column)
    else:
        groups = np.array([f"row{i + 1}" for i in range(n)])
    ids = (df[_column(df, id_column, source, "id column")].astype(str).to_numpy() if id_column
           else np.arange(1, n + 1))
    return PointsTable(df, X, y, groups, ids, size, source)


def holdout_mask(rule: str | None, table: PointsTable, seed: int = 0) -> NDArray[np.bool_]:
    """``(N,)`` True for held-out test rows. ``rule``: ``none`` (or None) → no test rows; ``last:N`` → the last
    N rows in file order (A.7's temporal split); ``column:NAME`` → rows whose NAME is ``test`` (others must be
    ``train``); ``fraction:F`` → a patient-grouped random fraction F (seeded). A test patient never has a
    training row (checked)."""
    n = len(table.y)
    r = (rule or "none").strip()
    kind, _, arg = r.partition(":")
    kind = kind.lower()
    mask = np.zeros(n, dtype=bool)
    if kind == "none":
        return mask
    if kind == "last":
        try:
            k = int(arg)
        except ValueError:
            raise CadxConfigError(f"--test-split {rule!r}: last:N needs an integer N") from None
        if not 0 < k < n:
            raise CadxConfigError(f"--test-split {rule!r}: N must be in [1, {n - 1}]")
        mask[n - k:] = True
    elif kind == "column":
        col = _column(table.frame, arg, table.source, "--test-split column")
        vals = table.frame[col].astype(str).str.strip().str.lower().to_numpy()
        bad = np.flatnonzero(~np.isin(vals, ["train", "test"]))
        if bad.size:
            raise CadxDataError(f"row {bad[0] + 1}: {vals[bad[0]]!r}; allowed: train, test", path=table.source,
                                field=col)
        mask = vals == "test"
    elif kind == "fraction":
        try:
            f = float(arg)
        except ValueError:
            raise CadxConfigError(f"--test-split {rule!r}: fraction:F needs a number") from None
        if not 0 < f < 1:
            raise CadxConfigError(f"--test-split {rule!r}: F must be in (0, 1)")
        _, te = next(GroupShuffleSplit(1, test_size=f, random_state=seed).split(table.X, table.y, table.groups))
        mask[te] = True
    else:
        raise CadxConfigError(f"--test-split {rule!r}: expected none, last:N, column:NAME or fraction:F")
    both = set(table.groups[mask]) & set(table.groups[~mask])
    if both:
        raise CadxDataError(f"patient {sorted(both)[0]!r} has rows in both train and test (split rule {r!r})",
                            path=table.source, field="patient_id")
    if not mask.any() or mask.all():
        raise CadxConfigError(f"--test-split {rule!r} leaves no train or no test rows")
    return mask


# --- evaluation ---------------------------------------------------------------------------------------------

def _scored(system: PointSystem, X: NDArray, points: NDArray, size: NDArray | None) -> dict[str, NDArray]:
    t = totals(X, points)
    lv = level_of(t, system)
    return {"total": t, "level": lv, "recommendation": recommend(lv, system, size)}


def _rate(x: int, n: int) -> dict[str, Any]:
    return {"x": int(x), "n": int(n), "value": x / n if n else float("nan")}


def compare_systems(y: NDArray, groups: NDArray, scored: Mapping[str, Mapping[str, NDArray]],
                    level_names: Sequence[str], n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Metrics of one or two scored systems on the same labelled rows.

    ``scored``: tag → ``{"total", "level", "recommendation"}`` arrays ``(N,)`` (first tag = baseline). Per tag:
    ``auc`` [point, lo, hi] (patient bootstrap), ``sensitivity``/``specificity`` of ``FNA`` as x/n with CIs.
    With two tags also: ``auc_p`` (paired bootstrap), the two-proportion tests of sensitivity and specificity
    (R ``prop.test``, the paper's named test, and the exact McNemar test of the same nodules), level shifts and
    FNA changes, and ``reclassification`` (baseline level × new level counts).
    """
    out: dict[str, Any] = {"n": int(y.size), "n_positive": int(y.sum()), "systems": {}}
    sens_fn = functools.partial(M.sensitivity, n_classes=2)
    spec_fn = functools.partial(M.specificity, n_classes=2)
    pos, neg = y == 1, y == 0
    for tag, s in scored.items():
        fna = (s["recommendation"] == "FNA").astype(np.int64)
        auc = bootstrap_ci(M.roc_auc, y, s["total"].astype(float), groups, n_resamples=n_resamples, seed=seed)
        se = bootstrap_ci(sens_fn, y, fna, groups, n_resamples=n_resamples, seed=seed)
        sp = bootstrap_ci(spec_fn, y, fna, groups, n_resamples=n_resamples, seed=seed)
        out["systems"][tag] = {
            "auc": list(auc), "sensitivity": {**_rate(int(fna[pos].sum()), int(pos.sum())), "ci": [se.lo, se.hi]},
            "specificity": {**_rate(int((fna[neg] == 0).sum()), int(neg.sum())), "ci": [sp.lo, sp.hi]},
            "fna": int(fna.sum()),
            "level_counts": {name: int((s["level"] == i).sum()) for i, name in enumerate(level_names)},
        }
    tags = list(scored)
    if len(tags) == 2:
        a, b = scored[tags[0]], scored[tags[1]]
        fa, fb = a["recommendation"] == "FNA", b["recommendation"] == "FNA"
        out["auc_p"] = paired_bootstrap_pvalue(M.roc_auc, y, b["total"].astype(float), a["total"].astype(float),
                                               groups, n_resamples=n_resamples, seed=seed)
        tests: dict[str, Any] = {}
        for name, rows, hit_a, hit_b in (("sensitivity", pos, fa, fb), ("specificity", neg, ~fa, ~fb)):
            xa, xb, nn = int(hit_a[rows].sum()), int(hit_b[rows].sum()), int(rows.sum())
            if nn == 0:
                continue
            pt = two_proportion_test(xa, nn, xb, nn)
            mc = mcnemar_exact(int((hit_a & ~hit_b)[rows].sum()), int((~hit_a & hit_b)[rows].sum()))
            tests[name] = {"baseline": f"{xa}/{nn}", "new": f"{xb}/{nn}", "prop_test_p": pt.pvalue,
                           "prop_test_chi2": pt.statistic, "mcnemar_p": mc.pvalue,
                           "discordant": [mc.extra.get("a_only", 0), mc.extra.get("b_only", 0)]}
        out["tests"] = tests
        la, lb = a["level"], b["level"]
        out["shifts"] = {"lower": int((lb < la).sum()), "same": int((lb == la).sum()), "higher": int((lb > la).sum()),
                         "lost_fna": int((fa & ~fb).sum()), "lost_fna_benign": int((fa & ~fb & neg).sum()),
                         "gained_fna": int((~fa & fb).sum()), "gained_fna_malignant": int((~fa & fb & pos).sum())}
        out["reclassification"] = reclassification_table(la, lb, level_names).to_dict(orient="split")
    return out


def _predictions(table: PointsTable, rows: NDArray, scored: Mapping[str, Mapping[str, NDArray]],
                 level_names: Sequence[str], part: str | NDArray) -> pd.DataFrame:
    df = pd.DataFrame({"row": table.ids[rows], "patient_id": table.groups[rows], "y_true": table.y[rows],
                       "part": part})
    if table.size_mm is not None:
        df["size_mm"] = table.size_mm[rows]
    names = np.asarray(level_names)
    for tag, s in scored.items():
        df[f"total_{tag}"] = s["total"]
        df[f"level_{tag}"] = names[s["level"]]
        df[f"recommendation_{tag}"] = s["recommendation"]
    return df


def run_points_score(table_path: str | Path | pd.DataFrame, system: str | Path | PointSystem, label: str,
                     out_dir: str | Path, size_column: str | None = None,
                     baseline: str | Path | PointSystem | None = None, n_resamples: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Score ``table`` with ``system`` (and ``baseline`` when given: baseline vs system) into ``out_dir``:
    ``predictions.csv``, ``metrics.json``, ``reclassification.csv`` (with a baseline), ``report.md``."""
    sysm = system if isinstance(system, PointSystem) else load_system(system)
    base = None if baseline is None else (baseline if isinstance(baseline, PointSystem) else load_system(baseline))
    t0 = time.perf_counter()
    tab = read_points_table(table_path, sysm, label, size_column)
    systems = {"baseline": base, "system": sysm} if base is not None else {"system": sysm}
    for s in systems.values():
        assert s is not None
        if [lv.name for lv in s.levels] != [lv.name for lv in sysm.levels]:
            raise CadxConfigError(f"{s.source}: levels differ from {sysm.source}; the reclassification needs the "
                                  "same levels")
    scored = {}
    for tag, s in systems.items():
        assert s is not None
        Xs = design_matrix(tab.frame, s, tab.source)
        scored[tag] = _scored(s, Xs, s.points, tab.size_mm)
    names = [lv.name for lv in sysm.levels]
    rows = np.arange(len(tab.y))
    metrics = compare_systems(tab.y, tab.groups, scored, names, n_resamples, seed)
    metrics.update({"command": "score", "table": tab.source, "systems_used": {k: v.source for k, v in systems.items()
                                                                               if v is not None},
                    "size_column": size_column, "seconds": round(time.perf_counter() - t0, 2)})
    preds = _predictions(tab, rows, scored, names, "all")
    write_score_outputs(Path(out_dir), metrics, preds, {k: v for k, v in systems.items() if v is not None})
    return metrics


def _fit_part(tab: PointsTable, system: PointSystem, rows: NDArray, grid: Sequence[GAParams], folds: int,
              seed: int) -> TuneResult:
    low, high = system.bounds
    return tune_and_fit(tab.X[rows], tab.y[rows], tab.groups[rows], system.points, low, high, system.fixed, grid,
                        folds=folds, seed=seed)


def run_points_fit(table_path: str | Path | pd.DataFrame, system: str | Path | PointSystem, label: str,
                   out_dir: str | Path, size_column: str | None = None, test_split: str | None = None,
                   folds: int = 3, grid: Sequence[GAParams] | None = None, n_resamples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Optimise ``system``'s points on ``table`` with the GA and evaluate baseline vs optimised.

    Training rows = all rows outside ``test_split`` (:func:`holdout_mask`). The GA hyper-parameters are chosen from
    ``grid`` (default: the GA defaults only) by ``folds``-fold patient-grouped inner CV on the training rows,
    then the GA is refitted on all training rows → ``system_optimised.yaml``. Evaluation: on the test rows; with
    no test split, out-of-fold over ``folds`` outer patient folds (each tuned and fitted on the other folds).
    Writes ``predictions.csv``, ``points.csv``, ``ga_cv.csv``, ``ga_log.csv``, ``reclassification.csv``,
    ``metrics.json``, ``system_optimised.yaml`` and ``report.md`` into ``out_dir``.
    """
    sysm = system if isinstance(system, PointSystem) else load_system(system)
    g = list(grid) if grid else [GAParams()]
    t0 = time.perf_counter()
    tab = read_points_table(table_path, sysm, label, size_column)
    if len(np.unique(tab.y)) < 2:
        raise CadxDataError("the label has a single class; AUC fitness needs both", path=tab.source, field=label)
    test = holdout_mask(test_split, tab, seed)
    train_rows = np.flatnonzero(~test)
    final = _fit_part(tab, sysm, train_rows, g, folds, seed)
    optimised = sysm.with_points(final.fit.points, name=f"{sysm.name} (GA-optimised)")
    names = [lv.name for lv in sysm.levels]
    if test.any():
        rows = np.flatnonzero(test)
        opt_points = np.tile(final.fit.points, (rows.size, 1))
        parts: str | NDArray = "test"
        evaluation = "test"
    else:
        rows = np.arange(len(tab.y))
        opt_points = np.zeros((rows.size, tab.X.shape[1]), dtype=np.int64)
        fold_of = np.zeros(rows.size, dtype=np.int64)
        k = min(folds, len(np.unique(tab.groups)))
        for f, (tr, te) in enumerate(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                                     .split(tab.X, tab.y, tab.groups)):
            res = _fit_part(tab, sysm, tr, g, folds, seed)
            opt_points[te] = res.fit.points
            fold_of[te] = f
        parts = np.array([f"oof{f}" for f in fold_of])
        evaluation = f"out-of-fold ({k} patient folds, each tuned and fitted on the others)"
    Xe = tab.X[rows]
    t_opt = np.einsum("nf,nf->n", Xe, opt_points.astype(float)).round().astype(np.int64)
    lv_opt = level_of(t_opt, sysm)
    size = None if tab.size_mm is None else tab.size_mm[rows]
    scored = {"baseline": _scored(sysm, Xe, sysm.points, size),
              "optimised": {"total": t_opt, "level": lv_opt, "recommendation": recommend(lv_opt, sysm, size)}}
    metrics = compare_systems(tab.y[rows], tab.groups[rows], scored, names, n_resamples, seed)
    metrics.update({
        "command": "fit", "table": tab.source, "system": sysm.source, "label": label, "size_column": size_column,
        "test_split": test_split or "none", "evaluation": evaluation, "n_train": int(train_rows.size),
        "n_train_positive": int(tab.y[train_rows].sum()), "folds": folds, "seed": seed,
        "ga_best": final.best.__dict__, "train_auc": {"baseline": final.fit.baseline_auc, "optimised": final.fit.auc},
        "seconds": round(time.perf_counter() - t0, 2),
    })
    preds = _predictions(tab, rows, scored, names, parts)
    write_fit_outputs(Path(out_dir), metrics, preds, sysm, optimised, final)
    return metrics


def synthetic_points_table(system: PointSystem, n: int, seed: int = 0, true_points: NDArray | None = None,
                           prevalence: float = 0.15, slope: float = 1.0, max_choose_all: int = 2) -> pd.DataFrame:
    """A SYNTHETIC feature table for ``system`` (for demos and tests; not patient data).

    Each choose-one category draws one feature uniformly; each choose-all category draws 0..``max_choose_all``
    non-exclusive features (none drawn → its exclusive feature, e.g. ``none``), written ``;``-separated. The
    label is Bernoulli(sigmoid(``slope`` · (total − c))) with the total under ``true_points`` ``(F,)`` (default:
    the system's points) and ``c`` set so the mean risk is ``prevalence``. ``size_mm`` ~ uniform 5–40 mm;
    ``patient_id``: runs of consecutive rows (a new patient with probability 0.6 per row). Columns:
    ``patient_id``, the categories, ``size_mm``, ``malignant``. Same seed ⇒ same table.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, list[str]] = {}
    for cat in system.categories:
        names = [f.name for f in cat.features]
        if cat.rule == "choose_one":
            data[cat.name] = [names[i] for i in rng.integers(0, len(names), n)]
        else:
            excl = [f.name for f in cat.features if f.exclusive]
            pool = [f.name for f in cat.features if not f.exclusive]
            cells = []
            for _ in range(n):
                k = int(rng.integers(0, max_choose_all + 1))
                picked = sorted(rng.choice(pool, size=min(k, len(pool)), replace=False).tolist()) if k else []
                cells.append(";".join(picked) if picked else (excl[0] if excl else pool[0]))
            data[cat.name] = cells
    df = pd.DataFrame(data)
    X = design_matrix(df, system, "<synthetic>")
    t = totals(X, system.points if true_points is None else np.asarray(true_points)).astype(float)
    lo, hi = t.min() - 50.0, t.max() + 50.0
    for _ in range(100):  # bisection for the intercept giving the wanted mean risk
        c = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-slope * (t - c)))) > prevalence:
            lo = c
        else:
            hi = c
    risk = 1 / (1 + np.exp(-slope * (t - (lo + hi) / 2)))
    new_patient = rng.random(n) < 0.6
    new_patient[0] = True
    df.insert(0, "patient_id", [f"P{k:05d}" for k in np.cumsum(new_patient)])
    df["size_mm"] = np.round(rng.uniform(5, 40, n), 1)
    df["malignant"] = (rng.random(n) < risk).astype(int)
    return df


# --- LIDC ----------------------------------------------------------------------------------------------------

def lidc_cohort(root: str | Path) -> Cohort:
    """The labelled LIDC cohort of the study: the ``lidc`` adapter with ``aggregate=median`` (its ``mtmr``
    labelling: reader-median malignancy < 3 benign, > 3 malignant, = 3 excluded), raw 1-5 attributes."""
    return load_dataset("lidc", root, labelling="mtmr", aggregate="median", rescale_attributes=False)


def lidc_table(cohort: Cohort) -> pd.DataFrame:
    """One row per nodule of :func:`lidc_cohort` (reader-median
    malignancy < 3 → 0, > 3 → 1, = 3 excluded): ``nodule_id``, ``patient_id``, ``malignant`` and the 8 attributes
    as the reader median rounded half up (``floor(m + 0.5)``: a median of 2.5 → 3) as integer strings, and
    ``diameter_mm``. A nodule with an attribute no reader rated raises CadxDataError."""
    rows = []
    for s in cohort.studies:
        raw = s.metadata["attributes_raw"]
        row: dict[str, Any] = {"nodule_id": s.study_id, "patient_id": s.patient_id,
                               "malignant": int(s.label == "malignant")}
        for a, v in raw.items():
            if not math.isfinite(v):
                raise CadxDataError(f"nodule {s.study_id}: no reader rated {a}", path=cohort.source, field=a)
            row[a] = str(math.floor(v + 0.5))
        row["diameter_mm"] = round(float(s.metadata["diameter_mm"]), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def _onehot_logreg(X_tr: NDArray, y_tr: NDArray, X_te: NDArray, c: float, seed: int) -> NDArray[np.float64]:
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(X_tr, y_tr)
    return model.predict_proba(X_te)[:, 1]


def run_points_lidc(cfg: PointsConfig, out_dir: str | Path) -> dict[str, Any]:
    """The LIDC point-system study into ``out_dir``: baseline (equal points) vs GA-optimised vs logistic
    regression on the same design matrix, in ``cfg.folds`` patient-level folds (:func:`make_splits`, seed
    ``cfg.seed``); the GA's hyper-parameters by ``cfg.inner_folds`` inner CV on each training part only.
    Pooled out-of-fold AUCs with patient-bootstrap CIs and paired bootstrap p-values; then a final GA fit on
    all nodules (``system_optimised.yaml``). Writes ``lidc_table.csv``, ``predictions.csv``, ``folds.csv``,
    ``points.csv``, ``ga_cv.csv``, ``metrics.json``, ``report.md``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sysm = load_system(cfg.system or lidc_system_path())
    grid = cfg.ga_grid()
    cohort = lidc_cohort(cfg.data_root)
    df = lidc_table(cohort)
    tab = read_points_table(df, sysm, "malignant", id_column="nodule_id")
    splits = make_splits(cohort, folds=cfg.folds, seed=cfg.seed)
    splits.check(cohort)
    study_fold = {}
    for fold in splits.folds:
        test_p = set(fold.test)
        for s in cohort.studies:
            if s.patient_id in test_p:
                study_fold[s.study_id] = fold.fold
    fold_of = np.array([study_fold[str(i)] for i in df["nodule_id"]])
    n = len(df)
    scores = {v: np.zeros(n) for v in ("baseline", "ga", "logreg")}
    opt_points = np.zeros((n, tab.X.shape[1]), dtype=np.int64)
    fold_rows: list[dict[str, Any]] = []
    cv_rows: list[dict[str, Any]] = []
    ga_seconds = 0.0
    for k in sorted(set(fold_of.tolist())):
        te = np.flatnonzero(fold_of == k)
        tr = np.flatnonzero(fold_of != k)
        tg = time.perf_counter()
        res = _fit_part(tab, sysm, tr, grid, cfg.inner_folds, cfg.seed)
        ga_seconds += time.perf_counter() - tg
        opt_points[te] = res.fit.points
        scores["baseline"][te] = totals(tab.X[te], sysm.points)
        scores["ga"][te] = totals(tab.X[te], res.fit.points)
        scores["logreg"][te] = _onehot_logreg(tab.X[tr], tab.y[tr], tab.X[te], cfg.logreg_c, cfg.seed)
        row = {"fold": k, "n_test": int(te.size), "n_test_malignant": int(tab.y[te].sum()),
               "train_auc_baseline": res.fit.baseline_auc, "train_auc_ga": res.fit.auc}
        for v, sc in scores.items():
            row[f"auc_{v}"] = M.roc_auc(tab.y[te], sc[te])
        row["ga_params"] = f"pop={res.best.population} gen={res.best.generations} indpb={res.best.indpb}"
        fold_rows.append(row)
        cv_rows += [{"fold": k, **r} for r in res.cv]
    y, groups = tab.y, tab.groups
    aucs = {v: list(bootstrap_ci(M.roc_auc, y, sc, groups, n_resamples=cfg.n_resamples, seed=cfg.seed))
            for v, sc in scores.items()}
    pvals = {f"{a}_vs_{b}": paired_bootstrap_pvalue(M.roc_auc, y, scores[a], scores[b], groups,
                                                    n_resamples=cfg.n_resamples, seed=cfg.seed)
             for a, b in (("ga", "baseline"), ("logreg", "baseline"), ("ga", "logreg"))}
    names = [lv.name for lv in sysm.levels]
    t_opt = np.einsum("nf,nf->n", tab.X, opt_points.astype(float)).round().astype(np.int64)
    lv_opt = level_of(t_opt, sysm)
    scored = {"baseline": _scored(sysm, tab.X, sysm.points, None),
              "ga": {"total": t_opt, "level": lv_opt, "recommendation": recommend(lv_opt, sysm, None)}}
    comparison = compare_systems(y, groups, scored, names, cfg.n_resamples, cfg.seed)
    tf = time.perf_counter()
    final = _fit_part(tab, sysm, np.arange(n), grid, cfg.inner_folds, cfg.seed)
    final_seconds = time.perf_counter() - tf
    optimised = sysm.with_points(final.fit.points, name=f"{sysm.name} (GA-optimised on all nodules)")
    preds = _predictions(tab, np.arange(n), scored, names, np.array([f"fold{k}" for k in fold_of]))
    preds["score_logreg"] = scores["logreg"]
    preds.insert(0, "nodule_id", df["nodule_id"].to_numpy())
    preds = preds.drop(columns=["row"])
    metrics = {
        "study": "points-lidc", "n": int(n), "n_malignant": int(y.sum()), "n_patients": len(set(groups)),
        "folds": cfg.folds, "seed": cfg.seed, "auc": aucs, "p_values": pvals, "comparison": comparison,
        "final_fit": {"params": final.best.__dict__, "train_auc_baseline": final.fit.baseline_auc,
                      "train_auc_ga": final.fit.auc},
        "config": cfg.model_dump(), "system": sysm.source,
        "seconds": {"total": round(time.perf_counter() - t0, 2), "ga_cv": round(ga_seconds, 2),
                    "final_fit": round(final_seconds, 2)},
    }
    write_lidc_outputs(out, metrics, df, preds, pd.DataFrame(fold_rows), pd.DataFrame(cv_rows), sysm, optimised,
                       final, opt_points, fold_of)
    return metrics
