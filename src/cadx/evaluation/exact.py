"""Fisher's exact test for r x c contingency tables (R's ``fisher.test``), and Bonferroni / Holm corrections.

scipy's :func:`scipy.stats.fisher_exact` handles 2 x 2 tables only. Here:

- **exact**: the conditional (fixed margins) probability of every table as or less probable than the observed
  one, R's rule (``P(table) <= P(observed) * (1 + 1e-7)``), summed by a column-by-column enumeration that merges
  partial tables with the same remaining row sums and the same partial log-probability, and settles a partial
  table at once when bounds on its completions (row- and column-wise relaxations; ``Σ log x!`` is
  Schur-convex) show that all or none of them count — a simple network algorithm (Mehta & Patel 1983). Exact up
  to floating point; ``max_nodes`` caps its work (``method="auto"`` then falls back to Monte Carlo).
- **monte-carlo**: ``n_samples`` random tables with the observed margins (Patefield's algorithm,
  :func:`scipy.stats.random_table`, seeded), ``p = (1 + #{P(sim) <= P(obs) * (1 + 1e-7)}) / (n_samples + 1)``,
  exactly R's ``fisher.test(simulate.p.value = TRUE, B = n_samples)``.

Rows or columns whose total is 0 are dropped first (as R does); a table with fewer than 2 non-empty rows or
columns has p = 1. Negative or non-integer counts raise ValueError.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln
from scipy.stats import random_table

from cadx.evaluation.multiplicity import bonferroni, holm  # re-exported: the A.3 tables' corrections

__all__ = ["FisherResult", "bonferroni", "fisher_exact_rxc", "holm"]

REL_ERR = 1 + 1e-7  # R's fisher.test tolerance for "as or less probable"


@dataclass(frozen=True)
class FisherResult:
    """``pvalue``; ``method`` ``exact`` or ``monte-carlo``; ``n_samples`` (Monte Carlo only, else 0);
    ``table`` the table tested (empty rows/columns dropped)."""

    pvalue: float
    method: str
    n_samples: int
    table: tuple[tuple[int, ...], ...]


def _clean(table: ArrayLike) -> NDArray[np.int64]:
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"fisher_exact_rxc: expected a 2D table, got shape {t.shape}")
    if np.any(t < 0) or np.any(t != np.round(t)) or not np.all(np.isfinite(t)):
        raise ValueError("fisher_exact_rxc: counts must be non-negative integers")
    ti = t.astype(np.int64)
    return ti[ti.sum(1) > 0][:, ti.sum(0) > 0]


def _log_stat(t: NDArray[np.int64]) -> NDArray[np.float64]:
    """Σ log(x!) over the cells of each table (last two axes); P(table) ∝ exp(−this)."""
    return gammaln(np.asarray(t, dtype=np.float64) + 1).sum(axis=(-2, -1))


def _compositions(total: int, caps: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every non-negative integer vector with sum ``total`` and ``v[i] <= caps[i]``."""
    if len(caps) == 1:
        return [(total,)] if total <= caps[0] else []
    rest_cap = sum(caps[1:])
    out: list[tuple[int, ...]] = []
    for x in range(max(0, total - rest_cap), min(caps[0], total) + 1):
        out.extend((x, *v) for v in _compositions(total - x, caps[1:]))
    return out


def _even(total: int, caps: list[int]) -> list[int]:
    """The most even vector with sum ``total`` under ``caps`` (water filling): every feasible vector majorises it."""
    x = [0] * len(caps)
    order = sorted(range(len(caps)), key=lambda i: caps[i])
    left = total
    for k, i in enumerate(order):
        share = left // (len(caps) - k)
        x[i] = min(caps[i], share)
        left -= x[i]
    while left > 0:  # not reached for a feasible total; kept so the result always sums to ``total``
        i = min((j for j in range(len(caps)) if x[j] < caps[j]), key=lambda j: x[j])
        x[i] += 1
        left -= 1
    return x


def _greedy(total: int, caps: list[int]) -> list[int]:
    """Fill the largest caps first: this vector majorises every feasible one."""
    x = [0] * len(caps)
    left = total
    for i in sorted(range(len(caps)), key=lambda i: -caps[i]):
        x[i] = min(caps[i], left)
        left -= x[i]
    return x


