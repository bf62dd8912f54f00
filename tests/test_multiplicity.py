"""Holm / Bonferroni adjusted p-values and the report p-value format."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.evaluation import exact
from cadx.evaluation.multiplicity import adjust, bonferroni, format_p, holm, n_tests

# R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") / "bonferroni"
R_P = [0.01, 0.02, 0.03, 0.04, 0.05]
R_HOLM = [0.05, 0.08, 0.09, 0.09, 0.09]
R_BONF = [0.05, 0.10, 0.15, 0.20, 0.25]
# unsorted family with a cap at 1, hand-computed by p.adjust's definition (m = 4; sorted .001 .02 .04 .3 ->
# 4*.001, 3*.02, 2*.04, 1*.3): holm = 0.08 0.004 0.30 0.06; bonferroni = 0.16 0.004 1 0.08
U_P = [0.04, 0.001, 0.3, 0.02]
U_HOLM = [0.08, 0.004, 0.30, 0.06]
U_BONF = [0.16, 0.004, 1.0, 0.08]


def test_holm_matches_r_p_adjust() -> None:
    np.testing.assert_allclose(holm(R_P), R_HOLM, atol=1e-12)
    np.testing.assert_allclose(holm(U_P), U_HOLM, atol=1e-12)


def test_bonferroni_matches_r_p_adjust() -> None:
    np.testing.assert_allclose(bonferroni(R_P), R_BONF, atol=1e-12)
    np.testing.assert_allclose(bonferroni(U_P), U_BONF, atol=1e-12)


def test_hand_computed_case_monotone_and_capped() -> None:
    # sorted 0.2, 0.3, 0.6 -> 3*0.2=0.6, 2*0.3=0.6, 1*0.6=0.6 ; with 0.45: 4*.2=.8, 3*.3=.9, 2*.45=.9, .6->.9
    np.testing.assert_allclose(holm([0.6, 0.2, 0.45, 0.3]), [0.9, 0.8, 0.9, 0.9])
    np.testing.assert_allclose(bonferroni([0.6, 0.2, 0.45, 0.3]), [1.0, 0.8, 1.0, 1.0])
    rng = np.random.default_rng(0)
    p = rng.uniform(size=40) ** 3
    h = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(h[order]) >= 0) and h.max() <= 1.0 and np.all(h >= p)
    assert np.all(bonferroni(p) >= h)
    np.testing.assert_allclose(h, exact.holm(p))  # the Fisher module's copy agrees
    np.testing.assert_allclose(bonferroni(p), exact.bonferroni(p))


def test_nan_passes_through_and_is_not_counted() -> None:
    h = holm([0.01, float("nan"), 0.04])
    assert np.isnan(h[1])
    np.testing.assert_allclose(h[[0, 2]], [0.02, 0.04])
    np.testing.assert_allclose(bonferroni([0.01, float("nan"), 0.04])[[0, 2]], [0.02, 0.08])
    assert n_tests([0.01, float("nan"), 0.04]) == 2
    assert holm([]).shape == (0,) and np.isnan(holm([float("nan")])).all()
    a = adjust([0.01, None, 0.04])
    assert a["holm"][0] == pytest.approx(0.02) and np.isnan(a["bonferroni"][1])


def test_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match="outside"):
        format_p(-0.2)


@pytest.mark.parametrize(("p", "text"), [(0.0, "< 0.001"), (0.0004, "< 0.001"), (0.00099, "< 0.001"),
                                          (0.001, "0.001"), (0.0123, "0.012"), (0.05, "0.050"), (1.0, "1.000"),
                                          (float("nan"), "n/a"), (None, "n/a")])
def test_format_p(p: float | None, text: str) -> None:
    assert format_p(p) == text
