"""Pure parts of cadx.serve checked by hand: the wording, windows and PNG overlays, the item-map paste, the LRU,
loopback detection and the database's schema guard."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadx.errors import CadxConfigError
from cadx.report.wording import CvFigures, cv_figures, risk_probability, wording
from cadx.serve.imaging import LRU, Volume, box_png, gradcam_png, mask_png, slice_png, window_bounds
from cadx.serve.served import _paste
from cadx.serve.settings import is_loopback
from cadx.serve.store import MetaRow, Store, _safe_url

CV = CvFigures(("benign", "malignant"), "malignant", 0.71, (0.60, 0.80), 0.77, (0.67, 0.86),
               {"benign": 0.77, "malignant": 0.71}, 120, "youden")


def test_wording_binary_positive_and_negative_calls() -> None:
    assert wording("malignant", {"benign": 0.18, "malignant": 0.82}, CV) == (
        "malignant — model probability 0.82 (CV sensitivity 0.71 [0.60, 0.80] at this run's operating point, "
        "120 studies)")
    assert wording("benign", {"benign": 0.82, "malignant": 0.18}, CV) == (
        "benign — model probability of malignant 0.18 (CV specificity 0.77 [0.67, 0.86] at this run's operating "
        "point, 120 studies)")
    # the operating point may call a study with P = 0.45 positive (Youden threshold below 0.5): the text follows
    # the decision, the number stays the positive class's probability
    assert wording("malignant", {"benign": 0.55, "malignant": 0.45}, CV).startswith(
        "malignant — model probability 0.45 (CV sensitivity")


def test_wording_other_positive_class_multiclass_and_missing_figures() -> None:
    flipped = CvFigures(("cancer", "normal"), "cancer", 0.9, None, 0.5, (0.4, 0.6))
    assert wording("cancer", {"cancer": 0.7, "normal": 0.3}, flipped) == (
        "cancer — model probability 0.70 (CV sensitivity 0.90 (no CI) at this run's operating point)")
    assert wording("normal", {"cancer": 0.3, "normal": 0.7}, flipped) == (
        "normal — model probability of cancer 0.30 (CV specificity 0.50 [0.40, 0.60] at this run's operating point)")
    three = CvFigures(("a", "b", "c"), None, recall={"b": 0.4}, n_studies=30)
    assert wording("b", {"a": 0.2, "b": 0.5, "c": 0.3}, three) == (
        "b — model probability 0.50 (CV sensitivity for b 0.40 (no CI) at this run's operating point, 30 studies)")
    assert wording("c", {"a": 0.2, "b": 0.3, "c": 0.5}, three) == (
        "c — model probability 0.50 (no cross-validation figures in this run)")
    bare = CvFigures(("benign", "malignant"), "malignant")
    assert wording("benign", {"benign": 0.6, "malignant": 0.4}, bare) == (
        "benign — model probability of malignant 0.40 (no cross-validation figures in this run)")
    with pytest.raises(ValueError, match="not one of the run's classes"):
        wording("cyst", {"benign": 0.6, "malignant": 0.4}, CV)
    with pytest.raises(ValueError, match="outside"):
        wording("malignant", {"benign": 0.6, "malignant": 1.4}, CV)


def test_cv_figures_from_metrics_json() -> None:
    metrics = {"pooled": {"n_studies": 120, "sensitivity": 0.723, "specificity": 0.767,
                          "ci": {"sensitivity": [0.595, 0.844], "specificity": [0.667, 0.864]},
                          "per_class": {"ACA": {"sensitivity": 0.767}, "NAA": {"sensitivity": 0.723}}},
               "decision": {"rule": "youden"}}
    cv = cv_figures(metrics, ["ACA", "NAA"])
    assert cv == CvFigures(("ACA", "NAA"), "NAA", 0.723, (0.595, 0.844), 0.767, (0.667, 0.864),
                           {"ACA": 0.767, "NAA": 0.723}, 120, "youden")
    assert cv_figures({}, ["ACA", "NAA"], positive="ACA") == CvFigures(("ACA", "NAA"), "ACA")
    assert risk_probability({"ACA": 0.3, "NAA": 0.7}, ["ACA", "NAA"], "ACA") == 0.7
    assert risk_probability({"ACA": 0.3, "NAA": 0.7}, ["ACA", "NAA"], "NAA", positive="ACA") == 0.3
    assert risk_probability({"a": 0.2, "b": 0.5, "c": 0.3}, ["a", "b", "c"], "c") == 0.3


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_windows_and_slice_png_by_hand() -> None:
    vol = Volume(np.array([[[[-1350.0, -600.0, 150.0, 1000.0]]]], np.float32), True, (-1000.0, 1000.0), {})
    assert window_bounds(vol, "lung") == (-1350.0, 150.0)
    assert window_bounds(vol, "soft_tissue") == (-160.0, 240.0)
    assert window_bounds(vol, "brain") == (0.0, 80.0)
    assert window_bounds(vol, "bone") == (-500.0, 1300.0)
    assert window_bounds(vol, "auto") == (-1000.0, 1000.0)
    with pytest.raises(ValueError, match="unknown window"):
        window_bounds(vol, "liver")
    # lung: (v + 1350) / 1500 → 0, 0.5, 1, 1 → 0, 128, 255, 255
    np.testing.assert_array_equal(_png(slice_png(vol, 0, "lung")), [[0, 128, 255, 255]])
    # bone: (v + 500) / 1800 · 255 + 0.5, floored: 150 → 92.6 → 92; 1000 → 213.0 → 213
    np.testing.assert_array_equal(_png(slice_png(vol, 0, "bone")), [[0, 0, 92, 213]])
    with pytest.raises(IndexError):
        slice_png(vol, 1, "lung")
    assert vol.windows == ["lung", "soft_tissue", "brain", "bone", "auto"] and vol.default_window == "soft_tissue"


def test_overlay_pngs_are_transparent_where_nothing() -> None:
    mask = np.zeros((2, 3, 4), np.uint8)
    mask[1, 1, 2] = 1
    m = _png(mask_png(mask, 1))
    assert m.shape == (3, 4, 4) and m[1, 2].tolist() == [255, 48, 48, 255] and m[..., 3].sum() == 255
    assert _png(mask_png(mask, 0))[..., 3].max() == 0
    heat = np.array([[np.nan, 0.01, 0.5, 1.0]])
    g = _png(gradcam_png(heat, 0))
    assert g[0, :, 3].tolist() == [0, 0, 127, 255]
    b = _png(box_png((6, 6), [{"slice": 2, "x0": 1, "y0": 2, "x1": 4, "y1": 5, "score": 0.9}], 2))
    alpha = b[..., 3] > 0
    want = np.zeros((6, 6), bool)
    want[2:5, 1:4] = True
    want[3, 2] = False                                    # the outline of rows 2..4, columns 1..3
    np.testing.assert_array_equal(alpha, want)
    assert _png(box_png((6, 6), [{"slice": 2, "x0": 1, "y0": 2, "x1": 4, "y1": 5, "score": 0.9}], 1))[..., 3].max() \
        == 0


def test_paste_puts_an_item_map_back_on_its_crop() -> None:
    heat = np.full((2, 4, 4), np.nan, np.float32)
    _paste(heat, np.full((2, 2), 0.5), 1, [-1, 1], [3, 5])     # a crop reaching past the top and right edges
    want = np.full((4, 4), np.nan)
    want[0:3, 1:4] = 0.5
    np.testing.assert_array_equal(heat[1], want)
    assert np.isnan(heat[0]).all()
    _paste(heat, np.full((2, 2), 0.2), 1, [0, 0], [2, 2])       # overlapping items keep the maximum
    assert heat[1, 0, 0] == pytest.approx(0.2) and heat[1, 0, 1] == pytest.approx(0.5)
    flat = np.full((3, 3), np.nan, np.float32)
    _paste(flat, np.array([[0.0, 1.0], [0.0, 1.0]]), -1, [0, 0], [3, 3])   # a 2D image: bilinear up to 3x3
    assert flat[:, 0].max() < flat[:, 2].min() and np.isfinite(flat).all()


def test_lru_evicts_the_least_recently_used() -> None:
    c: LRU[str, int] = LRU(2)
    calls: list[str] = []

    def make(k: str) -> int:
        calls.append(k)
        return len(calls)

    assert c.get("a", lambda: make("a")) == 1
    assert c.get("b", lambda: make("b")) == 2
    assert c.get("a", lambda: make("a")) == 1                    # hit, a is now the most recent
    assert c.get("c", lambda: make("c")) == 3                    # evicts b
    assert c.get("b", lambda: make("b")) == 4
    assert calls == ["a", "b", "c", "b"] and (c.hits, c.misses) == (1, 4)


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("127.0.1.5", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.10", False), ("example.org", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_store_schema_guard_and_password_free_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'db.sqlite3'}"
    store = Store(url)                                            # creates the folder and the tables
    with store.session() as s:
        assert s.get(MetaRow, "schema_version").value == "1"     # type: ignore[union-attr]
        s.get(MetaRow, "schema_version").value = "99"            # type: ignore[union-attr]
    with pytest.raises(CadxConfigError, match="schema version 99 is newer"):
        Store(url)
    assert _safe_url("postgresql+psycopg://cadx:secret@db:5432/x") == "postgresql+psycopg://cadx:***@db:5432/x"
