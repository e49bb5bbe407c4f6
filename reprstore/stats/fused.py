"""One row block of linear statistics with numpy products, in few large steps.

The same sums as :func:`reprstore.stats.linear.accumulate` on its generic path
(:func:`~reprstore.stats.linear.prepare_block`, ``update_repr``, ``update_pair``), done
for a numpy backend with fewer passes over the data:

* each representation's sub-block is decoded, shifted and scaled straight into one
  working buffer of the products' dtype (float16 → float32/float64 in one
  ``np.subtract``; with float32 products through one float64 temporary, so that the row
  norms, column sums and the non-finite check stay float64);
* the vector sums Σ‖xᵢ‖² yᵢ of every pair and Σ‖xᵢ‖² xᵢ come from one small float64
  product per representation (all partners' row norms at once, one read of its rows)
  instead of two matrix-vector products per pair;
* the sub-blocks are large (:data:`WORK_BYTES` of working buffers), so that the
  per-product costs (adding each p × q product into its float64 sum) stay a few percent
  of the products; XᵀX runs as a symmetric rank-k update (numpy's ``x.T @ x``).

All sums are float64; only the products' inputs and BLAS's accumulation within one
sub-block are in the products' dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # linear takes this module's fast path; nothing here runs its code
    from reprstore.stats import linear
    from reprstore.stats.linear import LinearState, Offset

#: Sub-blocks have at least this many rows (here and on linear's generic path): XᵀX and
#: XᵀY on (≥ 512 × 768) blocks already run near the BLAS peak.
MIN_SUB_BLOCK_ROWS = 512


#: Bytes of the working buffers of one sub-block (all involved representations together,
#: in the products' dtype); sub-blocks have at least ``MIN_SUB_BLOCK_ROWS`` rows.
WORK_BYTES = 96 * 1024**2


def work_rows(features: Sequence[int], itemsize: int, target_bytes: int = WORK_BYTES) -> int:
    """Rows per sub-block: about ``target_bytes`` of ``itemsize`` values over all widths."""
    row_bytes = itemsize * max(sum(int(p) for p in features), 1)
    return max(MIN_SUB_BLOCK_ROWS, target_bytes // row_bytes)


def _convert(
    raw: np.ndarray, off: Offset, out: np.ndarray, sqn: np.ndarray
) -> tuple[int, np.ndarray]:
    """Shift and scale ``raw`` (r, p) into ``out`` (r, p); its float64 row norms into ``sqn``.

    Rows holding NaN/±Inf are zeroed (counted and reported by the metrics). Returns
    ``(rows zeroed, float64 column sums)``.
    """
    x = out if out.dtype == np.float64 else np.empty(out.shape, np.float64)
    np.subtract(raw, off.shift, out=x, dtype=np.float64, casting="unsafe")
    if off.scale != 1.0:
        x *= 1.0 / off.scale  # a power of two: exact
    np.einsum("ij,ij->i", x, x, out=sqn)
    bad = 0
    if not np.isfinite(sqn).all():
        rows = ~np.isfinite(x).all(axis=1)
        bad = int(rows.sum())
        x[rows] = 0.0
        sqn[rows] = 0.0
    total = x.sum(axis=0)
    if x is not out:
        out[...] = x
    return bad, total


def _gram(m: linear.ReprMoments, x: np.ndarray) -> None:
    m.gram += x.T @ x


def _cross(m: linear.PairMoments, x: np.ndarray, y: np.ndarray) -> None:
    m.cross += x.T @ y


def _vectors(norms: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """Each row of ``norms`` (k, r) times x (r, p), in float64: k vectors (p,).

    Matrix-vector products, one per row: BLAS runs a (k, r) · (r, p) product with a
    small k several times slower than k of them.
    """
    x64 = x if x.dtype == np.float64 else x.astype(np.float64)
    return [v @ x64 for v in norms]


def accumulate(
    state: LinearState,
    data: dict[int, np.ndarray],
    offsets: dict[int, Offset],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    dtype: np.dtype,
    rows: int | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> LinearState:
    """Add one row block to ``state`` in place (see :func:`reprstore.stats.linear.accumulate`).

    Parameters
    ----------
    state : LinearState
        Holding the statistics of ``own`` and of every ``pairs`` entry with ``i != j``.
    data : dict of int to ndarray, each (n, p_i)
        The same n rows of every involved representation, any real dtype.
    offsets : dict of int to Offset
    dtype : numpy dtype
        Of the products (float32 or float64).
    rows : int, optional
        Rows per sub-block (default :func:`work_rows`).
    pool : ThreadPoolExecutor, optional
        Threads sharing the conversions, then the products, of each sub-block.
    """
    reprs, cross = state
    needed = sorted(data)
    n = data[needed[0]].shape[0]
    if n == 0:
        return state
    step = rows or work_rows([data[i].shape[1] for i in needed], dtype.itemsize)
    step = -(-n // -(-n // step))  # equal sub-blocks, none larger than step
    col = {i: k for k, i in enumerate(needed)}
    buf = {i: np.empty((min(step, n), data[i].shape[1]), dtype) for i in needed}
    norms = np.empty((len(needed), min(step, n)))  # row norms, one row per representation
    cross_pairs = [(i, j) for i, j in pairs if i != j]
    mine = set(own)
    partners: dict[int, list[int]] = {i: [i] if i in mine else [] for i in needed}
    for i, j in cross_pairs:
        partners[j].append(i)  # Σ‖xᵢ‖² yⱼ: i's norms against j's rows
        partners[i].append(j)
    partners = {i: list(dict.fromkeys(ks)) for i, ks in partners.items()}
    for start in range(0, n, step):
        r = min(step, n - start)
        x = {i: buf[i][:r] for i in needed}
        convert = [
            functools.partial(
                _convert, data[i][start : start + r], offsets[i], x[i], norms[col[i], :r]
            )
            for i in needed
        ]
        conv = dict(zip(needed, _run(pool, convert), strict=True))
        sqn = {i: norms[col[i], :r] for i in needed}
        jobs: list[Callable[[], Any]] = [
            functools.partial(_cross, cross[(i, j)], x[i], x[j]) for i, j in cross_pairs
        ]
        jobs += [functools.partial(_gram, reprs[i], x[i]) for i in own]
        with_vec = [i for i in needed if partners[i]]
        jobs += [
            functools.partial(_vectors, norms[[col[k] for k in partners[i]], :r], x[i])
            for i in with_vec
        ]
        done = _run(pool, jobs)
        vec = dict(zip(with_vec, done[len(done) - len(with_vec) :], strict=True))
        pos = {i: {k: t for t, k in enumerate(partners[i])} for i in with_vec}
        for i, j in cross_pairs:
            m = cross[(i, j)]
            m.a_y += vec[j][pos[j][i]]
            m.b_x += vec[i][pos[i][j]]
            m.ab += float(sqn[i] @ sqn[j])
        for i in own:
            o = reprs[i]
            bad, total = conv[i]
            o.n += r
            o.total += total
            o.sqnorm += float(sqn[i].sum())
            o.sqnorm2 += float(sqn[i] @ sqn[i])
            o.sqnorm_x += vec[i][pos[i][i]]
            o.nonfinite += bad
    return state


def _run(pool: ThreadPoolExecutor | None, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    if pool is None or len(jobs) < 2:
        return [job() for job in jobs]
    return list(pool.map(_call, jobs))


def _call(fn: Callable[[], Any]) -> Any:
    return fn()
