"""Minibatch grids (every representation's batch kernels formed once, all pairs' terms at
once) against a float64 oracle of the same batches, written out here: to 1e-9."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import reprstore
from reprstore.stats import batch_kernels

TOL = 1e-9


def oracle_grid(
    xs: list[np.ndarray],
    pairs: list[tuple[int, int]],
    batch_size: int,
    shuffle: int | None = None,
    kernel: str = "linear",
    sigma: float = 0.5,
) -> list[float]:
    """SPEC's minibatch CKA in plain float64: k = max(1, ⌊n/B⌋) batches of ⌊n/k⌋ or ⌈n/k⌉
    rows (larger first), consecutive or in ``default_rng(shuffle).permutation`` order; the
    unbiased HSIC (Song et al. 2012) of each batch, averaged; σ² from all rows."""
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    n = xs[0].shape[0]
    order = np.arange(n) if shuffle is None else np.random.default_rng(shuffle).permutation(n)
    k = max(1, n // batch_size)
    sizes = [n // k + (1 if b < n % k else 0) for b in range(k)]
    batches = np.split(order, np.cumsum(sizes)[:-1])

    def sq_dist(x: np.ndarray) -> np.ndarray:
        return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)

    s2 = [sigma**2 * float(np.median(sq_dist(x))) for x in xs] if kernel == "rbf" else []

    def gram(i: int, rows: np.ndarray) -> np.ndarray:
        x = xs[i][rows]
        return x @ x.T if kernel == "linear" else np.exp(-sq_dist(x) / (2.0 * s2[i]))

    def hsic1(a: np.ndarray, b: np.ndarray) -> float:
        m = a.shape[0]
        a, b = a - np.diag(np.diag(a)), b - np.diag(np.diag(b))
        one = np.ones(m)
        return float(
            np.trace(a @ b)
            + (one @ a @ one) * (one @ b @ one) / ((m - 1) * (m - 2))
            - 2.0 * (one @ a @ b @ one) / (m - 2)
        ) / (m * (m - 3))

    h: dict[tuple[int, int], float] = {}
    for rows in batches:
        g = {i: gram(i, rows) for i in {i for p in pairs for i in p}}
        for i, j in {*pairs, *((i, i) for p in pairs for i in p)}:
            h[(i, j)] = h.get((i, j), 0.0) + hsic1(g[i], g[j])
    return [h[(i, j)] / np.sqrt(h[(i, i)] * h[(j, j)]) for i, j in pairs]


def layers(rng: np.random.Generator, n: int, count: int = 4, dtype=np.float16) -> list[np.ndarray]:
    """``count`` related representations of different widths, stored as ``dtype``."""
    base = rng.normal(size=(n, 6))
    out = []
    for k in range(count):
        w = rng.normal(size=(6, 5 + 3 * k))
        out.append((np.tanh(base @ w) + 0.4 * rng.normal(size=(n, 5 + 3 * k)) + 3.0).astype(dtype))
        base = base + 0.3 * rng.normal(size=base.shape)
    return out


GRID = [(i, j) for i in (0, 1) for j in (2, 3)]


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("shuffle", [None, 5])
def test_grid_matches_oracle_with_ragged_batches(
    rng: np.random.Generator, kernel: str, shuffle: int | None
) -> None:
    """437 rows in batches of 40: 10 batches of 44 or 43 rows, row blocks of 64 that cut
    through batches (pieces carried between blocks and between chains)."""
    xs = layers(rng, 437)
    arrays = [da.from_array(x, chunks=(64, -1)) for x in xs]
    got = reprstore.engine.arrays.compare_arrays(
        arrays, GRID, estimator="minibatch", kernel=kernel, batch_size=40, shuffle=shuffle
    )
    want = oracle_grid(xs, GRID, 40, shuffle, kernel)
    assert [r.n_batches for r in got] == [10] * len(GRID)
    np.testing.assert_allclose([r.cka for r in got], want, rtol=TOL, atol=0)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_grid_with_mask_matches_oracle_of_kept_rows(rng: np.random.Generator, kernel: str) -> None:
    xs = layers(rng, 500)
    mask = rng.random(500) < 0.7
    arrays = [da.from_array(x, chunks=(96, -1)) for x in xs]
    got = reprstore.engine.arrays.compare_arrays(
        arrays, GRID, mask=mask, estimator="minibatch", kernel=kernel, batch_size=30, shuffle=2
    )
    want = oracle_grid([x[mask] for x in xs], GRID, 30, 2, kernel)
    assert got[0].n_samples == int(mask.sum())
    np.testing.assert_allclose([r.cka for r in got], want, rtol=TOL, atol=0)


def test_huge_and_tiny_magnitudes_take_the_careful_route(rng: np.random.Generator) -> None:
    """Rows near 1e72 and 1e-72 (kernels beyond the fast path's range): those batches
    are scaled first, and CKA (scale invariant) is the oracle's of the unscaled rows."""
    xs = layers(rng, 300, count=2, dtype=np.float64)
    scaled = [xs[0] * 1e72, xs[1] * 1e-72]
    got = reprstore.engine.arrays.compare_arrays(
        scaled, [(0, 1)], estimator="minibatch", batch_size=50
    )
    assert got[0].cka == pytest.approx(oracle_grid(xs, [(0, 1)], 50)[0], rel=TOL, abs=0)


def test_nonfinite_rows_are_counted_by_the_bit_check(rng: np.random.Generator) -> None:
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.normal(size=(50, 7)).astype(dtype)
        assert batch_kernels.nonfinite_rows(x) == 0
        x[[3, 9], 2], x[20, 0], x[31, 6] = np.nan, np.inf, -np.inf
        x[40, 1] = np.finfo(dtype).max  # finite: not counted
        assert batch_kernels.nonfinite_rows(x) == 4
        used = np.ones(50, dtype=bool)
        used[[3, 20]] = False
        assert batch_kernels.nonfinite_rows(x, used) == 2


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 40, 41])
def test_symmetric_median_is_the_median_of_all_entries(rng: np.random.Generator, n: int) -> None:
    """The RBF bandwidth's median from half of a symmetric matrix: numpy's median of all
    n² entries (ties and zeros above the diagonal included)."""
    from reprstore.stats.kernels import symmetric_median

    upper = np.triu(rng.integers(0, 5, size=(n, n)).astype(float) * rng.random(), 1)
    d = upper + upper.T
    assert symmetric_median(d) == float(np.median(d))


