"""A representation with itself: cca, linreg and procrustes from its spectrum alone.

The grid's diagonal cells (A, A) take closed forms of the side's eigenvalues instead of
the per-pair products (:mod:`reprstore.metrics.cca`, ``linreg``, ``procrustes``); every
value is checked against the in-memory float64 oracles of the published formulas.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from test_measures_reference import centred, ref_cca, ref_linreg, ref_procrustes

from reprstore.engine.arrays import measure_arrays

MEASURES = "cca:ridge=0.1,linreg:ridge=0.1,linreg,procrustes"


def sides() -> list[np.ndarray]:
    """A full-rank side (60 × 8) and a rank-deficient one (60 × 8 of rank 3), not centred."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 8)) * np.linspace(0.5, 3.0, 8) + 4.0
    low = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 8)) - 2.0
    return [x, low]


def ref_ridge_rho_over_rank(x: np.ndarray, ridge: float) -> np.ndarray:
    """Singular values of (Cxx + δI)^-½ Cxx (Cxx + δI)^-½, the top rank(X̄) of them (SPEC:
    only min(rank X̄, rank Ȳ) correlations exist), by fractional matrix powers."""
    xc = centred(x)
    n, p = xc.shape
    cxx = xc.T @ xc / n
    m = scipy.linalg.fractional_matrix_power(cxx + ridge * np.trace(cxx) / p * np.eye(p), -0.5)
    rho = np.linalg.svd(np.real(m @ cxx @ m), compute_uv=False)
    return rho[: np.linalg.matrix_rank(xc)]


@pytest.fixture(scope="module")
def grid() -> dict:
    return measure_arrays(sides(), [(0, 0), (1, 1), (0, 1)], MEASURES, scheduler="sync").pairs


@pytest.mark.parametrize("i", [0, 1])
def test_diagonal_cells_match_the_oracles(grid: dict, i: int) -> None:
    x = sides()[i]
    got = grid[(i, i)]
    rho = ref_ridge_rho_over_rank(x, 0.1)
    assert got["cca"] == pytest.approx(rho.mean(), rel=1e-10)
    assert got["cca_r2"] == pytest.approx((rho**2).mean(), rel=1e-10)
    assert np.allclose(got["cca_rho"], rho, rtol=1e-10)
    assert got["linreg"] == pytest.approx(ref_linreg(x, x, ridge=0.1)["linreg"], rel=1e-10)
    assert got["linreg[default]"] == pytest.approx(ref_linreg(x, x)["linreg"], abs=1e-9)
    assert got["procrustes"] == pytest.approx(ref_procrustes(x, x)["procrustes"], abs=1e-9)


def test_full_rank_diagonal_equals_the_plain_oracle(grid: dict) -> None:
    """On a full-rank side every ridge correlation exists: the oracle's own mean."""
    x = sides()[0]
    assert grid[(0, 0)]["cca"] == pytest.approx(ref_cca(x, x, ridge=0.1)["cca"], rel=1e-10)


def test_off_diagonal_cells_still_use_the_pair(grid: dict) -> None:
    x, low = sides()
    got = grid[(0, 1)]
    assert got["linreg"] == pytest.approx(ref_linreg(x, low, ridge=0.1)["linreg"], rel=1e-9)
    assert got["procrustes"] == pytest.approx(ref_procrustes(x, low)["procrustes"], abs=1e-6)
