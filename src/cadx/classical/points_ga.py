"""Integer point optimisation with DEAP's genetic algorithm (thesis A.7, the AI TI-RADS notebook).

:func:`optimise_points` follows ``ai-tirads.ipynb`` (mateuszbuda/AI-TI-RADS v1.0): ``eaSimple`` with two-point
crossover (``cxpb``), uniform-integer mutation within each feature's bounds (``indpb`` per gene, ``mutpb`` per
individual), tournament selection (``tournsize``), a Hall of Fame of one, and fitness = ROC AUC of the summed points
on the training rows. Only free features are genes; fixed features keep their baseline points.

Population initialisation (a choice; the notebook starts all 100 individuals as exact copies of ACR TI-RADS):
individual 0 is the baseline, every other one is the baseline after one uniform-integer mutation with
``init_indpb`` per gene (``init_indpb=0`` reproduces the notebook). The best individual therefore never scores below
the baseline on the training rows (the Hall of Fame holds the baseline from generation 0).

DEAP draws from Python's global :mod:`random`; :func:`optimise_points` seeds it with ``seed`` for the run and
restores the previous state afterwards, so the same seed gives the same result (not thread-safe).

:func:`tune_and_fit` chooses the GA hyper-parameters by patient-grouped inner cross-validation on the training rows
only (mean validation AUC over the inner folds, ties → the first grid entry) and refits on all training rows.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from deap import algorithms, base, creator, tools
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import StratifiedGroupKFold

from cadx.errors import CadxConfigError

__all__ = ["GAParams", "GAResult", "TuneResult", "grid_from_mapping", "integer_auc", "optimise_points", "param_grid",
           "tune_and_fit"]

_FIT = "CadxPointsFitness"
_IND = "CadxPointsIndividual"
if not hasattr(creator, _FIT):
    creator.create(_FIT, base.Fitness, weights=(1.0,))
if not hasattr(creator, _IND):
    creator.create(_IND, list, fitness=getattr(creator, _FIT))


@dataclass(frozen=True)
class GAParams:
    """GA hyper-parameters; the defaults are the notebook's (population 100, 50 generations, cxpb 0.5, mutpb 0.2,
    indpb 0.05, tournament 4) plus ``init_indpb`` (perturbation of the initial population, see module doc)."""

    population: int = 100
    generations: int = 50
    cxpb: float = 0.5
    mutpb: float = 0.2
    indpb: float = 0.05
    tournsize: int = 4
    init_indpb: float = 0.1

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 0 or self.tournsize < 1:
            raise CadxConfigError(f"GA: population >= 2, generations >= 0, tournsize >= 1; got {self}")
        for k in ("cxpb", "mutpb", "indpb", "init_indpb"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise CadxConfigError(f"GA: {k} must be in [0, 1], got {getattr(self, k)}")


@dataclass
class GAResult:
    """``points`` ``(F,)`` best integer points; ``auc`` its training AUC; ``baseline_auc``; ``log`` per generation
    (``gen``, ``nevals``, ``max``, ``avg``)."""

    points: NDArray[np.int64]
    auc: float
    baseline_auc: float
    log: list[dict[str, float]] = field(default_factory=list)


def integer_auc(y: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC of integer scores ``(N,)`` for binary ``y`` ``(N,)`` (ties count 1/2; equal to scikit-learn's
    ``roc_auc_score``), by counting per score value in O(N + range). NaN when a class is absent."""
    t = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.int64)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = s - s.min()
    m = int(s.max()) + 1
    pos = np.bincount(s[t], minlength=m).astype(np.float64)
    neg = np.bincount(s[~t], minlength=m).astype(np.float64)
    below = np.cumsum(neg) - neg
    return float((pos @ below + 0.5 * pos @ neg) / (n_pos * n_neg))


def _check(X: NDArray, y: NDArray, baseline: NDArray, low: NDArray, high: NDArray, fixed: NDArray) -> None:
    f = X.shape[1]
    for name, a in (("baseline", baseline), ("low", low), ("high", high), ("fixed", fixed)):
        if a.shape != (f,):
            raise ValueError(f"{name} must have shape ({f},), got {a.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    free = ~fixed
    bad = np.flatnonzero(free & ((baseline < low) | (baseline > high) | (low > high)))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"feature {j}: baseline {baseline[j]} outside bounds [{low[j]}, {high[j]}]")


