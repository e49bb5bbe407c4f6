"""Streamed statistics of minibatch CKA (Nguyen, Raghu & Kornblith 2021).

CKA = mean_b HSIC₁(K_b, L_b) / √(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b)) over
batches b of ``batch_size`` rows. A partial state (:class:`MinibatchSums`) holds the sums
of those per-batch HSIC values and the number of batches; states merge by addition.

With n rows and ``batch_size`` B there are k = max(1, ⌊n/B⌋) batches of near-equal size
(⌊n/k⌋ or ⌈n/k⌉ rows, so every row is used and no batch is tiny): consecutive rows in
stored order (after any row filter), or a random partition drawn from a seed. Every
batch counts with equal weight. Each batch is shifted by its mean and divided by a power
of two near its spread before its kernel is formed; RBF kernels are formed as
K − 1 = expm1(−d/2σ²) and doubly centred before the HSIC terms (HSIC₁ is exactly
invariant to both), so that wide bandwidths lose no precision.
A batch whose rows lie in one row block is finished by that block's task; the rows of a
batch spread over several blocks travel as small *pieces* to one task per such batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reprstore.stats.hsic import (
    MIN_ROWS_UNBIASED,
    GramSummary,
    double_centre,
    gram_terms,
    hsic1,
    hsic1_scale,
    summarize_gram,
)
from reprstore.stats.kernels import rbf_minus_one
from reprstore.stats.linear import NUMPY, Backend, block_offset, count_nonfinite, shifted

Pieces = dict[int, list[np.ndarray | None]]


@dataclass
class MinibatchSums:
    """Sums of per-batch HSIC₁ values over the batches seen so far.

    Attributes
    ----------
    n_batches : int
    n_rows : int
        Rows in the counted batches.
    own : dict of int to float
        Σ_b HSIC₁(K_b, K_b) per representation index.
    pairs : dict of (int, int) to float
        Σ_b HSIC₁(K_b, L_b) per pair of representation indices.
    nonfinite : dict of int to int
        Rows holding NaN/±Inf per representation.
    spread, scale : dict of int to float
        Per representation, Σ over batches of the centred and the raw sum of squares
        (to tell a constant representation from rounding noise).
    own_scale : dict of int to float
        Per representation, Σ over batches of tr(K̃K̃)/(B(B−3)): the size HSIC₁(K, K) is
        judged against (a value below a tiny fraction of it is rounding noise).
    """

    n_batches: int = 0
    n_rows: int = 0
    own: dict[int, float] = field(default_factory=dict)
    pairs: dict[tuple[int, int], float] = field(default_factory=dict)
    nonfinite: dict[int, int] = field(default_factory=dict)
    spread: dict[int, float] = field(default_factory=dict)
    scale: dict[int, float] = field(default_factory=dict)
    own_scale: dict[int, float] = field(default_factory=dict)


def merge_sums(a: MinibatchSums, b: MinibatchSums) -> MinibatchSums:
    """Sum of two partial states."""

    def add(x: dict, y: dict) -> dict:
        return {k: x.get(k, 0) + y.get(k, 0) for k in x.keys() | y.keys()}

    return MinibatchSums(
        n_batches=a.n_batches + b.n_batches,
        n_rows=a.n_rows + b.n_rows,
        own=add(a.own, b.own),
        pairs=add(a.pairs, b.pairs),
        nonfinite=add(a.nonfinite, b.nonfinite),
        spread=add(a.spread, b.spread),
        scale=add(a.scale, b.scale),
        own_scale=add(a.own_scale, b.own_scale),
    )


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """Sizes of the k = max(1, ⌊n/B⌋) near-equal batches of ``n`` rows (⌈n/k⌉ first)."""
    k = max(1, n // batch_size)
    return np.full(k, n // k, dtype=np.int64) + (np.arange(k) < n % k)


def assign_batches(n: int, batch_size: int, shuffle: int | None = None) -> np.ndarray:
    """Batch number of each of ``n`` rows (every row is in exactly one batch).

    Parameters
    ----------
    n : int
        Rows (after any filter), in stored order.
    batch_size : int
        B; the rows form k = max(1, ⌊n/B⌋) batches of ⌊n/k⌋ or ⌈n/k⌉ rows.
    shuffle : int or None
        ``None``: consecutive rows. An int: a random partition drawn with
        ``numpy.random.default_rng(shuffle)`` (reproducible).

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    if batch_size < MIN_ROWS_UNBIASED:
        raise ValueError(f"batch_size must be at least {MIN_ROWS_UNBIASED}, got {batch_size}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    slot = np.repeat(np.arange(max(1, n // batch_size), dtype=np.int64), batch_sizes(n, batch_size))
    if shuffle is None:
        return slot
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(shuffle).permutation(n)] = slot
    return ids


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
        norms = np.diagonal(g).copy()
        g *= -2.0
        g += norms[:, None]
        g += norms[None, :]
        np.maximum(g, 0.0, out=g)
        np.fill_diagonal(g, 0.0)
        g = rbf_minus_one(g, sigma2 / off.scale**2)
        double_centre(g)
        return summarize_gram(g), 1.0
    return summarize_gram(g), off.scale**2


