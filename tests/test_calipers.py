"""Thesis A.5: the caliper detector (synthetic crosses, 3 hand-annotated BUSI images), caliper → mask geometry,
the ultrasound preprocessing, the manifest ``calipers`` column, the study's config, statistics and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cadx.classical.calipers import (
    MatchCounts,
    candidates,
    cross_score,
    cv_threshold,
    detect_calipers,
    match_points,
    to_grey,
    usable,
)
from cadx.data.calipers import (
    angular_order,
    ellipse_minor_semi_axis,
    format_calipers,
    parse_calipers,
    points_to_mask,
    simulated_calipers,
    spline_contour,
    two_point_mask,
)
from cadx.data.datasets.manifest import load_manifest
from cadx.errors import CadxConfigError, CadxDataError
from cadx.pipeline.ultrasound import (
    crop_pad_square,
    fit_zscore,
    largest_component_box,
    percentile_stretch,
    ultrasound_roi,
)
from cadx.studies.calipers import load_calipers_config, read_annotations, train_unet
from cadx.studies.calipers.study import group_folds
from cadx.studies.calipers.tables import _paired, group_bootstrap, holm
from conftest import shared_path

ANNOTATIONS = Path(__file__).parent / "data" / "busi_calipers.csv"


def _cross(img: np.ndarray, x: int, y: int, arm: int = 7, value: float = 0.9) -> None:
    """A 2-px-thick '+' whose centre pixel is (x, y) (lines on rows y, y+1 and columns x, x+1)."""
    img[y - arm:y + arm + 2, x:x + 2] = value
    img[y:y + 2, x - arm:x + arm + 2] = value


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = np.clip(0.35 + 0.08 * rng.standard_normal((160, 200)), 0, 1)
    pts = np.array([[40, 40], [150, 50], [60, 120], [170, 130]])
    for x, y in pts:
        _cross(img, int(x), int(y))
    img[95:97, 80:120] = 0.9  # a line (2 arms only)
    img[20:22, 95:111] = 0.9  # a "T": bar + stem, no upper arm
    img[20:36, 102:104] = 0.9
    img[130:146, 100:102] = 0.9  # an "L"
    img[144:146, 100:114] = 0.9
    return img, pts.astype(float)


# --------------------------------------------------------------------------------------------- detector


def test_detector_finds_drawn_crosses_and_rejects_line_t_and_l() -> None:
    img, truth = _synthetic()
    found = detect_calipers(img, threshold=0.2)
    m = match_points(found, truth, tol=1.5)
    assert (m.tp, m.fp, m.fn) == (4, 0, 0)
    assert m.precision == 1.0 and m.recall == 1.0
    s = cross_score(img)
    # a cross scores about its contrast (0.9 − background 0.35); the T, the L and the line's middle stay low
    assert s[40, 40] == pytest.approx(0.55, abs=0.05)
    assert max(s[20, 102], s[145, 101], s[96, 100]) < 0.1


def test_to_grey_channel_layouts() -> None:
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_grey(rgb)[0, 0] == pytest.approx(1 / 3)
    assert to_grey(np.moveaxis(rgb, -1, 0)).shape == (5, 6)
    assert to_grey(np.full((4, 4), 510.0)).max() == 1.0


def test_match_points_is_one_to_one_within_tolerance() -> None:
    truth = np.array([[10.0, 10.0], [30.0, 10.0]])
    pred = np.array([[11.0, 10.0], [12.0, 10.0], [30.0, 16.0]])  # two near the first, one 6 px from the second
    m = match_points(pred, truth, tol=5)
    assert (m.tp, m.fp, m.fn) == (1, 2, 1)
    assert m.precision == pytest.approx(1 / 3) and m.recall == 0.5 and m.f1 == pytest.approx(0.4)
    assert match_points(pred, truth, tol=6) == MatchCounts(2, 1, 0)
    assert match_points(np.zeros((0, 2)), np.zeros((0, 2)), 5) == MatchCounts(0, 0, 0)
    assert MatchCounts(0, 0, 0).precision == 1.0 and MatchCounts(0, 0, 0).recall == 1.0


def test_cv_threshold_chooses_on_other_folds() -> None:
    # image 0 and 1: one true caliper (score 0.5) and one false candidate (score 0.3); image 2: false at 0.45
    pts = np.array([[0.0, 0.0], [50.0, 50.0]])
    cands = [(pts, np.array([0.5, 0.3])), (pts, np.array([0.5, 0.3])), (pts[1:], np.array([0.45]))]
    truths = [pts[:1], pts[:1], np.zeros((0, 2))]
    r = cv_threshold(cands, truths, folds=[0, 1, 2], tol=2, grid=[0.2, 0.4, 0.48])
    # fold 0 (train = images 1, 2): 0.48 keeps only the true point (F1 1) → image 0 gets its true point only;
    # fold 2 (train = images 0, 1): 0.4 and 0.48 both give F1 1, ties go to the higher → 0.48 → image 2 empty
    assert r.thresholds == {0: 0.48, 1: 0.48, 2: 0.48}
    assert r.counts == MatchCounts(2, 0, 0)
    assert [len(p) for p in r.predictions] == [1, 1, 0]


def test_usable_counts() -> None:
    assert [usable(np.zeros((n, 2))) for n in range(6)] == [False, False, True, False, True, False]


def _annotated(file: str) -> np.ndarray:
    df = pd.read_csv(ANNOTATIONS)
    d = df[df.file == file].dropna(subset=["x"])
    return d[["x", "y"]].to_numpy(float)


@pytest.mark.parametrize(("file", "expected"), [
    ("benign/benign (22).png", (4, 0, 0)),      # 4 calipers, dotted lines, "1"/"2" labels beside them
    ("malignant/malignant (10).png", (4, 0, 0)),  # 4 calipers, "RT5" text
    ("normal/normal (31).png", (0, 0, 0)),        # no calipers, "RIGHT BREAST" text
])
def test_detector_on_hand_annotated_busi_images(file: str, expected: tuple[int, int, int]) -> None:
    path = shared_path("busi", *file.split("/"))
    img = np.asarray(Image.open(path).convert("RGB"))
    found = detect_calipers(img, threshold=0.27)
    m = match_points(found, _annotated(file), tol=5)
    assert (m.tp, m.fp, m.fn) == expected


def test_annotation_csv_is_complete_and_consistent() -> None:
    ann = read_annotations(ANNOTATIONS)
    assert len(ann) == 149  # every shared BUSI image was looked at
    n = {f: len(p) for f, p in ann.items()}
    assert sum(n.values()) == 39 and sum(v > 0 for v in n.values()) == 12
    assert sum(v in (2, 4) for v in n.values()) == 11  # benign (14) has 1 caliper (its partner is cropped off)
    assert all(v == 0 for f, v in n.items() if f.startswith("normal/"))
    assert ann["malignant/malignant (10).png"].tolist()[0] == [246.0, 37.0]


def test_read_annotations_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("file,x,y,n_calipers\na.png,3,zz,1\n")
    with pytest.raises(CadxDataError, match="y 'zz' is not a number") as e:
        read_annotations(p)
    assert e.value.field == "y"
    p.write_text("file,x,y,n_calipers\na.png,3,4,2\n")
    with pytest.raises(CadxDataError, match="n_calipers"):
        read_annotations(p)


# --------------------------------------------------------------------------------------------- geometry


def test_circle_from_two_points_has_the_segment_as_diameter() -> None:
    m = two_point_mask((20, 20), (60, 50), (200, 200))  # length 50 → r = 25, centre (40, 35)
    assert m.sum() == pytest.approx(np.pi * 25 ** 2, rel=0.02)
    assert m[35, 40] and m[35, 40 + 24] and not m[35, 40 + 26]
    assert ellipse_minor_semi_axis((20, 20), (60, 50), (200, 200)) == 25.0


def test_ellipse_when_the_circle_leaves_the_image() -> None:
    # horizontal segment 40 px long at y = 5: the circle (r 20) leaves the top; the largest minor semi-axis that
    # fits is the room above/below the centre row: 5 px
    b = ellipse_minor_semi_axis((10, 5), (50, 5), (100, 100))
    assert b == pytest.approx(5.0)
    m = two_point_mask((10, 5), (50, 5), (100, 100))
    assert m.sum() == pytest.approx(np.pi * 20 * 5, rel=0.05)
    assert m[5, 30] and m[1, 30] and m[9, 30] and not m[11, 30] and not m[5, 51]
    # diagonal: half-extent in y = sqrt(a² sin²θ + b² cos²θ) must equal the room (cy = 20)
    p1, p2 = (40.0, 10.0), (80.0, 30.0)
    b = ellipse_minor_semi_axis(p1, p2, (300, 300))
    a, th = np.hypot(40, 20) / 2, np.arctan2(20, 40)
    assert np.sqrt(a ** 2 * np.sin(th) ** 2 + b ** 2 * np.cos(th) ** 2) == pytest.approx(20.0)


def test_spline_passes_through_the_four_points_and_fills() -> None:
    pts = np.array([[30.0, 40.0], [70.0, 35.0], [75.0, 70.0], [25.0, 75.0]])
    cont = spline_contour(pts, 200)
    for p in pts:
        assert np.min(np.linalg.norm(cont - p, axis=1)) < 1e-9
    m = points_to_mask(pts, (100, 100))
    quad = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
    assert quad < m.sum() < 1.6 * quad  # the smooth curve bulges outside the quadrilateral, not wildly
    assert m[55, 50] and not m[5, 5]
    # input order does not matter (angular order)
    assert np.array_equal(points_to_mask(pts[[2, 0, 3, 1]], (100, 100)), m)
    assert angular_order(pts[[2, 0, 3, 1]]).tolist() == angular_order(pts).tolist()


def test_too_few_points_is_an_error() -> None:
    with pytest.raises(CadxDataError, match="2 or more calipers"):
        points_to_mask(np.array([[1.0, 2.0]]), (10, 10))


def test_simulated_calipers_on_an_axis_aligned_ellipse() -> None:
    yy, xx = np.mgrid[:100, :100]
    m = ((xx - 50) / 30.0) ** 2 + ((yy - 40) / 10.0) ** 2 <= 1
    pts = simulated_calipers(m)
    assert sorted(map(tuple, pts[:2].tolist())) == [(20.0, 40.0), (80.0, 40.0)]  # long axis
    assert sorted(map(tuple, pts[2:].tolist())) == [(50.0, 30.0), (50.0, 50.0)]  # short axis


def test_parse_and_format_calipers() -> None:
    p = parse_calipers("10 20; 30.5,40 ;50 60")
    assert p.tolist() == [[10, 20], [30.5, 40], [50, 60]]
    assert parse_calipers(format_calipers(p)).tolist() == p.tolist()
    assert parse_calipers("  ").shape == (0, 2)
    for bad, msg in (("10 20; 30", "expected 'x y'"), ("a b", "not two numbers"), ("-1 3", ">= 0")):
        with pytest.raises(CadxDataError, match=msg) as e:
            parse_calipers(bad, "m.csv", "row 3")
        assert e.value.field == "calipers" and "\n" not in str(e.value) and "row 3" in str(e.value)


def test_manifest_calipers_column(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("study_id,patient_id,path,label,calipers\n"
                                    "s1,p1,a.png,benign,3 4; 10 12\ns2,p2,a.png,benign,\n")
    c = load_manifest(tmp_path / "m.csv")
    assert c.studies[0].metadata["calipers"] == [[3.0, 4.0], [10.0, 12.0]]
    assert "calipers" not in c.studies[1].metadata and not c.studies[0].attributes
    (tmp_path / "m.csv").write_text("study_id,patient_id,path,label,calipers\ns1,p1,a.png,benign,3 4; 10\n")
    with pytest.raises(CadxDataError, match=r"row 2 .*caliper 2 '10'") as e:
        load_manifest(tmp_path / "m.csv")
    assert e.value.field == "calipers" and "m.csv" in str(e.value)


# --------------------------------------------------------------------------------------------- preprocessing


def test_percentile_stretch_matches_numpy() -> None:
    a = np.arange(101, dtype=float)  # percentiles 1 and 99 are 1 and 99
    s = percentile_stretch(a)
    assert s[0] == 0 and s[1] == 0 and s[50] == pytest.approx(49 / 98) and s[99] == 1 and s[100] == 1
    assert percentile_stretch(np.full((4, 4), 7.0)).max() == 0


def test_largest_component_box_drops_the_text_overlay() -> None:
    img = np.zeros((100, 120))
    img[10:80, 20:90] = 0.5  # the B-mode sector
    img[90:95, 100:118] = 1.0  # a small bright text block, not connected
    img[50, 100] = 0.01  # below 2 % of max: background
    assert largest_component_box(img) == (10, 20, 80, 90)
    assert largest_component_box(np.zeros((5, 6))) == (0, 0, 5, 6)


def test_crop_pad_square_and_point_mapping() -> None:
    sq, pad = crop_pad_square(np.ones((10, 20)), (2, 0, 8, 20))  # 6 × 20 → pad 7 rows on top, 7 below
    assert sq.shape == (20, 20) and pad == (7, 0) and sq[:7].sum() == 0 and sq[7:13].all() and sq[13:].sum() == 0
    img = np.zeros((60, 80))
    img[10:50, 5:75] = np.linspace(0.2, 1.0, 70)[None, :]
    mask = np.zeros((60, 80), np.uint8)
    mask[28:33, 38:43] = 1  # centred on (x 40, y 30)
    roi = ultrasound_roi(img, [mask], size=35, points=[[40, 30]])
    assert roi.box == (10, 5, 50, 75) and roi.pad == (15, 0) and roi.scale == pytest.approx(0.5)
    assert roi.points is not None
    x, y = roi.points[0]
    assert (x, y) == pytest.approx(((40 - 5 + 0.5) * 0.5 - 0.5, (30 - 10 + 15 + 0.5) * 0.5 - 0.5))
    ys, xs = np.nonzero(roi.masks[0])
    assert abs(xs.mean() - x) <= 0.5 and abs(ys.mean() - y) <= 0.5
    assert set(np.unique(roi.masks[0])) == {0, 1} and roi.image.shape == (35, 35)
    with pytest.raises(ValueError, match="mask shape"):
        ultrasound_roi(img, [np.zeros((5, 5))])


def test_fit_zscore_uses_all_training_pixels() -> None:
    a, b = np.array([[0.0, 2.0]]), np.array([[4.0, 6.0]])
    assert fit_zscore([a, b]) == pytest.approx((3.0, np.std([0, 2, 4, 6])))
    assert fit_zscore([np.ones((2, 2))]) == (1.0, 1.0)


# --------------------------------------------------------------------------------------------- study


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train: {size: 8}\n")
    with pytest.raises(CadxConfigError, match=r"field train\.size"):
        load_calipers_config(p)
    p.write_text("modes: [approx, nope]\n")
    with pytest.raises(CadxConfigError, match="unknown mode"):
        load_calipers_config(p)
    cfg = load_calipers_config(Path(__file__).parents[1] / "configs/papers/calipers_busi.yaml",
                               {"train.epochs": 2})
    assert cfg.train.epochs == 2 and cfg.train.base_filters == 16 and cfg.modes == ["approx", "expert",
                                                                                    "expert+approx"]


def test_group_folds_keep_groups_together() -> None:
    g = np.array(["a", "a", "b", "c", "c", "d", "e"])
    f = group_folds(g, 3, seed=0)
    assert all(len(set(f[g == x])) == 1 for x in set(g.tolist()))
    assert np.array_equal(f, group_folds(g, 3, seed=0)) and set(f.tolist()) == {0, 1, 2}


def test_holm_and_paired_bootstrap() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])
    v = np.array([0.5, 0.7, 0.9, 0.6])
    r = _paired(v, v, np.array(["a", "b", "c", "d"]), 500, 0)
    assert r["diff_mean"] == 0 and r["p"] == 1.0
    r = _paired(v + 0.1, v, np.array(["a", "b", "c", "d"]), 500, 0)
    assert r["diff_mean"] == pytest.approx(0.1) and r["p"] == 0.0 and r["wins"] == 4
    point, lo, hi = group_bootstrap(v, np.array(["a", "a", "b", "b"]), np.mean, 400, 0)
    assert point == pytest.approx(0.675) and lo == pytest.approx(0.6) and hi == pytest.approx(0.75)


def test_train_unet_same_seed_same_result() -> None:
    rng = np.random.default_rng(0)
    n, s = 10, 16
    img = rng.random((n, s, s)).astype(np.float32)
    expert = np.zeros((n, s, s), np.uint8)
    expert[:, 4:12, 4:12] = 1
    img[expert > 0] += 1.0
    items = {"image": img, "expert": expert, "approx": expert.copy(), "group": np.arange(n).astype(str)}
    cfg = load_calipers_config(Path(__file__).parents[1] / "configs/papers/calipers_busi.yaml",
                               {"train.base_filters": 4, "train.levels": 2, "train.epochs": 2,
                                "train.size": 16})
    tr, va = np.arange(8), np.arange(8, 10)
    outs = []
    for _ in range(2):
        _model, mean, _std, hist = train_unet(items, tr, va, "expert+approx", cfg, seed=3)
        outs.append([h["val_loss"] for h in hist])
    assert outs[0] == outs[1] and len(outs[0]) == 2
    assert mean == pytest.approx(float(img[:8].mean()), rel=1e-5)
    _, _, _, hist1 = train_unet(items, tr, va, "approx", cfg, seed=3)
    assert np.isfinite([h["val_loss"] for h in hist1]).all()


def test_candidates_are_sorted_best_first() -> None:
    img, _ = _synthetic()
    pts, sc = candidates(img, floor=0.05)
    assert np.all(np.diff(sc) <= 0) and len(pts) == len(sc) >= 4