@pytest.mark.parametrize("n", [997, 1000, 1250])
def test_consecutive_batches_hold_no_array_of_n_rows(n: int) -> None:
    """The consecutive layout's ids equal the SPEC's near-equal batches (larger first), and
    the pass's graph carries no array with a row per stored row: memory flat in n."""
    from reprstore.engine import dask_graph
    from reprstore.stats.minibatch import ConsecutiveBatches

    b = 64
    k = n // b
    expected = np.repeat(np.arange(k), [n // k + (1 if i < n % k else 0) for i in range(k)])
    layout = ConsecutiveBatches(n, b)
    assert np.array_equal(layout.ids(0, n), expected)
    assert np.array_equal(layout.ids(130, 517), expected[130:517])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, 8)), rng.standard_normal((n, 6))]
    arrays = [da.from_array(x, chunks=(100, -1)) for x in xs]
    graph = dask_graph.minibatch_pass(
        arrays, layout, [0, 1], [(0, 1)], kernel="linear", sigma2=[None, None]
    )
    sizes = [
        (a if a.base is None else a.base).size  # a view keeps its whole base alive
        for task in dict(graph.__dask_graph__()).values()
        for a in _leaves(task)
        if isinstance(a, np.ndarray)
    ]
    assert max(sizes, default=0) < 100  # at most the batch totals (k values)
    got = reprstore.cka(xs[0], xs[1], estimator="minibatch", batch_size=b).cka
    assert got == pytest.approx(oracle_grid(xs, [(0, 1)], b)[0], rel=TOL, abs=TOL)


def _leaves(task: object) -> list[object]:
    """Every argument object inside a dask task (nested tuples, lists, dicts, Task nodes)."""
    out: list[object] = []
    stack = [task]
    while stack:
        t = stack.pop()
        if isinstance(t, (tuple, list)):
            stack.extend(t)
        elif isinstance(t, dict):
            stack.extend(t.values())
        elif hasattr(t, "args") and hasattr(t, "kwargs"):  # dask's Task spec
            stack.extend(t.args)
            stack.extend(t.kwargs.values())
        else:
            out.append(t)
    return out


