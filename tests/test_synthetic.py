"""The synthetic adrenal-mass CT cohort: determinism, class imbalance, HU, masks/boxes, DICOM, manifest, adapter."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cadx.data import synthetic as syn
from cadx.data.datasets import load_dataset
from cadx.data.synthetic_phantom import (
    CLASSES,
    ORGANS,
    PAPER_COUNTS,
    PHASES,
    body_grid,
    class_quota,
    render_anatomy,
    render_case,
    sample_lesion,
)
from cadx.errors import CadxConfigError, CadxDataError

N, SEED, SHAPE = 10, 3, (16, 48, 48)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "cohort"
    syn.generate_cohort(root, n_patients=N, seed=SEED, shape=SHAPE)
    return root


@pytest.fixture(scope="module")
def cohort(cohort_dir: Path):
    return syn.load_cohort(cohort_dir)


def _dicom_hu(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Independent read-back with pydicom: (Z, Y, X) HU sorted by ImagePositionPatient z, and the datasets."""
    dss = sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in dss])
    return vol, dss


def test_class_quota_follows_paper_imbalance() -> None:
    assert class_quota(229) == PAPER_COUNTS
    q = class_quota(100)
    assert sum(q.values()) == 100
    assert q == {"ACA": 24, "NAA": 15, "GN": 25, "AM": 15, "PCC": 21}
    assert all(class_quota(n)[c] >= 1 for n in (5, 7, 10) for c in CLASSES)


def test_cohort_counts_labels_and_attributes(cohort) -> None:
    assert list(cohort.classes) == list(CLASSES)
    assert cohort.class_counts() == class_quota(N)
    assert len(cohort.patients) == N == len(cohort)  # one study per patient
    for s in cohort:
        assert set(s.attributes) == set(syn.ATTRIBUTES)
        assert s.metadata["phase"] in PHASES
        assert 0.0 <= s.attributes["fat"] <= 1 and 0.0 <= s.attributes["heterogeneity"] <= 1
        assert (s.attributes["fat"] > 0) == (s.label == "AM")
        assert s.attributes["size_mm"] > 5
        if s.metadata["phase"] == "unenhanced":
            assert s.attributes["enhancement_hu"] == 0.0


def test_render_is_deterministic_per_seed() -> None:
    a = render_case("PCC", SHAPE, np.random.default_rng([0, 1]))
    b = render_case("PCC", SHAPE, np.random.default_rng([0, 1]))
    c = render_case("PCC", SHAPE, np.random.default_rng([1, 1]))
    assert a["volume"].tobytes() == b["volume"].tobytes()
    assert np.array_equal(a["mask"], b["mask"]) and a["attributes"] == b["attributes"]
    assert not np.array_equal(a["volume"], c["volume"])


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    r1, r2, r3 = (syn.generate_cohort(tmp_path / n, n_patients=3, seed=s, shape=SHAPE).parent
                  for n, s in (("a", 5), ("b", 5), ("c", 6)))
    files = sorted(p.relative_to(r1) for p in r1.rglob("*") if p.is_file())
    assert len(files) == 3 * SHAPE[0] + 3 + 2  # slices, masks, manifest, synthetic.json
    for f in files:
        assert (r1 / f).read_bytes() == (r2 / f).read_bytes(), f
    assert (r1 / "images/SYN0001/slice_0000.dcm").read_bytes() != (r3 / "images/SYN0001/slice_0000.dcm").read_bytes()
    labels = [syn.load_cohort(r).y().tolist() for r in (r1, r3)]
    hu = [_dicom_hu(r / "images/SYN0002")[0] for r in (r1, r3)]
    assert labels[0] != labels[1] or not np.array_equal(*hu)


def test_labels_differ_between_seeds(tmp_path: Path, cohort) -> None:
    """generate_cohort deals every seed the same class counts (the paper's proportions), in a seed-dependent
    patient order that is not sorted by class."""
    other = syn.load_cohort(syn.generate_cohort(tmp_path / "other", n_patients=N, seed=SEED + 1, shape=SHAPE).parent)
    a, b = [s.label for s in cohort.studies], [s.label for s in other.studies]
    assert Counter(a) == Counter(b) == {c: k for c, k in class_quota(N).items() if k}
    assert a != b
    assert a != sorted(a, key=CLASSES.index) and b != sorted(b, key=CLASSES.index)
    assert [s.patient_id for s in other.studies] == [s.patient_id for s in cohort.studies]  # same ids, new labels


