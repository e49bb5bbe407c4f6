"""Streamed statistics: merge in any order, exact terms, batches, laziness and memory."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from test_cka_reference import correlated, ref_cka, ref_linear_kernel

from reprstore.engine import dask_graph
from reprstore.metrics.cka import cka_linear, linear_terms
from reprstore.stats import linear, plan
from reprstore.stats.hsic import HsicTerms, hsic1
from reprstore.stats.minibatch import assign_batches
from reprstore.workflows.in_memory import cka


def random_splits(rng: np.random.Generator, n: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(bounds))


def test_moments_merge_in_any_order(rng: np.random.Generator) -> None:
    x, y = correlated(rng, n=90)
    shifts = [linear.block_shift(x[:10]), linear.block_shift(y[:10])]
    whole = linear.block_moments([x, y], shifts, [(0, 1)], [0, 1])
    for _ in range(5):
        parts = [
            linear.block_moments([x[a:b], y[a:b]], shifts, [(0, 1)], [0, 1])
            for a, b in random_splits(rng, 90, 6)
        ]
        order = rng.permutation(len(parts))
        merged = parts[order[0]]
        for k in order[1:]:
            merged = linear.merge_block_moments(merged, parts[k])
        for got, want in ((merged[0][0], whole[0][0]), (merged[0][1], whole[0][1])):
            assert got.n == want.n == 90
            np.testing.assert_allclose(got.gram, want.gram, rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(got.sqnorm_x, want.sqnorm_x, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(merged[1][(0, 1)].cross, whole[1][(0, 1)].cross, rtol=1e-12)
        assert merged[1][(0, 1)].ab == pytest.approx(whole[1][(0, 1)].ab, rel=1e-12)


@pytest.mark.parametrize(("rows", "threads"), [(1, 1), (7, 3), (33, 1), (90, 2)])
def test_sub_blocks_and_in_place_merges_equal_one_block(
    rng: np.random.Generator, rows: int, threads: int
) -> None:
    """A block taken ``rows`` rows at a time (products shared among ``threads``), and
    states merged in place, change nothing."""
    x, y = correlated(rng, n=90)
    z = rng.normal(size=(90, 5))
    shifts = [linear.block_shift(b[:10]) for b in (x, y, z)]
    pairs, own = [(0, 1), (2, 0), (1, 1)], [0, 1, 2]
    whole = linear.block_moments([x, y, z], shifts, pairs, own)
    kw = {"rows": rows, "threads": threads}
    got = linear.accumulate(None, [x[:50], y[:50], z[:50]], shifts, pairs, own, **kw)
    assert linear.accumulate(got, [x[50:], y[50:], z[50:]], shifts, pairs, own, **kw) is got
    other = linear.accumulate(None, [x[:0], y[:0], z[:0]], shifts, pairs, own)
    assert linear.merge_into(got, other) is got
    assert sorted(got[1]) == [(0, 1), (2, 0)]
    for i in own:
        assert got[0][i].n == 90
        np.testing.assert_allclose(got[0][i].gram, whole[0][i].gram, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(got[0][i].sqnorm_x, whole[0][i].sqnorm_x, rtol=1e-12)
    for key in got[1]:
        np.testing.assert_allclose(got[1][key].cross, whole[1][key].cross, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(got[1][key].a_y, whole[1][key].a_y, rtol=1e-12)
        assert got[1][key].ab == pytest.approx(whole[1][key].ab, rel=1e-12)


def test_nonfinite_rows_counted_and_zeroed() -> None:
    x = np.arange(12.0).reshape(4, 3)
    x[1, 2], x[3, 0] = np.nan, np.inf
    m = linear.moments(x, shift=np.zeros(3))
    assert m.nonfinite == 2 and m.n == 4
    np.testing.assert_allclose(m.total, x[[0, 2]].sum(axis=0))


def test_merge_refuses_different_shifts(rng: np.random.Generator) -> None:
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="different shifts"):
        linear.merge_repr(linear.moments(x[:5]), linear.moments(x[5:]))


@pytest.mark.parametrize("merge", ["new", "in_place"])
def test_merges_refuse_a_different_shift_or_scale(merge: str) -> None:
    """Either part of the offset differing alone is refused, with the whole message."""
    x = np.arange(40.0).reshape(10, 4) ** 1.5
    base = linear.Offset(x[:5].mean(axis=0), 1.0)
    a = linear.moments(x[:5], base)
    message = "^cannot merge statistics accumulated with different shifts$"
    for other in (linear.Offset(x[5:].mean(axis=0), 1.0), linear.Offset(base.shift, 2.0)):
        b = linear.moments(x[5:], other)
        with pytest.raises(ValueError, match=message):
            if merge == "new":
                linear.merge_repr(a, b)
            else:
                linear.merge_into(({0: a}, {}), ({0: b}, {}))


def test_streamed_terms_equal_gram_space_terms(rng: np.random.Generator) -> None:
    """The feature-space identities for tr(K̃L̃), 1ᵀK̃1 and 1ᵀK̃L̃1, against explicit kernels."""
    x, y = correlated(rng, n=50)
    shift_x, shift_y = x[:7].mean(0), y[:7].mean(0)
    mx, my = linear.moments(x, shift_x), linear.moments(y, shift_y)
    pair = linear.block_moments([x, y], [shift_x, shift_y], [(0, 1)], [])[1][(0, 1)]
    got = linear_terms(mx, my, pair)
    k, l = ref_linear_kernel(x - shift_x), ref_linear_kernel(y - shift_y)  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(50)
    want = HsicTerms(50, np.trace(k @ l), one @ k @ one, one @ l @ one, one @ k @ l @ one)
    for field in ("tr_kl", "sum_k", "sum_l", "sum_kl"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-10), field
    assert hsic1(got) == pytest.approx(hsic1(want), rel=1e-10)


def test_assign_batches() -> None:
    """k = max(1, ⌊n/B⌋) batches of ⌊n/k⌋ or ⌈n/k⌉ rows: 103 rows, B = 25 → 26+26+26+25."""
    ids = assign_batches(103, 25)
    assert ids.tolist() == [0] * 26 + [1] * 26 + [2] * 26 + [3] * 25
    assert (assign_batches(104, 25) == np.arange(104) // 26).all()
    assert assign_batches(7, 25).tolist() == [0] * 7  # fewer rows than B: one batch
    a, b = assign_batches(103, 25, shuffle=5), assign_batches(103, 25, shuffle=5)
    assert (a == b).all() and not (a == ids).all()
    assert sorted(np.bincount(a).tolist()) == [25, 26, 26, 26]
    with pytest.raises(ValueError, match="at least 4"):
        assign_batches(10, 3)


# ------------------------------------------------------------------ laziness, memory


class CountingScheduler:
    """A synchronous dask scheduler that counts graph executions (cf. xarray's
    ``raise_if_dask_computes``)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


