"""Calibration metrics and post-hoc scaling (cadx.evaluation.calibration), cross-checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.calibration import _sigmoid_calibration, calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss

from cadx.evaluation.bootstrap import bootstrap_ci
from cadx.evaluation.calibration import (
    apply_calibration,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_calibration,
    reliability_curve,
)


def _binary(n: int = 300, seed: int = 0, sharp: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and over-confident probabilities: true P(y=1) = sigmoid(z), reported sigmoid(sharp * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < expit(z)).astype(int)
    p1 = expit(sharp * z)
    return y, np.stack([1 - p1, p1], 1)


def test_brier_matches_sklearn_binary_multiclass_and_positive_class():
    y, p = _binary()
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p[:, 1]), abs=1e-12)
    assert brier_score(y, p[:, 1]) == pytest.approx(brier_score_loss(y, p[:, 1]), abs=1e-12)
    # positive = 0: the probability of class 0 against y == 0 — the same number for a proper 2-column proba
    assert brier_score(y, p, positive=0) == pytest.approx(brier_score_loss(y == 0, p[:, 0]), abs=1e-12)
    rng = np.random.default_rng(1)
    pm = softmax(rng.normal(size=(50, 3)), 1)
    ym = rng.integers(0, 3, 50)
    assert brier_score(ym, pm) == pytest.approx(brier_score_loss(ym, pm, labels=[0, 1, 2]), abs=1e-12)
    # hand case: p = (.8, .3), y = (1, 0) -> ((.2)^2 + (.3)^2) / 2 = .065
    assert brier_score([1, 0], np.array([0.8, 0.3])) == pytest.approx(0.065)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [1, 5, 10])
def test_reliability_points_match_sklearn_calibration_curve(strategy: str, n_bins: int):
    y, p = _binary(200, seed=n_bins)
    c = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)  # type: ignore[arg-type]
    t_sk, p_sk = calibration_curve(y, p[:, 1], n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(c.prob_true, t_sk, atol=1e-12)
    np.testing.assert_allclose(c.prob_pred, p_sk, atol=1e-12)
    assert c.n.sum() == 200 and len(c.edges) == n_bins + 1
    # positive = 0 is the curve of the class-0 probability for y == 0
    c0 = reliability_curve(y, p, n_bins=n_bins, strategy=strategy, positive=0)  # type: ignore[arg-type]
    t0, p0 = calibration_curve(y == 0, p[:, 0], n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(c0.prob_true, t0, atol=1e-12)
    np.testing.assert_allclose(c0.prob_pred, p0, atol=1e-12)


def test_ece_hand_computed():
    # 2 equal-width bins [0, .5], (.5, 1]; scores .1 .4 | .6 .9 .9 with outcomes 0 1 | 1 1 0
    y = np.array([0, 1, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.6, 0.9, 0.9])
    # bin 0: mean score .25, frequency .5 -> 2/5 * .25 ; bin 1: mean score .8, frequency 2/3 -> 3/5 * 2/15
    want = 2 / 5 * 0.25 + 3 / 5 * abs(2 / 3 - 0.8)
    assert expected_calibration_error(y, s, n_bins=2) == pytest.approx(want, abs=1e-12)
    # a score on the inner edge (.5) goes to the lower bin (scikit-learn's rule)
    assert expected_calibration_error([1, 0], np.array([0.5, 1.0]), n_bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 1)
    # equal-mass bins: 5 distinct scores in 5 bins (edges .1 .34 .52 .68 .82 .9) = one score each
    s2 = np.array([0.1, 0.4, 0.6, 0.8, 0.9])
    assert expected_calibration_error(y, s2, n_bins=5, strategy="quantile") == pytest.approx(np.mean(np.abs(y - s2)))
    # perfectly calibrated bins give 0; multi-class top-label: confidence .6 everywhere, accuracy .6 -> 0
    assert expected_calibration_error([0, 1, 0, 1], np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    pm = np.tile([0.6, 0.3, 0.1], (5, 1))
    assert expected_calibration_error([0, 0, 0, 1, 2], pm) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([1, 1, 1, 1, 2], pm) == pytest.approx(0.6)


def test_bad_input_raises_readable_errors():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        brier_score([0, 1], np.array([0.2, 1.3]))
    with pytest.raises(ValueError, match="rows"):
        expected_calibration_error([0, 1, 1], np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve([0, 1], np.array([0.2, 0.3]), strategy="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration("beta", [0, 1], np.array([0.2, 0.3]))


def test_report_cis_are_patient_bootstrap_cis():
    y, p = _binary(120, seed=3)
    groups = np.repeat(np.arange(40), 3)
    rep = calibration_report(y, p, groups=groups, n_bins=10, n_bootstrap=300, seed=7)
    assert rep["brier"] == pytest.approx(brier_score_loss(y, p[:, 1]))
    from functools import partial
    want = bootstrap_ci(partial(expected_calibration_error, n_bins=10, strategy="uniform", positive=1), y, p,
                        groups=groups, n_resamples=300, seed=7)
    assert rep["ci"]["ece"] == pytest.approx([want.lo, want.hi])
    assert rep["ci"]["brier"][0] < rep["brier"] < rep["ci"]["brier"][1]
    assert rep["kind"] == "positive-class" and rep["n_bins"] == 10 and sum(rep["curve"]["count"]) == 120
    assert calibration_report(y, p, n_bootstrap=0)["ci"] == {}


def test_temperature_scaling_minimises_nll_and_fixes_overconfidence():
    y, p = _binary(2000, seed=4, sharp=3.0)
    fit = fit_calibration("temperature", y, p)
    # reported logit = 3 z: the true model is recovered at T = 3 (up to sampling)
    assert fit["fitted"] and 2.5 < fit["temperature"] < 3.6
    q = apply_calibration(fit, p)
    np.testing.assert_allclose(q.sum(1), 1.0)
    nll = log_loss(y, q)
    for t in (fit["temperature"] * 0.9, fit["temperature"] * 1.1):
        assert nll < log_loss(y, apply_calibration({**fit, "temperature": t}, p))
    assert expected_calibration_error(y, q) < expected_calibration_error(y, p) / 2
    # ranking (and so the AUC) unchanged
    assert (np.argsort(q[:, 1], kind="stable") == np.argsort(p[:, 1], kind="stable")).all()


def test_platt_and_isotonic_match_sklearn():
    y, p = _binary(400, seed=5)
    fit = fit_calibration("platt", y, p)
    z = np.log(p[:, 1] / p[:, 0])
    # scikit-learn's own Platt fit (the one CalibratedClassifierCV uses): p = 1 / (1 + exp(a z + b))
    a_sk, b_sk = _sigmoid_calibration(z, y)
    assert (fit["a"], fit["b"]) == (pytest.approx(-a_sk, abs=1e-4), pytest.approx(-b_sk, abs=1e-4))
    np.testing.assert_allclose(apply_calibration(fit, p)[:, 1], expit(-(a_sk * z + b_sk)), atol=1e-5)
    # a separable validation set still gives a finite map (smoothed targets: 3 vs 2 rows -> 4/5 and 1/4)
    sep = fit_calibration("platt", [0, 0, 1, 1, 1], np.array([0.1, 0.2, 0.7, 0.8, 0.9]))
    assert np.isfinite(sep["a"]) and 0 < sep["a"] < 20
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p[:, 1], y)
    fit_i = fit_calibration("isotonic", y, p)
    new = np.linspace(0, 1, 11)
    pn = np.stack([1 - new, new], 1)
    np.testing.assert_allclose(apply_calibration(fit_i, pn)[:, 1], iso.predict(new), atol=1e-12)
    # positive = 0: the map is of the class-0 probability, rows still sum to 1
    q0 = apply_calibration(fit_calibration("isotonic", y, p, positive=0), p)
    np.testing.assert_allclose(q0.sum(1), 1.0)
    iso0 = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p[:, 0], y == 0)
    np.testing.assert_allclose(q0[:, 0], iso0.predict(p[:, 0]), atol=1e-12)


def test_multiclass_maps_and_unfittable_cases():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 300)
    logits = 4 * np.eye(3)[y] + rng.normal(scale=2.0, size=(300, 3))
    p = softmax(logits, 1)
    for m in ("temperature", "platt", "isotonic"):
        q = apply_calibration(fit_calibration(m, y, p), p)
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-9)
        if m != "isotonic":  # both minimise the NLL over a family that holds the identity
            assert log_loss(y, q) <= log_loss(y, p) + 1e-9
    lr = LogisticRegression(C=np.inf, max_iter=1000).fit(np.log(p), y)
    np.testing.assert_allclose(apply_calibration(fit_calibration("platt", y, p), p), lr.predict_proba(np.log(p)),
                               atol=1e-6)
    # one class only / a missing class: not fitted, the identity, and the reason is said
    one = fit_calibration("temperature", np.zeros(5, int), p[:5])
    assert one["fitted"] is False and "two classes" in one["reason"]
    assert fit_calibration("platt", np.r_[np.zeros(5, int), np.ones(5, int)], p[:10])["fitted"] is False
    np.testing.assert_array_equal(apply_calibration(one, p), p)
    assert fit_calibration("none", y, p)["fitted"] is False
    # an ensemble's maps: the mean of the members' maps
    a, b = fit_calibration("temperature", y, p), {"method": "temperature", "fitted": True, "temperature": 1.0}
    np.testing.assert_allclose(apply_calibration({"members": [a, b]}, p),
                               (apply_calibration(a, p) + p) / 2, atol=1e-12)


def test_svm_platt_cv_never_puts_a_patient_on_both_sides():
    from cadx.classical.svm import EmbeddingSVM
    rng = np.random.default_rng(8)
    groups = np.repeat(np.arange(30), 4)
    y = np.repeat(rng.integers(0, 2, 30), 4)
    x = rng.normal(size=(120, 6)) + y[:, None]
    svm = EmbeddingSVM(random_state=2).fit(x, y, groups=groups)
    cal = svm.pipeline_[-1]
    splits = list(cal.cv)  # the CV CalibratedClassifierCV really used
    assert len(splits) == 5
    for fit_rows, cal_rows in splits:
        assert not set(groups[fit_rows]) & set(groups[cal_rows])
    assert sorted(np.concatenate([c for _, c in splits]).tolist()) == list(range(120))


def test_report_calibration_section_and_reliability_figure(tmp_path):
    import json

    import pandas as pd

    from cadx.evaluation.calibration import calibration_metrics
    from cadx.report import write_report
    from cadx.report.calibration import calibration_section
    from cadx.report.runs import load_run

    y, p = _binary(60, seed=9)
    classes = ["benign", "malignant"]
    df = pd.DataFrame({"study_id": [f"S{i}" for i in range(60)], "patient_id": [f"P{i // 2}" for i in range(60)],
                       "fold": np.arange(60) % 2, "y_true": [classes[k] for k in y],
                       "raw_p_benign": p[:, 0], "raw_p_malignant": p[:, 1]})
    fit = fit_calibration("temperature", y, p)
    q = apply_calibration(fit, p)
    df["p_benign"], df["p_malignant"] = q[:, 0], q[:, 1]
    df["y_pred"] = [classes[int(v >= 0.5)] for v in q[:, 1]]
    cal = calibration_metrics(df, classes, "malignant", n_bootstrap=100, seed=0, method="temperature")
    assert cal is not None and cal["brier"] == pytest.approx(brier_score_loss(y, q[:, 1]))
    assert cal["before"]["brier"] == pytest.approx(brier_score_loss(y, p[:, 1])) and cal["before"]["ci"]["ece"]
    run = tmp_path / "run"
    for k, fitted in ((0, {**fit, "fit_split": "validation"}),
                      (1, {"method": "temperature", "fitted": False, "reason": "no validation patients"})):
        (run / f"fold_{k}").mkdir(parents=True)
        (run / f"fold_{k}" / "metrics.json").write_text(json.dumps({"decision_fit": {"calibration": fitted}}))
    (run / "metrics.json").write_text(json.dumps({"pooled": {"auc": 0.8}, "classes": classes, "calibration": cal,
                                                  "bootstrap": {"n_resamples": 100}}))
    df.to_csv(run / "predictions.csv", index=False)
    sec = calibration_section(load_run(run))
    assert sec is not None and sec.png is not None and sec.png[:4] == b"\x89PNG"
    assert "positive class malignant" in sec.text and "10 equal-width bins" in sec.text
    assert "fold(s) 0" in sec.text and "fold 1 not calibrated (no validation patients)" in sec.text
    assert [r[0] for r in sec.table.rows] == ["before scaling", "after temperature scaling"]
    assert sec.table.rows[1][1].startswith(f"{cal['brier']:.3f} [")
    write_report([run], run)
    md = (run / "report.md").read_text()
    assert "### Calibration" in md and "run_reliability.png" in md
    assert (run / "figures" / "run_reliability.png").is_file()
