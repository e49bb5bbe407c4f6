"""The statistics battery: every streamed accumulator of :mod:`reprstore.stats` is fed the
same rows cut into several chunkings, its partial states merged in several orders, and
run through the real dask graphs with several thread counts; every result is checked
against a float64 reference written here with plain numpy formulas.

The data have a mean far from zero and features whose scales differ by four orders of
magnitude, so that a merge that drops a term (the cross sums XᵀY, the column sums that
centre them, a batch's HSIC) or counts one twice moves the result far beyond rounding.

Accumulators: linear moments (``ReprMoments``/``PairMoments``: means, centred covariance
X_cᵀX_c and cross-covariance X_cᵀY_c, the HSIC terms of the linear kernels), minibatch
HSIC sums (linear and RBF kernels, consecutive and shuffled batches), counts (class
sums, near-zero entries), attention entropy sums, and the Gram-tile sums of the sample
route (K1, diag K and tr(KL) over tiles of several sizes, summed in several orders).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import dask
import dask.array as da
import numpy as np
import pytest

from reprstore.engine import dask_graph
from reprstore.metrics.cka import linear_terms
from reprstore.stats import attention, counts, gram_tiles, linear, minibatch
from reprstore.stats.hsic import hsic1
from reprstore.stats.minibatch import assign_batches

T = TypeVar("T")

N = 96
#: Row chunkings of the N rows: one chunk, equal chunks, uneven chunks with 1-row chunks,
#: and every row its own chunk.
CHUNKINGS: dict[str, tuple[int, ...]] = {
    "one": (N,),
    "equal": (24, 24, 24, 24),
    "uneven": (1, 37, 1, 1, 20, 36),
    "rows": (1,) * N,
}
ORDERS = ("left", "reversed", "random", "tree")
RTOL = 1e-10


# ------------------------------------------------------------------------------ data


def representations(seed: int = 7) -> list[np.ndarray]:
    """Three representations of N rows sharing a latent signal: large offsets, features
    of scales 1e-2 … 1e2 (X), a negative offset (Y), a narrow one near 7 (W)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, 4))
    x = z @ rng.normal(size=(4, 7)) + 0.3 * rng.normal(size=(N, 7))
    x = 1000.0 + x * np.logspace(-2, 2, 7)
    y = -50.0 + z @ rng.normal(size=(4, 5)) + rng.normal(size=(N, 5))
    w = 7.0 + 1e-3 * (z[:, :3] + rng.normal(size=(N, 3)))
    return [x, y, w]


def bounds(chunks: Sequence[int]) -> list[tuple[int, int]]:
    edges = np.cumsum((0, *chunks)).tolist()
    return list(itertools.pairwise(edges))