def test_graph_building_computes_nothing(rng: np.random.Generator) -> None:
    x, y = correlated(rng)
    dx, dy = da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(10, -1))
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        graph, _ = dask_graph.linear_pass([dx, dy], [0, 1], [(0, 1)])
        dask_graph.minibatch_pass([dx, dy], assign_batches(120, 25), [0, 1], [(0, 1)],
                                  kernel="linear", sigma2=[None, None])  # fmt: skip
        assert counter.calls == 0
        reprs, _pairs = graph.compute()
        assert counter.calls == 1 and reprs[0].n == 120


@pytest.mark.parametrize(
    ("estimator", "kernel", "passes"),
    [("debiased", "linear", 1), ("biased", "linear", 1), ("minibatch", "linear", 1),
     ("minibatch", "rbf", 2), ("debiased", "rbf", 1)],
)  # fmt: skip
def test_one_compute_per_pass(
    rng: np.random.Generator, estimator: str, kernel: str, passes: int
) -> None:
    x, y = correlated(rng)
    dx, dy = da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(10, -1))
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        got = cka(dx, dy, estimator, kernel, batch_size=30)
    assert counter.calls == passes
    assert got.cka == pytest.approx(ref_cka(x, y, estimator, kernel, batch_size=30), rel=1e-6)


