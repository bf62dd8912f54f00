"""Fisher's exact r x c test against scipy (2 x 2), an independent brute-force enumeration (small r x c tables)
and R's documented ``fisher.test(Job)`` p-value 0.7827 (MASS/R datasets example, 4 x 4 job satisfaction);
Bonferroni and Holm against hand-computed R ``p.adjust`` values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import fisher_exact

from cadx.evaluation.exact import bonferroni, fisher_exact_rxc, holm

# R: Job <- matrix(c(1,2,1,0, 3,3,6,1, 10,10,14,9, 6,7,12,11), 4, 4) (filled by column); fisher.test(Job)
# prints p-value = 0.7827.
JOB = np.array([[1, 2, 1, 0], [3, 3, 6, 1], [10, 10, 14, 9], [6, 7, 12, 11]]).T


def _brute_force(table: np.ndarray) -> float:
    """Every table with the observed margins, by itertools over the free cells."""
    rows, cols = table.sum(1), table.sum(0)
    r, c = table.shape

    def logp(t: np.ndarray) -> float:
        return (sum(math.lgamma(v + 1) for v in rows) + sum(math.lgamma(v + 1) for v in cols)
                - math.lgamma(table.sum() + 1) - sum(math.lgamma(v + 1) for v in t.ravel()))

    p_obs = math.exp(logp(table))
    total = 0.0
    free = [range(min(rows[i], cols[j]) + 1) for i in range(r - 1) for j in range(c - 1)]
    for cells in itertools.product(*free):
        t = np.zeros((r, c), int)
        t[:-1, :-1] = np.array(cells).reshape(r - 1, c - 1)
        t[:-1, -1] = rows[:-1] - t[:-1, :-1].sum(1)
        t[-1, :] = cols - t[:-1, :].sum(0)
        if (t < 0).any() or t[-1].sum() != rows[-1]:
            continue
        pt = math.exp(logp(t))
        if pt <= p_obs * (1 + 1e-7):
            total += pt
    return total


@pytest.mark.parametrize("table", [[[3, 1], [1, 3]], [[10, 2], [3, 15]], [[0, 5], [6, 1]], [[7, 0], [0, 7]],
                                   [[1, 1], [1, 1]]])
def test_two_by_two_matches_scipy(table: list[list[int]]) -> None:
    r = fisher_exact_rxc(table)
    assert r.method == "exact"
    assert r.pvalue == pytest.approx(fisher_exact(table).pvalue, rel=1e-9)


@pytest.mark.parametrize("table", [[[2, 0, 3], [1, 4, 0]], [[3, 1, 0], [0, 2, 2], [1, 0, 3]],
                                   [[1, 2, 3, 0], [4, 0, 1, 2], [0, 3, 1, 1]]])
def test_rxc_matches_brute_force(table: list[list[int]]) -> None:
    t = np.array(table)
    assert fisher_exact_rxc(t).pvalue == pytest.approx(_brute_force(t), rel=1e-9)
    assert fisher_exact_rxc(t.T).pvalue == pytest.approx(_brute_force(t), rel=1e-9)


def test_monte_carlo_reproduces_r_job_satisfaction() -> None:
    r = fisher_exact_rxc(JOB, method="monte-carlo", n_samples=100_000, seed=0)
    assert r.method == "monte-carlo" and r.n_samples == 100_000
    assert r.pvalue == pytest.approx(0.7827, abs=0.005)  # Monte-Carlo SE ≈ 0.0013
    assert fisher_exact_rxc(JOB, method="monte-carlo", n_samples=100_000, seed=0).pvalue == r.pvalue
    assert fisher_exact_rxc(JOB, method="monte-carlo", n_samples=100_000, seed=1).pvalue != r.pvalue


def test_monte_carlo_agrees_with_exact_on_a_28_patient_table() -> None:
    t = np.array([[5, 1, 0, 1], [1, 4, 1, 1], [0, 2, 4, 1], [1, 0, 2, 4]])
    ex = fisher_exact_rxc(t, method="exact")
    mc = fisher_exact_rxc(t, method="monte-carlo", n_samples=50_000)
    assert ex.method == "exact" and 0 < ex.pvalue < 0.05
    assert mc.pvalue == pytest.approx(ex.pvalue, abs=4 * math.sqrt(ex.pvalue * (1 - ex.pvalue) / 50_000) + 1e-4)


@pytest.mark.slow
def test_exact_reproduces_r_job_satisfaction() -> None:
    """About 70 s on one core: the exact network enumeration of R's 4 x 4 example (n = 96)."""
    assert fisher_exact_rxc(JOB, method="exact", max_nodes=10**9).pvalue == pytest.approx(0.7827, abs=5e-5)


def test_auto_falls_back_to_monte_carlo_and_exact_refuses() -> None:
    r = fisher_exact_rxc(JOB, max_nodes=1000, n_samples=2000)
    assert r.method == "monte-carlo" and r.n_samples == 2000
    with pytest.raises(RuntimeError, match="max_nodes"):
        fisher_exact_rxc(JOB, method="exact", max_nodes=1000)


def test_degenerate_and_bad_tables() -> None:
    r = fisher_exact_rxc([[3, 0, 2], [0, 0, 0], [1, 0, 4]])  # empty row and column dropped → 2 x 2
    assert r.table == ((3, 2), (1, 4))
    assert r.pvalue == pytest.approx(fisher_exact([[3, 2], [1, 4]]).pvalue)
    assert fisher_exact_rxc([[3, 4, 5]]).pvalue == 1.0
    with pytest.raises(ValueError, match="non-negative integers"):
        fisher_exact_rxc([[1, -1], [2, 3]])
    with pytest.raises(ValueError, match="non-negative integers"):
        fisher_exact_rxc(np.array([[1.5, 1], [2, 3]]))


def test_bonferroni_and_holm_hand_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.01]), [0.5, np.nan, 0.02])
    np.testing.assert_allclose(bonferroni([0.5, np.nan]), [0.5, np.nan])
    assert holm([]).size == 0
