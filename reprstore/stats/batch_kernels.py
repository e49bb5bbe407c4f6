"""HSIC₁ of many batches and all pairs at once: the fast path of minibatch CKA.

For each batch b and each involved representation i the kernel K̃ᵢ (B × B, zero
diagonal) is formed once, into row i of one buffer S (r, B²). One product S Sᵀ then
gives tr(K̃ᵢK̃ⱼ) of every pair (own terms on its diagonal) and R Rᵀ, with R (r, B) the row
sums, gives every 1ᵀK̃ᵢK̃ⱼ1: the per-pair work is a few r × r matrices per batch, however
many pairs there are. The sums over batches are kept as r × r float64 arrays
(:class:`BatchAccumulator`), turned into :class:`~reprstore.stats.minibatch.MinibatchSums`
once per task.

Each batch is shifted by its float64 mean before its kernel is formed (HSIC₁ is exactly
invariant to that: K → K + a1ᵀ + 1aᵀ + c), and kernels are float64 products whatever the
stored dtype (float16 rows are converted, then shifted). Rows are not scaled first: a
kernel whose diagonal is not finite (NaN/Inf rows, overflow) or outside [TINY, HUGE]
(squares that would underflow or overflow) is recomputed by the careful per-batch route
(:func:`batch_gram`: scaled by a power of two first, NaN/Inf rows zeroed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reprstore.stats.hsic import MIN_ROWS_UNBIASED, GramSummary, double_centre, summarize_gram
from reprstore.stats.kernels import rbf_minus_one, sq_distances_from_gram
from reprstore.stats.linear import (
    NUMPY,
    Backend,
    NumpyBackend,
    block_offset,
    count_nonfinite,
    shifted,
)

#: Below this largest squared distance from the mean (per row) the kernel's squares may
#: underflow: such a batch takes the careful route, which scales first.
TINY = 1e-140
#: Above it the kernel's squares may overflow (same fallback).
HUGE = 1e140
#: The same bounds for float32 products (whose squares underflow below ~1e-38 and
#: overflow above ~3e38): a batch outside them is scaled first, as above.
TINY32 = 1e-24
HUGE32 = 1e24


#: Unsigned view and exponent mask of float16, float32 and float64, by item size.
_EXPONENT: dict[int, tuple[type[np.unsignedinteger], int]] = {
    2: (np.uint16, 0x7C00),
    4: (np.uint32, 0x7F800000),
    8: (np.uint64, 0x7FF << 52),
}


def nonfinite_rows(block: np.ndarray, used: np.ndarray | None = None) -> int:
    """Rows of ``block`` (r, p) holding NaN or ±Inf (of the rows ``used``, if given).

    Floats are first checked for an all-ones exponent on their bits (a tenth of the cost
    of :func:`numpy.isfinite`); rows are counted only where one is found.
    """
    if used is not None and not used.all():
        block = block[used]
    kind = _EXPONENT.get(block.dtype.itemsize)
    if block.size and kind and block.dtype.kind == "f" and block.flags.c_contiguous:
        view, mask = kind
        bits = block.view(view)
        if int((bits & view(mask)).max()) != mask:
            return 0
    return count_nonfinite(block)


@dataclass
class BatchAccumulator:
    """Sums over batches of the HSIC₁ values of ``reprs`` (r representations).

    Attributes
    ----------
    reprs : list of int
        Representation indices (the order of the axes below).
    hsic : ndarray, shape (r, r)
        Σ_b HSIC₁(K_b^i, K_b^j).
    own_scale : ndarray, shape (r,)
        Σ_b tr(K̃K̃)/(B(B−3)).
    spread : ndarray, shape (r,)
        Σ_b of each batch's centred over raw sum of squares.
    n_batches, n_rows : int
    """

    reprs: list[int]
    hsic: np.ndarray = field(init=False)
    own_scale: np.ndarray = field(init=False)
    spread: np.ndarray = field(init=False)
    n_batches: int = 0
    n_rows: int = 0

    def __post_init__(self) -> None:
        r = len(self.reprs)
        self.hsic = np.zeros((r, r))
        self.own_scale = np.zeros(r)
        self.spread = np.zeros(r)


def add_batches(
    acc: BatchAccumulator,
    batches: Sequence[Sequence[np.ndarray | None]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> BatchAccumulator:
    """Add batches to ``acc`` (in place; returned for chaining).

    Parameters
    ----------
    batches : sequence of batches, each a sequence of ndarray (B, p_i) or None
        Per batch, its rows of every representation (any float dtype; None where not
        involved); B at least 4.
    sigma2 : per representation, the RBF σ² in the units of the rows (rbf only).
    """
    buf = None
    for batch in batches:
        n = int(batch[acc.reprs[0]].shape[0])  # type: ignore[union-attr]
        if n < MIN_ROWS_UNBIASED:
            raise ValueError(f"a batch needs at least {MIN_ROWS_UNBIASED} rows, got {n}")
        if buf is None or buf.shape[1] != n * n:
            buf = np.empty((len(acc.reprs), n * n))
        _add_one(acc, batch, n, buf, kernel, sigma2, backend)
    return acc


def _add_one(
    acc: BatchAccumulator,
    batch: Sequence[np.ndarray | None],
    n: int,
    buf: np.ndarray,
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend,
) -> None:
    totals = np.empty((len(acc.reprs), n))
    for a, i in enumerate(acc.reprs):
        x = batch[i]
        assert x is not None
        k = buf[a].reshape(n, n)
        acc.spread[a] += _kernel_into(k, x, kernel, sigma2[i], backend)
        totals[a] = k.sum(axis=1)
    tr = buf @ buf.T  # tr(K̃ᵢK̃ⱼ) of every pair
    sum_kl = totals @ totals.T
    sums = totals.sum(axis=1)
    acc.hsic += (tr + np.outer(sums, sums) / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)) / (
        n * (n - 3)
    )
    acc.own_scale += np.diagonal(tr) / (n * (n - 3))
    acc.n_batches += 1
    acc.n_rows += n


def _kernel_into(
    k: np.ndarray, x: np.ndarray, kernel: str, sigma2: float | None, backend: Backend
) -> float:
    """Write the zero-diagonal kernel of one batch ``x`` (B, p) into ``k`` (B, B); return
    the batch's relative spread Σ‖xᵢ − x̄‖² / Σ‖xᵢ‖² (0 when every row is zero)."""
    # float16/float32 rows with float32 products: shifted in float32, no float64 copy. The
    # rows are exact in float32 and so is each difference from the (float32) shift where
    # it matters (Sterbenz); HSIC₁ ignores which shift. float64 rows are shifted first.
    single = (
        isinstance(backend, NumpyBackend)
        and backend.dtype == np.float32
        and x.dtype in (np.float16, np.float32)
    )
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf/overflow: checked below
        if single:
            xs = x.astype(np.float32)  # a new array (also from float32 rows)
            mean = xs.mean(axis=0)  # any shift will do: a float32 mean is as good
            xs -= mean
            k[...] = np.matmul(xs, xs.T)  # one symmetric float32 product (BLAS ssyrk)
        else:
            xs = x.astype(np.float64)  # a new array (also from float64 rows)
            mean = xs.mean(axis=0)
            xs -= mean
            if isinstance(backend, NumpyBackend) and backend.dtype == np.float64:
                np.matmul(xs, xs.T, out=k)  # one symmetric product (BLAS dsyrk)
            else:
                dev = backend.prepare(xs)
                k[...] = backend.outer(dev, dev)
        norms = np.diagonal(k).copy()
        top = float(norms.max())
    tiny, huge = (TINY32, HUGE32) if _float32_products(backend) else (TINY, HUGE)
    zero = top == 0.0 and not np.any(xs)  # rows equal (not squares that underflowed)
    if not (np.isfinite(top) and (zero or tiny < top < huge)):
        return _careful_into(k, x, kernel, sigma2, backend)
    centred = float(norms.sum())
    raw = centred + n_rows_sq(mean, x.shape[0])
    spread = centred / raw if raw > 0.0 else 0.0
    if kernel == "rbf":
        if sigma2 is None:
            raise ValueError("the rbf kernel needs sigma2")
        rbf_minus_one(sq_distances_from_gram(k), sigma2)
        double_centre(k)
    k.reshape(-1)[:: x.shape[0] + 1] = 0.0
    return spread


