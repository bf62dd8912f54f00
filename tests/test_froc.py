"""FROC evaluation (thesis A.8): hit rule, one TP per lesion, curve, sensitivity at k FP, patient bootstrap,
cross-checked against MONAI's FROC helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from monai.metrics import compute_fp_tp_probs_nd, compute_froc_curve_data, compute_froc_score

from cadx.errors import CadxDataError
from cadx.evaluation.froc import (
    froc_curve,
    froc_table,
    match_predictions,
    plot_froc,
    sensitivity_at,
    target_scores,
)

# lesion 0 of volume v1: box 20x20 at (40..60, 40..60), diagonal 28.28 -> radius 14.14; central slice 10 of 40
LES = pd.DataFrame({"study_id": ["v1"], "patient_id": ["p1"], "lesion": [0], "y0": [40], "x0": [40], "y1": [60],
                    "x1": [60], "z": [10], "n_slices": [40]})


def _pred(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["study_id", "score", "y", "x", "z"])


def test_hit_near_miss_and_slice_span() -> None:
    p = _pred([("v1", 0.9, 50, 60, 10),        # 10 px from the centre (50, 50): hit
               ("v1", 0.8, 50, 64.2, 10),      # 14.2 px > 14.14: near miss -> FP
               ("v1", 0.7, 50, 50, 20),        # |20 - 10| = 10 <= 0.25 * 40: hit (in span)
               ("v1", 0.6, 50, 50, 21)])       # 11 > 10: outside the +-25 % span -> FP
    m = match_predictions(p, LES)
    assert m["tp"].tolist() == [True, False, True, False]
    assert m["lesion"].tolist() == [0, -1, 0, -1]
    # the absolute distance threshold rescues the near miss (radius = max(14.14, 15))
    assert match_predictions(p, LES, distance=15.0)["tp"].tolist() == [True, True, True, False]
    # a 2D evaluation (no z columns) ignores the slice
    m2 = match_predictions(p.drop(columns="z"), LES.drop(columns=["z", "n_slices"]))
    assert m2["tp"].tolist() == [True, False, True, True]


def test_two_predictions_on_one_lesion_neither_tp_nor_fp() -> None:
    p = _pred([("v1", 0.9, 50, 50, 10), ("v1", 0.8, 52, 50, 10), ("v1", 0.5, 0, 0, 10)])
    c = froc_curve(match_predictions(p, LES), LES, ["v1"])
    # the duplicate at 0.8 adds no TP and no FP (it is not even an operating point); the far box is the one FP
    assert c.thresholds[1:].tolist() == [0.9, 0.5]
    assert c.fps.tolist() == [0.0, 0.0, 1.0]
    assert c.sensitivity.tolist() == [0.0, 1.0, 1.0]
    assert c.n_targets == 1 and c.n_images == 1


def test_negative_volume_counts_in_fp_rate() -> None:
    # v2 has no lesion: its predictions are all FPs, and it counts as an image in the denominator
    p = _pred([("v1", 0.9, 50, 50, 10), ("v2", 0.95, 50, 50, 10), ("v2", 0.4, 5, 5, 3), ("v1", 0.3, 0, 0, 0)])
    c = froc_curve(match_predictions(p, LES), LES, ["v1", "v2"])
    assert c.fps.tolist() == [0.0, 0.5, 0.5, 1.0, 1.5]
    assert c.sensitivity.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    # at 0.5 FP the tie (0.5, 0) / (0.5, 1) resolves to the best sensitivity; 0.25 interpolates (0,0)-(0.5,1)
    assert sensitivity_at(c.fps, c.sensitivity, 0.5) == pytest.approx(1.0)
    assert sensitivity_at(c.fps, c.sensitivity, 0.25) == pytest.approx(0.5)
    assert sensitivity_at(c.fps, c.sensitivity, 8.0) == pytest.approx(1.0)    # beyond the curve: last value


def test_nearest_lesion_gets_the_hit_and_patient_unit() -> None:
    les = pd.DataFrame({"study_id": ["a", "a", "b"], "patient_id": ["p", "p", "q"], "lesion": [0, 1, 0],
                        "y0": [0, 10, 0], "x0": [0, 0, 0], "y1": [20, 30, 10], "x1": [20, 20, 10]})
    p = pd.DataFrame({"study_id": ["a"], "score": [0.8], "y": [14.0], "x": [10.0]})
    m = match_predictions(p, les)
    assert m["lesion"].tolist() == [0]   # inside both radii: 4 px from lesion 0's centre, 6 px from lesion 1's
    t = target_scores(m, les)
    assert t["score"].tolist() == [0.8, 0.0, 0.0]
    tp = target_scores(m, les, unit="patient")
    assert dict(zip(tp["patient_id"], tp["score"], strict=True)) == {"p": 0.8, "q": 0.0}
    c = froc_curve(m, les, ["a", "b"], unit="patient")
    assert c.n_targets == 2 and c.sensitivity[-1] == 0.5


def test_bad_input_is_one_line() -> None:
    with pytest.raises(CadxDataError, match="predictions lacks column"):
        match_predictions(pd.DataFrame({"study_id": ["a"], "score": [1.0]}), LES)
    with pytest.raises(CadxDataError, match="non-finite score"):
        match_predictions(_pred([("v1", float("nan"), 1, 1, 1)]), LES)
    with pytest.raises(CadxDataError, match="not among the evaluated studies"):
        froc_curve(match_predictions(_pred([("v9", 0.5, 1, 1, 1)]), LES), LES, ["v1"])


def _random_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """2D images with square lesions labelled in a mask; predictions are points (distinct scores)."""
    rng = np.random.default_rng(seed)
    les, preds, ids = [], [], []
    for i in range(12):
        sid = f"s{i}"
        ids.append(sid)
        for k in range(int(rng.integers(0, 3))):
            y, x = int(rng.integers(0, 80)), int(rng.integers(0, 80))
            les.append((sid, f"p{i // 2}", k, y, x, y + 12, x + 12))
        for _ in range(int(rng.integers(0, 6))):
            preds.append((sid, float(rng.random()), float(rng.integers(0, 92)) + 0.5, float(rng.integers(0, 92)) + 0.5))
    return (pd.DataFrame(preds, columns=["study_id", "score", "y", "x"]),
            pd.DataFrame(les, columns=["study_id", "patient_id", "lesion", "y0", "x0", "y1", "x1"]), ids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cross_check_monai_froc(seed: int) -> None:
    """Same FP scores, per-lesion scores and sensitivities at 1/2/4/8 FP as MONAI's CAMELYON-style helpers
    (``compute_fp_tp_probs_nd`` → ``compute_froc_curve_data`` → ``compute_froc_score``). MONAI's hit rule is a
    label-mask lookup, so the mask is painted with exactly our rule: every pixel whose centre lies within half a
    lesion's diagonal of its centre, the nearest lesion winning; predictions sit on pixel centres."""
    pred, les, ids = _random_case(seed)
    # our hit rule in 2D: centre within half the diagonal (8.49 px for a 12 px square) -> build MONAI's label
    # mask from exactly that disc so both rules are the same set of pixels
    fp_all, tp_all, n_targets = [], [], 0
    for sid in ids:
        lg = les[les["study_id"] == sid].reset_index(drop=True)
        mask = np.zeros((93, 93), np.int64)
        yy, xx = np.mgrid[0:93, 0:93] + 0.5
        dist = np.full((93, 93), np.inf)
        for k, r in lg.iterrows():   # nearest lesion wins, as in match_predictions
            d = np.hypot(yy - (r.y0 + r.y1) / 2, xx - (r.x0 + r.x1) / 2)
            inside = (d <= np.hypot(12, 12) / 2) & (d < dist)
            mask[inside] = k + 1
            dist = np.where(inside, d, dist)
        pg = pred[pred["study_id"] == sid]
        coords = np.floor(pg[["y", "x"]].to_numpy()).astype(int).reshape(-1, 2)
        if len(lg) == 0:
            fp_all.append(pg["score"].to_numpy())
            continue
        fp, tp, n = compute_fp_tp_probs_nd(pg["score"].to_numpy(), coords, mask)
        fp_all.append(np.asarray(fp))
        tp_all.append(np.asarray(tp))
        n_targets += n
    fp_probs, tp_probs = np.concatenate(fp_all), np.concatenate(tp_all)
    m = match_predictions(pred, les)
    assert sorted(m.loc[~m["tp"], "score"]) == pytest.approx(sorted(fp_probs))
    assert sorted(target_scores(m, les)["score"]) == pytest.approx(sorted(tp_probs))
    assert (tp_probs == 0).any()    # a missed lesion keeps MONAI's lowest threshold at 0 (see module docs)
    fps, sens = compute_froc_curve_data(fp_probs, tp_probs, n_targets, len(ids))
    curve = froc_curve(m, les, ids)
    for k in (1, 2, 4, 8):
        assert sensitivity_at(curve.fps, curve.sensitivity, k) == pytest.approx(
            compute_froc_score(fps, sens, eval_thresholds=(k,)))