def test_hu_plausible() -> None:
    shape, sp = (12, 64, 64), (3.0, 1.75, 1.75)
    vol, lay = render_anatomy(shape, sp, 0, 1, np.random.default_rng(7))  # noise-free, unenhanced
    _, y, x = body_grid(shape, sp)  # open grid: rim broadcasts to (1, Y, X)
    assert np.all(vol[:, 0, 0] == -1000.0)  # air outside the body
    rim = ((x / lay["ax"]) ** 2 + (y / lay["ay"]) ** 2 <= 1) & ((x / (lay["ax"] - 3)) ** 2 + (y / (lay["ay"] - 3))
                                                                ** 2 > 1)
    assert abs(np.median(vol[np.broadcast_to(rim, shape)]) - ORGANS["fat"][0]) < 25  # subcutaneous fat
    inside = vol > -500
    assert np.mean((vol[inside] >= 20) & (vol[inside] <= 60)) > 0.15  # unenhanced soft tissue (liver, muscle)
    case = render_case("NAA", shape, np.random.default_rng(11))
    v = case["volume"]
    assert abs(np.median(v[:, :3, :3]) + 1000) < 40
    body = v > -500
    assert np.mean((v[body] > -130) & (v[body] < -70)) > 0.15  # fat
    assert np.mean(v[body] > 0) > 0.3  # soft tissue and organs (HU depends on the contrast phase)
    assert v.max() > 300  # vertebra


def test_lesion_classes_overlap_but_differ() -> None:
    rng = np.random.default_rng(0)
    les = {c: [sample_lesion(c, rng) for _ in range(300)] for c in CLASSES}
    mean = {c: {k: np.mean([getattr(x, k) for x in v]) for k in ("size_mm", "unenhanced_hu", "fat")}
            for c, v in les.items()}
    assert mean["ACA"]["size_mm"] > mean["GN"]["size_mm"] > mean["NAA"]["size_mm"]
    assert mean["NAA"]["unenhanced_hu"] < 15 < mean["GN"]["unenhanced_hu"] < mean["PCC"]["unenhanced_hu"]
    assert mean["AM"]["fat"] > 0.2 and all(mean[c]["fat"] == 0 for c in CLASSES if c != "AM")
    sizes = {c: np.array([x.size_mm for x in v]) for c, v in les.items()}
    assert np.mean(sizes["NAA"] > np.median(sizes["ACA"])) > 0.02  # overlapping, not separable by size


def test_masks_nonempty_inside_box_and_geometry(cohort) -> None:
    for s in cohort:
        img, m = s.image().load(), s.mask().load()
        assert img.array.shape == m.array.shape == (1, *SHAPE)
        np.testing.assert_allclose(m.spacing, img.spacing, atol=1e-4)
        np.testing.assert_allclose(m.origin, img.origin, atol=1e-3)
        np.testing.assert_allclose(img.spacing, s.metadata["spacing"], atol=1e-4)
        mask = m.array[0] > 0
        z0, y0, x0, z1, y1, x1 = s.boxes[0]
        assert mask.sum() > 0 and 0 <= z0 < z1 <= SHAPE[0] and 0 <= y0 < y1 <= SHAPE[1] and 0 <= x0 < x1 <= SHAPE[2]
        assert mask[z0:z1, y0:y1, x0:x1].sum() == mask.sum()
        assert all(mask[z].any() for z in range(z0, z1))  # z is tight: every box slice shows lesion


