"""Streamed sufficient statistics of the linear-kernel CKA (biased and debiased).

Both exact linear estimators are functions of a few sums over rows, accumulated in one
pass in float64 without ever forming the n × n kernel. For a representation X (n × p),
shifted by a fixed vector ``shift`` (see below), with xᵢ its rows and aᵢ = ‖xᵢ‖²:

* per representation (:class:`ReprMoments`, computed once however many pairs use it):
  n, Σxᵢ, XᵀX, Σaᵢ, Σaᵢ², Σaᵢxᵢ;
* per pair X, Y (:class:`PairMoments`): XᵀY, Σaᵢyᵢ, Σbᵢxᵢ, Σaᵢbᵢ with bᵢ = ‖yᵢ‖².

Shift: activations often have a mean far larger than their spread, and sums of raw
products then cancel catastrophically. Each representation is therefore shifted by a
fixed vector (the column mean of its first block) before any product. The centred
HSIC₀ and the unbiased HSIC₁ are invariant to such a shift, so nothing needs undoing.
Partial statistics merge by plain addition, provided they share the shift.

Style: init / update / merge, as dask's chunk → combine → aggregate triples; the
products go through a small :class:`Backend` so that a GPU can do them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


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


@dataclass
class ReprMoments:
    """Sums over the rows of one shifted representation (n × p), all float64.

    Attributes
    ----------
    n : int
        Rows seen.
    shift : ndarray, shape (p,)
        The fixed vector subtracted from every row before accumulating.
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

    @property
    def n_features(self) -> int:
        return int(self.shift.shape[0])


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


def init_repr(shift: np.ndarray) -> ReprMoments:
    """Empty statistics for a representation shifted by ``shift`` (p,)."""
    shift = np.asarray(shift, dtype=np.float64)
    p = shift.shape[0]
    return ReprMoments(
        n=0,
        shift=shift,
        total=np.zeros(p),
        gram=np.zeros((p, p)),
        sqnorm=0.0,
        sqnorm2=0.0,
        sqnorm_x=np.zeros(p),
    )


def init_pair(p: int, q: int) -> PairMoments:
    """Empty cross statistics of a p-feature and a q-feature representation."""
    return PairMoments(cross=np.zeros((p, q)), a_y=np.zeros(q), b_x=np.zeros(p), ab=0.0)


def shifted(block: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``block`` (r, p) as float64 minus ``shift`` (p,): a new array."""
    return np.subtract(block, shift, dtype=np.float64)


def block_shift(block: np.ndarray) -> np.ndarray:
    """The shift of a representation: float64 column mean of the finite rows of ``block``.

    Parameters
    ----------
    block : ndarray, shape (r, p)
        Usually the first row block read. Zeros when no row is finite.
    """
    finite = np.isfinite(block).all(axis=1)
    if not finite.any():
        return np.zeros(block.shape[1])
    return np.asarray(np.mean(block[finite], axis=0, dtype=np.float64))


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


def prepare_block(block: np.ndarray, shift: np.ndarray, backend: Backend = NUMPY) -> Prepared:
    """Shift a raw block (r, p) of any dtype, take its row norms, move it to the device."""
    x = shifted(block, shift)
    bad = count_nonfinite(x)
    if bad:  # counted and reported by the metrics; zeroed so that the sums stay quiet
        x[~np.isfinite(x).all(axis=1)] = 0.0
    return Prepared(x=x, dev=backend.prepare(x), sqn=np.einsum("ij,ij->i", x, x), nonfinite=bad)


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
    """Sum of two partial statistics of the same representation (same shift)."""
    if not np.array_equal(a.shift, b.shift):
        raise ValueError("cannot merge statistics accumulated with different shifts")
    return ReprMoments(
        n=a.n + b.n,
        shift=a.shift,
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


def moments(
    x: np.ndarray, shift: np.ndarray | None = None, backend: Backend = NUMPY
) -> ReprMoments:
    """Statistics of a whole in-memory block ``x`` (n, p); shift defaults to its mean."""
    s = block_shift(x) if shift is None else shift
    return update_repr(init_repr(s), prepare_block(x, s, backend), backend)


def block_moments(
    blocks: Sequence[np.ndarray],
    shifts: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    backend: Backend = NUMPY,
) -> tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]]:
    """All statistics one row block contributes, each block prepared once.

    Parameters
    ----------
    blocks : sequence of ndarray, each (r, p_i)
        The same r rows of every involved representation (``None`` where unused).
    shifts : sequence of ndarray, each (p_i,)
    pairs : sequence of (i, j)
        Cross statistics wanted; ``i == j`` pairs are served by the representation's own.
    own : sequence of int
        Representations whose own statistics this pass accumulates.

    Returns
    -------
    (dict of int to ReprMoments, dict of (int, int) to PairMoments)
    """
    needed = set(own) | {i for pair in pairs for i in pair}
    prep = {i: prepare_block(blocks[i], shifts[i], backend) for i in sorted(needed)}
    reprs = {i: update_repr(init_repr(shifts[i]), prep[i], backend) for i in own}
    out: dict[tuple[int, int], PairMoments] = {}
    for i, j in pairs:
        if i == j:
            continue
        m = init_pair(prep[i].x.shape[1], prep[j].x.shape[1])
        out[(i, j)] = update_pair(m, prep[i], prep[j], backend)
    return reprs, out


def merge_block_moments(
    a: tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]],
    b: tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]],
) -> tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]]:
    """Merge two outputs of :func:`block_moments` key by key."""
    reprs = dict(a[0])
    for k, v in b[0].items():
        reprs[k] = merge_repr(reprs[k], v) if k in reprs else v
    pairs = dict(a[1])
    for key, w in b[1].items():
        pairs[key] = merge_pair(pairs[key], w) if key in pairs else w
    return reprs, pairs