@pytest.mark.parametrize("chains", [1, 2, 3, 8])
def test_chains_equal_reference_and_read_once(rng: np.random.Generator, chains: int) -> None:
    x, y = correlated(rng, n=130)
    rx, ry = RecordingArray(x), RecordingArray(y)
    arrays = [da.from_array(rx, chunks=(9, -1)), da.from_array(ry, chunks=(9, -1))]
    graph, _ = dask_graph.linear_pass(arrays, [0, 1], [(0, 1)], chains=chains)
    (state,) = dask_graph.compute(graph, scheduler="threads", workers=chains)
    assert sum(rx.reads) == sum(ry.reads) == 130
    got = cka_linear(state[0][0], state[0][1], state[1][(0, 1)])
    assert got.cka == pytest.approx(ref_cka(x, y), rel=1e-9)


def test_pass_memory_does_not_grow_with_blocks() -> None:
    """A pass holds one state per chain and a few blocks, not one state per block."""
    rng = np.random.default_rng(8)
    data = [rng.normal(size=(4096, 256)) for _ in range(4)]
    pairs = [(i, j) for i in range(2) for j in range(2, 4)]
    state = 8 * (4 * 256 * 256 + 4 * 256 * 256)  # own grams and cross matrices: 4 MiB

    def peak(n: int) -> int:
        arrays = [da.from_array(d[:n], chunks=(128, -1)) for d in data]
        graph, _ = dask_graph.linear_pass(arrays, [0, 1, 2, 3], pairs, chains=2)
        tracemalloc.start()
        try:
            dask_graph.compute(graph, scheduler="threads", workers=2)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(512)  # warm-up: first-call caches and imports
    small, large = peak(512), peak(4096)  # 4 and 32 blocks
    # one state per block would add 28 states (112 MiB) for the 28 more blocks; a loaded
    # machine lets the threads read a few blocks ahead (1 MiB each): at most one state more
    assert large < small + state, (small, large)
    assert large < 4 * state, (small, large)  # two chains: two states, a few blocks


def test_chains_follow_threads_and_state_size() -> None:
    assert plan.linear_chains(threads=2, blocks=50, state_bytes=15 * 2**20) == 2
    assert plan.linear_chains(threads=2, blocks=1, state_bytes=15 * 2**20) == 1
    assert plan.linear_chains(threads=16, blocks=50, state_bytes=226 * 2**20) == 1
    assert dask_graph.scheduler_threads("sync") == 1
    with dask.config.set(num_workers=3):
        assert dask_graph.scheduler_threads("threads") == 3


class RecordingArray:
    """An array-like that records how many rows every read returns."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.data[key]
        self.reads.append(out.shape[0])
        return out


@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
def test_reads_each_row_once_in_blocks_and_never_builds_n_by_n(estimator: str) -> None:
    """16384 rows: an N × N float64 matrix would take 2 GiB, one representation 2 MiB."""
    rng = np.random.default_rng(3)
    n = 16384
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = (x[:, :8] + rng.normal(size=(n, 8))).astype(np.float32)
    rx, ry = RecordingArray(x), RecordingArray(y)
    dx, dy = da.from_array(rx, chunks=(256, -1)), da.from_array(ry, chunks=(256, -1))
    cka(x[:500], y[:500], estimator, batch_size=64, scheduler="sync")  # warm caches, imports
    tracemalloc.start()
    try:
        got = cka(dx, dy, estimator, batch_size=128, scheduler="sync")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for r in (rx, ry):
        assert max(r.reads) <= 256
        assert sum(r.reads) == n  # every row read exactly once
    whole = n * 16 * 8  # one float64 copy of x
    assert peak < whole, f"peak traced memory {peak / 1024**2:.1f} MiB"
    assert got.n_samples == n


def test_subpackages_import_neither_torch_nor_zarr() -> None:
    code = (
        "import sys, reprstore.stats.linear, reprstore.stats.minibatch, reprstore.metrics.cka;"
        "bad = {'torch', 'zarr', 'dask'} & set(sys.modules); assert not bad, bad;"
        "import reprstore.engine.dask_graph, reprstore.engine.arrays;"
        "bad = {'torch', 'zarr'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