def _float32_products(backend: Backend) -> bool:
    """Whether ``backend`` forms its products in float32 (on any device)."""
    return str(getattr(backend, "dtype", "float64")) == "float32"


def n_rows_sq(mean: np.ndarray, n: int) -> float:
    """n‖mean‖² (the raw sum of squares is the centred one plus this), in float64."""
    m = mean.astype(np.float64, copy=False)
    return float(n * np.dot(m, m))


def _careful_into(
    k: np.ndarray, x: np.ndarray, kernel: str, sigma2: float | None, backend: Backend
) -> float:
    """:func:`batch_gram`'s kernel (scaled first, NaN/Inf rows zeroed) in the units of the
    raw rows, and :func:`relative_spread`."""
    gram, unit = batch_gram(x, kernel, sigma2, backend)
    np.multiply(gram.kt, unit, out=k)
    return relative_spread(x)


def batch_gram(
    x: np.ndarray, kernel: str, sigma2: float | None, backend: Backend = NUMPY
) -> tuple[GramSummary, float]:
    """Zero-diagonal kernel of one batch ``x`` (B, p), summarized for HSIC₁, and the factor
    that brings it back to the units of the raw rows (s² for the linear kernel, 1 for rbf).

    The batch is offset by its own mean and spread (:func:`block_offset`); the RBF kernel
    is returned as HK′H with K′ = K − 1 (see the module docstring). ``sigma2`` is in the
    units of the raw rows.
    """
    off = block_offset(x)
    xs = shifted(x, off)
    xs[~np.isfinite(xs).all(axis=1)] = 0.0  # NaN/Inf rows are counted and reported elsewhere
    dev = backend.prepare(xs)
    g = backend.outer(dev, dev)
    if kernel == "rbf":
        if sigma2 is None:
            raise ValueError("the rbf kernel needs sigma2")
        g = sq_distances_from_gram(g)
        g = rbf_minus_one(g, sigma2 / off.scale**2)
        double_centre(g)
        return summarize_gram(g), 1.0
    return summarize_gram(g), off.scale**2


def relative_spread(x: np.ndarray) -> float:
    """Σ‖xᵢ − x̄‖² / Σ‖xᵢ‖² of one batch (r, p), computed without overflow; 1 if all zero."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x).all(axis=1)]
    top = float(np.max(np.abs(finite))) if finite.size else 0.0
    if top == 0.0:
        return 0.0 if finite.size else 1.0
    y = finite / top
    centred = y - y.mean(axis=0)
    return float(np.vdot(centred, centred)) / float(np.vdot(y, y))
