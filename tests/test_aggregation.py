"""Slice rows → study rows (mean, vote, max) and evaluate_predictions on study tables (vs sklearn)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadx.errors import CadxDataError
from cadx.evaluation.aggregation import aggregate_predictions, aggregate_proba


def _slices() -> pd.DataFrame:
    return pd.DataFrame({
        "study_id": ["s1", "s1", "s1", "s2", "s2", "s3"],
        "patient_id": ["a", "a", "a", "b", "b", "b"],
        "fold": [0, 0, 0, 1, 1, 1],
        "y_true": ["ben", "ben", "ben", "mal", "mal", "ben"],
        "p_ben": [0.9, 0.4, 0.45, 0.3, 0.55, 0.2],
        "p_mal": [0.1, 0.6, 0.55, 0.7, 0.45, 0.8],
        "pred_sub": [1.0, 2.0, 3.0, 4.0, 4.0, 5.0],
        "true_sub": [2.0, 2.0, 2.0, 3.0, 3.0, 1.0],
    })


def test_mean_aggregation_matches_groupby() -> None:
    df = _slices()
    out = aggregate_predictions(df, method="mean")
    assert out["study_id"].tolist() == ["s1", "s2", "s3"]
    np.testing.assert_allclose(out["p_mal"], [(0.1 + 0.6 + 0.55) / 3, 0.575, 0.8])
    assert out["y_pred"].tolist() == ["ben", "mal", "mal"]
    assert out[["patient_id", "fold", "y_true"]].values.tolist() == [["a", 0, "ben"], ["b", 1, "mal"],
                                                                     ["b", 1, "ben"]]
    assert out["n_rows"].tolist() == [3, 2, 1]
    np.testing.assert_allclose(out["pred_sub"], [2.0, 4.0, 5.0])


def test_vote_fractions_and_tie_break_by_mean_probability() -> None:
    out = aggregate_predictions(_slices(), method="vote")
    # s1: votes ben, mal, mal → mal with 2/3
    np.testing.assert_allclose(out["p_mal"], [2 / 3, 0.5, 1.0])
    # s2: one vote each (tie); mean p_mal 0.575 > p_ben 0.425 → mal
    assert out["y_pred"].tolist() == ["mal", "mal", "mal"]
    df = _slices()
    df.loc[3, ["p_ben", "p_mal"]] = [0.4, 0.6]
    df.loc[4, ["p_ben", "p_mal"]] = [0.9, 0.1]  # tie, mean p_ben 0.65 wins
    assert aggregate_predictions(df, method="vote")["y_pred"].tolist()[1] == "ben"


def test_max_aggregation() -> None:
    out = aggregate_predictions(_slices(), method="max")
    np.testing.assert_allclose(out["p_ben"], [0.9, 0.55, 0.2])
    np.testing.assert_allclose(out["p_mal"], [0.6, 0.7, 0.8])
    assert out["y_pred"].tolist() == ["ben", "mal", "mal"]


def test_aggregation_errors() -> None:
    df = _slices()
    with pytest.raises(ValueError, match="unknown"):
        aggregate_predictions(df, method="median")  # type: ignore[arg-type]
    bad = df.copy()
    bad.loc[1, "y_true"] = "mal"
    with pytest.raises(CadxDataError, match="y_true differs"):
        aggregate_predictions(bad)
    with pytest.raises(CadxDataError, match="missing probability"):
        aggregate_predictions(df, prob_cols=["p_x"])
    with pytest.raises(CadxDataError, match="no probability"):
        aggregate_predictions(df.drop(columns=["p_ben", "p_mal"]))
    with pytest.raises(CadxDataError, match="no column"):
        aggregate_predictions(df, by="nodule_id")


# ---- evaluate_predictions (study-level table → metrics.json dict) ---------------------------------------

def _table(n: int = 120, classes: tuple[str, ...] = ("ben", "mal"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n) + 0.4 * np.eye(k)[y]
    p /= p.sum(1, keepdims=True)
    df = pd.DataFrame({"study_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                       "fold": (np.arange(n) // 2) % 3, "y_true": [classes[i] for i in y]})
    for j, c in enumerate(classes):
        df[f"p_{c}"] = p[:, j]
    return df


def test_evaluate_binary_matches_sklearn_pooled_and_per_fold() -> None:
    import sklearn.metrics as skm

    from cadx.evaluation.summary import evaluate_predictions

    df = _table()
    r = evaluate_predictions(df, ["ben", "mal"], n_bootstrap=200, seed=1)
    y = (df["y_true"] == "mal").to_numpy().astype(int)
    pred = (df["p_mal"] > df["p_ben"]).to_numpy().astype(int)
    pooled = r["pooled"]
    assert pooled["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert pooled["auc"] == pytest.approx(skm.roc_auc_score(y, df["p_mal"]))
    assert pooled["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert pooled["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert pooled["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert pooled["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert pooled["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert pooled["per_class"]["mal"]["support"] == int(y.sum())
    assert r["n_studies"] == 120 and r["n_patients"] == 60
    assert sorted(r["folds"]) == ["0", "1", "2"]
    for k, block in r["folds"].items():
        m = (df["fold"] == int(k)).to_numpy()
        assert block["auc"] == pytest.approx(skm.roc_auc_score(y[m], df["p_mal"][m]))
        assert block["n_studies"] == int(m.sum())
    for name in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
        lo, hi = pooled["ci"][name]
        assert lo <= pooled[name] <= hi


def test_evaluate_multiclass_macro_decisions_and_extras() -> None:
    import sklearn.metrics as skm

    from cadx.evaluation.summary import evaluate_predictions

    classes = ["aca", "naa", "gn"]
    df = _table(150, tuple(classes), seed=2)
    rng = np.random.default_rng(0)
    df["pred_sub"] = rng.random(150)
    df["true_sub"] = rng.random(150)
    df["dice"] = rng.random(150)
    df.loc[0, "dice"] = np.nan  # study without a mask
    r = evaluate_predictions(df, classes, n_bootstrap=100, attribute_ranges={"sub": [1, 5]})
    y = df["y_true"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    P = df[[f"p_{c}" for c in classes]].to_numpy()
    pred = P.argmax(1)
    pooled = r["pooled"]
    assert pooled["auc"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"))
    assert pooled["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert pooled["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert pooled["abe"]["sub"] == pytest.approx(4 * np.mean(np.abs(df["pred_sub"] - df["true_sub"])))
    assert pooled["dice_mean"] == pytest.approx(df["dice"][1:].mean())
    assert pooled["dice_median"] == pytest.approx(df["dice"][1:].median())
    lo, hi = pooled["ci"]["dice_mean"]
    assert lo <= pooled["dice_mean"] <= hi
    # prior rule and the given y_pred column
    priors = {"aca": 0.7, "naa": 0.2, "gn": 0.1}
    rp = evaluate_predictions(df, classes, n_bootstrap=0, decision="prior", priors=priors)
    pp = (P / np.array([0.7, 0.2, 0.1])).argmax(1)
    assert rp["pooled"]["accuracy"] == pytest.approx(skm.accuracy_score(y, pp))
    assert rp["pooled"]["ci"] == {} and rp["decision"]["priors"] == [0.7, 0.2, 0.1]
    df["y_pred"] = [classes[i] for i in pp]
    rg = evaluate_predictions(df, classes, n_bootstrap=0, decision="given")
    assert rg["pooled"]["confusion_matrix"] == rp["pooled"]["confusion_matrix"]


def test_evaluate_segmentation_only_and_errors() -> None:
    from cadx.evaluation.summary import evaluate_predictions

    df = pd.DataFrame({"study_id": ["a", "b", "c"], "patient_id": ["1", "2", "3"], "fold": [0, 0, 1],
                       "dice": [0.8, 0.9, 0.7]})
    r = evaluate_predictions(df, [], n_bootstrap=50)
    assert r["pooled"]["dice_mean"] == pytest.approx(0.8) and "auc" not in r["pooled"]
    assert r["folds"]["1"]["dice_median"] == pytest.approx(0.7)
    tab = _table(10)
    with pytest.raises(CadxDataError, match="missing probability"):
        evaluate_predictions(tab, ["ben", "other"], n_bootstrap=0)
    bad = tab.copy()
    bad.loc[0, "y_true"] = "other"
    with pytest.raises(CadxDataError, match="unknown classes"):
        evaluate_predictions(bad, ["ben", "mal"], n_bootstrap=0)
    with pytest.raises(CadxDataError, match="duplicated"):
        evaluate_predictions(pd.concat([tab, tab]), ["ben", "mal"], n_bootstrap=0)
    with pytest.raises(CadxDataError, match="y_pred"):
        evaluate_predictions(tab, ["ben", "mal"], n_bootstrap=0, decision="given")


def test_numeric_class_names_survive_csv_float_round_trip() -> None:
    from cadx.evaluation.summary import class_key, evaluate_predictions

    assert [class_key(v) for v in (1.0, "0.0", "2", "a.0", np.float64(3.0))] == ["1", "0", "2", "a.0", "3"]
    df = _table(20, ("0", "1"))
    df["y_true"] = df["y_true"].astype(float)  # what read_csv gives when the column also held NaN
    r = evaluate_predictions(df, ["0", "1"], n_bootstrap=0)
    assert sum(map(sum, r["pooled"]["confusion_matrix"])) == 20


# ---- aggregate_proba: the one aggregation (array core) and its tie rule -------------------------------------
def _reference(proba: np.ndarray, groups: np.ndarray, method: str) -> tuple[list, np.ndarray, np.ndarray]:
    """The documented rule written out row by row in plain Python (no numpy tricks)."""
    keys: list = []
    for g in groups:
        if g not in keys:
            keys.append(g)
    k = proba.shape[1]
    probs, preds = [], []
    for key in keys:
        rows = [list(map(float, proba[i])) for i in range(len(groups)) if groups[i] == key]
        mean = [sum(r[j] for r in rows) / len(rows) for j in range(k)]
        if method == "mean":
            agg = mean
            pred = agg.index(max(agg))                       # list.index: the lowest tied index
        elif method == "max":
            agg = [max(r[j] for r in rows) for j in range(k)]
            pred = agg.index(max(agg))
        else:
            votes = [0] * k
            for r in rows:
                votes[r.index(max(r))] += 1                  # a row's own tie → lowest index
            agg = [v / len(rows) for v in votes]
            tied = [j for j in range(k) if votes[j] == max(votes)]
            best = max(mean[j] for j in tied)
            pred = min(j for j in tied if mean[j] == best)
        probs.append(agg)
        preds.append(pred)
    return keys, np.array(probs), np.array(preds)


@pytest.mark.parametrize("method", ["mean", "vote", "max"])
def test_aggregate_proba_matches_the_written_out_rule(method: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, k = int(rng.integers(1, 25)), int(rng.integers(2, 5))
        # small integer weights, so that row, vote and mean ties are frequent
        raw = rng.integers(0, 3, size=(n, k)).astype(float)
        raw[raw.sum(1) == 0, 0] = 1.0
        p = raw / raw.sum(1, keepdims=True)
        groups = rng.choice(np.array(["c", "a", "b", "d"]), n)
        agg = aggregate_proba(p, groups, method)
        keys, probs, preds = _reference(p, groups, method)
        assert agg.keys.tolist() == keys
        np.testing.assert_allclose(agg.proba, probs, atol=1e-12)
        np.testing.assert_array_equal(agg.pred, preds)
        assert agg.size.tolist() == [int((groups == g).sum()) for g in keys]
        assert agg.first.tolist() == [int(np.flatnonzero(groups == g)[0]) for g in keys]


def test_vote_tie_rule_by_hand() -> None:
    p = np.array([[0.5, 0.5, 0.0],     # row tie → votes for class 0
                  [0.1, 0.2, 0.7],     # class 2
                  [0.2, 0.3, 0.5],     # study b: class 2 …
                  [0.45, 0.55, 0.0],   # … class 1: 1-1 tie, mean p1 .425 > p2 .25 → 1
                  [0.4, 0.6, 0.0],     # study c: class 1
                  [0.6, 0.4, 0.0]])    # class 0: tie, means equal (.5/.5) → lowest index 0
    agg = aggregate_proba(p, ["a", "a", "b", "b", "c", "c"], "vote")
    np.testing.assert_allclose(agg.proba, [[0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0.5, 0]])
    # a: 1-1 between classes 0 and 2; mean p0 = .3 < mean p2 = .35 → 2
    assert agg.pred.tolist() == [2, 1, 0]
    # the table version gives the same decisions and probabilities
    df = pd.DataFrame({"study_id": ["a", "a", "b", "b", "c", "c"], "p_x": p[:, 0], "p_y": p[:, 1], "p_z": p[:, 2]})
    out = aggregate_predictions(df, method="vote")
    assert out["y_pred"].tolist() == ["z", "y", "x"]
    np.testing.assert_allclose(out[["p_x", "p_y", "p_z"]].to_numpy(), agg.proba)


def test_aggregate_proba_mean_matches_pandas_and_sklearn_accuracy() -> None:
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 60)
    groups = rng.integers(0, 15, 60)
    agg = aggregate_proba(p, groups, "mean")
    ref = pd.DataFrame(p).groupby(groups, sort=False).mean()
    np.testing.assert_allclose(agg.proba, ref.to_numpy(), atol=1e-12)
    assert agg.keys.tolist() == ref.index.tolist()
    y = rng.integers(0, 3, 15)[agg.keys]
    assert np.mean(agg.pred == y) == pytest.approx(accuracy_score(y, ref.to_numpy().argmax(1)))


def test_aggregate_proba_errors_and_empty() -> None:
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_proba(np.ones((2, 2)) / 2, [0, 1], "median")
    with pytest.raises(ValueError, match=r"groups \(N,\), got \(2, 2\) and \(3,\)"):
        aggregate_proba(np.ones((2, 2)) / 2, [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        aggregate_proba(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="missing ids"):
        aggregate_proba(np.ones((2, 2)) / 2, np.array(["a", None], dtype=object))
    empty = aggregate_proba(np.zeros((0, 2)), np.zeros(0, int), "vote")
    assert empty.proba.shape == (0, 2) and empty.pred.shape == (0,)


# ---- the Lightning validation metric uses the same aggregation and AUC ---------------------------------------
def test_validation_metrics_match_sklearn_on_study_means() -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    from cadx.training.module import validation_metrics

    rng = np.random.default_rng(1)
    study = np.repeat(np.arange(20), 3)
    y_study = np.arange(20) % 3
    y_study[5] = -1                                     # an unlabelled study is left out
    p = rng.dirichlet(np.ones(3), 60) + 0.4 * np.eye(3)[np.maximum(y_study, 0)[study]]
    p = p / p.sum(1, keepdims=True)
    acc, auc = validation_metrics(p, y_study[study], study)
    mean = pd.DataFrame(p).groupby(study).mean().to_numpy()
    ok = y_study >= 0
    assert acc == pytest.approx(accuracy_score(y_study[ok], mean[ok].argmax(1)))
    assert auc == pytest.approx(roc_auc_score(y_study[ok], mean[ok], multi_class="ovr"))
    # binary: AUC of class 1; a missing class → NaN without a warning; nothing labelled → NaN, NaN
    pb = np.stack([1 - p[:, 0], p[:, 0]], 1)
    yb = (y_study[study] > 0).astype(int)
    mb = pd.DataFrame(pb).groupby(study).mean().to_numpy()[:, 1]
    assert validation_metrics(pb, yb, study)[1] == pytest.approx(roc_auc_score(yb[::3], mb))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(validation_metrics(pb, np.zeros(60, int), study)[1])
    assert all(np.isnan(validation_metrics(pb, -np.ones(60, int), study)))


def test_validation_metrics_follow_the_runs_vote_aggregation() -> None:
    """A vote run's val_accuracy is the vote rule's accuracy (the same aggregate_predictions as its CV rows)."""
    from sklearn.metrics import accuracy_score

    from cadx.training.module import validation_metrics

    study = np.repeat(np.arange(10), 4)
    y = np.arange(10) % 2
    p1 = np.where(y[study] == 1, 0.8, 0.2)
    p1[:4] = [0.45, 0.45, 0.45, 0.99]     # study 0 (class 0): mean .585 → 1 (wrong), votes 3:1 → 0 (right)
    p1[4:8] = [0.55, 0.55, 0.55, 0.01]    # study 1 (class 1): mean .415 → 0 (wrong), votes 3:1 → 1 (right)
    p = np.stack([1 - p1, p1], 1)
    rows = pd.DataFrame({"study_id": study, "p_a": p[:, 0], "p_b": p[:, 1]})
    voted = aggregate_predictions(rows, method="vote")
    acc_vote, _ = validation_metrics(p, y[study], study, "vote")
    assert acc_vote == pytest.approx(accuracy_score(y, (voted["y_pred"] == "b").astype(int)))
    acc_mean, _ = validation_metrics(p, y[study], study)
    assert acc_mean == pytest.approx(accuracy_score(y, pd.DataFrame(p).groupby(study).mean().to_numpy().argmax(1)))
    assert (acc_vote, acc_mean) == (1.0, 0.8)  # hand-computed: the two rules disagree on studies 0 and 1
