"""Streamed sufficient statistics of the linear-kernel CKA (biased and debiased).

Both exact linear estimators are functions of a few sums over rows, accumulated in one
pass in float64 without ever forming the n × n kernel. For a representation X (n × p),
shifted by a fixed vector ``shift`` (see below), with xᵢ its rows and aᵢ = ‖xᵢ‖²:

* per representation (:class:`ReprMoments`, computed once however many pairs use it):
  n, Σxᵢ, XᵀX, Σaᵢ, Σaᵢ², Σaᵢxᵢ;
* per pair X, Y (:class:`PairMoments`): XᵀY, Σaᵢyᵢ, Σbᵢxᵢ, Σaᵢbᵢ with bᵢ = ‖yᵢ‖².

Shift and scale (an :class:`Offset`): activations often have a mean far larger than their
spread, and sums of raw products then cancel catastrophically; values may also be tiny
(1e-30) or huge (1e37), and fourth powers of those leave float64's range. Each
representation is therefore shifted by a fixed vector (the column mean of its first block)
and divided by a fixed power of two near its spread (an exact operation) before any
product. The centred statistics are invariant to the shift and every measure is a ratio
or rescales explicitly (``scale``), so nothing else needs undoing. Partial statistics
merge by plain addition, provided they share the offset.

Style: init / update / merge, as dask's chunk → combine → aggregate triples; the
products go through a small :class:`Backend` so that a GPU can do them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from reprstore.stats import fused
from reprstore.stats.fused import MIN_SUB_BLOCK_ROWS

T = TypeVar("T")


class Backend(Protocol):
    """Where per-block matrix products run; results always come back as float64 numpy."""

    def prepare(self, x: np.ndarray) -> Any:
        """Move a float64 block (rows, features) to the device."""

    def cross(self, a: Any, b: Any) -> np.ndarray:
        """aᵀb for prepared blocks a (r, p) and b (r, q): shape (p, q), float64."""

    def outer(self, a: Any, b: Any) -> np.ndarray:
        """abᵀ for prepared blocks a (r, p) and b (s, p): shape (r, s), float64."""


class NumpyBackend:
    """Products with numpy; float64 by default.

    Parameters
    ----------
    dtype : {"float64", "float32"}
        Precision of the per-block products (their sums are float64 either way). float32
        is faster; on shifted data it kept CKA within ~1e-8 of the float64 reference in
        our tests, but float64 is the default because nothing bounds that in general.
    """

    def __init__(self, dtype: str = "float64") -> None:
        self.dtype = np.dtype(dtype)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x.astype(self.dtype, copy=False)

    def cross(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a.T @ b, dtype=np.float64)

    def outer(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a @ b.T, dtype=np.float64)

    def __repr__(self) -> str:
        return f"NumpyBackend({self.dtype.name!r})"


NUMPY = NumpyBackend()


@dataclass(frozen=True, eq=False)
class Offset:
    """What is subtracted from, then divided into, every row before accumulating.

    Attributes
    ----------
    shift : ndarray, shape (p,)
    scale : float
        A power of two (so dividing by it is exact), 1.0 when unknown.
    """

    shift: np.ndarray
    scale: float = 1.0

    def __len__(self) -> int:
        return int(self.shift.shape[0])

    def same(self, other: Offset) -> bool:
        return self.scale == other.scale and np.array_equal(self.shift, other.shift)


def as_offset(value: Offset | np.ndarray) -> Offset:
    """``value`` as an :class:`Offset` (a bare shift vector gets scale 1)."""
    if isinstance(value, Offset):
        return value
    return Offset(np.asarray(value, dtype=np.float64), 1.0)


def power_of_two(value: float) -> float:
    """The power of two nearest ``value`` (> 0, finite); 1.0 otherwise."""
    if not (value > 0.0 and np.isfinite(value)):
        return 1.0
    return float(2.0 ** round(np.log2(value)))


@dataclass
class ReprMoments:
    """Sums over the rows of one shifted representation (n × p), all float64.

    Attributes
    ----------
    n : int
        Rows seen.
    shift : ndarray, shape (p,)
        The fixed vector subtracted from every row before accumulating.
    scale : float
        The power of two every shifted row is divided by (the sums below are of
        xᵢ = (rawᵢ − shift) / scale).
    total : ndarray, shape (p,)
        Σxᵢ.
    gram : ndarray, shape (p, p)
        XᵀX.
    sqnorm : float
        Σ‖xᵢ‖².
    sqnorm2 : float
        Σ‖xᵢ‖⁴.
    sqnorm_x : ndarray, shape (p,)
        Σ‖xᵢ‖² xᵢ.
    nonfinite : int
        Rows holding NaN or ±Inf (the sums are then meaningless).
    """

    n: int
    shift: np.ndarray
    total: np.ndarray
    gram: np.ndarray
    sqnorm: float
    sqnorm2: float
    sqnorm_x: np.ndarray
    nonfinite: int = 0
    scale: float = 1.0

    @property
    def n_features(self) -> int:
        return int(self.shift.shape[0])

    @property
    def offset(self) -> Offset:
        return Offset(self.shift, self.scale)


@dataclass
class PairMoments:
    """Cross sums of two shifted representations X (n × p) and Y (n × q), float64.

    Attributes
    ----------
    cross : ndarray, shape (p, q)
        XᵀY.
    a_y : ndarray, shape (q,)
        Σ‖xᵢ‖² yᵢ.
    b_x : ndarray, shape (p,)
        Σ‖yᵢ‖² xᵢ.
    ab : float
        Σ‖xᵢ‖²‖yᵢ‖².
    """

    cross: np.ndarray
    a_y: np.ndarray
    b_x: np.ndarray
    ab: float


def init_repr(offset: Offset | np.ndarray) -> ReprMoments:
    """Empty statistics for a representation offset by ``offset`` (a shift (p,) or Offset)."""
    off = as_offset(offset)
    shift = off.shift
    p = shift.shape[0]
    return ReprMoments(
        n=0,
        shift=shift,
        scale=off.scale,
        total=np.zeros(p),
        gram=np.zeros((p, p)),
        sqnorm=0.0,
        sqnorm2=0.0,
        sqnorm_x=np.zeros(p),
    )


def init_pair(p: int, q: int) -> PairMoments:
    """Empty cross statistics of a p-feature and a q-feature representation."""
    return PairMoments(cross=np.zeros((p, q)), a_y=np.zeros(q), b_x=np.zeros(p), ab=0.0)


def shifted(block: np.ndarray, shift: np.ndarray | Offset) -> np.ndarray:
    """``block`` (r, p) as float64 minus the shift (and divided by the scale): a new array."""
    off = as_offset(shift)
    out: np.ndarray = np.subtract(block, off.shift, dtype=np.float64)
    if off.scale != 1.0:
        out *= 1.0 / off.scale  # a power of two: exact
    return out


def block_shift(block: np.ndarray) -> np.ndarray:
    """The shift of a representation: float64 column mean of the finite rows of ``block``.

    Parameters
    ----------
    block : ndarray, shape (r, p)
        Usually the first row block read. Zeros when no row is finite.
    """
    return _finite_rows(block).mean(axis=0) if block.shape[0] else np.zeros(block.shape[1])


def _finite_rows(block: np.ndarray) -> np.ndarray:
    """The rows of ``block`` (r, p) holding no NaN/±Inf, as float64 (one conversion)."""
    x = np.asarray(block, dtype=np.float64)
    if np.isfinite(x).all():
        return x
    return x[np.isfinite(x).all(axis=1)]


#: The spread behind an offset's scale is taken over at most this many evenly spaced rows.
SCALE_ROWS = 256


def block_offset(block: np.ndarray) -> Offset:
    """The :class:`Offset` of a representation from one block (r, p): its finite rows'
    mean, and the power of two nearest their root-mean-square deviation from it (or
    nearest the largest |mean| when the block is constant).

    The mean is summed in float64 straight from the block's dtype (row after row, the
    same sums as on a float64 copy); the deviation, which only sets a power of two, is
    taken over at most :data:`SCALE_ROWS` evenly spaced rows. Any power of two gives the
    same statistics bit for bit up to it (dividing by it is exact); it keeps squares and
    fourth powers of tiny or huge values within float64's range. A block holding NaN/±Inf
    takes its finite rows first.
    """
    total = np.add.reduce(block, axis=0, dtype=np.float64) if block.shape[0] else None
    x = block
    if total is None or not np.isfinite(total).all():
        x = np.asarray(block, dtype=np.float64)
        keep = np.isfinite(x).all(axis=1)
        if not keep.all():
            x = x[keep]
        total = x.sum(axis=0)
    if x.shape[0] == 0:
        return Offset(np.zeros(block.shape[1]), 1.0)
    shift = np.asarray(total / x.shape[0])  # what x.mean(axis=0) computes
    if block.shape[1] == 0:
        return Offset(shift, 1.0)
    step = max(1, -(-x.shape[0] // SCALE_ROWS))
    dev = np.subtract(x[::step], shift, dtype=np.float64)
    top = max(float(dev.max()), -float(dev.min())) if dev.size else 0.0
    if top > 0.0:
        dev *= 1.0 / top  # no overflow or underflow in the squares
        np.square(dev, out=dev)
        rms = top * float(np.sqrt(dev.mean()))
    else:
        rms = float(np.max(np.abs(shift)))
    return Offset(shift, power_of_two(rms))


def count_nonfinite(block: np.ndarray) -> int:
    """Number of rows of ``block`` (r, p) holding NaN or ±Inf."""
    return int(block.shape[0] - np.isfinite(block).all(axis=1).sum())


@dataclass
class Prepared:
    """One shifted block of one representation, ready for products."""

    x: np.ndarray  # (r, p) float64, shifted
    dev: Any  # the same on the backend's device
    sqn: np.ndarray  # (r,) ‖xᵢ‖²
    nonfinite: int


def prepare_block(
    block: np.ndarray, shift: np.ndarray | Offset, backend: Backend = NUMPY
) -> Prepared:
    """Offset a raw block (r, p) of any dtype, take its row norms, move it to the device.

    The float64 conversion and the shift are one pass (``np.subtract`` with ``dtype``);
    rows holding NaN/±Inf are looked for only when some row norm is not finite.
    """
    x = shifted(block, shift)
    sqn = np.einsum("ij,ij->i", x, x)
    bad = 0
    if not np.isfinite(sqn).all():
        rows = ~np.isfinite(x).all(axis=1)
        bad = int(rows.sum())
        if bad:  # counted and reported by the metrics; zeroed so that the sums stay quiet
            x[rows] = 0.0
            sqn[rows] = 0.0
    return Prepared(x=x, dev=backend.prepare(x), sqn=sqn, nonfinite=bad)


def update_repr(m: ReprMoments, b: Prepared, backend: Backend = NUMPY) -> ReprMoments:
    """Add one prepared block to ``m`` in place and return it."""
    m.n += b.x.shape[0]
    m.total += b.x.sum(axis=0)
    m.gram += backend.cross(b.dev, b.dev)
    m.sqnorm += float(b.sqn.sum())
    m.sqnorm2 += float(b.sqn @ b.sqn)
    m.sqnorm_x += b.sqn @ b.x
    m.nonfinite += b.nonfinite
    return m


def update_pair(m: PairMoments, a: Prepared, b: Prepared, backend: Backend = NUMPY) -> PairMoments:
    """Add the cross sums of two prepared blocks with the same rows to ``m`` in place."""
    m.cross += backend.cross(a.dev, b.dev)
    m.a_y += a.sqn @ b.x
    m.b_x += b.sqn @ a.x
    m.ab += float(a.sqn @ b.sqn)
    return m


def merge_repr(a: ReprMoments, b: ReprMoments) -> ReprMoments:
    """Sum of two partial statistics of the same representation (same offset)."""
    if not a.offset.same(b.offset):
        raise ValueError("cannot merge statistics accumulated with different shifts")
    return ReprMoments(
        n=a.n + b.n,
        shift=a.shift,
        scale=a.scale,
        total=a.total + b.total,
        gram=a.gram + b.gram,
        sqnorm=a.sqnorm + b.sqnorm,
        sqnorm2=a.sqnorm2 + b.sqnorm2,
        sqnorm_x=a.sqnorm_x + b.sqnorm_x,
        nonfinite=a.nonfinite + b.nonfinite,
    )


def merge_pair(a: PairMoments, b: PairMoments) -> PairMoments:
    """Sum of two partial cross statistics."""
    return PairMoments(
        cross=a.cross + b.cross, a_y=a.a_y + b.a_y, b_x=a.b_x + b.b_x, ab=a.ab + b.ab
    )


def self_pair(m: ReprMoments) -> PairMoments:
    """The cross statistics of a representation with itself (no copy)."""
    return PairMoments(cross=m.gram, a_y=m.sqnorm_x, b_x=m.sqnorm_x, ab=m.sqnorm2)


def transposed(m: PairMoments) -> PairMoments:
    """The cross statistics of (Y, X) from those of (X, Y) (a view, no copy)."""
    return PairMoments(cross=m.cross.T, a_y=m.b_x, b_x=m.a_y, ab=m.ab)


def moments(
    x: np.ndarray, shift: np.ndarray | Offset | None = None, backend: Backend = NUMPY
) -> ReprMoments:
    """Statistics of a whole in-memory block ``x`` (n, p); the offset defaults to its own."""
    s = block_offset(x) if shift is None else shift
    return update_repr(init_repr(s), prepare_block(x, s, backend), backend)


#: A row block is converted to float64 in sub-blocks of about this many bytes (all the
#: involved representations together) and never fewer than ``MIN_SUB_BLOCK_ROWS`` rows.
SUB_BLOCK_BYTES = 16 * 1024**2

LinearState = tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]]


def sub_block_rows(features: Sequence[int], target_bytes: int = SUB_BLOCK_BYTES) -> int:
    """Rows per sub-block: about ``target_bytes`` of float64 over all ``features`` widths."""
    row_bytes = 8 * max(sum(int(p) for p in features), 1)
    return max(MIN_SUB_BLOCK_ROWS, target_bytes // row_bytes)


def init_state(
    shifts: Sequence[np.ndarray | Offset | None],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
) -> LinearState:
    """Empty statistics: own of ``own``, cross of every ``pairs`` entry with ``i != j``."""
    reprs = {i: init_repr(shifts[i]) for i in own}  # type: ignore[arg-type]
    width = {i: len(s) for i, s in enumerate(shifts) if s is not None}
    cross = {(i, j): init_pair(width[i], width[j]) for i, j in pairs if i != j}
    return reprs, cross


def accumulate(
    state: LinearState | None,
    blocks: Sequence[np.ndarray | None],
    shifts: Sequence[np.ndarray | Offset | None],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    backend: Backend = NUMPY,
    rows: int | None = None,
    threads: int = 1,
) -> LinearState:
    """Add one row block to ``state`` in place (a new state when ``None``) and return it.

    The block is taken ``rows`` rows at a time (default :func:`sub_block_rows`); each
    representation's sub-block is converted to float64 once and serves its own
    statistics and every pair that involves it, then is freed. With ``threads > 1`` the
    conversions, then the products, of a sub-block are shared among that many threads
    (each product updates its own statistics, so none waits for another); run BLAS
    single-threaded then. A numpy backend takes :func:`reprstore.stats.fused.accumulate`
    (the same sums in fewer, larger steps; ``rows`` then counts rows of its buffers).

    Parameters
    ----------
    state : LinearState or None
        ``(dict of int to ReprMoments, dict of (int, int) to PairMoments)``.
    blocks : sequence of ndarray, each (r, p_i)
        The same r rows of every involved representation (``None`` where unused).
    shifts : sequence of ndarray, each (p_i,)
    pairs : sequence of (i, j)
        Cross statistics wanted; ``i == j`` pairs are served by the representation's own.
    own : sequence of int
        Representations whose own statistics this pass accumulates.
    rows : int, optional
        Rows per sub-block.
    threads : int
        Threads sharing the work of each sub-block.
    """
    if state is None:
        state = init_state(shifts, pairs, own)
    reprs, cross = state
    needed = sorted(set(own) | {i for pair in pairs for i in pair})
    if not needed:
        return state
    data = {i: np.asarray(blocks[i]) for i in needed}
    shift = {i: as_offset(shifts[i]) for i in needed}  # type: ignore[arg-type]
    n = data[needed[0]].shape[0]
    if isinstance(backend, NumpyBackend):
        with _pool(threads if n else 1) as pool:
            return fused.accumulate(state, data, shift, pairs, own, backend.dtype, rows, pool)
    step = rows or sub_block_rows([data[i].shape[1] for i in needed])
    step = -(-n // -(-n // step)) if n else 1  # equal sub-blocks, none larger than step
    pool = ThreadPoolExecutor(threads, "reprstore-linear") if threads > 1 and n else None
    try:
        for start in range(0, n, step):
            convert = [
                functools.partial(prepare_block, data[i][start : start + step], shift[i], backend)
                for i in needed
            ]
            done = _map(pool, _call, convert)
            prep = dict(zip(needed, done, strict=True))
            jobs: list[Callable[[], Any]] = [  # the largest products first
                functools.partial(update_pair, cross[(i, j)], prep[i], prep[j], backend)
                for i, j in pairs
                if i != j
            ]
            jobs += [functools.partial(update_repr, reprs[i], prep[i], backend) for i in own]
            _map(pool, _call, jobs)
            del prep, jobs, convert, done
    finally:
        if pool is not None:
            pool.shutdown()
    return state


@contextlib.contextmanager
def _pool(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``threads`` threads (``None`` for one), shut down on exit."""
    if threads <= 1:
        yield None
        return
    pool = ThreadPoolExecutor(threads, "reprstore-linear")
    try:
        yield pool
    finally:
        pool.shutdown()