def test_bootstrap_ci_by_patient() -> None:
    pred, les, ids = _random_case(5)
    studies = pd.DataFrame({"study_id": ids, "patient_id": [f"p{i // 2}" for i in range(len(ids))]})
    m = match_predictions(pred, les)
    t = froc_table(m, les, studies, n_bootstrap=300, seed=1)
    c = froc_curve(m, les, ids)
    for k in ("1.0", "2.0", "4.0", "8.0"):
        assert t["sensitivity"][k] == pytest.approx(sensitivity_at(c.fps, c.sensitivity, float(k)))
        lo, hi = t["ci"][k]
        assert 0.0 <= lo <= hi <= 1.0
    assert t == froc_table(m, les, studies, n_bootstrap=300, seed=1)   # same seed, same CIs
    # a resample that draws every patient exactly once reproduces the point estimate
    one = froc_table(m, les, studies.assign(patient_id="all"), n_bootstrap=20, seed=0)
    assert one["ci"]["2.0"] == pytest.approx([one["sensitivity"]["2.0"]] * 2)
    assert froc_table(m, les, studies, n_bootstrap=0)["ci"] == {}


def test_figure_written(tmp_path: object) -> None:
    pred, les, ids = _random_case(0)
    c = froc_curve(match_predictions(pred, les), les, ids)
    out = plot_froc({"random": c}, tmp_path / "froc.png")  # type: ignore[operator]
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
