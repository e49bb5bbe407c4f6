"""Numbers to trust at the edges: tiny and huge scales, very wide RBF kernels, nearly
constant data, and the memory limit of minibatch passes."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest
from test_cka_reference import correlated, ref_cka
from test_measures_reference import ORACLES

from reprstore.engine.arrays import measure_arrays
from reprstore.errors import ComparisonError
from reprstore.workflows.in_memory import cka

SCALES = [1e-30, 1e30, 1e37]
SCALE_MEASURES = "cka,cca,procrustes,linreg,rsa,rsa:rdm=cosine,shape,pca:k=3"


def _float32_at(x: np.ndarray, scale: float) -> np.ndarray:
    return (x * scale).astype(np.float32)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
def test_cka_at_extreme_scales(estimator: str, scale: float) -> None:
    """Values stored as float32 at 1e-30 … 1e37 (fourth powers leave float64's range):
    the same CKA as the unit-scale float64 reference of the same stored values."""
    x, y = correlated(np.random.default_rng(0), n=80, p=6, q=5)
    xs, ys = _float32_at(x, scale), _float32_at(y, 1 / scale if scale > 1 else scale)
    ref_x = xs.astype(np.float64) / scale
    ref_y = ys.astype(np.float64) / (1 / scale if scale > 1 else scale)
    want = ref_cka(ref_x - ref_x.mean(0), ref_y - ref_y.mean(0), estimator, batch_size=20)
    got = cka(da.from_array(xs, chunks=(7, -1)), ys, estimator, batch_size=20).cka
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_measures_at_extreme_scales(scale: float) -> None:
    x, y = correlated(np.random.default_rng(1), n=70, p=5, q=5)
    xs, ys = _float32_at(x, scale), _float32_at(y, scale)
    ref_x, ref_y = xs.astype(np.float64) / scale, ys.astype(np.float64) / scale
    got = measure_arrays([da.from_array(xs, chunks=(9, -1)), ys], [(0, 1)], SCALE_MEASURES)
    row = got.pairs[(0, 1)]
    for name, col, kw in [("cca", "cca", {}), ("procrustes", "procrustes", {}),
                          ("linreg", "linreg", {}), ("rsa", "rsa", {}),
                          ("rsa", "rsa[rdm=cosine]", {"rdm": "cosine"}), ("shape", "shape", {}),
                          ("pca", "cev_b_in_a", {"k": 3})]:  # fmt: skip
        want = ORACLES[name](ref_x, ref_y, **kw)[col.split("[")[0]]
        assert row[col] == pytest.approx(want, rel=1e-8, abs=1e-12), col


def _rbf_reference(x: np.ndarray, y: np.ndarray, sigma: float, batches) -> float:
    """HSIC₁ by the book in np.longdouble with the kernels doubly centred (HSIC₁ is exactly
    invariant to it), for σ² = sigma² × the median squared distance."""
    ld = np.longdouble

    def kernel(z):
        z = np.asarray(z, dtype=ld)
        d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        return d

    dx_all, dy_all = kernel(x), kernel(y)
    s2x = ld(sigma) ** 2 * np.median(dx_all.astype(np.float64))
    s2y = ld(sigma) ** 2 * np.median(dy_all.astype(np.float64))

    def hsic1(k, l):  # noqa: E741
        n = k.shape[0]
        h = np.eye(n, dtype=ld) - ld(1) / n
        k, l = h @ k @ h, h @ l @ h  # noqa: E741
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n, dtype=ld)
        v = (k * l).sum() + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        v -= 2 / ld(n - 2) * (one @ k @ l @ one)
        return v / (n * (n - 3))

    hxy = hxx = hyy = ld(0)
    for rows in batches:
        k = np.exp(-kernel(x[rows]) / (2 * s2x))
        l = np.exp(-kernel(y[rows]) / (2 * s2y))  # noqa: E741
        hxy, hxx, hyy = hxy + hsic1(k, l), hxx + hsic1(k, k), hyy + hsic1(l, l)
    return float(hxy / np.sqrt(hxx * hyy))


@pytest.mark.parametrize("sigma", [100.0, 1000.0, 3000.0])
@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_wide_rbf_kernels_keep_their_digits(estimator: str, sigma: float) -> None:
    """σ = 100–3000 × the median: K is all but 1 everywhere; centred K − 1 keeps ~1e-10."""
    x, y = correlated(np.random.default_rng(2), n=60, p=4, q=3)
    batches = [np.arange(60)] if estimator == "debiased" else np.split(np.arange(60), 2)
    want = _rbf_reference(x, y, sigma, batches)
    got = cka(x, y, estimator, "rbf", sigma=sigma, batch_size=30)
    assert got.cka == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("value", [0.0, 1234.567, 1e30])
@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_all_rows_but_one_identical_is_an_error(estimator: str, value: float) -> None:
    """HSIC₁ of such a representation is exactly 0; its rounding noise (a few 1e-10 of
    the scale, positive or negative) must be reported, not divided by."""
    rng = np.random.default_rng(3)
    x = np.full((64, 5), value)
    x[17] += rng.normal(size=5) * (1 + abs(value))
    y = rng.normal(size=(64, 4))
    with pytest.raises(ComparisonError, match=r"representation A .*too few distinct rows"):
        cka(x, y, estimator, batch_size=64)


def test_minibatch_pass_stays_within_memory() -> None:
    """An 8 MB limit: a pass over 40 MB of float64 data holds a few MB, not hundreds."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20_000, 128)).astype(np.float32)
    y = (x[:, :64] + rng.normal(size=(20_000, 64))).astype(np.float32)
    cka(x[:600], y[:600], "minibatch", batch_size=128, memory="8MB")  # warm-up
    tracemalloc.start()
    try:
        got = cka(x, y, "minibatch", batch_size=256, memory="8MB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.n_batches == 78
    assert peak < 8 * 1024**2, f"{peak / 2**20:.1f} MiB"


def test_memory_too_small_for_one_block_is_refused() -> None:
    x = np.random.default_rng(5).normal(size=(400, 30))
    with pytest.raises(ComparisonError, match="more than the memory limit"):
        cka(da.from_array(x, chunks=(400, -1)), x, "minibatch", batch_size=100, memory="300kB")
