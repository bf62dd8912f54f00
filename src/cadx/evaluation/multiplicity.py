"""Multiple-comparison corrections and the one p-value format every report prints.

- :func:`bonferroni`: ``min(1, m · p)`` (R ``p.adjust(method="bonferroni")``).
- :func:`holm`: Holm's step-down (R ``p.adjust(method="holm")``): sort ascending, ``(m − i) · p_(i)`` for
  ``i = 0..m−1``, running maximum (adjusted values are monotone in the raw ones), capped at 1.
- :func:`adjust`: both at once, as a dict (``{"holm": [...], "bonferroni": [...]}``), for a table of paired tests.
- :func:`format_p`: ``"< 0.001"`` below 0.001, else three decimals (``"0.012"``); never ``"0.000"``; NaN/None →
  ``"n/a"``.

NaN (an undefined test: no valid bootstrap resample) passes through as NaN and is not counted in ``m``: the family
is the set of comparisons that produced a p-value. Inputs are 1-D (a scalar is one comparison); an empty input
gives an empty output. A p-value outside [0, 1] raises ValueError (it is a bug upstream, not a value to cap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["adjust", "bonferroni", "format_p", "holm", "n_tests"]

_TOL = 1e-12  # floating-point slack on the [0, 1] range check


def _as_p(pvalues: ArrayLike) -> NDArray[np.float64]:
    p = np.atleast_1d(np.asarray(pvalues, dtype=np.float64))
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    bad = [v for v in p.tolist() if not math.isnan(v) and not -_TOL <= v <= 1 + _TOL]
    if bad:
        raise ValueError(f"p-values must lie in [0, 1]: {bad[:5]}")
    return np.clip(p, 0.0, 1.0)


def n_tests(pvalues: ArrayLike) -> int:
    """Size of the family ``m``: the number of finite p-values (NaN does not count)."""
    return int(np.isfinite(_as_p(pvalues)).sum())


def bonferroni(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Bonferroni-adjusted p-values ``min(1, m · p)``, same order and shape ``(m_total,)`` as the input."""
    p = _as_p(pvalues)
    m = int(np.isfinite(p).sum())
    return np.where(np.isfinite(p), np.minimum(1.0, p * m), np.nan)


def holm(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values, same order and shape as the input; ties keep input order (stable sort,
    which does not change the values)."""
    p = _as_p(pvalues)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(1.0, adj)
    return out


def adjust(pvalues: Sequence[float | None] | ArrayLike) -> dict[str, list[float]]:
    """``{"holm": [...], "bonferroni": [...]}`` for one family of comparisons (None is read as NaN)."""
    raw = [float("nan") if v is None else v for v in np.atleast_1d(np.asarray(pvalues, dtype=object)).tolist()]
    p = np.asarray(raw, dtype=np.float64)
    return {"holm": holm(p).tolist(), "bonferroni": bonferroni(p).tolist()}


def format_p(p: float | None) -> str:
    """``"< 0.001"`` for p < 0.001 (including 0: a bootstrap p of 0 means "below 1 / resamples", never exactly
    0), else ``f"{p:.3f}"``; NaN or None → ``"n/a"``. Values that would round to 0.000 are always ``"< 0.001"``."""
    if p is None:
        return "n/a"
    v = float(p)
    if math.isnan(v):
        return "n/a"
    if v < -_TOL or v > 1 + _TOL:
        raise ValueError(f"p-value {v} is outside [0, 1]")
    return "< 0.001" if v < 0.001 else f"{min(v, 1.0):.3f}"
