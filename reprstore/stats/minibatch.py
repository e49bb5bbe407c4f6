"""Streamed statistics of minibatch CKA (Nguyen, Raghu & Kornblith 2021).

CKA = mean_b HSIC₁(K_b, L_b) / √(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b)) over
batches b of ``batch_size`` rows. A partial state (:class:`MinibatchSums`) holds the sums
of those per-batch HSIC values and the number of batches; states merge by addition.

With n rows and ``batch_size`` B there are k = max(1, ⌊n/B⌋) batches of near-equal size
(⌊n/k⌋ or ⌈n/k⌉ rows, so every row is used and no batch is tiny): consecutive rows in
stored order (after any row filter), or a random partition drawn from a seed. Every
batch counts with equal weight. Each batch is shifted by its mean before its kernel is
formed; RBF kernels are formed as K − 1 = expm1(−d/2σ²) and doubly centred before the
HSIC terms (HSIC₁ is exactly invariant to both), so that wide bandwidths lose no
precision. The batches a task finishes are added up together, every representation's
kernel formed once per batch and every pair's terms taken at once
(:mod:`reprstore.stats.batch_kernels`).
A batch whose rows lie in one row block is finished by that block's task; the rows of a
batch spread over several blocks travel as small *pieces* to one task per such batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from reprstore.stats.batch_kernels import BatchAccumulator, add_batches, nonfinite_rows
from reprstore.stats.batch_kernels import batch_gram as batch_gram  # re-exported
from reprstore.stats.hsic import MIN_ROWS_UNBIASED
from reprstore.stats.linear import NUMPY, Backend

Pieces = dict[int, list[np.ndarray | None]]

_K = TypeVar("_K")
_V = TypeVar("_V", int, float)


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

    def add(x: dict[_K, _V], y: dict[_K, _V]) -> dict[_K, _V]:
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


_SUM_FIELDS = ("own", "pairs", "nonfinite", "spread", "scale", "own_scale")


def sums_to_arrays(sums: MinibatchSums) -> dict[str, np.ndarray]:
    """The sums as plain arrays (a checkpoint: float64 kept exactly, no pickle)."""
    out = {"counts": np.array([sums.n_batches, sums.n_rows], dtype=np.int64)}
    for name in _SUM_FIELDS:
        part: dict[Any, float] = getattr(sums, name)
        keys = list(part)
        width = 2 if name == "pairs" else 1
        out[f"{name}.keys"] = np.array(keys, dtype=np.int64).reshape(len(keys), width)
        dtype = np.int64 if name == "nonfinite" else np.float64
        out[f"{name}.values"] = np.array([part[k] for k in keys], dtype=dtype)
    return out


def sums_from_arrays(arrays: dict[str, np.ndarray]) -> MinibatchSums:
    """:func:`sums_to_arrays` backwards."""
    n_batches, n_rows = (int(v) for v in arrays["counts"])
    parts: dict[str, dict[Any, Any]] = {}
    for name in _SUM_FIELDS:
        keys, values = arrays[f"{name}.keys"], arrays[f"{name}.values"]
        if len(keys) != len(values):
            raise ValueError(f"{name}: {len(keys)} keys for {len(values)} values")
        cast = int if name == "nonfinite" else float
        parts[name] = {
            (tuple(int(x) for x in k) if k.size > 1 else int(k[0])): cast(v)
            for k, v in zip(keys, values, strict=True)
        }
    return MinibatchSums(n_batches=n_batches, n_rows=n_rows, **parts)


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """Sizes of the k = max(1, ⌊n/B⌋) near-equal batches of ``n`` rows (⌈n/k⌉ first)."""
    k = max(1, n // batch_size)
    return np.full(k, n // k, dtype=np.int64) + (np.arange(k) < n % k)


@dataclass(frozen=True)
class ConsecutiveBatches:
    """The batch ids :func:`assign_batches` gives ``n`` rows without a shuffle, computed
    for any row range on demand: a pass over consecutive batches then holds no array the
    size of ``n`` (8 bytes a row otherwise, in the graph and the pass's memory)."""

    n: int
    batch_size: int
    #: Only batches [lo, hi) (a segment of a checkpointed pass); the others read −1.
    lo: int = 0
    hi: int | None = None

    @property
    def sizes(self) -> np.ndarray:
        return batch_sizes(self.n, self.batch_size)

    @property
    def first_rows(self) -> np.ndarray:
        first: np.ndarray = np.cumsum(self.sizes) - self.sizes
        return first

    def segment(self, lo: int, hi: int) -> ConsecutiveBatches:
        """The same layout, batches [lo, hi) only."""
        return ConsecutiveBatches(self.n, self.batch_size, lo, hi)

    def row_range(self) -> tuple[int, int]:
        """The rows [start, stop) of batches [lo, hi)."""
        sizes = self.sizes
        hi = len(sizes) if self.hi is None else self.hi
        return int(sizes[: self.lo].sum()), int(sizes[:hi].sum())

    def ids(self, start: int, stop: int) -> np.ndarray:
        """Batch of each row in [start, stop): the first n mod k batches have ⌊n/k⌋ + 1 rows."""
        k = max(1, self.n // self.batch_size)
        q, big = divmod(self.n, k)
        rows = np.arange(start, stop, dtype=np.int64)
        edge = big * (q + 1)  # rows in the larger batches
        ids = np.where(rows < edge, rows // (q + 1), big + (rows - edge) // q)
        if self.lo or self.hi is not None:
            hi = k if self.hi is None else self.hi
            ids[(ids < self.lo) | (ids >= hi)] = -1
        return ids


@dataclass(frozen=True, eq=False)
class BatchRange:
    """Batches [lo, hi) of a pass's batch ids (−1 elsewhere), made for the rows asked.

    A group or segment of a pass over shuffled or filtered batches: every range of one
    pass shares the one ``ids`` array (8 bytes a stored row) instead of holding an array
    the size of n of its own. Slicing rows gives their ids in the range, as a slice of
    the whole array would.
    """

    ids: np.ndarray
    lo: int
    hi: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        part = self.ids[rows]
        out: np.ndarray = np.where((part >= self.lo) & (part < self.hi), part, -1)
        return out

    def used(self) -> np.ndarray:
        """The ids of the rows in the range, in row order."""
        inside: np.ndarray = self.ids[(self.ids >= self.lo) & (self.ids < self.hi)]
        return inside

    def within(self, lo: int, hi: int) -> BatchRange:
        """Batches [lo, hi) of this range."""
        return BatchRange(self.ids, max(lo, self.lo), min(hi, self.hi))


def batch_range(batches: np.ndarray | BatchRange) -> BatchRange:
    """``batches`` as a :class:`BatchRange` (a whole ids array: every batch)."""
    if isinstance(batches, BatchRange):
        return batches
    return BatchRange(batches, 0, np.iinfo(np.int64).max)


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
    slot = ConsecutiveBatches(n, batch_size).ids(0, n)
    if shuffle is None:
        return slot
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(shuffle).permutation(n)] = slot
    return ids


def batches_sums(
    batches: Sequence[Sequence[np.ndarray | None]],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
) -> MinibatchSums:
    """HSIC₁ values of some batches: every representation's own and every pair's, summed.

    Parameters
    ----------
    batches : sequence of batches, each a sequence of ndarray (B, p_i) or None
        Per batch, its rows of every representation (None where not involved).
    own : representation indices whose HSIC₁(K, K) to add.
    pairs : index pairs whose HSIC₁(K, L) to add.
    sigma2 : per representation, the RBF σ² (unused for the linear kernel).
    """
    if not batches:
        return MinibatchSums()
    acc = BatchAccumulator(sorted(set(own) | {i for p in pairs for i in p}))
    add_batches(acc, batches, kernel, sigma2, backend)
    at = {i: a for a, i in enumerate(acc.reprs)}
    return MinibatchSums(
        n_batches=acc.n_batches,
        n_rows=acc.n_rows,
        own={i: float(acc.hsic[at[i], at[i]]) for i in own},
        pairs={(i, j): float(acc.hsic[at[i], at[j]]) for i, j in pairs},
        spread={i: float(acc.spread[at[i]]) for i in own},
        scale={i: float(acc.n_batches) for i in own},
        own_scale={i: float(acc.own_scale[at[i]]) for i in own},
    )


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
    total.nonfinite = {i: nonfinite_rows(blocks[i], used) for i in involved}  # type: ignore[arg-type]
    whole_set = set(whole.tolist())
    pieces: Pieces = {}
    done = []
    for b in np.unique(batch_ids[batch_ids >= 0]).tolist():
        sel = batch_ids == b
        rows = _rows_of(blocks, sel)
        if b in whole_set:
            done.append(rows)
        else:
            pieces[b] = [None if r is None else r.copy() for r in rows]
    total = merge_sums(total, batches_sums(done, own, pairs, kernel, sigma2, backend))
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
    done = [_joined([p[b] for p in parts if b in p]) for b in batches]
    return batches_sums(done, own, pairs, kernel, sigma2, backend)


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
    bad = MinibatchSums(nonfinite={i: nonfinite_rows(blocks[i], used) for i in involved})  # type: ignore[arg-type]
    carry.sums = merge_sums(carry.sums, bad)
    heads = set(head_ids)
    done = []
    for b in np.unique(batch_ids[used]).tolist():
        sel = batch_ids == b
        rows = _rows_of(blocks, sel)
        count = carry.count.pop(b, 0) + int(sel.sum())
        if b not in heads and count == totals[b] and b not in carry.tail:
            done.append(rows)  # wholly in this block: views of it, used now
            continue
        target = carry.head if b in heads else carry.tail
        target.setdefault(b, []).append([None if r is None else r.copy() for r in rows])
        if b not in heads and count == totals[b]:
            done.append(_joined(target.pop(b)))
        else:
            carry.count[b] = count
    carry.sums = merge_sums(carry.sums, batches_sums(done, own, pairs, kernel, sigma2, backend))
    return carry


def _rows_of(blocks: Sequence[np.ndarray | None], sel: np.ndarray) -> list[np.ndarray | None]:
    """The rows ``sel`` (bool, r) of every block: views where they are consecutive (copy
    what is kept beyond the task, so that a small piece does not hold its whole block)."""
    at = np.flatnonzero(sel)
    take: slice | np.ndarray = at
    if at.size and at[-1] - at[0] + 1 == at.size:
        take = slice(int(at[0]), int(at[-1]) + 1)
    return [None if blk is None else blk[take] for blk in blocks]


def _joined(parts: Sequence[Sequence[np.ndarray | None]]) -> list[np.ndarray | None]:
    return [
        None if parts[0][i] is None else np.concatenate([p[i] for p in parts])
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
    done = [_joined(open_[b]) for b in sorted(open_)]
    return merge_sums(total, batches_sums(done, own, pairs, kernel, sigma2, backend))
