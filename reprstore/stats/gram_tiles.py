"""The sample route: exact HSIC terms from tiles of the n × n kernel matrices.

For a representation X (n × p) the kernel K (n × n) is never held. Rows are read in
*panels* (consecutive row blocks; all n rows at once when they fit), and the kernel is
made tile by tile, K_IJ for row tiles I ≤ J of ``tile`` rows, each a float64 product of
the shifted rows in slabs of features (:func:`gram_tile`). From the tiles of every
representation of a grid (each made once, shared by all its pairs) one pass accumulates

* per representation: the row sums K1 (n,), the diagonal of K (n,);
* per pair (r, s), r = s included: tr(K_r K_s) = Σ_IJ ⟨K_r,IJ, K_s,IJ⟩ (off-diagonal
  tiles twice, for their mirror);

which give both HSIC estimators exactly (:func:`hsic_terms`, :func:`biased_hsic`):
tr(KHLH) = tr(KL) − 2/n·(K1)ᵀ(L1) + (1ᵀK1)(1ᵀL1)/n², and HSIC₁ from K̃ = K − diag K.

The linear kernel is K = X̄X̄ᵀ on rows shifted by the first block's mean (HSIC is
unchanged by a shift); the RBF kernel K − 1 = expm1(−D/(2σ²)) from the squared distances
D, with σ² from the exact median of all n² entries of D, found by rounds of the same
tiles (:class:`~reprstore.stats.selection.OrderStatistics`) before the kernel round.
Memory is O(R·T² + panels + slabs), counted by :func:`sample_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprstore.stats.linear import NUMPY, Backend, Offset, shifted

#: Features of one float64 slab of a tile product (a slab of both tiles is in flight).
SLAB_FEATURES = 2048
#: Smallest tile worth a BLAS call.
MIN_TILE = 64


@dataclass(frozen=True)
class SampleLayout:
    """How the sample route cuts the rows (all in rows, from the memory model).

    Attributes
    ----------
    panel : int
        Selected rows of one panel (what is read and held at once).
    tile : int
        Rows of one kernel tile (T; each involved representation holds one T × T tile).
    slab : int
        Features converted to float64 at a time.
    panels : int
        Panels over the selected rows (1: every row held, read once for all rounds).
    group : int
        Bytes of stored blocks one read brings at once before they are copied into the
        panel (at least one block whatever this says): :func:`read_group`.
    """

    panel: int
    tile: int
    slab: int
    panels: int
    group: int

    @property
    def reads(self) -> int:
        """Panel reads of one round: every panel pair I ≤ J needs both (I held while J
        streams); one panel is read once for all rounds."""
        m = self.panels
        return 1 if m == 1 else m * (m + 1) // 2


#: Most bytes of stored blocks one read brings at once.
READ_GROUP_BYTES = 64 * 1024**2


def read_group(memory: int) -> int:
    """Bytes of stored blocks one panel read brings at once: an eighth of the budget, at
    most :data:`READ_GROUP_BYTES` (fewer, larger reads are faster; they are held twice
    while decoded and copied into the panel, and the memory model counts that)."""
    return max(1, min(READ_GROUP_BYTES, memory // 8))


def _read_bytes(
    group: int, block_rows: int, widths: Sequence[int], itemsizes: Sequence[int], rows: int
) -> int:
    """What a panel read holds besides the panel: its group of blocks (at least the
    largest one, at most the ``rows`` read) as computed, and again as decoded by the
    store's codec."""
    raw_row = sum(w * s for w, s in zip(widths, itemsizes, strict=True))
    block = block_rows * max((w * s for w, s in zip(widths, itemsizes, strict=True)), default=0)
    return 2 * min(max(group, block), rows * raw_row)


