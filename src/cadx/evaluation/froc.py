"""FROC evaluation of a lesion detector (thesis A.8), pure functions of predictions and ground-truth lesions.

**Hit rule** (A.8 and the authors' ``duke-dbt-detection/evaluate.py``): a predicted box hits a lesion when the
distance between the predicted centre and the lesion's box centre (in-plane, continuous pixel coordinates) is
``<= max(lesion diagonal / 2, distance)`` and, in a volume, the predicted centre slice is within
``z_fraction × n_slices`` slices of the lesion's central slice (the paper: "the ground truth bounding box was
assumed to span 25 % of volume slices before and after the ground truth center slice", i.e. ``z_fraction = 0.25``
of the volume's slice count, as the authors' code divides the depth by 4). ``distance`` is in pixels of the
original image (the paper's 100 px at DBT resolution); cadx's studies state their value (mm only when the
pixel size is known; LGG and BUSI give none).

**One TP per lesion**: a prediction hitting a lesion is a TP candidate assigned to its nearest hit lesion; a
lesion counts as detected at threshold ``t`` when any of its candidates scores ``>= t``; further predictions on
an already detected lesion are **neither TP nor FP** (the authors' code drops duplicate (volume, TP, lesion)
rows from the TP count and counts FPs as predictions with ``TP == 0``). This equals MONAI's convention
(``compute_fp_tp_probs``: one score per lesion = the max of its hits, every non-hit a FP), which the tests check.

**Curve**: thresholds = every distinct score, descending; FPs per image/volume = FP predictions scoring
``>= t`` / number of images (negatives included); sensitivity = detected targets / targets. The curve starts
at (0, 0). **Sensitivity at k FP** is linearly interpolated on the curve (``np.interp``, as the authors' code
and MONAI's ``compute_froc_score``); beyond the largest FP rate reached it is the last sensitivity (all
predictions kept). Targets: ``lesion`` (every GT lesion; the paper's volume-based FROC) or ``patient`` (a
patient with ≥ 1 lesion is detected when any of their lesions is; the paper's breast-based analogue); FPs are
per image/volume in both.

**CIs**: percentile bootstrap over patients (:func:`cadx.evaluation.bootstrap.resample_weights`): a resample
weights each study by how often its patient was drawn, in numerator and denominator alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from cadx.errors import CadxDataError
from cadx.evaluation.bootstrap import resample_weights
from cadx.utils import save_figure

__all__ = ["FP_RATES", "FrocCurve", "froc_curve", "froc_table", "match_predictions", "plot_froc",
           "sensitivity_at", "target_scores"]

FP_RATES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
Unit = Literal["lesion", "patient"]
_PRED_COLS = ("study_id", "score", "y", "x")
_LESION_COLS = ("study_id", "lesion", "y0", "x0", "y1", "x1")


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CadxDataError(f"{what} lacks column(s) {missing}", field=missing[0])


def match_predictions(pred: pd.DataFrame, lesions: pd.DataFrame, distance: float = 0.0,
                      z_fraction: float = 0.25) -> pd.DataFrame:
    """Mark each prediction TP candidate or FP (see the module docstring).

    ``pred``: one row per predicted box with ``study_id, score, y, x`` (centre, original pixels) and, for
    volumes, ``z`` (centre slice). ``lesions``: one row per GT lesion with ``study_id, lesion`` (id unique within
    the study), ``y0, x0, y1, x1`` (in-plane box on the central slice) and, for volumes, ``z`` (central slice)
    and ``n_slices`` (the volume's slice count). Without a ``z`` column in either frame the test is in-plane
    only (2D images). Returns a copy of ``pred`` with ``lesion`` (the nearest hit lesion's id, −1 = FP) and
    ``tp`` (bool). Non-finite scores or centres raise CadxDataError (field ``score``/``y``/``x``).
    """
    _need(pred, _PRED_COLS, "predictions")
    _need(lesions, _LESION_COLS, "lesions")
    for c in ("score", "y", "x"):
        if len(pred) and not np.isfinite(pred[c].to_numpy(float)).all():
            raise CadxDataError(f"predictions: non-finite {c}", field=c)
    three_d = "z" in pred.columns and "z" in lesions.columns
    if three_d:
        _need(lesions, ["n_slices"], "lesions (3D)")
    out = pred.copy()
    lesion_id = np.full(len(out), -1, dtype=np.int64)
    by_study = {k: g for k, g in lesions.groupby(lesions["study_id"].astype(str), sort=False)}
    sid = out["study_id"].astype(str).to_numpy()
    py, px = out["y"].to_numpy(float), out["x"].to_numpy(float)
    pz = out["z"].to_numpy(float) if three_d else None
    for s in np.unique(sid):
        g = by_study.get(s)
        if g is None or g.empty:
            continue
        rows = np.flatnonzero(sid == s)
        cy = (g["y0"].to_numpy(float) + g["y1"].to_numpy(float)) / 2
        cx = (g["x0"].to_numpy(float) + g["x1"].to_numpy(float)) / 2
        diag = np.hypot(g["y1"].to_numpy(float) - g["y0"].to_numpy(float),
                        g["x1"].to_numpy(float) - g["x0"].to_numpy(float))
        radius = np.maximum(diag / 2.0, float(distance))
        d = np.hypot(py[rows, None] - cy[None], px[rows, None] - cx[None])  # (P, L)
        ok = d <= radius[None]
        if pz is not None:
            tol = z_fraction * g["n_slices"].to_numpy(float)
            ok &= np.abs(pz[rows, None] - g["z"].to_numpy(float)[None]) <= tol[None]
        d = np.where(ok, d, np.inf)
        best = d.argmin(1)
        hit = np.isfinite(d[np.arange(len(rows)), best])
        ids = g["lesion"].to_numpy(np.int64)
        lesion_id[rows[hit]] = ids[best[hit]]
    out["lesion"] = lesion_id
    out["tp"] = lesion_id >= 0
    return out


def target_scores(matched: pd.DataFrame, lesions: pd.DataFrame, unit: Unit = "lesion") -> pd.DataFrame:
    """One row per target with its detection ``score`` (max score of its TP candidates; 0 = never hit, so a
    missed target is only reached at threshold 0, which the curve never uses) and ``study_id``,
    ``patient_id`` (when ``lesions`` has it). ``unit = "patient"``: targets are patients with ≥ 1 lesion
    (score = max over their lesions; ``lesions`` needs ``patient_id``)."""
    hits = matched[matched["tp"]]
    best = hits.groupby([hits["study_id"].astype(str), hits["lesion"]])["score"].max()
    t = lesions.copy()
    t["study_id"] = t["study_id"].astype(str)
    keys = list(zip(t["study_id"], t["lesion"].astype(np.int64), strict=True))
    t["score"] = [float(best.get(k, 0.0)) for k in keys]
    if unit == "lesion":
        return t
    if unit != "patient":
        raise CadxDataError(f"FROC unit must be 'lesion' or 'patient', got {unit!r}", field="unit")
    _need(t, ["patient_id"], "lesions (patient FROC)")
    return t.groupby("patient_id", as_index=False, sort=False).agg(score=("score", "max"),
                                                                   study_id=("study_id", "first"))


@dataclass
class FrocCurve:
    """``fps`` (T,) FPs per image, ``sensitivity`` (T,), ``thresholds`` (T,) (first point (0, 0) at +inf),
    ``n_images``, ``n_targets``."""

    fps: NDArray[np.float64]
    sensitivity: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    n_images: int
    n_targets: int

    def at(self, rates: Sequence[float] = FP_RATES) -> dict[float, float]:
        return {float(k): sensitivity_at(self.fps, self.sensitivity, k) for k in rates}


def sensitivity_at(fps: NDArray[np.float64], sensitivity: NDArray[np.float64], rate: float) -> float:
    """Sensitivity at ``rate`` FPs per image, linearly interpolated on a curve with non-decreasing ``fps``
    (ties: the highest sensitivity at that FP rate); beyond the curve's last FP rate, its last sensitivity."""
    f = np.asarray(fps, float)
    s = np.asarray(sensitivity, float)
    if f.size == 0:
        return float("nan")
    uf, inv = np.unique(f, return_inverse=True)
    us = np.full(uf.size, -np.inf)
    np.maximum.at(us, inv, s)
    return float(np.interp(rate, uf, us))


def _events(matched: pd.DataFrame, targets: pd.DataFrame, study_index: Mapping[str, int]
            ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
    """Scores, is-FP flags and study indices of every FP prediction and every target with a score > 0,
    sorted by descending score."""
    fp = matched[~matched["tp"]]
    tg = targets[targets["score"] > 0]
    scores = np.r_[fp["score"].to_numpy(float), tg["score"].to_numpy(float)]
    is_fp = np.r_[np.ones(len(fp), bool), np.zeros(len(tg), bool)]
    try:
        study = np.array([study_index[str(s)] for s in list(fp["study_id"]) + list(tg["study_id"])], np.int64)
    except KeyError as e:
        raise CadxDataError(f"prediction or lesion of study {e.args[0]} not among the evaluated studies",
                            field="study_id") from None
    order = np.argsort(-scores, kind="mergesort")
    return scores[order], is_fp[order], study[order]


def _curve_from_events(scores: NDArray[np.float64], is_fp: NDArray[np.bool_], study: NDArray[np.int64],
                       target_study: NDArray[np.int64], W: NDArray[np.float64]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Weighted curves: ``W`` (B, S) study weights → ``(fps (B, T+1), sens (B, T+1), thresholds (T+1,))``."""
    n_img = W.sum(1)
    n_tg = W[:, target_study].sum(1) if target_study.size else np.zeros(W.shape[0])
    ew = W[:, study] if study.size else np.zeros((W.shape[0], 0))
    cfp = np.cumsum(ew * is_fp[None], axis=1)
    ctp = np.cumsum(ew * ~is_fp[None], axis=1)
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.zeros(0, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fps = np.c_[np.zeros(W.shape[0]), cfp[:, last] / n_img[:, None]]
        sens = np.c_[np.zeros(W.shape[0]), ctp[:, last] / n_tg[:, None]]
    thr = np.r_[np.inf, scores[last]]
    return fps, sens, thr


def froc_curve(matched: pd.DataFrame, lesions: pd.DataFrame, study_ids: Sequence[str], unit: Unit = "lesion"
               ) -> FrocCurve:
    """The FROC curve of ``matched`` predictions (:func:`match_predictions`) over the evaluated ``study_ids``
    (every image/volume, negatives included: they count in the FP rate's denominator)."""
    index = {str(s): i for i, s in enumerate(study_ids)}
    targets = target_scores(matched, lesions, unit)
    scores, is_fp, study = _events(matched, targets, index)
    tstudy = np.array([index[str(s)] for s in targets["study_id"]], np.int64)
    W = np.ones((1, len(index)))
    fps, sens, thr = _curve_from_events(scores, is_fp, study, tstudy, W)
    return FrocCurve(fps[0], sens[0], thr, len(index), len(targets))


def froc_table(matched: pd.DataFrame, lesions: pd.DataFrame, studies: pd.DataFrame, unit: Unit = "lesion",
               rates: Sequence[float] = FP_RATES, n_bootstrap: int = 2000, seed: int = 0, alpha: float = 0.05
               ) -> dict[str, Any]:
    """Sensitivity at each FP ``rate`` with a patient-bootstrap percentile CI.

    ``studies``: one row per evaluated image/volume with ``study_id, patient_id``. Returns ``{"unit",
    "n_images", "n_targets", "n_patients", "sensitivity": {rate: value}, "ci": {rate: [lo, hi]},
    "n_bootstrap"}``; with ``n_bootstrap = 0`` no CIs. Resamples without any target give no value for that
    resample (counted in ``n_skipped``).
    """
    _need(studies, ["study_id", "patient_id"], "studies")
    sids = studies["study_id"].astype(str).tolist()
    if len(set(sids)) != len(sids):
        raise CadxDataError("studies: a study_id appears twice", field="study_id")
    curve = froc_curve(matched, lesions, sids, unit)
    out: dict[str, Any] = {"unit": unit, "n_images": curve.n_images, "n_targets": curve.n_targets,
                           "n_patients": int(studies["patient_id"].nunique()),
                           "sensitivity": {str(k): v for k, v in curve.at(rates).items()}, "ci": {},
                           "n_bootstrap": int(n_bootstrap)}
    if n_bootstrap <= 0 or curve.n_targets == 0:
        return out
    index = {s: i for i, s in enumerate(sids)}
    targets = target_scores(matched, lesions, unit)
    scores, is_fp, study = _events(matched, targets, index)
    tstudy = np.array([index[str(s)] for s in targets["study_id"]], np.int64)
    _, ginv = np.unique(studies["patient_id"].astype(str).to_numpy(), return_inverse=True)
    rng = np.random.default_rng(seed)
    vals = np.full((n_bootstrap, len(rates)), np.nan)
    chunk = max(1, 2_000_000 // max(1, scores.size + len(sids)))
    for b0 in range(0, n_bootstrap, chunk):
        nb = min(chunk, n_bootstrap - b0)
        W = resample_weights(ginv.astype(np.int64), int(ginv.max()) + 1, nb, rng).astype(np.float64)
        fps, sens, _ = _curve_from_events(scores, is_fp, study, tstudy, W)
        for i in range(nb):
            if np.isfinite(sens[i]).all():
                vals[b0 + i] = [sensitivity_at(fps[i], sens[i], k) for k in rates]
    ok = np.isfinite(vals).all(1)
    out["n_skipped"] = int((~ok).sum())
    for j, k in enumerate(rates):
        v = vals[ok, j]
        out["ci"][str(float(k))] = ([float(np.percentile(v, 100 * alpha / 2)),
                                     float(np.percentile(v, 100 * (1 - alpha / 2)))] if v.size >= 2
                                    else [float("nan"), float("nan")])
    return out


def plot_froc(curves: Mapping[str, FrocCurve], path: str | Path, max_fp: float = 8.0,
              xlabel: str = "mean FPs per volume") -> Path:
    """FROC curves (one line per name) up to ``max_fp`` FPs, with markers at 1, 2, 4, 8 FPs; written through
    :func:`cadx.utils.save_figure`."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    for name, c in curves.items():
        f = np.r_[c.fps, max_fp] if c.fps[-1] < max_fp else c.fps
        s = np.r_[c.sensitivity, c.sensitivity[-1]] if c.fps[-1] < max_fp else c.sensitivity
        line = ax.plot(f, s, lw=1.8, label=f"{name} ({c.n_targets} targets, {c.n_images} images)")[0]
        pts = [k for k in FP_RATES if k <= max_fp]
        ax.plot(pts, [sensitivity_at(c.fps, c.sensitivity, k) for k in pts], "o", color=line.get_color(), ms=4)
    ax.set_xlim(0, max_fp)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sensitivity")
    ax.grid(alpha=0.3, ls="--")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)