def merged(parts: list[T], merge: Callable[[T, T], T], order: str) -> T:
    """``parts`` merged by ``merge`` in ``order``: a left fold, a fold of the reversed
    list, a fold of a random permutation, or a pairwise tree."""
    if order == "left":
        return functools.reduce(merge, parts)
    if order == "reversed":
        return functools.reduce(merge, parts[::-1])
    if order == "random":
        perm = np.random.default_rng(len(parts)).permutation(len(parts))
        return functools.reduce(merge, [parts[k] for k in perm])
    assert order == "tree"
    while len(parts) > 1:
        parts = [
            merge(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def assert_scaled_close(
    got: np.ndarray, want: np.ndarray, sd_a: np.ndarray, sd_b: np.ndarray
) -> None:
    """``got`` equals ``want`` (p × q covariances) to ``RTOL`` of sd_a[i]·sd_b[j] entry by
    entry (the size of a covariance entry's rounding error), and to ``RTOL`` relatively."""
    norm = np.outer(sd_a, sd_b)
    np.testing.assert_allclose(got / norm, want / norm, rtol=RTOL, atol=RTOL)


# ------------------------------------------------------------- references (float64)


def ref_hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al.'s unbiased HSIC of two n × n kernels, straight from its definition."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value / (n * (n - 3)))


def ref_kernel(x: np.ndarray, kernel: str, sigma2: float | None) -> np.ndarray:
    if kernel == "linear":
        xc = x - x.mean(axis=0)
        return xc @ xc.T
    assert sigma2 is not None
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-d / (2.0 * sigma2))


# ------------------------------------------------------------------ linear moments


PAIRS = [(0, 1), (2, 0), (1, 2)]
OWN = [0, 1, 2]


def offsets_of(data: Sequence[np.ndarray]) -> list[linear.Offset]:
    """The offsets a pass would take from its first block (here its first 10 rows)."""
    return [linear.block_offset(d[:10]) for d in data]


def check_linear(
    state: linear.LinearState, data: Sequence[np.ndarray], rows: np.ndarray | None = None
) -> None:
    """The statistics in ``state`` against their definitions on ``data`` (rows ``rows``)."""
    reprs, cross = state
    raw = [d if rows is None else d[rows] for d in data]
    n = raw[0].shape[0]
    cen = [r - r.mean(axis=0) for r in raw]
    sd = [np.sqrt((c * c).sum(axis=0)) for c in cen]
    for i in OWN:
        m = reprs[i]
        assert m.n == n and m.nonfinite == 0
        # the mean and the centred covariance from the sums of shifted, scaled rows
        mean = m.shift + m.scale * m.total / m.n
        np.testing.assert_allclose(mean, raw[i].mean(axis=0), rtol=RTOL)
        cov = m.scale**2 * (m.gram - np.outer(m.total, m.total) / m.n)
        assert_scaled_close(cov, cen[i].T @ cen[i], sd[i], sd[i])
        # the raw sums the HSIC terms use, of the rows as accumulated
        x = (raw[i] - m.shift) / m.scale
        a = (x * x).sum(axis=1)
        np.testing.assert_allclose(m.total, x.sum(axis=0), rtol=RTOL, atol=RTOL * np.abs(x).sum())
        assert m.sqnorm == pytest.approx(a.sum(), rel=RTOL)
        assert m.sqnorm2 == pytest.approx(a @ a, rel=RTOL)
        np.testing.assert_allclose(
            m.sqnorm_x, a @ x, rtol=RTOL, atol=RTOL * np.abs(a @ np.abs(x)).max()
        )
    assert sorted(cross) == sorted(PAIRS)
    for i, j in PAIRS:
        mi, mj, c = reprs[i], reprs[j], cross[(i, j)]
        centred = mi.scale * mj.scale * (c.cross - np.outer(mi.total, mj.total) / n)
        assert_scaled_close(centred, cen[i].T @ cen[j], sd[i], sd[j])
        x, y = (raw[i] - mi.shift) / mi.scale, (raw[j] - mj.shift) / mj.scale
        a, b = (x * x).sum(axis=1), (y * y).sum(axis=1)
        np.testing.assert_allclose(c.a_y, a @ y, rtol=RTOL, atol=RTOL * (a @ np.abs(y)).max())
        np.testing.assert_allclose(c.b_x, b @ x, rtol=RTOL, atol=RTOL * (b @ np.abs(x)).max())
        assert c.ab == pytest.approx(a @ b, rel=RTOL)
        # unbiased HSIC of the linear kernels (shift-invariant; scaled back to raw units)
        got = hsic1(linear_terms(mi, mj, c)) * (mi.scale * mj.scale) ** 2
        want = ref_hsic1(cen[i] @ cen[i].T, cen[j] @ cen[j].T)
        assert got == pytest.approx(want, rel=1e-9)


def chunk_states(data: Sequence[np.ndarray], chunks: Sequence[int], threads: int = 1) -> list:
    offs = offsets_of(data)
    return [
        linear.accumulate(None, [d[a:b] for d in data], offs, PAIRS, OWN, threads=threads)
        for a, b in bounds(chunks)
    ]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("merge", ["new", "in_place"])
def test_linear_moments_any_chunking_and_merge_order(chunking: str, order: str, merge: str) -> None:
    data = representations()
    parts = chunk_states(data, CHUNKINGS[chunking])
    fn = linear.merge_block_moments if merge == "new" else linear.merge_into
    check_linear(merged(parts, fn, order), data)


class OnDevice:
    """A block "on the device" of :class:`PlainBackend`: only its products can read it."""

    def __init__(self, x: np.ndarray) -> None:
        self.data = x.copy()


class PlainBackend:
    """A backend that is not a :class:`~reprstore.stats.linear.NumpyBackend`, so that
    ``accumulate`` takes its generic path (prepare, update, per block), the one a GPU
    backend takes; its prepared blocks are not arrays (as on a device), its products are
    plain numpy."""

    def prepare(self, x: np.ndarray) -> OnDevice:
        return OnDevice(x)

    def cross(self, a: OnDevice, b: OnDevice) -> np.ndarray:
        return np.asarray(a.data.T @ b.data, dtype=np.float64)

    def outer(self, a: OnDevice, b: OnDevice) -> np.ndarray:
        return np.asarray(a.data @ b.data.T, dtype=np.float64)


@pytest.mark.parametrize("chunking", ["equal", "uneven"])
@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("backend", ["numpy", "generic"])
def test_linear_moments_folded_with_threads(chunking: str, threads: int, backend: str) -> None:
    """One state folded block after block in place (how a chain works), the products of
    each block shared among ``threads`` threads, sub-blocks of 5 rows; by the numpy path
    and by the generic path of other backends."""
    data = representations()
    offs = offsets_of(data)
    kind = linear.NUMPY if backend == "numpy" else PlainBackend()
    state = None
    for a, b in bounds(CHUNKINGS[chunking]):
        block = [d[a:b] for d in data]
        state = linear.accumulate(state, block, offs, PAIRS, OWN, kind, rows=5, threads=threads)
    assert state is not None
    check_linear(state, data)


def zeroed_rows(raw: np.ndarray, off: linear.Offset) -> tuple[np.ndarray, int]:
    """Rows shifted and scaled by ``off``, those holding NaN/±Inf set to zero; their count."""
    x = (raw - off.shift) / off.scale
    bad = ~np.isfinite(x).all(axis=1)
    x[bad] = 0.0
    return x, int(bad.sum())


def check_raw_sums(
    state: linear.LinearState,
    data: Sequence[np.ndarray],
    offs: Sequence[linear.Offset],
    own_rows: dict[int, slice],
    pair_rows: dict[tuple[int, int], slice],
) -> None:
    """Every sum of ``state`` against its definition (rows holding NaN/Inf counted in
    ``n`` and ``nonfinite``, left out of the sums) over the rows given per key."""
    reprs, cross = state
    assert sorted(reprs) == sorted(own_rows) and sorted(cross) == sorted(pair_rows)
    for i, rows in own_rows.items():
        x, bad = zeroed_rows(data[i][rows], offs[i])
        a = (x * x).sum(axis=1)
        m = reprs[i]
        assert (m.n, m.nonfinite) == (x.shape[0], bad)
        scale = np.abs(x).sum()
        np.testing.assert_allclose(m.total, x.sum(axis=0), rtol=RTOL, atol=RTOL * scale)
        np.testing.assert_allclose(m.gram, x.T @ x, rtol=RTOL, atol=RTOL * scale**2)
        assert m.sqnorm == pytest.approx(a.sum(), rel=RTOL)
        assert m.sqnorm2 == pytest.approx(a @ a, rel=RTOL)
        np.testing.assert_allclose(m.sqnorm_x, a @ x, rtol=RTOL, atol=RTOL * (a @ np.abs(x)).max())
    for (i, j), rows in pair_rows.items():
        x, y = zeroed_rows(data[i][rows], offs[i])[0], zeroed_rows(data[j][rows], offs[j])[0]
        a, b = (x * x).sum(axis=1), (y * y).sum(axis=1)
        c = cross[(i, j)]
        big = np.abs(x).sum() * np.abs(y).sum()
        np.testing.assert_allclose(c.cross, x.T @ y, rtol=RTOL, atol=RTOL * big)
        np.testing.assert_allclose(c.a_y, a @ y, rtol=RTOL, atol=RTOL * (a @ np.abs(y)).max())
        np.testing.assert_allclose(c.b_x, b @ x, rtol=RTOL, atol=RTOL * (b @ np.abs(x)).max())
        assert c.ab == pytest.approx(a @ b, rel=RTOL)


def with_nonfinite(data: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Copies of ``data`` with NaN/±Inf rows in several chunks of every chunking."""
    out = [d.copy() for d in data]
    out[0][[3, 40, 41, 77], [0, 2, 6, 1]] = [np.nan, np.inf, -np.inf, np.nan]
    out[1][[41, 60, 95], [1, 4, 0]] = np.nan
    out[2][[2, 90], [0, 2]] = [np.inf, np.nan]
    return out


@pytest.mark.parametrize("chunking", ["equal", "uneven"])
@pytest.mark.parametrize("merge", ["new", "in_place", "folded"])
@pytest.mark.parametrize("backend", ["numpy", "generic"])
def test_linear_nonfinite_rows_counted_over_merges(chunking: str, merge: str, backend: str) -> None:
    """Rows holding NaN/Inf in several chunks (sub-blocks of 5 rows, or the default size
    when folded, from an empty block): each counted once in ``nonfinite`` however the
    partial states meet, and zero in every sum."""
    data = with_nonfinite(representations())
    offs = offsets_of(data)
    kind = linear.NUMPY if backend == "numpy" else PlainBackend()
    parts = [
        linear.accumulate(None, [d[a:b] for d in data], offs, PAIRS, OWN, kind, rows=5)
        for a, b in bounds(CHUNKINGS[chunking])
    ]
    if merge == "folded":  # from an empty block
        state = linear.accumulate(None, [d[:0] for d in data], offs, PAIRS, OWN, kind)
        for a, b in bounds(CHUNKINGS[chunking]):
            block = [d[a:b] for d in data]
            state = linear.accumulate(state, block, offs, PAIRS, OWN, kind)  # default rows
    else:
        fn = linear.merge_block_moments if merge == "new" else linear.merge_into
        state = merged(parts, fn, "left")
    assert state is not None
    every = slice(None)
    check_raw_sums(state, data, offs, dict.fromkeys(OWN, every), dict.fromkeys(PAIRS, every))


@pytest.mark.parametrize("merge", ["new", "in_place"])
def test_linear_merge_of_states_holding_different_keys(merge: str) -> None:
    """A state without some representations and pairs (a pass of fewer statistics) merged
    with one holding them all: the missing ones are taken over, the shared ones added."""
    data = representations()
    offs = offsets_of(data)
    first = linear.accumulate(None, [d[:40] for d in data], offs, [(1, 2)], [1, 2])
    second = linear.accumulate(None, [d[40:] for d in data], offs, PAIRS, OWN)
    fn = linear.merge_block_moments if merge == "new" else linear.merge_into
    got = fn(first, second)
    late, every = slice(40, None), slice(None)
    own_rows = {0: late, 1: every, 2: every}
    check_raw_sums(got, data, offs, own_rows, {(0, 1): late, (2, 0): late, (1, 2): every})
    # and the other way round: the state holding everything first
    first = linear.accumulate(None, [d[:40] for d in data], offs, PAIRS, OWN)
    second = linear.accumulate(None, [d[40:] for d in data], offs, [(1, 2)], [1, 2])
    got = fn(first, second)
    early = slice(None, 40)
    own_rows = {0: early, 1: every, 2: every}
    check_raw_sums(got, data, offs, own_rows, {(0, 1): early, (2, 0): early, (1, 2): every})


def test_linear_moments_of_one_block_and_its_default_offset() -> None:
    """:func:`linear.moments` (the numpy backend's own products, not the fused path), a
    pass of one representation alone, and the default offset: the finite rows' column
    mean (zeros for no rows)."""
    data = with_nonfinite(representations())
    x = data[0]
    shift = linear.block_shift(x[:10])
    finite = x[:10][np.isfinite(x[:10]).all(axis=1)]
    assert len(finite) == 9
    np.testing.assert_allclose(shift, finite.mean(axis=0), rtol=1e-15)
    np.testing.assert_array_equal(linear.block_shift(x[:0]), np.zeros(7))
    for off in (linear.Offset(shift), linear.block_offset(x[:10])):
        for kind in (linear.NUMPY, PlainBackend()):
            m = linear.moments(x, off, kind)
            check_raw_sums(({0: m}, {}), [x], [off], {0: slice(None)}, {})
        # one representation alone through accumulate's numpy path, in sub-blocks
        state = linear.accumulate(None, [x], [off], [], [0], rows=7)
        check_raw_sums(state, [x], [off], {0: slice(None)}, {})
    assert linear.NumpyBackend().dtype == np.float64
    assert linear.NumpyBackend("float32").prepare(x).dtype == np.float32


def test_linear_transposed_pair() -> None:
    """The cross statistics of (Y, X) read from those of (X, Y)."""
    data = representations()
    offs = offsets_of(data)
    _, cross = linear.accumulate(None, data, offs, PAIRS, OWN)
    flipped = {(j, i): linear.transposed(c) for (i, j), c in cross.items()}
    check_raw_sums(({}, flipped), data, offs, {}, dict.fromkeys(flipped, slice(None)))


def nearest_power_of_two(value: float) -> float:
    """2**k for the integer k nearest log2(value)."""
    return 2.0 ** round(math.log2(value))


def test_block_offset_against_its_definition() -> None:
    """The offset of a block: its finite rows' column mean, and the power of two nearest
    their root-mean-square deviation from it (nearest the largest |mean| for a constant
    block); zeros and 1 for no finite rows, an empty shift and 1 for no columns."""
    rng = np.random.default_rng(5)
    wide = 50.0 + 3.0 * rng.normal(size=(40, 6))
    wide[4, 2], wide[9, 0] = np.nan, np.inf
    narrow = 7.0 + 1e-3 * rng.normal(size=(30, 3))
    column = 100.0 + 40.0 * rng.normal(size=(25, 1))
    for x in (wide, narrow, column, wide.astype(np.float32)):
        finite = x[np.isfinite(x).all(axis=1)].astype(np.float64)
        mean = finite.mean(axis=0)
        rms = math.sqrt(float(np.mean((finite - mean) ** 2)))
        off = linear.block_offset(x)
        assert off.shift.dtype == np.float64  # the mean of float32 rows taken in float64
        np.testing.assert_allclose(off.shift, mean, rtol=1e-14)
        assert off.scale == nearest_power_of_two(rms) != 1.0
    constant = np.tile([3.0, -12.0, 0.5], (5, 1))
    off = linear.block_offset(constant)
    np.testing.assert_array_equal(off.shift, [3.0, -12.0, 0.5])
    assert off.scale == 16.0
    for nothing in (np.full((3, 4), np.nan), np.zeros((0, 4))):
        off = linear.block_offset(nothing)
        np.testing.assert_array_equal(off.shift, np.zeros(4))
        assert off.scale == 1.0
    off = linear.block_offset(np.zeros((5, 0)))
    assert off.shift.shape == (0,) and off.scale == 1.0
    for value in (12.0, 0.75, 0.3, 1e-30, 3e300):
        assert linear.power_of_two(value) == nearest_power_of_two(value)
    for bad in (0.0, -3.0, np.nan, np.inf, -np.inf):
        assert linear.power_of_two(bad) == 1.0


DASK_CASES = [
    # (chunking, chains, workers, split_every, shifts known)
    ("one", 1, 1, 8, False),
    ("equal", 1, 1, 2, True),
    ("equal", 4, 4, 2, False),
    ("uneven", 2, 4, 8, False),
    ("uneven", 4, 1, 2, True),
    ("rows", 1, 4, 8, False),
    ("rows", 4, 4, 3, False),
]


@pytest.mark.parametrize(("chunking", "chains", "workers", "split_every", "known"), DASK_CASES)
def test_linear_pass_through_dask(
    chunking: str, chains: int, workers: int, split_every: int, known: bool
) -> None:
    """The real pass graph (chains, tree of in-place merges) on the threaded scheduler."""
    data = representations()
    arrays = [da.from_array(d, chunks=(CHUNKINGS[chunking], -1)) for d in data]
    shifts = offsets_of(data) if known else None
    graph, used = dask_graph.linear_pass(
        arrays, OWN, PAIRS, shifts=shifts, chains=chains, split_every=split_every
    )
    with dask.config.set(scheduler="threads", num_workers=workers):
        state, used = dask.compute(graph, used)
    check_linear(state, data)
    if not known:  # the offsets were taken from the first block
        first = CHUNKINGS[chunking][0]
        for off, d in zip(used, data, strict=True):
            np.testing.assert_array_equal(off.shift, linear.block_offset(d[:first]).shift)


@pytest.mark.parametrize("workers", [1, 4])
def test_linear_pass_with_a_row_mask(workers: int) -> None:
    """Selected rows only; blocks holding none are skipped (here two of six)."""
    data = representations()
    mask = np.zeros(N, dtype=bool)
    mask[1:39:2] = True  # rows of blocks 1 … 3 only
    mask[60:] = True  # block 5 and part of block 4
    mask[59] = False
    arrays = [da.from_array(d, chunks=(CHUNKINGS["uneven"], -1)) for d in data]
    graph, _ = dask_graph.linear_pass(arrays, OWN, PAIRS, mask=mask, chains=2, split_every=2)
    (state,) = dask_graph.compute(graph, scheduler="threads", workers=workers)
    check_linear(state, data, rows=mask)


# ---------------------------------------------------------------- minibatch sums


def rbf_sigma2(data: Sequence[np.ndarray]) -> list[float]:
    out = []
    for x in data:
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
        out.append(float(np.median(d[np.triu_indices(N, 1)])))
    return out


def ref_minibatch(
    data: Sequence[np.ndarray], ids: np.ndarray, kernel: str, sigma2: Sequence[float | None]
) -> tuple[int, dict[int, float], dict[tuple[int, int], float], dict, dict]:
    """Σ over batches of HSIC₁ of every representation with itself and of every pair; and
    per representation Σ over batches of tr(K̃K̃)/(B(B−3)) (K̃: the doubly centred kernel,
    zero diagonal) and of the relative spread Σ‖xᵢ − x̄‖² / Σ‖xᵢ‖²."""
    own = dict.fromkeys(OWN, 0.0)
    pairs = dict.fromkeys(PAIRS, 0.0)
    own_scale = dict.fromkeys(OWN, 0.0)
    spread = dict.fromkeys(OWN, 0.0)
    batches = np.unique(ids[ids >= 0])
    for b in batches:
        k = [ref_kernel(d[ids == b], kernel, s) for d, s in zip(data, sigma2, strict=True)]
        for i in OWN:
            own[i] += ref_hsic1(k[i], k[i])
            n = k[i].shape[0]
            h = np.eye(n) - 1.0 / n
            kt = h @ k[i] @ h
            np.fill_diagonal(kt, 0.0)
            own_scale[i] += float((kt * kt).sum()) / (n * (n - 3))
            x = data[i][ids == b]
            xc = x - x.mean(axis=0)
            spread[i] += float((xc * xc).sum() / (x * x).sum())
        for i, j in PAIRS:
            pairs[(i, j)] += ref_hsic1(k[i], k[j])
    return len(batches), own, pairs, own_scale, spread


def check_minibatch(got: minibatch.MinibatchSums, want: tuple, rows: int) -> None:
    n_batches, own, pairs, own_scale, spread = want
    assert (got.n_batches, got.n_rows) == (n_batches, rows)
    assert sorted(got.own) == OWN and sorted(got.pairs) == sorted(PAIRS)
    for i in OWN:
        assert got.own[i] == pytest.approx(own[i], rel=RTOL), i
        assert got.nonfinite.get(i, 0) == 0
        assert got.own_scale[i] == pytest.approx(own_scale[i], rel=RTOL), i
        assert got.spread[i] == pytest.approx(spread[i], rel=RTOL), i
        assert got.scale[i] == n_batches
    for key in PAIRS:
        # a pair's HSIC may be far smaller than the own ones: judge it against them
        size = np.sqrt(own[key[0]] * own[key[1]])
        assert abs(got.pairs[key] - pairs[key]) <= RTOL * size, key


def sigma2_for(kernel: str, data: Sequence[np.ndarray]) -> list:
    return [None] * len(data) if kernel == "linear" else rbf_sigma2(data)


@pytest.fixture(scope="module")
def minibatch_refs() -> dict:
    """The references of the minibatch cases (explicit kernels of every batch: computed
    once for the module)."""
    data = representations()
    out = {}
    for kernel in ("linear", "rbf"):
        s2 = sigma2_for(kernel, data)
        for shuffle in (None, 3):
            ids = assign_batches(N, 10, shuffle=shuffle)
            out[(kernel, shuffle)] = (s2, ids, ref_minibatch(data, ids, kernel, s2))
    return out


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("groups", [(9,), (1, 8), (3, 1, 1, 4), (1,) * 9])
def test_minibatch_sums_any_grouping_and_merge_order(
    minibatch_refs: dict, kernel: str, order: str, groups: tuple[int, ...]
) -> None:
    """The 9 batches summed in groups (one, uneven, one batch each), then merged."""
    data = representations()
    s2, ids, want = minibatch_refs[(kernel, None)]
    batches = [[d[ids == b] for d in data] for b in range(9)]
    parts = [
        minibatch.batches_sums(batches[a:b], OWN, PAIRS, kernel, s2) for a, b in bounds(groups)
    ]
    check_minibatch(merged(parts, minibatch.merge_sums, order), want, N)


MINIBATCH_DASK = [
    # (kernel, shuffle, chunking, chains, workers, split_every)
    ("linear", None, "one", 1, 1, 8),
    ("linear", None, "uneven", 3, 4, 2),
    ("linear", None, "rows", 4, 4, 8),
    ("linear", 3, "equal", None, 1, 2),
    ("linear", 3, "uneven", None, 4, 3),
    ("rbf", None, "equal", 2, 4, 2),
    ("rbf", None, "uneven", 1, 1, 8),
    ("rbf", 3, "rows", None, 4, 8),
]


@pytest.mark.parametrize(
    ("kernel", "shuffle", "chunking", "chains", "workers", "split_every"), MINIBATCH_DASK
)
def test_minibatch_pass_through_dask(
    minibatch_refs: dict,
    kernel: str,
    shuffle: int | None,
    chunking: str,
    chains: int | None,
    workers: int,
    split_every: int,
) -> None:
    """Consecutive batches (chains of blocks, straddling batches finished at the merge)
    and shuffled ones (pieces sent to one task per batch), on the threaded scheduler."""
    data = representations()
    s2, ids, want = minibatch_refs[(kernel, shuffle)]
    arrays = [da.from_array(d, chunks=(CHUNKINGS[chunking], -1)) for d in data]
    graph = dask_graph.minibatch_pass(
        arrays, ids, OWN, PAIRS, kernel=kernel, sigma2=s2, chains=chains,
        split_every=split_every,
    )  # fmt: skip
    with dask.config.set(scheduler="threads", num_workers=workers):
        (got,) = dask.compute(graph)
    check_minibatch(got, want, N)


def ref_batch_ids(n: int, batch_size: int) -> np.ndarray:
    """k = max(1, ⌊n/B⌋) batches of consecutive rows, the first n mod k one row larger."""
    k = max(1, n // batch_size)
    sizes = [n // k + (b < n % k) for b in range(k)]
    return np.repeat(np.arange(k, dtype=np.int64), sizes)


@pytest.mark.parametrize(
    ("n", "batch_size"), [(96, 10), (103, 25), (104, 25), (57, 5), (12, 4), (7, 25), (1, 10)]
)
def test_consecutive_batch_layout_against_its_definition(n: int, batch_size: int) -> None:
    """Batch ids, sizes and first rows of consecutive batches, of any row range, and of a
    segment of batches [lo, hi) (the others read −1) with its row range."""
    want = ref_batch_ids(n, batch_size)
    got = assign_batches(n, batch_size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    sizes = np.bincount(want)
    k = len(sizes)
    np.testing.assert_array_equal(minibatch.batch_sizes(n, batch_size), sizes)
    layout = minibatch.ConsecutiveBatches(n, batch_size)
    np.testing.assert_array_equal(layout.first_rows, np.cumsum(sizes) - sizes)
    for a, b in [(0, n), (n // 3, n // 2 + 1), (n - 1, n)]:
        np.testing.assert_array_equal(layout.ids(a, b), want[a:b])
    for lo, hi in [(0, 1), (0, max(k - 1, 1)), (1, k), (k // 2, None), (0, None)]:
        seg = (
            layout.segment(lo, hi)
            if hi is not None
            else minibatch.ConsecutiveBatches(n, batch_size, lo)
        )
        top = k if hi is None else hi
        inside = (want >= lo) & (want < top)
        np.testing.assert_array_equal(seg.ids(0, n), np.where(inside, want, -1))
        np.testing.assert_array_equal(seg.ids(n // 2, n), np.where(inside, want, -1)[n // 2 :])
        assert seg.row_range() == (int((want < lo).sum()), int((want < top).sum()))
    empty = assign_batches(0, batch_size)
    assert empty.dtype == np.int64 and empty.shape == (0,)


def batch_refs(
    data: Sequence[np.ndarray], ids: np.ndarray, kernel: str, sigma2: Sequence[float | None]
) -> dict[int, tuple]:
    """The reference sums of every batch alone."""
    return {
        int(b): ref_minibatch(data, np.where(ids == b, b, -1), kernel, sigma2)
        for b in np.unique(ids[ids >= 0])
    }


def summed(refs: dict[int, tuple], batches: Sequence[int]) -> tuple:
    own = {i: sum(refs[b][1][i] for b in batches) for i in OWN}
    pairs = {p: sum(refs[b][2][p] for b in batches) for p in PAIRS}
    own_scale = {i: sum(refs[b][3][i] for b in batches) for i in OWN}
    spread = {i: sum(refs[b][4][i] for b in batches) for i in OWN}
    return len(batches), own, pairs, own_scale, spread


def by_blocks(
    blocks: Sequence[np.ndarray | None],
    ids: np.ndarray,
    chunks: Sequence[int],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
) -> minibatch.MinibatchSums:
    """The scattered route by hand: ``block_minibatch`` on every block (the batches wholly
    in it finished there), ``finish_batches`` for the others, everything merged."""
    spans = bounds(chunks)
    home: dict[int, list[int]] = {}
    for k, (a, b) in enumerate(spans):
        for batch in np.unique(ids[a:b][ids[a:b] >= 0]).tolist():
            home.setdefault(batch, []).append(k)
    total, parts = minibatch.MinibatchSums(), []
    for k, (a, b) in enumerate(spans):
        whole = np.array([x for x, ks in home.items() if ks == [k]], dtype=np.int64)
        rows = [None if d is None else d[a:b] for d in blocks]
        sums, pieces = minibatch.block_minibatch(rows, ids[a:b], whole, own, pairs, kernel, sigma2)
        assert sorted(pieces) == sorted(x for x, ks in home.items() if k in ks and len(ks) > 1)
        total = minibatch.merge_sums(total, sums)
        parts.append(pieces)
    for batch, ks in home.items():
        if len(ks) > 1:
            done = minibatch.finish_batches(parts, [batch], own, pairs, kernel, sigma2)
            total = minibatch.merge_sums(total, done)
    return total


def by_chains(
    blocks: Sequence[np.ndarray | None],
    ids: np.ndarray,
    chunks: Sequence[int],
    chains: int,
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    refs: dict[int, tuple] | None = None,
) -> minibatch.MinibatchSums:
    """The chain route by hand: ``fold_block`` block after block in each chain, then
    ``merge_chains``. With ``refs``, after every block: the chain's sums are those of the
    batches it has finished (begun in the chain, last row read), its tail holds exactly
    the batch begun in it and still open, its head the batches begun before it."""
    spans = bounds(chunks)
    used = ids >= 0
    totals = np.bincount(ids[used])
    first = np.array([np.flatnonzero(ids == b)[0] for b in range(len(totals))])
    last = np.array([np.flatnonzero(ids == b)[-1] for b in range(len(totals))])
    carries = []
    for group in np.array_split(np.arange(len(spans)), chains):
        start = spans[group[0]][0]
        carry = None
        for k in group:
            a, b = spans[k]
            seen = ids[start:b][used[start:b]]
            heads = [x for x in np.unique(ids[a:b][used[a:b]]).tolist() if first[x] < start]
            rows = [None if d is None else d[a:b] for d in blocks]
            carry = minibatch.fold_block(
                carry, rows, ids[a:b], totals, heads, own, pairs, kernel, sigma2
            )
            if refs is None:
                continue
            began = {x for x in np.unique(seen).tolist() if first[x] >= start}
            finished = sorted(x for x in began if last[x] < b)
            assert sorted(carry.tail) == sorted(began - set(finished))
            assert sorted(carry.head) == sorted(x for x in np.unique(seen) if first[x] < start)
            if finished:
                rows_done = int(totals[finished].sum())
                check_minibatch(carry.sums, summed(refs, finished), rows_done)
            else:
                assert (carry.sums.n_batches, carry.sums.own) == (0, {})
        carries.append(carry)
    return minibatch.merge_chains(carries, own, pairs, kernel, sigma2)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("shuffle", [None, 3])
@pytest.mark.parametrize("chunking", ["one", "equal", "uneven"])
def test_minibatch_blocks_and_pieces_by_hand(
    minibatch_refs: dict, kernel: str, shuffle: int | None, chunking: str
) -> None:
    """Batches wholly in one block finished by its task, the others from their pieces."""
    data = representations()
    s2, ids, want = minibatch_refs[(kernel, shuffle)]
    got = by_blocks(data, ids, CHUNKINGS[chunking], OWN, PAIRS, kernel, s2)
    check_minibatch(got, want, N)
    assert got.nonfinite == dict.fromkeys(OWN, 0)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize(("chunking", "chains"), [("equal", 2), ("uneven", 3), ("rows", 4)])
def test_minibatch_chains_by_hand(
    minibatch_refs: dict, kernel: str, chunking: str, chains: int
) -> None:
    """A chain finishes each batch as soon as it has read its last row and keeps only the
    rows of the open batch and of those begun before it; the merge finishes the rest."""
    data = representations()
    s2, ids, want = minibatch_refs[(kernel, None)]
    refs = batch_refs(data, ids, kernel, s2)
    got = by_chains(data, ids, CHUNKINGS[chunking], chains, OWN, PAIRS, kernel, s2, refs)
    check_minibatch(got, want, N)


@pytest.mark.parametrize("route", ["blocks", "chains"])
def test_minibatch_nonfinite_rows_and_an_unused_representation(route: str) -> None:
    """Rows holding NaN/Inf are counted once each, among the used rows only (batch id ≥ 0,
    batch 0 included), for every involved representation (own or in a pair only); a
    representation in no statistic is passed as None."""
    x, _, w = representations()
    x, w = x.copy(), w.copy()
    ids = assign_batches(N, 10)
    ids[[5, 50, 51]] = -1  # rows left out of this pass
    x[[0, 5, 30], [1, 2, 0]] = [np.nan, np.inf, np.nan]  # batch 0, unused, batch 2
    w[[50, 70], [1, 0]] = [np.nan, -np.inf]  # unused, batch 6
    blocks = [x, None, w]
    own, pairs = [0], [(2, 0)]
    s2 = [None] * 3
    chunks = CHUNKINGS["uneven"]
    if route == "blocks":
        got = by_blocks(blocks, ids, chunks, own, pairs, "linear", s2)
    else:
        got = by_chains(blocks, ids, chunks, 2, own, pairs, "linear", s2)
    assert got.nonfinite == {0: 2, 2: 1}
    assert (got.n_batches, got.n_rows) == (9, N - 3)
    assert sorted(got.own) == [0] and sorted(got.pairs) == [(2, 0)]


def test_minibatch_sums_as_arrays_and_back() -> None:
    """A checkpoint of the sums: plain int64/float64 arrays, every value back exactly,
    keys as ints (pairs as tuples), counts as ints; keys and values of unequal length are
    refused."""
    sums = minibatch.MinibatchSums(
        n_batches=3,
        n_rows=31,
        own={0: 1.5, 2: 1.0 / 3.0},
        pairs={(0, 2): -0.1, (2, 0): np.nextafter(1.0, 2.0)},
        nonfinite={0: 2, 2: 0},
        spread={0: 0.25, 2: 1e-300},
        scale={0: 3.0, 2: 3.0},
        own_scale={0: 7.0, 2: 2.0**-60},
    )
    arrays = minibatch.sums_to_arrays(sums)
    assert arrays["counts"].dtype == np.int64 and arrays["counts"].tolist() == [3, 31]
    assert arrays["pairs.keys"].dtype == np.int64
    assert arrays["pairs.keys"].tolist() == [[0, 2], [2, 0]]
    assert arrays["own.keys"].tolist() == [[0], [2]]
    assert arrays["nonfinite.values"].dtype == np.int64
    assert arrays["nonfinite.values"].tolist() == [2, 0]
    assert arrays["own_scale.values"].dtype == np.float64
    assert arrays["own_scale.values"].tolist() == [7.0, 2.0**-60]
    assert sorted(arrays) == sorted(
        ["counts"] + [f"{f}.{p}" for f in minibatch._SUM_FIELDS for p in ("keys", "values")]
    )
    back = minibatch.sums_from_arrays(arrays)
    assert back == sums
    assert all(type(k) is int for k in back.own) and all(type(k) is tuple for k in back.pairs)
    assert all(type(v) is int for v in back.nonfinite.values())
    assert all(type(v) is float for v in back.own.values())
    assert (back.n_batches, back.n_rows) == (3, 31) and type(back.n_rows) is int
    empty = minibatch.sums_from_arrays(minibatch.sums_to_arrays(minibatch.MinibatchSums()))
    assert empty == minibatch.MinibatchSums()
    arrays["spread.values"] = arrays["spread.values"][:1]
    with pytest.raises(ValueError, match=r"^spread: 2 keys for 1 values$"):
        minibatch.sums_from_arrays(arrays)


# --------------------------------------------------------------------------- counts


TOLS = (0.5, 1000.0)


def counts_data() -> np.ndarray:
    """X stored as float32 (the sums are float64), with a NaN row and an Inf row (counted,
    left out of the class sums) and entries exactly at a tolerance (counted as small)."""
    x = representations()[0].astype(np.float32)
    x[3, 2], x[50, 0] = np.nan, np.inf
    x[7, :3], x[8, 1], x[9, 4] = 0.5, -1000.0, 0.0
    return x


def class_codes() -> np.ndarray:
    codes = np.arange(N) % 4 - 1  # −1 (no class), 0, 1, 2
    codes[:5] = 2  # uneven classes
    return codes


def check_counts(got: counts.Counts, x: np.ndarray, codes: np.ndarray | None) -> None:
    finite = np.isfinite(x).all(axis=1)
    assert got.entries == x.size and got.nonfinite == int((~finite).sum()) == 2
    assert got.small == {t: int((np.abs(x) <= t).sum()) for t in TOLS}
    if codes is None:
        assert got.class_sums.size == 0 and got.class_counts.size == 0
        return
    for c in range(3):
        rows = x[(codes == c) & finite].astype(np.float64)
        assert got.class_counts[c] == rows.shape[0]
        mean = got.class_sums[c] / got.class_counts[c]
        np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=RTOL)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("classes", [True, False])
def test_counts_any_chunking_and_merge_order(chunking: str, order: str, classes: bool) -> None:
    """Blocks' counts merged in any order, with empty states (a reduction's start) among
    them; with class codes and without."""
    x, codes = counts_data(), class_codes() if classes else None
    parts = [
        counts.block_counts(x[a:b], TOLS, None if codes is None else codes[a:b], 3)
        for a, b in bounds(CHUNKINGS[chunking])
    ]
    parts = [counts.Counts(), *parts[:1], counts.Counts(), *parts[1:]]
    check_counts(merged(parts, counts.merge_counts, order), x, codes)


@pytest.mark.parametrize(("chunking", "workers"), [("one", 1), ("uneven", 4), ("rows", 4)])
def test_counts_pass_through_dask(chunking: str, workers: int) -> None:
    x, codes = counts_data(), class_codes()
    graph = dask_graph.counts_pass(
        da.from_array(x, chunks=(CHUNKINGS[chunking], -1)), None, TOLS, codes, 3, split_every=2
    )
    with dask.config.set(scheduler="threads", num_workers=workers):
        (got,) = dask.compute(graph)
    check_counts(got, x, codes)


# ---------------------------------------------------------------- attention entropy


HEADS, TOKENS = 3, 5


def attention_maps() -> np.ndarray:
    """N samples of HEADS softmax maps over 1 … TOKENS real tokens (padding zeros), one
    sample with no real token."""
    rng = np.random.default_rng(11)
    out = np.zeros((N, HEADS, TOKENS, TOKENS))
    for s in range(1, N):
        t = 1 + s % TOKENS
        logits = 3.0 * rng.normal(size=(HEADS, t, t))
        p = np.exp(logits - logits.max(axis=2, keepdims=True))
        out[s, :, :t, :t] = p / p.sum(axis=2, keepdims=True)
    return out.reshape(N, -1)


def check_entropy(got: attention.EntropySums, maps: np.ndarray) -> None:
    p = maps.reshape(N, HEADS, TOKENS, TOKENS)
    want = np.zeros(HEADS)
    for s in range(1, N):
        t = 1 + s % TOKENS
        q = p[s, :, :t, :t]
        want += (-(q * np.log(q)).sum(axis=2)).mean(axis=1)
    assert (got.samples, got.empty, got.negative, got.nonfinite) == (N - 1, 1, 0, 0)
    np.testing.assert_allclose(got.heads_sum, want, rtol=RTOL)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_attention_entropy_any_chunking_and_merge_order(chunking: str, order: str) -> None:
    maps = attention_maps()
    parts = [attention.block_entropy(maps[a:b], HEADS) for a, b in bounds(CHUNKINGS[chunking])]
    check_entropy(merged(parts, attention.merge_entropy, order), maps)


@pytest.mark.parametrize(("chunking", "workers"), [("one", 1), ("uneven", 4), ("rows", 4)])
def test_attention_pass_through_dask(chunking: str, workers: int) -> None:
    maps = attention_maps()
    graph = dask_graph.attention_pass(
        da.from_array(maps, chunks=(CHUNKINGS[chunking], -1)), None, HEADS, split_every=2
    )
    with dask.config.set(scheduler="threads", num_workers=workers):
        (got,) = dask.compute(graph)
    check_entropy(got, maps)


# ------------------------------------------------------------------ Gram tiles


def tile_sums(
    x: np.ndarray, y: np.ndarray, tile: int, slab: int, order: str
) -> tuple[gram_tiles.KernelSums, gram_tiles.KernelSums, float]:
    """K1, diag K of both linear kernels and tr(KL), from tiles I ≤ J of ``tile`` rows
    (off-diagonal tiles counted twice, for their mirror), the tiles taken in ``order``;
    the kernels are of the rows shifted and scaled by their offsets (kept unit-free here:
    the offsets' scales are 1)."""
    offs = [linear.Offset(linear.block_offset(r[:10]).shift) for r in (x, y)]
    tiles = [
        (i, j)
        for i, j in itertools.product(gram_tiles.tile_bounds(N, tile), repeat=2)
        if i[0] <= j[0]
    ]
    if order == "reversed":
        tiles = tiles[::-1]
    elif order == "random":
        tiles = [tiles[k] for k in np.random.default_rng(5).permutation(len(tiles))]
    sums = [gram_tiles.KernelSums.empty(N), gram_tiles.KernelSums.empty(N)]
    tr_kl = 0.0
    for (a, b), (c, d) in tiles:
        same = (a, b) == (c, d)
        k = [
            gram_tiles.gram_tile(r[a:b], None if same else r[c:d], off, slab)
            for r, off in zip((x, y), offs, strict=True)
        ]
        for s, g in zip(sums, k, strict=True):
            s.rows[a:b] += g.sum(axis=1)
            if same:
                s.diag[a:b] += np.diag(g)
            else:
                s.rows[c:d] += g.sum(axis=0)
        tr_kl += (1.0 if same else 2.0) * float(np.vdot(k[0], k[1]))
    return sums[0], sums[1], tr_kl


@pytest.mark.parametrize("order", ["left", "reversed", "random"])
@pytest.mark.parametrize(("tile", "slab"), [(N, 2048), (24, 3), (7, 1), (1, 2048)])
def test_gram_tile_sums_any_tiling_and_order(tile: int, slab: int, order: str) -> None:
    x, y = representations()[:2]
    a, b, tr_kl = tile_sums(x, y, tile, slab, order)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    k, l = xc @ xc.T, yc @ yc.T  # noqa: E741
    biased = float(np.trace(k @ l))  # tr(KHLH) with K, L of centred rows
    assert gram_tiles.biased_hsic(a, b, tr_kl) == pytest.approx(biased, rel=1e-9)
    assert gram_tiles.spread(a) == pytest.approx(float((xc * xc).sum()), rel=RTOL)
    terms = gram_tiles.hsic_terms(a, b, tr_kl)
    n = N
    got = (terms[0] + terms[1] * terms[2] / ((n - 1) * (n - 2)) - 2.0 * terms[3] / (n - 2)) / (
        n * (n - 3)
    )
    assert got == pytest.approx(ref_hsic1(k, l), rel=1e-9)


# ------------------------------------------------------- whole comparisons, both routes


def ref_cka(x: np.ndarray, y: np.ndarray, estimator: str, kernel: str) -> float:
    """CKA from explicit n × n kernels (RBF: σ² = 0.25 × the median of all n² squared
    distances, reprstore's default ``sigma=0.5``)."""

    def gram(a: np.ndarray) -> np.ndarray:
        if kernel == "linear":
            return ref_kernel(a, "linear", None)
        d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)
        return ref_kernel(a, "rbf", 0.25 * float(np.median(d)))

    k, l = gram(x), gram(y)  # noqa: E741
    if estimator == "debiased":
        return ref_hsic1(k, l) / np.sqrt(ref_hsic1(k, k) * ref_hsic1(l, l))
    h = np.eye(N) - 1.0 / N
    kc, lc = h @ k @ h, h @ l @ h
    return float(np.vdot(kc, lc) / np.sqrt(np.vdot(kc, kc) * np.vdot(lc, lc)))


COMPARISONS = [
    # (route, kernel, chunking, workers, memory)
    ("features", "linear", "one", 1, None),
    ("features", "linear", "uneven", 4, None),
    ("features", "linear", "rows", 4, None),
    ("samples", "linear", "one", 4, None),
    ("samples", "linear", "uneven", 1, "300KB"),
    ("samples", "linear", "rows", 4, None),
    ("samples", "rbf", "equal", 4, None),
    ("samples", "rbf", "uneven", 1, "300KB"),
]


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
@pytest.mark.parametrize(("route", "kernel", "chunking", "workers", "memory"), COMPARISONS)
def test_cka_of_either_route_any_chunking_and_threads(
    estimator: str, route: str, kernel: str, chunking: str, workers: int, memory: str | None
) -> None:
    """The public ``cka`` on dask arrays: feature moments (chains merged in place) or
    Gram tiles (a small memory limit: several panels and tiles), on 1 or 4 threads."""
    from reprstore.workflows.in_memory import cka

    x, y = representations()[:2]
    dx, dy = (da.from_array(a, chunks=(CHUNKINGS[chunking], -1)) for a in (x, y))
    with dask.config.set(scheduler="threads", num_workers=workers):
        got = cka(dx, dy, estimator, kernel, route=route, memory=memory)
    assert got.cka == pytest.approx(ref_cka(x, y, estimator, kernel), rel=1e-9)