def test_a_pass_graph_holds_each_array_once_not_a_dask_array_per_block() -> None:
    """Block readers share their whole array (the graph does not grow a dask array per
    block), for the minibatch chains and the exact linear pass alike."""
    from reprstore.engine import dask_graph
    from reprstore.stats.minibatch import ConsecutiveBatches

    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1000, 5)), rng.standard_normal((1000, 4))]
    arrays = [da.from_array(x, chunks=(50, -1)) for x in xs]  # 20 blocks
    graphs = [
        dask_graph.minibatch_pass(
            arrays,
            ConsecutiveBatches(1000, 16),
            [0, 1],
            [(0, 1)],
            kernel="linear",
            sigma2=[None, None],
            chains=2,
        ),
        dask_graph.linear_pass(arrays, [0, 1], [(0, 1)], chains=2)[0],
    ]
    for graph in graphs:
        readers = [
            leaf
            for task in dict(graph.__dask_graph__()).values()
            for leaf in _leaves(task)
            if isinstance(leaf, dask_graph.BlockReader)
        ]
        assert len(readers) >= 20 * 2
        assert len({id(r.array) for r in readers}) == 2


@pytest.mark.parametrize(("n", "chunk", "batch", "chains"),
                         [(10_000, 2048, 250, 2), (1000, 96, 40, 3), (300, 512, 25, 2),
                          (5000, 1000, 1000, 4)])  # fmt: skip
def test_chains_take_equal_batches_each_once(n: int, chunk: int, batch: int, chains: int) -> None:
    """The minibatch pass's chains take equal numbers of consecutive batches (5 blocks on
    2 threads: 2.5 blocks each, not 2 and 3); every batch is in exactly one chain, and the
    one block two chains share is counted once per chain that uses it (it is read once:
    test_compare::test_one_pass_reads_every_chunk_once)."""
    from reprstore.engine import dask_graph
    from reprstore.stats.minibatch import ConsecutiveBatches

    layout = ConsecutiveBatches(n, batch)
    bounds = np.cumsum((0, *[min(chunk, n - s) for s in range(0, n, chunk)]))
    parts = dask_graph._chain_parts(layout, bounds, chains)
    k = len(layout.sizes)
    counts = [(p.hi or k) - p.lo for p, _ in parts]
    assert len(parts) == min(chains, k) and max(counts) - min(counts) <= 1
    ids = np.concatenate([p.ids(0, n) for p, _ in parts]).reshape(len(parts), n)
    assert ((ids >= 0).sum(axis=0) == 1).all()  # every row in exactly one chain
    for p, blocks in parts:
        lo, hi = p.row_range()
        assert blocks == [
            b for b in range(len(bounds) - 1) if bounds[b] < hi and bounds[b + 1] > lo
        ]
    assert dask_graph.chain_tasks(layout, bounds, chains) == sum(len(b) for _, b in parts)


def test_chains_of_any_layout_sum_every_batch_as_the_formula() -> None:
    """Random row counts, batch sizes, uneven row chunks, segments (lo, hi) of the batches
    and 1–6 chains, with the inputs read through dask or sliced from their source: the
    pass's sums are those of the published HSIC₁ over the same batches (plain numpy)."""
    import dask
    from test_cka_reference import ref_batches, ref_hsic1, ref_linear_kernel

    from reprstore.engine import dask_graph
    from reprstore.stats.minibatch import ConsecutiveBatches

    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(8, 240))
        b = int(rng.integers(4, n + 1))
        cuts = rng.choice(np.arange(1, n), size=int(rng.integers(0, min(8, n - 1))), replace=False)
        chunks = tuple(np.diff(np.concatenate([[0], np.sort(cuts), [n]])).tolist())
        x = rng.normal(size=(n, 3))
        y = rng.normal(size=(n, 2)) + x[:, :2]
        layout = ConsecutiveBatches(n, b)
        k = len(layout.sizes)
        lo = int(rng.integers(0, k))
        hi = int(rng.integers(lo + 1, k + 1))
        graph = dask_graph.minibatch_pass(
            [da.from_array(x, chunks=(chunks, -1)), da.from_array(y, chunks=(chunks, -1))],
            layout.segment(lo, hi), [0, 1], [(0, 1)], kernel="linear", sigma2=[None, None],
            chains=int(rng.integers(1, 7)), inputs=[x, y] if rng.random() < 0.5 else None,
        )  # fmt: skip
        (got,) = dask.compute(graph, scheduler="threads")
        batches = ref_batches(n, b, None)[lo:hi]
        hxy = sum(ref_hsic1(ref_linear_kernel(x[r]), ref_linear_kernel(y[r])) for r in batches)
        hxx = sum(ref_hsic1(ref_linear_kernel(x[r]), ref_linear_kernel(x[r])) for r in batches)
        assert got.n_batches == len(batches) and got.n_rows == sum(len(r) for r in batches)
        assert got.pairs[(0, 1)] == pytest.approx(hxy, rel=1e-9, abs=1e-12)
        assert got.own[0] == pytest.approx(hxx, rel=1e-9, abs=1e-12)