def test_dicom_read_back_matches_rendered_volume(cohort_dir: Path, cohort) -> None:
    s = cohort[1]
    i = int(s.patient_id[3:]) - 1
    case = render_case(s.label, SHAPE, np.random.default_rng([SEED, i]))
    hu, dss = _dicom_hu(cohort_dir / "images" / s.patient_id)
    np.testing.assert_array_equal(hu, np.rint(case["volume"]))
    sz, sy, sx = case["spacing"]
    assert [float(v) for v in dss[0].PixelSpacing] == pytest.approx([sy, sx])
    zs = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    np.testing.assert_allclose(np.diff(zs), sz, atol=1e-4)
    assert float(dss[0].ImagePositionPatient[0]) == pytest.approx(case["origin"][2])
    assert {d.PatientID for d in dss} == {s.patient_id} and len({d.SeriesInstanceUID for d in dss}) == 1
    np.testing.assert_allclose(s.image().load().array[0], hu, atol=0.5)  # the adapter's loader agrees
    np.testing.assert_array_equal(s.mask().load().array[0] > 0, case["mask"])
    assert s.boxes[0] == syn.mask_box(case["mask"], 3)


def test_manifest_round_trip(cohort_dir: Path, cohort) -> None:
    with open(cohort_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N
    assert list(rows[0])[:7] == ["study_id", "patient_id", "path", "label", "mask", "box", "split"]
    for r, s in zip(rows, cohort, strict=True):
        assert (r["study_id"], r["patient_id"], r["label"]) == (s.study_id, s.patient_id, s.label)
        assert tuple(int(v) for v in r["box"].split()) == s.boxes[0]
        assert (cohort_dir / r["path"]).is_dir() and (cohort_dir / r["mask"]).is_file()
        for a in syn.ATTRIBUTES:
            assert float(r[a]) == pytest.approx(s.attributes[a])
    back = load_dataset("manifest", cohort_dir / "manifest.csv")
    assert back.study_ids == cohort.study_ids and [s.label for s in back] == [s.label for s in cohort]
    assert [s.boxes[0] for s in back] == [s.boxes[0] for s in cohort]
    np.testing.assert_allclose(back[0].image().load().array, cohort[0].image().load().array)


def test_idempotent_regenerate_and_refuse(tmp_path: Path, cohort_dir: Path) -> None:
    meta = cohort_dir / "synthetic.json"
    before = meta.stat().st_mtime_ns
    assert syn.generate_cohort(cohort_dir, n_patients=N, seed=SEED, shape=SHAPE) == cohort_dir / "manifest.csv"
    assert meta.stat().st_mtime_ns == before
    root = tmp_path / "c"
    syn.generate_cohort(root, n_patients=2, seed=0, shape=SHAPE)
    syn.generate_cohort(root, n_patients=3, seed=0, shape=SHAPE)  # other parameters: replaced
    assert len(syn.load_cohort(root)) == 3 and len(list((root / "images").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary folders left
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(CadxDataError, match="not a synthetic cohort"):
        syn.generate_cohort(tmp_path / "foreign", n_patients=2)
    with pytest.raises(CadxConfigError):
        syn.generate_cohort(tmp_path / "bad", shape=(4, 64, 64))


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = syn.render_case

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(syn, "render_case", flaky)
    with pytest.raises(KeyboardInterrupt):
        syn.generate_cohort(tmp_path / "x", n_patients=3, shape=SHAPE)
    assert list(tmp_path.iterdir()) == []


def test_adapter_coerces_string_options(cohort_dir: Path, cohort) -> None:
    c = load_dataset("synthetic", cohort_dir, n_patients=str(N), seed=str(SEED), shape="16x48x48")
    assert c.study_ids == cohort.study_ids and c.info["shape"] == "16x48x48"
    assert c.describe()["patients"] == N
    with pytest.raises(CadxConfigError):
        load_dataset("synthetic", cohort_dir, colour="blue")


def test_default_geometry_suits_the_demo() -> None:
    sides, slices = [], []
    for i, c in enumerate(CLASSES * 2):
        case = render_case(c, syn.DEFAULT_SHAPE, np.random.default_rng([0, i]))
        z0, y0, x0, z1, y1, x1 = syn.mask_box(case["mask"], 3)
        sides.append(max(y1 - y0, x1 - x0))
        slices.append(z1 - z0)
        assert 1.5 <= case["spacing"][1] <= 2.0 and case["spacing"][0] in (2.5, 3.0)
    assert 15 <= np.median(sides) <= 40 and 3 <= np.median(slices) <= 20
