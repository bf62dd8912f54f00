"""Segmentation results split by whether the case has a lesion (issue 17 item 6).

A mean Dice over every case mixes two questions: how well lesions are outlined, and whether normal cases are left
empty (cadx's Dice scores an empty prediction on an empty mask 1.0, so normal cases inflate the mean: BUSI's 50
normal images). :func:`lesion_split` answers them separately, from a study-level predictions table
(``predictions.csv``: ``patient_id``, ``dice``, ``lesion_voxels``, ``pred_voxels``):

- **lesion-present** (``lesion_voxels > 0``): Dice mean with a CI, median;
- **lesion-absent** (``lesion_voxels == 0``): false-positive rate = share of cases with any predicted voxel
  (``pred_voxels > 0``), with a CI; mean predicted volume in voxels (of the original grid), with a CI;
- **all cases**: the overall Dice mean (the old headline), as the third line.

CIs: percentile bootstrap over patients (:func:`cadx.evaluation.bootstrap.bootstrap_mean_ci`; the false-positive
rate is the mean of a 0/1 indicator), each with the same ``seed``; a group of fewer than 2 cases gets no CI
(``None``); ``n_bootstrap = 0`` gives none. Our choice: a patient bootstrap rather than a Wilson interval for the
rate, so a patient with several studies counts once per draw, as everywhere in cadx. Rows without a ground-truth
mask (``lesion_voxels`` NaN) are left out of all three and counted in ``n_no_mask``; a ``dice`` of NaN is left
out of the Dice means only. Volumes are voxels, not mm³ (the predictions table has no spacing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cadx.errors import CadxDataError
from cadx.evaluation.bootstrap import bootstrap_mean_ci

__all__ = ["lesion_split"]

_NEEDED = ("patient_id", "dice", "lesion_voxels", "pred_voxels")


def _mean_ci(v: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int, alpha: float
             ) -> tuple[float | None, list[float] | None]:
    if v.size == 0:
        return None, None
    if n_bootstrap <= 0 or v.size < 2:
        return float(v.mean()), None
    r = bootstrap_mean_ci(v, groups, n_resamples=n_bootstrap, alpha=alpha, seed=seed)
    return r.point, [r.lo, r.hi]


def lesion_split(df: pd.DataFrame, n_bootstrap: int = 2000, seed: int = 0, alpha: float = 0.05,
                 source: str | None = None) -> dict[str, Any]:
    """Lesion-present Dice, lesion-absent false-positive rate and predicted volume, and the overall Dice mean.

    ``df``: one row per study with ``patient_id, dice, lesion_voxels, pred_voxels`` (CadxDataError naming
    ``source`` and the missing column otherwise; negative voxel counts are an error too).
    Returns ``{"lesion": {n, dice_mean, dice_median, ci_dice_mean}, "no_lesion": {n, n_false_positive,
    false_positive_rate, ci_false_positive_rate, pred_voxels_mean, ci_pred_voxels_mean}, "all": {n, dice_mean,
    ci_dice_mean}, "n_no_mask", "bootstrap": {n_resamples, seed, unit}}``; a value is None where its group is
    empty, a CI None where the group has fewer than 2 cases or ``n_bootstrap`` is 0."""
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise CadxDataError(f"segmentation predictions need column(s) {missing}", path=source, field=missing[0])
    lesion = pd.to_numeric(df["lesion_voxels"], errors="coerce").to_numpy(np.float64)
    pred = pd.to_numeric(df["pred_voxels"], errors="coerce").to_numpy(np.float64)
    dsc = pd.to_numeric(df["dice"], errors="coerce").to_numpy(np.float64)
    groups = df["patient_id"].astype(str).to_numpy()
    for name, v in (("lesion_voxels", lesion), ("pred_voxels", pred)):
        if np.any(v[np.isfinite(v)] < 0):
            raise CadxDataError("negative voxel count", path=source, field=name)
    has_mask = np.isfinite(lesion)
    pos = has_mask & (lesion > 0)
    neg = has_mask & (lesion == 0)
    if np.any(neg & ~np.isfinite(pred)):
        raise CadxDataError("a lesion-absent case has no predicted voxel count", path=source, field="pred_voxels")
    args = (n_bootstrap, seed, alpha)

    ok = pos & np.isfinite(dsc)
    d_mean, d_ci = _mean_ci(dsc[ok], groups[ok], *args)
    out: dict[str, Any] = {"lesion": {"n": int(pos.sum()), "dice_mean": d_mean,
                                      "dice_median": float(np.median(dsc[ok])) if ok.any() else None,
                                      "ci_dice_mean": d_ci}}
    fp = (pred[neg] > 0).astype(np.float64)
    fp_rate, fp_ci = _mean_ci(fp, groups[neg], *args)
    vol, vol_ci = _mean_ci(pred[neg], groups[neg], *args)
    out["no_lesion"] = {"n": int(neg.sum()), "n_false_positive": int(fp.sum()), "false_positive_rate": fp_rate,
                        "ci_false_positive_rate": fp_ci, "pred_voxels_mean": vol, "ci_pred_voxels_mean": vol_ci}
    ok_all = has_mask & np.isfinite(dsc)
    a_mean, a_ci = _mean_ci(dsc[ok_all], groups[ok_all], *args)
    out["all"] = {"n": int(ok_all.sum()), "dice_mean": a_mean, "ci_dice_mean": a_ci}
    out["n_no_mask"] = int((~has_mask).sum())
    out["bootstrap"] = {"n_resamples": int(n_bootstrap), "seed": int(seed), "unit": "patient"}
    return out
