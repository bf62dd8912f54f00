"""Patient-level splits: no leakage, stratification, determinism, official split, splits.json checks."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from cadx.data.splits import Fold, Splits, holdout_split, make_splits, patient_strata
from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError


def _cohort(n_patients: int = 60, seed: int = 1, official: bool = False) -> Cohort:
    """Patients with 1–6 studies each; 1/3 malignant. Patient p{i} label = malignant when i % 3 == 0."""
    rng = np.random.default_rng(seed)
    studies = []
    for i in range(n_patients):
        label = "malignant" if i % 3 == 0 else "benign"
        meta = {"split": "train" if i < 40 else ("val" if i < 50 else "test")} if official else {}
        for j in range(int(rng.integers(1, 7))):
            studies.append(Study(f"s{i}_{j}", f"p{i}", label=label, metadata=dict(meta)))
    return Cohort(studies, name="toy")


def test_kfold_no_leakage_every_patient_tested_once() -> None:
    c = _cohort()
    sp = make_splits(c, folds=5, seed=0)
    assert sp.kind == "kfold" and len(sp) == 5
    tested = Counter(p for f in sp for p in f.test)
    assert set(tested) == set(c.patients) and set(tested.values()) == {1}
    for f in sp:
        assert not set(f.train) & set(f.test)
        assert set(f.train) | set(f.test) == set(c.patients)
        assert f.train == sorted(f.train) and f.val == []
        # every study of a test patient is in the test indices, none in train
        te, tr = f.indices(c, "test"), f.indices(c, "train")
        assert not set(te) & set(tr) and len(te) + len(tr) == len(c)
    sp.check(c)


def test_kfold_stratification_kept() -> None:
    c = _cohort(n_patients=100)
    strata = patient_strata(c)
    assert strata["p0"] == 1 and strata["p1"] == 0  # classes sorted: benign=0, malignant=1
    for f in make_splits(c, folds=5, seed=3):
        frac = np.mean([strata[p] for p in f.test])
        assert abs(frac - 34 / 100) < 0.12  # 34 of 100 patients are malignant


def test_kfold_deterministic_and_seed_dependent() -> None:
    c = _cohort()
    a = make_splits(c, folds=4, seed=7, val_fraction=0.2).to_dict()
    b = make_splits(c, folds=4, seed=7, val_fraction=0.2).to_dict()
    d = make_splits(c, folds=4, seed=8, val_fraction=0.2).to_dict()
    assert a == b and a["folds"] != d["folds"]


def test_validation_carved_from_training() -> None:
    c = _cohort(n_patients=60)
    for f in make_splits(c, folds=5, seed=0, val_fraction=0.25):
        assert f.val and not set(f.val) & (set(f.train) | set(f.test))
        assert abs(len(f.val) - 0.25 * (len(f.train) + len(f.val))) <= 2
        assert set(f.train) | set(f.val) | set(f.test) == set(c.patients)


def test_validation_from_a_small_training_part_with_three_small_classes() -> None:
    """12 one-study patients, 3 classes of 4: a 2-fold training part has 2 studies per class, fewer than the 5
    folds that val_fraction 0.2 implies (StratifiedGroupKFold refuses); the split falls back to train_test_split."""
    studies = [Study(f"s{i}", f"p{i}", label=("a", "b", "c")[i % 3]) for i in range(12)]
    c = Cohort(studies, name="small")
    for f in make_splits(c, folds=2, seed=0, val_fraction=0.2):
        assert len(f.val) == 1 and len(f.train) == 5 and len(f.test) == 6
        assert set(f.train) | set(f.val) | set(f.test) == set(c.patients)


def test_majority_label_and_unlabelled_stratum() -> None:
    studies = [Study("a1", "A", label="x"), Study("a2", "A", label="y"), Study("a3", "A", label="y"),
               Study("b1", "B", label="x"), Study("b2", "B", label="y"), Study("c1", "C")]
    assert patient_strata(Cohort(studies)) == {"A": 1, "B": 0, "C": -1}  # tie → lower class index


def test_official_split_honoured() -> None:
    c = _cohort(official=True)
    sp = make_splits(c, folds=5, seed=0)
    assert sp.kind == "official" and len(sp) == 1
    f = sp[0]
    assert f.train == sorted(f"p{i}" for i in range(40))
    assert f.val == sorted(f"p{i}" for i in range(40, 50))
    assert f.test == sorted(f"p{i}" for i in range(50, 60))
    assert make_splits(c, folds=3, use_official=False).kind == "kfold"


def test_official_split_patient_in_two_parts_rejected() -> None:
    studies = [Study("a", "P", label="x", metadata={"split": "train"}),
               Study("b", "P", label="x", metadata={"split": "test"})]
    with pytest.raises(CadxDataError, match="both train and test"):
        make_splits(Cohort(studies))


def test_one_fold_without_official_is_error() -> None:
    with pytest.raises(CadxConfigError, match="holdout_split"):
        make_splits(_cohort(), folds=1)


def test_holdout_split() -> None:
    c = _cohort(n_patients=60)
    sp = holdout_split(c, test_fraction=0.2, seed=0, val_fraction=0.25)
    f = sp[0]
    assert sp.kind == "holdout" and len(f.test) == 12 and len(f.val) == 12 and len(f.train) == 36
    strata = patient_strata(c)
    assert sum(strata[p] for p in f.test) == 4  # 20 of 60 malignant → 4 of 12, exactly stratified
    assert holdout_split(c, 0.2, seed=0, val_fraction=0.25).to_dict() == sp.to_dict()
    sp.check(c)


def test_save_load_roundtrip(tmp_path) -> None:
    c = _cohort()
    sp = make_splits(c, folds=3, seed=2, val_fraction=0.2)
    p = sp.save(tmp_path / "splits.json")
    raw = json.loads(p.read_text())
    assert raw["seed"] == 2 and raw["kind"] == "kfold" and [f["fold"] for f in raw["folds"]] == [0, 1, 2]
    back = Splits.load(p)
    assert back.to_dict() == sp.to_dict()
    back.check(c)


def test_leaking_splits_json_rejected(tmp_path) -> None:
    c = _cohort(n_patients=6)
    p = tmp_path / "splits.json"
    p.write_text(json.dumps({"folds": [{"fold": 0, "train": ["p0", "p1", "p2"], "val": [],
                                        "test": ["p2", "p3"]}], "seed": 0, "kind": "kfold"}))
    with pytest.raises(CadxDataError, match="both train and test") as e:
        Splits.load(p)
    assert str(p) in str(e.value) and e.value.field == "folds[fold=0]"
    # the same patient tested in two folds
    two = Splits([Fold(0, ["p0"], [], ["p1"]), Fold(1, ["p2"], [], ["p1"])])
    with pytest.raises(CadxDataError, match="test set of folds 0 and 1"):
        two.check(c)
    with pytest.raises(CadxDataError, match="not in cohort"):
        Splits([Fold(0, ["p0", "zz"], [], ["p1"])]).check(c)


def test_malformed_splits_json_names_field(tmp_path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"folds": [{"fold": 0, "train": "p0", "test": []}]}))
    with pytest.raises(CadxDataError) as e:
        Splits.load(p)
    assert e.value.field == "folds[0].train" and e.value.path == str(p)
    p.write_text("{not json")
    with pytest.raises(CadxDataError, match="not valid JSON"):
        Splits.load(p)
    with pytest.raises(CadxDataError, match="not found"):
        Splits.load(tmp_path / "missing.json")


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.shared
def test_lidc_real_kfold_patient_level(shared_data) -> None:
    from cadx.data.datasets import load_dataset

    if not (shared_data / "lidc").is_dir():
        pytest.skip("real LIDC crops not available")
    c = load_dataset("lidc", shared_data / "lidc")
    sp = make_splits(c, folds=5, seed=0)
    sp.check(c)
    y = c.y()
    overall = (y == 1).sum() / (y >= 0).sum()
    assert Counter(p for f in sp for p in f.test) == Counter(c.patients)
    for f in sp:
        te = f.indices(c, "test")
        assert not set(np.array(c.patient_ids)[te]) & set(f.train)
        assert abs((y[te] == 1).sum() / (y[te] >= 0).sum() - overall) < 0.03


def test_subsample_patients_is_seeded_stratified_and_keeps_whole_patients() -> None:
    from cadx.data.splits import subsample_patients
    from helpers import tiny_cohort

    cohort = tiny_cohort(n=12, seed=0)
    sub = subsample_patients(cohort, 4, seed=3)
    assert len(sub.patients) == 4
    assert set(sub.class_counts().values()) == {2}  # 6:6 patients → 2 of each class
    assert [s.study_id for s in sub] == [s.study_id for s in subsample_patients(cohort, 4, seed=3)]
    assert [s.study_id for s in sub] != [s.study_id for s in subsample_patients(cohort, 4, seed=4)]
    kept = set(sub.patients)
    assert sum(s.patient_id in kept for s in cohort) == len(sub)  # every study of a kept patient
    assert subsample_patients(cohort, 99, seed=0) is cohort
    with pytest.raises(CadxConfigError, match="max_patients"):
        subsample_patients(cohort, 0, seed=0)
