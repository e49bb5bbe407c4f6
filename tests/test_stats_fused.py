"""The numpy path of one row block's linear statistics against plain float64 sums.

The oracle is written here: every statistic is the float64 sum of its definition over
the rows shifted and scaled by the given offset (rows holding NaN/Inf left out).
"""

from __future__ import annotations

import numpy as np
import pytest

from reprstore.stats import linear
from reprstore.stats.linear import NumpyBackend, Offset


def oracle_x(raw: np.ndarray, off: Offset) -> tuple[np.ndarray, int]:
    x = (raw.astype(np.float64) - off.shift) / off.scale
    bad = ~np.isfinite(x).all(axis=1)
    x[bad] = 0.0
    return x, int(bad.sum())


def data(rng: np.random.Generator, dtype: str) -> list[np.ndarray]:
    """Three representations with a large common mean, two correlated, one narrow."""
    n = 203
    z = rng.normal(size=(n, 4))
    x = 3000.0 + z @ rng.normal(size=(4, 9)) + 0.1 * rng.normal(size=(n, 9))
    y = -500.0 + z @ rng.normal(size=(4, 6)) + rng.normal(size=(n, 6))
    w = 1e-3 * rng.normal(size=(n, 3)) + 7.0
    return [a.astype(dtype) for a in (x, y, w)]


@pytest.mark.parametrize("stored", ["float16", "float32", "float64"])
@pytest.mark.parametrize("products", ["float64", "float32"])
@pytest.mark.parametrize(("rows", "threads"), [(None, 1), (17, 1), (64, 2), (512, 3)])
def test_block_statistics_equal_float64_sums(
    rng: np.random.Generator, stored: str, products: str, rows: int | None, threads: int
) -> None:
    raw = data(rng, stored)
    raw[0][5, 2] = np.nan  # a non-finite row: counted, left out of every sum
    raw[1][11, 0] = np.inf
    offsets = [linear.block_offset(b[:40]) for b in raw]
    assert offsets[2].scale != 1.0  # the narrow one is rescaled
    pairs, own = [(0, 1), (2, 0), (1, 2), (1, 1)], [0, 1, 2]
    backend = NumpyBackend(products)
    state = None
    for a, b in ((0, 90), (90, 91), (91, 203)):  # ragged blocks, one of a single row
        block = [r[a:b] for r in raw]
        state = linear.accumulate(state, block, offsets, pairs, own, backend, rows, threads)
    assert state is not None
    reprs, cross = state
    xs = [oracle_x(r, o) for r, o in zip(raw, offsets, strict=True)]
    tol = {"float64": 1e-11, "float32": 2e-5}[products]
    for i in own:
        x, bad = xs[i]
        a = (x * x).sum(axis=1)
        m = reprs[i]
        assert (m.n, m.nonfinite) == (203, bad)
        np.testing.assert_allclose(m.total, x.sum(axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(m.gram, x.T @ x, rtol=tol, atol=tol * np.abs(x.T @ x).max())
        assert m.sqnorm == pytest.approx(a.sum(), rel=1e-12)
        assert m.sqnorm2 == pytest.approx(a @ a, rel=1e-12)
        want = a @ x
        np.testing.assert_allclose(m.sqnorm_x, want, rtol=tol, atol=tol * np.abs(want).max())
    assert sorted(cross) == [(0, 1), (1, 2), (2, 0)]
    for (i, j), m in cross.items():
        x, y = xs[i][0], xs[j][0]
        a, b = (x * x).sum(axis=1), (y * y).sum(axis=1)
        want = x.T @ y
        np.testing.assert_allclose(m.cross, want, rtol=tol, atol=tol * np.abs(want).max())
        for got, ref in ((m.a_y, a @ y), (m.b_x, b @ x)):
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
        assert m.ab == pytest.approx(a @ b, rel=1e-12)


def test_empty_block_and_pair_only_pass(rng: np.random.Generator) -> None:
    """No rows change nothing; a pass of cross statistics only makes no own ones."""
    x, y = data(rng, "float32")[:2]
    offsets = [linear.block_offset(x), linear.block_offset(y)]
    state = linear.accumulate(None, [x[:0], y[:0]], offsets, [(0, 1)], [])
    assert state[0] == {} and float(np.abs(state[1][(0, 1)].cross).max()) == 0.0
    linear.accumulate(state, [x, y], offsets, [(0, 1)], [], rows=50, threads=2)
    xo, yo = oracle_x(x, offsets[0])[0], oracle_x(y, offsets[1])[0]
    np.testing.assert_allclose(state[1][(0, 1)].cross, xo.T @ yo, rtol=1e-11, atol=1e-9)
    b = (yo * yo).sum(axis=1)
    np.testing.assert_allclose(state[1][(0, 1)].b_x, b @ xo, rtol=1e-11, atol=1e-9)