def _call(fn: Callable[[], T]) -> T:
    return fn()


def _map(pool: ThreadPoolExecutor | None, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    """``[fn(x) for x in items]``, on ``pool``'s threads when there is one."""
    if pool is None:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


def block_moments(
    blocks: Sequence[np.ndarray],
    shifts: Sequence[np.ndarray | Offset],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    backend: Backend = NUMPY,
) -> LinearState:
    """All statistics one row block contributes (a new state; see :func:`accumulate`).

    Returns
    -------
    (dict of int to ReprMoments, dict of (int, int) to PairMoments)
    """
    return accumulate(None, blocks, shifts, pairs, own, backend)


def merge_block_moments(a: LinearState, b: LinearState) -> LinearState:
    """Merge two outputs of :func:`block_moments` key by key (a new state)."""
    reprs = dict(a[0])
    for k, v in b[0].items():
        reprs[k] = merge_repr(reprs[k], v) if k in reprs else v
    pairs = dict(a[1])
    for key, w in b[1].items():
        pairs[key] = merge_pair(pairs[key], w) if key in pairs else w
    return reprs, pairs


def merge_into(a: LinearState, b: LinearState) -> LinearState:
    """Add ``b`` to ``a`` in place and return ``a`` (no new p × q matrices)."""
    for k, v in b[0].items():
        m = a[0].get(k)
        if m is None:
            a[0][k] = v
            continue
        if not m.offset.same(v.offset):
            raise ValueError("cannot merge statistics accumulated with different shifts")
        m.n += v.n
        m.total += v.total
        m.gram += v.gram
        m.sqnorm += v.sqnorm
        m.sqnorm2 += v.sqnorm2
        m.sqnorm_x += v.sqnorm_x
        m.nonfinite += v.nonfinite
    for key, w in b[1].items():
        c = a[1].get(key)
        if c is None:
            a[1][key] = w
            continue
        c.cross += w.cross
        c.a_y += w.a_y
        c.b_x += w.b_x
        c.ab += w.ab
    return a
