"""Probability calibration: Brier score, ECE, reliability curves (pure functions) and post-hoc scaling maps.

Conventions (as :mod:`cadx.evaluation.metrics`): ``y_true`` ``(N,)`` class indices in ``[0, K)``; ``proba``
``(N, K)`` class probabilities (rows sum to 1) or, for binary problems, a 1-D ``(N,)`` probability of the
positive class. ``positive`` is the index of the clinically positive class of a binary problem (default 1;
``eval.positive``); it is ignored for ``K > 2``.

What is measured (a choice, stated because the literature differs):

- **Binary** (``K == 2``): the *positive-class* reliability: the predicted probability of ``positive`` against the
  observed frequency of ``positive`` — the curve of :func:`sklearn.calibration.calibration_curve` and the score of
  :func:`sklearn.metrics.brier_score_loss` (``mean (p_pos - [y == pos])^2``).
- **Multi-class**: the *top-label* (confidence) reliability of Guo et al. 2017 — confidence ``max_k p_k`` against
  the accuracy of ``argmax_k p_k`` — and the multi-class Brier score ``mean_i sum_k (p_ik - [y_i == k])^2``
  (scikit-learn's multi-class ``brier_score_loss``).

Bins: ``strategy="uniform"`` = ``n_bins`` equal-width bins on ``[0, 1]`` (default, ``n_bins = 10``);
``"quantile"`` = equal-mass bins (edges at the quantiles of the scores, "adaptive ECE"). As in scikit-learn, a score
equal to an inner edge falls in the lower bin (``searchsorted(edges[1:-1], p)``); empty bins are left out of the
curve and weigh nothing in the ECE. ECE = ``sum_b (n_b / N) |frac_pos_b - mean_p_b|``.

Post-hoc scaling (:func:`fit_calibration` → a JSON-able dict, :func:`apply_calibration`): ``temperature`` (one
``T > 0`` on the logits ``log p``; fitted by minimising the NLL with :func:`scipy.optimize.minimize_scalar` over
``log T``), ``platt`` (:class:`sklearn.linear_model.LogisticRegression`, unpenalised, on the positive-class logit
``log(p_pos / p_neg)`` with Platt's (1999) smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` — given
to the regression as two weighted copies of each row — so a separable validation set gives a finite slope, as
in :class:`sklearn.calibration.CalibratedClassifierCV`; multi-class: multinomial on the ``K`` log-probabilities,
hard targets), ``isotonic``
(:class:`sklearn.isotonic.IsotonicRegression` on ``p_pos``; multi-class: one-vs-rest, rows renormalised). The
probabilities given here are already probabilities (softmax outputs, study means), so the "logits" are
``log(clip(p, 1e-12))``; for a binary softmax output that equals the network's logit difference. Fit only on
validation predictions: a map fitted on the test rows makes their calibration look perfect.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cadx.errors import CadxDataError
from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.metrics import check_labels
from cadx.evaluation.summary import class_key, positive_index

__all__ = ["METHODS", "ReliabilityCurve", "apply_calibration", "brier_score", "calibration_metrics",
           "calibration_report",
           "expected_calibration_error", "fit_calibration", "reliability_curve"]

Strategy = Literal["uniform", "quantile"]
METHODS = ("none", "temperature", "platt", "isotonic")
_EPS = 1e-12


class ReliabilityCurve(NamedTuple):
    """Non-empty bins of a reliability curve, each ``(B,)``: mean predicted probability, observed frequency of
    the positive class (top-label: accuracy), ``n`` rows per bin; ``edges`` ``(n_bins + 1,)`` all bin edges."""

    prob_pred: NDArray[np.float64]
    prob_true: NDArray[np.float64]
    n: NDArray[np.int64]
    edges: NDArray[np.float64]


def _inputs(y_true: ArrayLike, proba: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels ``(N,)`` and probabilities ``(N, K)`` (a 1-D positive-class probability becomes ``(1 - p, p)``)."""
    t = check_labels(y_true)
    p = np.asarray(proba)
    if not np.issubdtype(p.dtype, np.number) or p.dtype == bool:
        raise ValueError(f"proba must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != t.size:
        raise ValueError(f"proba must be (N,) or (N, K>=2) with N={t.size} rows, got {np.shape(proba)}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    check_labels(t, n_classes=p.shape[1])
    return t, p


def _score_hit(t: NDArray[np.int64], p: NDArray[np.float64], positive: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The score and 0/1 outcome a reliability curve bins: binary = ``(p_pos, y == pos)``, multi-class =
    ``(max p, argmax p == y)``."""
    if p.shape[1] == 2:
        if positive not in (0, 1):
            raise ValueError(f"positive must be 0 or 1 for a binary problem, got {positive}")
        return p[:, positive], (t == positive).astype(np.float64)
    return p.max(1), (np.argmax(p, 1) == t).astype(np.float64)


def _edges(score: NDArray[np.float64], n_bins: int, strategy: str) -> NDArray[np.float64]:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.percentile(score, np.linspace(0, 100, n_bins + 1))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _bins(score: NDArray[np.float64], hit: NDArray[np.float64], n_bins: int, strategy: str
          ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    edges = _edges(score, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], score)
    return (np.bincount(ids, weights=score, minlength=n_bins).astype(np.float64),
            np.bincount(ids, weights=hit, minlength=n_bins).astype(np.float64),
            np.bincount(ids, minlength=n_bins).astype(np.float64), edges)


def reliability_curve(y_true: ArrayLike, proba: ArrayLike, n_bins: int = 10, strategy: Strategy = "uniform",
                      positive: int = 1) -> ReliabilityCurve:
    """Reliability-diagram points (see the module docstring); binary points equal scikit-learn's
    ``calibration_curve(y == positive, p_pos, n_bins=n_bins, strategy=strategy)``. Empty input raises."""
    t, p = _inputs(y_true, proba)
    if t.size == 0:
        raise ValueError("reliability_curve needs at least one row")
    s_sum, h_sum, n, edges = _bins(*_score_hit(t, p, positive), n_bins, strategy)
    ok = n > 0
    return ReliabilityCurve(s_sum[ok] / n[ok], h_sum[ok] / n[ok], n[ok].astype(np.int64), edges)


def expected_calibration_error(y_true: ArrayLike, proba: ArrayLike, n_bins: int = 10,
                               strategy: Strategy = "uniform", positive: int = 1) -> float:
    """ECE = ``sum_b (n_b / N) |mean outcome_b - mean score_b|`` over the bins of :func:`reliability_curve`
    (binary: positive-class; multi-class: top-label). In ``[0, 1]``; NaN for empty input."""
    t, p = _inputs(y_true, proba)
    if t.size == 0:
        return float("nan")
    s_sum, h_sum, _, _ = _bins(*_score_hit(t, p, positive), n_bins, strategy)
    return float(np.abs(h_sum - s_sum).sum() / t.size)


def brier_score(y_true: ArrayLike, proba: ArrayLike, positive: int = 1) -> float:
    """Brier score: binary ``mean (p_pos - [y == pos])^2`` (= ``sklearn.metrics.brier_score_loss``, in [0, 1]);
    multi-class ``mean_i sum_k (p_ik - [y_i == k])^2`` (in [0, 2]). NaN for empty input."""
    t, p = _inputs(y_true, proba)
    if t.size == 0:
        return float("nan")
    if p.shape[1] == 2:
        s, hit = _score_hit(t, p, positive)
        return float(np.mean((s - hit) ** 2))
    onehot = np.eye(p.shape[1])[t]
    return float(np.mean(((p - onehot) ** 2).sum(1)))


def calibration_report(y_true: ArrayLike, proba: ArrayLike, groups: ArrayLike | None = None, n_bins: int = 10,
                       strategy: Strategy = "uniform", positive: int = 1, n_bootstrap: int = 2000, seed: int = 0,
                       alpha: float = 0.05) -> dict[str, Any]:
    """Brier score and ECE with patient-bootstrap percentile CIs (:func:`cadx.evaluation.bootstrap.bootstrap_ci`,
    ``groups`` = patient ids ``(N,)``; ``n_bootstrap = 0``: no CIs) and the reliability curve, as a JSON-able dict:
    ``{"brier", "ece", "ci": {"brier": [lo, hi], "ece": [lo, hi]}, "bootstrap_skipped": {...}, "n_bins",
    "strategy", "kind": "positive-class"|"top-label", "positive", "n", "curve": {"prob_pred", "prob_true",
    "count"}}``. Resamples holding a single class are skipped (as for the AUC) and counted."""
    t, p = _inputs(y_true, proba)
    kind = "positive-class" if p.shape[1] == 2 else "top-label"
    curve = reliability_curve(t, p, n_bins, strategy, positive)
    out: dict[str, Any] = {
        "brier": brier_score(t, p, positive),
        "ece": expected_calibration_error(t, p, n_bins, strategy, positive),
        "n_bins": int(n_bins), "strategy": strategy, "kind": kind,
        "positive": int(positive) if kind == "positive-class" else None, "n": int(t.size),
        "curve": {"prob_pred": curve.prob_pred.tolist(), "prob_true": curve.prob_true.tolist(),
                  "count": curve.n.tolist()},
        "ci": {}, "bootstrap_skipped": {},
    }
    if n_bootstrap > 0:
        fns = {"brier": functools.partial(brier_score, positive=positive),
               "ece": functools.partial(expected_calibration_error, n_bins=n_bins, strategy=strategy,
                                        positive=positive)}
        for name, fn in fns.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = bootstrap_ci(fn, t, p, groups=groups, n_resamples=n_bootstrap, alpha=alpha, seed=seed)
            out["ci"][name] = [r.lo, r.hi]
            out["bootstrap_skipped"][name] = r.n_skipped
    return out


def calibration_metrics(df: pd.DataFrame, classes: Sequence[str], positive: int | str | None = None,
                        n_bins: int = 10, strategy: Strategy = "uniform", n_bootstrap: int = 2000, seed: int = 0,
                        method: str = "none") -> dict[str, Any] | None:
    """``metrics.json`` ``calibration`` of a study-level predictions table (``y_true``, ``p_<class>``, optional
    ``raw_p_<class>`` = before post-hoc scaling, ``patient_id`` for the bootstrap): :func:`calibration_report` of the
    labelled rows plus ``method`` (``eval.calibration``) and, when ``raw_p_`` columns exist, ``before`` (the same
    report of the unscaled probabilities, same resamples). ``positive``: ``eval.positive``. None when the table has
    no class probabilities or no labelled row. Probabilities outside [0, 1] raise CadxDataError."""
    cols = [f"p_{c}" for c in classes]
    if len(classes) < 2 or any(c not in df.columns for c in cols) or "y_true" not in df.columns:
        return None
    lut = {str(c): i for i, c in enumerate(classes)}
    y = np.array([-1 if pd.isna(v) else lut.get(class_key(v), -1) for v in df["y_true"]], dtype=np.int64)
    ok = y >= 0
    if not ok.any():
        return None
    groups = df["patient_id"].astype(str).to_numpy()[ok] if "patient_id" in df.columns else None
    pos = positive_index(positive, classes)

    def report(prefix: str) -> dict[str, Any]:
        p = df.loc[ok, [f"{prefix}{c}" for c in classes]].to_numpy(float)
        try:
            return calibration_report(y[ok], p, groups, n_bins, strategy, pos, n_bootstrap, seed)
        except ValueError as err:
            raise CadxDataError(f"calibration: {err}", field=f"{prefix}<class>") from None

    out: dict[str, Any] = {"method": method, **report("p_")}
    if all(f"raw_p_{c}" in df.columns for c in classes):
        out["before"] = report("raw_p_")
    return out


# ---- post-hoc scaling ------------------------------------------------------------------------------------

def _logits(p: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.log(np.clip(p, _EPS, 1.0))


def _nll(logits: NDArray[np.float64], t: NDArray[np.int64], temperature: float) -> float:
    from scipy.special import log_softmax  # SciPy: only fitting a temperature needs it

    return float(-log_softmax(logits / temperature, axis=1)[np.arange(t.size), t].mean())


def _not_fitted(method: str, reason: str) -> dict[str, Any]:
    return {"method": method, "fitted": False, "reason": reason}


def fit_calibration(method: str, y_true: ArrayLike, proba: ArrayLike, positive: int = 1) -> dict[str, Any]:
    """Fit a post-hoc map on (validation) predictions; returns its JSON-able parameters for
    :func:`apply_calibration`: ``{"method", "fitted": bool, ...}``.

    ``temperature``: ``{"temperature": T}`` (bounded search ``T`` in ``[0.05, 20]``); ``platt`` binary:
    ``{"positive", "a", "b"}`` with ``p_pos = sigmoid(a * log(p_pos / p_neg) + b)`` (smoothed targets),
    multi-class: ``{"coef" (K, K), "intercept" (K,)}`` on ``log p``; ``isotonic``: ``{"columns", "x", "y"}`` per
    class (binary: the positive class only), lists of thresholds interpolated linearly and clipped. ``none``, empty
    input, or rows lacking a class (Platt, isotonic: any class; temperature: fewer than two classes) give
    ``fitted: False`` with a ``reason`` and act as
    the identity. An unknown method raises ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    if method == "none":
        return {"method": "none", "fitted": False, "reason": "eval.calibration is none"}
    t, p = _inputs(y_true, proba)
    k = p.shape[1]
    present = np.unique(t)
    if t.size == 0 or present.size < 2:
        return _not_fitted(method, "the fitting rows hold fewer than two classes")
    if method != "temperature" and present.size < k:
        return _not_fitted(method, f"the fitting rows lack class(es) {sorted(set(range(k)) - set(present))}")
    if k == 2 and positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1 for a binary problem, got {positive}")
    z = _logits(p)
    out: dict[str, Any] = {"method": method, "fitted": True, "n": int(t.size)}
    if method == "temperature":
        from scipy.optimize import minimize_scalar  # heavy (SciPy optimize): only fitting needs it, not cadx predict

        res = minimize_scalar(lambda lt: _nll(z, t, float(np.exp(lt))), bounds=(np.log(0.05), np.log(20.0)),
                              method="bounded", options={"xatol": 1e-6})
        out["temperature"] = float(np.exp(res.x))
        return out
    if method == "platt":
        from sklearn.linear_model import LogisticRegression  # scikit-learn: only fitting needs it, not cadx predict

        if k == 2:
            neg = 1 - positive
            x = (z[:, positive] - z[:, neg])[:, None]
            hit = t == positive
            n_pos, n_neg = int(hit.sum()), int((~hit).sum())
            target = np.where(hit, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
            lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(
                np.r_[x, x], np.r_[np.ones(t.size, int), np.zeros(t.size, int)],
                sample_weight=np.r_[target, 1 - target])
            out.update(positive=int(positive), a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        else:
            lr = LogisticRegression(C=np.inf, max_iter=1000).fit(z, t)
            out.update(coef=lr.coef_.tolist(), intercept=lr.intercept_.tolist())
        return out
    from sklearn.isotonic import IsotonicRegression  # scikit-learn: only fitting needs it, not cadx predict

    cols = [positive] if k == 2 else list(range(k))
    xs, ys = [], []
    for c in cols:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, c], (t == c).astype(float))
        xs.append(iso.X_thresholds_.tolist())
        ys.append(iso.y_thresholds_.tolist())
    out.update(columns=cols, x=xs, y=ys)
    return out


def apply_calibration(params: dict[str, Any] | None, proba: ArrayLike) -> NDArray[np.float64]:
    """Map probabilities ``(N, K)`` through fitted parameters of :func:`fit_calibration`; rows still sum to 1.

    ``None``, ``{}``, ``method: none`` or ``fitted: False`` return the input (as float64). ``{"members": [...]}``
    (an ensemble of models, :func:`cadx.runs.inference.combine_decisions`) returns the mean of the members' maps.
    An isotonic multi-class row mapped to all zeros becomes uniform.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be (N, K>=2), got {p.shape}")
    if not params:
        return p
    if "members" in params:
        members = list(params["members"])
        return np.mean([apply_calibration(m, p) for m in members], axis=0) if members else p
    if not params.get("fitted", False) or params.get("method", "none") == "none":
        return p
    method = params["method"]
    k = p.shape[1]
    z = _logits(p)
    from scipy.special import softmax  # SciPy: imported only when a calibration map is applied (not by cadx predict)

    if method == "temperature":
        return np.asarray(softmax(z / float(params["temperature"]), axis=1), dtype=np.float64)
    if method == "platt":
        if "a" in params:
            pos = int(params["positive"])
            q = 1.0 / (1.0 + np.exp(-(float(params["a"]) * (z[:, pos] - z[:, 1 - pos]) + float(params["b"]))))
            out = np.empty_like(p)
            out[:, pos], out[:, 1 - pos] = q, 1.0 - q
            return out
        w, b = np.asarray(params["coef"], float), np.asarray(params["intercept"], float)
        if w.shape != (k, k):
            raise ValueError(f"platt parameters are for {w.shape[0]} classes, proba has {k}")
        return np.asarray(softmax(z @ w.T + b, axis=1), dtype=np.float64)
    if method == "isotonic":
        cols = [int(c) for c in params["columns"]]
        maps = [np.interp(p[:, c], np.asarray(x, float), np.asarray(y, float))
                for c, x, y in zip(cols, params["x"], params["y"], strict=True)]
        if k == 2:
            out = np.empty_like(p)
            out[:, cols[0]], out[:, 1 - cols[0]] = maps[0], 1.0 - maps[0]
            return out
        m = np.stack(maps, axis=1)
        s = m.sum(1, keepdims=True)
        return np.where(s > 0, m / np.where(s > 0, s, 1.0), 1.0 / k)
    raise ValueError(f"unknown calibration method {method!r} in fitted parameters")
