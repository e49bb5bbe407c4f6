"""Streamed statistics of minibatch CKA (Nguyen, Raghu & Kornblith 2021).

CKA = mean_b HSIC₁(K_b, L_b) / √(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b)) over
batches b of ``batch_size`` rows. A partial state (:class:`MinibatchSums`) holds the sums
of those per-batch HSIC values and the number of batches; states merge by addition.

Batches are consecutive blocks of rows (in stored order, after any row filter), or a
random partition drawn from a seed; a last batch with fewer than 4 rows is left out.
A batch whose rows lie in one row block is finished by that block's task; the rows of a
batch spread over several blocks travel as small *pieces* to one task per such batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reprstore.stats.hsic import MIN_ROWS_UNBIASED, GramSummary, gram_terms, hsic1, summarize_gram
from reprstore.stats.kernels import rbf_from_sq_distances
from reprstore.stats.linear import NUMPY, Backend, block_shift, count_nonfinite, shifted

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
    """

    n_batches: int = 0
    n_rows: int = 0
    own: dict[int, float] = field(default_factory=dict)
    pairs: dict[tuple[int, int], float] = field(default_factory=dict)
    nonfinite: dict[int, int] = field(default_factory=dict)
    spread: dict[int, float] = field(default_factory=dict)
    scale: dict[int, float] = field(default_factory=dict)


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
    )


def assign_batches(n: int, batch_size: int, shuffle: int | None = None) -> np.ndarray:
    """Batch number of each of ``n`` rows, −1 for rows left out.

    Parameters
    ----------
    n : int
        Rows (after any filter), in stored order.
    batch_size : int
    shuffle : int or None
        ``None``: consecutive blocks of ``batch_size`` rows. An int: a random partition
        drawn with ``numpy.random.default_rng(shuffle)`` (reproducible).

    Returns
    -------
    ndarray of int64, shape (n,)
        A last batch of fewer than 4 rows is marked −1.
    """
    if batch_size < MIN_ROWS_UNBIASED:
        raise ValueError(f"batch_size must be at least {MIN_ROWS_UNBIASED}, got {batch_size}")
    slot = np.arange(n, dtype=np.int64)
    ids = slot // batch_size
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(n)
        ids = np.empty(n, dtype=np.int64)
        ids[order] = slot // batch_size
    last = n // batch_size
    if n - last * batch_size < MIN_ROWS_UNBIASED:
        ids[ids == last] = -1
    return ids


def batch_gram(
    x: np.ndarray, kernel: str, sigma2: float | None, backend: Backend = NUMPY
) -> GramSummary:
    """Zero-diagonal kernel of one batch ``x`` (B, p), summarized for HSIC₁."""
    xs = shifted(x, block_shift(x))
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
        g = rbf_from_sq_distances(g, sigma2)
    return summarize_gram(g)


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
    grams = {i: batch_gram(rows[i], kernel, sigma2[i], backend) for i in needed}  # type: ignore[arg-type]
    n = grams[needed[0]].n
    return MinibatchSums(
        n_batches=1,
        n_rows=n,
        own={i: hsic1(gram_terms(grams[i], grams[i])) for i in own},
        pairs={(i, j): hsic1(gram_terms(grams[i], grams[j])) for i, j in pairs},
        spread={i: _sum_squares(shifted(rows[i], block_shift(rows[i]))) for i in own},  # type: ignore[arg-type]
        scale={i: _sum_squares(rows[i]) for i in own},  # type: ignore[arg-type]
    )


def _sum_squares(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.vdot(x, x))


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