def optimise_points(X: ArrayLike, y: ArrayLike, baseline: ArrayLike, low: ArrayLike, high: ArrayLike,
                    fixed: ArrayLike | None = None, params: GAParams | None = None, seed: int = 0) -> GAResult:
    """Maximise the training AUC of ``X @ points`` over integer points within ``[low, high]``.

    ``X`` ``(N, F)`` design matrix (:func:`cadx.classical.points.design_matrix`), ``y`` ``(N,)`` 0/1,
    ``baseline``/``low``/``high`` ``(F,)`` integers, ``fixed`` ``(F,)`` bool (kept at baseline; default none).
    All features fixed → the baseline is returned. Same inputs and ``seed`` ⇒ same result.
    """
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y).astype(np.int64)
    b0 = np.asarray(baseline, dtype=np.int64)
    lo, hi = np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64)
    fx = np.zeros(Xa.shape[1], dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    _check(Xa, ya, b0, lo, hi, fx)
    p = params or GAParams()
    free = np.flatnonzero(~fx)
    base_total = Xa[:, fx] @ b0[fx]
    Xf = Xa[:, free]

    def full(genes: Sequence[int]) -> NDArray[np.int64]:
        pts = b0.copy()
        pts[free] = genes
        return pts

    def evaluate(ind: Sequence[int]) -> tuple[float]:
        return (integer_auc(ya, np.rint(base_total + Xf @ np.asarray(ind, dtype=np.float64))),)

    baseline_auc = evaluate([int(v) for v in b0[free]])[0]
    if free.size == 0:
        return GAResult(b0.copy(), baseline_auc, baseline_auc, [])
    lo_f, hi_f = [int(v) for v in lo[free]], [int(v) for v in hi[free]]
    ind_cls = getattr(creator, _IND)
    tb = base.Toolbox()
    tb.register("evaluate", evaluate)
    tb.register("mate", tools.cxTwoPoint)
    tb.register("mutate", tools.mutUniformInt, low=lo_f, up=hi_f, indpb=p.indpb)
    tb.register("select", tools.selTournament, tournsize=p.tournsize)
    state = random.getstate()
    try:
        random.seed(seed)
        pop = [ind_cls(int(v) for v in b0[free])]
        for _ in range(p.population - 1):
            ind = ind_cls(int(v) for v in b0[free])
            if p.init_indpb > 0:
                tools.mutUniformInt(ind, low=lo_f, up=hi_f, indpb=p.init_indpb)
            pop.append(ind)
        hof = tools.HallOfFame(1)
        st = tools.Statistics(lambda ind: ind.fitness.values[0])
        st.register("max", np.max)
        st.register("avg", np.mean)
        _, logbook = algorithms.eaSimple(pop, tb, cxpb=p.cxpb, mutpb=p.mutpb, ngen=p.generations, stats=st,
                                         halloffame=hof, verbose=False)
    finally:
        random.setstate(state)
    best = full(list(hof[0]))
    log = [{k: float(r[k]) for k in ("gen", "nevals", "max", "avg")} for r in logbook]
    return GAResult(best, float(hof[0].fitness.values[0]), baseline_auc, log)


def param_grid(base_params: GAParams | None = None, **axes: Iterable[Any]) -> list[GAParams]:
    """The Cartesian grid of ``axes`` (field name → values) over ``base_params``, in ``itertools.product``
    order; unknown field names raise CadxConfigError."""
    bp = base_params or GAParams()
    names = list(axes)
    unknown = [n for n in names if n not in asdict(bp)]
    if unknown:
        raise CadxConfigError(f"GA grid: unknown parameter(s) {unknown}; known: {sorted(asdict(bp))}")
    return [replace(bp, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(list(axes[n]) for n in names))]


@dataclass
class TuneResult:
    """``best`` params (chosen on inner CV), ``cv`` rows (one per grid entry: params + ``cv_auc`` mean and per
    fold), and ``fit`` (the GA refitted on all training rows with ``best``)."""

    best: GAParams
    cv: list[dict[str, Any]]
    fit: GAResult


def tune_and_fit(X: ArrayLike, y: ArrayLike, groups: ArrayLike | None, baseline: ArrayLike, low: ArrayLike,
                 high: ArrayLike, fixed: ArrayLike | None, grid: Sequence[GAParams], folds: int = 3,
                 seed: int = 0) -> TuneResult:
    """Choose GA hyper-parameters from ``grid`` by ``folds``-fold patient-grouped, label-stratified inner CV on
    these (training) rows only, then refit on all of them. ``groups`` ``(N,)`` patient ids (None = one per row).

    One grid entry skips the CV (``cv`` then holds one row with NaN ``cv_auc``). Every grid entry sees the same
    inner folds (``StratifiedGroupKFold(shuffle=True, random_state=seed)``) and GA seed.
    """
    Xa, ya = np.asarray(X, dtype=np.float64), np.asarray(y).astype(np.int64)
    g = np.arange(len(ya)) if groups is None else np.asarray(groups)
    if not grid:
        raise CadxConfigError("GA grid is empty")
    rows: list[dict[str, Any]] = []
    if len(grid) == 1:
        rows.append({**asdict(grid[0]), "cv_auc": float("nan")})
        best = grid[0]
    else:
        n_groups = len(np.unique(g))
        k = min(folds, n_groups)
        if k < 2:
            raise CadxConfigError(f"inner CV needs >= 2 folds and patients, got folds={folds}, patients={n_groups}")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(splitter.split(Xa, ya, g))
        for params in grid:
            aucs = []
            for tr, va in splits:
                r = optimise_points(Xa[tr], ya[tr], baseline, low, high, fixed, params, seed)
                aucs.append(integer_auc(ya[va], np.rint(Xa[va] @ r.points)))
            rows.append({**asdict(params), "cv_auc": float(np.nanmean(aucs)),
                         "fold_aucs": [round(a, 6) for a in aucs]})
        best = grid[int(np.nanargmax([r["cv_auc"] for r in rows]))]
    fit = optimise_points(Xa, ya, baseline, low, high, fixed, best, seed)
    return TuneResult(best, rows, fit)


def grid_from_mapping(axes: Mapping[str, Sequence[Any]] | None, base_params: GAParams | None = None
                      ) -> list[GAParams]:
    """:func:`param_grid` from a config mapping (``{"population": [50, 100], ...}``); None/empty → the base."""
    if not axes:
        return [base_params or GAParams()]
    return param_grid(base_params, **{k: list(v) for k, v in axes.items()})