def batch_sums(
    rows: Sequence[np.ndarray | None],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> MinibatchSums:
    """HSIC₁ values of one batch: every representation's own and every pair's.

    Parameters
    ----------
    rows : sequence of ndarray (B, p_i) or None
        The batch's rows of each representation (None where not involved).
    own : representation indices whose HSIC₁(K, K) to add.
    pairs : index pairs whose HSIC₁(K, L) to add.
    sigma2 : per representation, the RBF σ² (unused for the linear kernel).
    """
    needed = sorted(set(own) | {i for p in pairs for i in p})
    made = {i: batch_gram(rows[i], kernel, sigma2[i], backend) for i in needed}  # type: ignore[arg-type]
    grams = {i: g for i, (g, _) in made.items()}
    unit = {i: u for i, (_, u) in made.items()}  # every batch's HSIC in the same units
    n = grams[needed[0]].n
    return MinibatchSums(
        n_batches=1,
        n_rows=n,
        own={i: hsic1(gram_terms(grams[i], grams[i])) * unit[i] ** 2 for i in own},
        pairs={(i, j): hsic1(gram_terms(grams[i], grams[j])) * unit[i] * unit[j] for i, j in pairs},
        spread={i: _relative_spread(rows[i]) for i in own},  # type: ignore[arg-type]
        scale={i: 1.0 for i in own},
        own_scale={i: hsic1_scale(grams[i]) * unit[i] ** 2 for i in own},
    )


def _relative_spread(x: np.ndarray) -> float:
    """Σ‖xᵢ − x̄‖² / Σ‖xᵢ‖² of one batch (r, p), computed without overflow; 1 if all zero."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x).all(axis=1)]
    top = float(np.max(np.abs(finite))) if finite.size else 0.0
    if top == 0.0:
        return 0.0 if finite.size else 1.0
    y = finite / top
    centred = y - y.mean(axis=0)
    return float(np.vdot(centred, centred)) / float(np.vdot(y, y))


def block_minibatch(
    blocks: Sequence[np.ndarray | None],
    batch_ids: np.ndarray,
    whole: np.ndarray,
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> tuple[MinibatchSums, Pieces]:
    """What one row block contributes: finished batches, and pieces of the others.

    Parameters
    ----------
    blocks : sequence of ndarray (r, p_i) or None
        The block's rows of each representation.
    batch_ids : ndarray of int, shape (r,)
        Batch of each row; −1 for rows not used in this pass (filtered out, left out,
        or batched in another pass). NaN/Inf rows are counted among the used rows only,
        so that every row is counted exactly once over all passes.
    whole : ndarray of int
        Batches lying wholly in this block (finished here).

    Returns
    -------
    (MinibatchSums, dict of batch id to list of row pieces per representation)
    """
    involved = sorted(set(own) | {i for p in pairs for i in p})
    used = batch_ids >= 0
    total = MinibatchSums()
    total.nonfinite = {i: count_nonfinite(blocks[i][used]) for i in involved}  # type: ignore[index]
    whole_set = set(whole.tolist())
    pieces: Pieces = {}
    for b in np.unique(batch_ids[batch_ids >= 0]).tolist():
        sel = batch_ids == b
        rows = [None if blk is None else blk[sel] for blk in blocks]
        if b in whole_set:
            total = merge_sums(total, batch_sums(rows, own, pairs, kernel, sigma2, backend))
        else:
            pieces[b] = rows
    return total, pieces


def finish_batches(
    parts: Sequence[Pieces],
    batches: Sequence[int],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> MinibatchSums:
    """Join the pieces of ``batches`` from several blocks (in block order) and add them up."""
    total = MinibatchSums()
    for b in batches:
        got = [p[b] for p in parts if b in p]
        rows = [
            None if got[0][i] is None else np.concatenate([g[i] for g in got])  # type: ignore[misc]
            for i in range(len(got[0]))
        ]
        total = merge_sums(total, batch_sums(rows, own, pairs, kernel, sigma2, backend))
    return total


@dataclass
class Carry:
    """The state of a chain of consecutive row blocks (consecutive batches).

    Attributes
    ----------
    sums : MinibatchSums
        Batches finished so far.
    head : dict of batch id to pieces
        Rows of batches that began before the chain's first block (finished by the merge).
    tail : dict of batch id to pieces
        Rows of the batch still open (at most one, plus its row count in ``count``).
    """

    sums: MinibatchSums = field(default_factory=MinibatchSums)
    head: dict[int, list[list[np.ndarray | None]]] = field(default_factory=dict)
    tail: dict[int, list[list[np.ndarray | None]]] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)


def fold_block(
    carry: Carry | None,
    blocks: Sequence[np.ndarray | None],
    batch_ids: np.ndarray,
    totals: np.ndarray,
    head_ids: Sequence[int],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> Carry:
    """Add one row block to a chain: finish every batch whose last row it holds, keep the
    rows of the open batch (so a chain holds one block and at most two batches' rows).

    ``totals`` are the rows of every batch; ``head_ids`` the batches that began before the
    chain's first block.
    """
    carry = carry if carry is not None else Carry()
    involved = sorted(set(own) | {i for p in pairs for i in p})
    used = batch_ids >= 0
    bad = MinibatchSums(nonfinite={i: count_nonfinite(blocks[i][used]) for i in involved})  # type: ignore[index]
    carry.sums = merge_sums(carry.sums, bad)
    heads = set(head_ids)
    for b in np.unique(batch_ids[used]).tolist():
        sel = batch_ids == b
        rows = [None if blk is None else blk[sel] for blk in blocks]
        target = carry.head if b in heads else carry.tail
        target.setdefault(b, []).append(rows)
        carry.count[b] = carry.count.get(b, 0) + int(sel.sum())
        if b not in heads and carry.count[b] == totals[b]:
            got = _joined(target.pop(b))
            del carry.count[b]
            carry.sums = merge_sums(
                carry.sums, batch_sums(got, own, pairs, kernel, sigma2, backend)
            )
    return carry


def _joined(parts: Sequence[Sequence[np.ndarray | None]]) -> list[np.ndarray | None]:
    return [
        None if parts[0][i] is None else np.concatenate([p[i] for p in parts])  # type: ignore[misc]
        for i in range(len(parts[0]))
    ]


def merge_chains(
    carries: Sequence[Carry],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> MinibatchSums:
    """The sums of chains in row order, finishing the batches that straddle two chains."""
    total = MinibatchSums()
    open_: dict[int, list[list[np.ndarray | None]]] = {}
    for c in carries:
        total = merge_sums(total, c.sums)
        for part in (c.head, c.tail):
            for b, pieces in part.items():
                open_.setdefault(b, []).extend(pieces)
    for b in sorted(open_):
        got = _joined(open_[b])
        total = merge_sums(total, batch_sums(got, own, pairs, kernel, sigma2, backend))
    return total