def _exact(t: NDArray[np.int64], max_nodes: int) -> float | None:
    if t.shape[0] > t.shape[1]:
        t = t.T
    rows = tuple(int(v) for v in t.sum(1))
    cols = sorted(int(v) for v in t.sum(0))  # largest column last: it is determined by the others
    n = sum(rows)
    lf = [float(v) for v in gammaln(np.arange(n + 2) + 1.0)]
    log_k = float(sum(lf[r] for r in rows) + sum(lf[c] for c in cols) - lf[n])
    s_obs = float(_log_stat(t)) - math.log(REL_ERR)

    def bounds(rem: tuple[int, ...], rest: list[int]) -> tuple[float, float, float]:
        """(lo, hi) of Σ log x! over the completions (column- and row-wise relaxations, Σ log x! is
        Schur-convex) and log Σ_completions Π 1/x! = log(n_rem! / (Π rem! Π rest!))."""
        lo_c = sum(sum(lf[x] for x in _even(c, list(rem))) for c in rest)
        lo_r = sum(sum(lf[x] for x in _even(r, rest)) for r in rem)
        hi_c = sum(sum(lf[x] for x in _greedy(c, list(rem))) for c in rest)
        hi_r = sum(sum(lf[x] for x in _greedy(r, rest)) for r in rem)
        mass = lf[sum(rem)] - sum(lf[r] for r in rem) - sum(lf[c] for c in rest)
        return max(lo_c, lo_r), min(hi_c, hi_r), mass

    layer: dict[tuple[int, ...], dict[float, list[float]]] = {rows: {0.0: [0.0, 1.0]}}
    nodes = 0
    p = 0.0
    for j, c in enumerate(cols[:-1]):
        nxt: dict[tuple[int, ...], dict[float, list[float]]] = defaultdict(dict)
        for rem, vals in layer.items():
            lo, hi, mass = bounds(rem, cols[j:])
            keep = []
            for s_val, cnt in vals.values():
                if s_val + lo >= s_obs:  # every completion is as or less probable than the observed table
                    p += cnt * math.exp(log_k - s_val + mass)
                elif s_val + hi >= s_obs:
                    keep.append((s_val, cnt))
            if not keep:
                continue
            for v in _compositions(c, rem):
                s_col = sum(lf[x] for x in v)
                bucket = nxt[tuple(r - x for r, x in zip(rem, v, strict=True))]
                for s_val, cnt in keep:
                    s = s_val + s_col
                    k = round(s, 9)
                    if k in bucket:
                        bucket[k][1] += cnt
                    else:
                        bucket[k] = [s, cnt]
                nodes += len(keep)
            if nodes > max_nodes:
                return None
        layer = nxt
    for rem, vals in layer.items():
        s_last = sum(lf[x] for x in rem)
        for s_val, cnt in vals.values():
            s = s_val + s_last
            if s >= s_obs:
                p += cnt * math.exp(log_k - s)
    return min(1.0, p)


def fisher_exact_rxc(table: ArrayLike, method: Literal["auto", "exact", "monte-carlo"] = "auto",
                     n_samples: int = 100_000, seed: int = 0, max_nodes: int = 5_000_000) -> FisherResult:
    """Two-sided Fisher exact test of independence on an r x c table of counts.

    ``method``: ``exact`` (raises RuntimeError past ``max_nodes`` partial-table updates), ``monte-carlo``
    (``n_samples`` tables, ``seed``), or ``auto`` = exact when it fits ``max_nodes``, else Monte Carlo.
    The same inputs always give the same p-value.
    """
    t = _clean(table)
    shape = tuple(tuple(int(x) for x in r) for r in t)
    if t.shape[0] < 2 or t.shape[1] < 2:
        return FisherResult(1.0, "exact", 0, shape)
    if method in ("auto", "exact"):
        p = _exact(t, max_nodes)
        if p is not None:
            return FisherResult(p, "exact", 0, shape)
        if method == "exact":
            raise RuntimeError(f"fisher_exact_rxc: exact enumeration of {t.shape} table (n = {t.sum()}) exceeds "
                               f"max_nodes={max_nodes}; use method='monte-carlo'")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = np.random.default_rng(seed)
    sims = random_table(t.sum(1), t.sum(0)).rvs(size=n_samples, random_state=rng)
    stat_obs = float(_log_stat(t))
    # P(sim) <= P(obs)(1 + 1e-7)  <=>  Σ log x!(sim) >= Σ log x!(obs) − log(1 + 1e-7)
    hits = int(np.sum(_log_stat(sims) >= stat_obs - math.log(REL_ERR)))
    return FisherResult((1 + hits) / (n_samples + 1), "monte-carlo", n_samples, shape)