def sample_layout(
    n: int, widths: Sequence[int], itemsizes: Sequence[int], memory: int, threads: int,
    block_rows: int, converted: bool = False,
) -> SampleLayout | None:  # fmt: skip
    """The largest tiles and panels within ``memory`` bytes (``None``: even the smallest
    do not fit). See :func:`sample_bytes` for what is counted; ``converted``: the products
    run on converted copies (float32, or torch), see :func:`_tile_bytes`."""
    r = len(widths)
    raw_row = sum(w * s for w, s in zip(widths, itemsizes, strict=True))
    tile = min(n, 4096)
    group = read_group(memory)
    while True:
        slab = min(max(widths, default=1), SLAB_FEATURES)
        fixed = _tile_bytes(tile, r, threads, converted)
        fixed += _slab_bytes(tile, slab, threads, converted)
        fixed += _read_bytes(group, block_rows, widths, itemsizes, n)
        left = memory - fixed
        if left >= n * raw_row:  # every row held: one read for all rounds
            return SampleLayout(panel=n, tile=tile, slab=slab, panels=1, group=group)
        panel = (left // 2) // max(raw_row, 1)
        panel = min(panel, n)
        if panel >= max(block_rows, tile, 1):
            return SampleLayout(panel, tile, slab, panels=-(-n // panel), group=group)
        if tile <= MIN_TILE:
            return None
        tile = max(MIN_TILE, tile // 2)


#: T × T float64 temporaries each thread may hold besides the tiles (a Gram product's
#: slab sum; the distances' bit patterns and bin indices of an RBF selection round).
THREAD_TILES = 4


def _tile_bytes(tile: int, reprs: int, threads: int, converted: bool = False) -> int:
    """The tiles of every representation, and each thread's temporaries (``converted``:
    one more, the product as the backend returns it before its float64 copy)."""
    return tile * tile * 8 * (reprs + (THREAD_TILES + converted) * threads)


def _slab_bytes(tile: int, slab: int, threads: int, converted: bool = False) -> int:
    """Each thread's two float64 slabs (``converted``: and their copies for the backend)."""
    return 2 * tile * slab * 8 * threads * (2 if converted else 1)


def sample_bytes(layout: SampleLayout, widths: Sequence[int], itemsizes: Sequence[int],
                 threads: int, block_rows: int, converted: bool = False) -> int:  # fmt: skip
    """Bytes the sample route holds: the panels (raw rows as stored), what a panel read
    holds besides (:func:`_read_bytes`), the tiles, the slabs and the per-representation
    vectors (row sums, diagonal, norms: 4 × n)."""
    raw_row = sum(w * s for w, s in zip(widths, itemsizes, strict=True))
    held = raw_row * layout.panel * (1 if layout.panels == 1 else 2)
    vectors = 4 * 8 * layout.panel * layout.panels * len(widths)
    held += _read_bytes(layout.group, block_rows, widths, itemsizes, layout.panel)
    return (held + vectors + _tile_bytes(layout.tile, len(widths), threads, converted)
            + _slab_bytes(layout.tile, layout.slab, threads, converted))  # fmt: skip


# --------------------------------------------------------------------------- tiles


def gram_tile(
    a: np.ndarray, b: np.ndarray | None, off: Offset, slab: int, backend: Backend = NUMPY
) -> np.ndarray:
    """X̄_I X̄_Jᵀ (float64) of raw rows ``a`` (T_I, p) and ``b`` (T_J, p) shifted by ``off``,
    ``slab`` features at a time; ``b=None``: the symmetric tile of ``a`` with itself.

    ``backend`` runs each slab's product (``--device``, ``--precision``: float32, or torch
    on a GPU); the slabs' sum is float64 on the host whatever runs the products."""
    p = a.shape[1]
    out: np.ndarray | None = None
    for f in range(0, max(p, 1), slab):
        s = slice(f, f + slab)
        xa = shifted(a[:, s], Offset(off.shift[s], off.scale))
        xb = xa if b is None else shifted(b[:, s], Offset(off.shift[s], off.scale))
        part = tile_product(xa, None if b is None else xb, backend)
        del xa, xb
        if out is None:
            out = part
        else:
            out += part
    assert out is not None
    return out


def tile_product(xa: np.ndarray, xb: np.ndarray | None, backend: Backend = NUMPY) -> np.ndarray:
    """xa·xbᵀ in float64 (``xb=None``: xa·xaᵀ) by ``backend``; numpy's float64 product
    of one buffer with itself is its symmetric product (syrk)."""
    if backend is NUMPY:
        out: np.ndarray = xa @ (xa if xb is None else xb).T
        return out
    da = backend.prepare(xa)
    return backend.outer(da, da if xb is None else backend.prepare(xb))


#: Rows converted to float64 at a time outside the tiles (norms, sums of squares).
ROW_CHUNK = 1024


def row_sqnorms(a: np.ndarray, off: Offset, slab: int) -> np.ndarray:
    """‖x̄ᵢ‖² of the shifted rows of ``a`` (r, p), ``ROW_CHUNK`` × ``slab`` at a time."""
    out = np.zeros(a.shape[0])
    for r in range(0, a.shape[0], ROW_CHUNK):
        rows = slice(r, r + ROW_CHUNK)
        for f in range(0, max(a.shape[1], 1), slab):
            s = slice(f, f + slab)
            x = shifted(a[rows, s], Offset(off.shift[s], off.scale))
            out[rows] += np.einsum("ij,ij->i", x, x)
    return out


def raw_sqsum(a: np.ndarray, slab: int) -> float:
    """Σ‖aᵢ‖² of the raw rows of ``a`` (r, p) in float64, a chunk at a time."""
    total = 0.0
    for r in range(0, a.shape[0], ROW_CHUNK):
        for f in range(0, max(a.shape[1], 1), slab):
            x = np.asarray(a[r : r + ROW_CHUNK, f : f + slab], dtype=np.float64)
            total += float(np.vdot(x, x))
    return total


def distances_in_place(g: np.ndarray, na: np.ndarray, nb: np.ndarray, same: bool) -> np.ndarray:
    """Squared distances ‖xᵢ‖² + ‖yⱼ‖² − 2gᵢⱼ from a Gram tile ``g``, in place, clipped at
    zero; a diagonal tile (``same``) gets an exact zero diagonal."""
    g *= -2.0
    g += na[:, None]
    g += nb[None, :]
    np.maximum(g, 0.0, out=g)
    if same:
        np.fill_diagonal(g, 0.0)
    return g


def tile_bounds(rows: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) of the tiles of ``rows`` rows."""
    return [(s, min(s + tile, rows)) for s in range(0, rows, tile)]


# --------------------------------------------------------------------------- sums


@dataclass
class KernelSums:
    """What the kernel round accumulates for one representation (n-vectors, float64)."""

    rows: np.ndarray  # K1
    diag: np.ndarray  # diag K

    @classmethod
    def empty(cls, n: int) -> KernelSums:
        return cls(np.zeros(n), np.zeros(n))


def hsic_terms(a: KernelSums, b: KernelSums, tr_kl: float) -> tuple[float, float, float, float]:
    """(tr(K̃L̃), 1ᵀK̃1, 1ᵀL̃1, 1ᵀK̃L̃1) of two kernels from their sums and tr(KL)."""
    ra, rb = a.rows - a.diag, b.rows - b.diag
    return (
        tr_kl - float(a.diag @ b.diag),
        float(ra.sum()),
        float(rb.sum()),
        float(ra @ rb),
    )


def biased_hsic(a: KernelSums, b: KernelSums, tr_kl: float) -> float:
    """tr(KHLH) = tr(KL) − 2/n·(K1)ᵀ(L1) + (1ᵀK1)(1ᵀL1)/n²."""
    n = a.rows.shape[0]
    return float(
        tr_kl - 2.0 / n * float(a.rows @ b.rows) + float(a.rows.sum()) * float(b.rows.sum()) / n**2
    )


def spread(a: KernelSums) -> float:
    """tr(HKH) (for the linear kernel: Σ‖xᵢ − x̄‖²)."""
    n = a.rows.shape[0]
    return float(a.diag.sum() - a.rows.sum() / n)
