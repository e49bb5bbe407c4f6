"""The dask graphs that feed :mod:`reprstore.stats`' accumulators: one pass over row blocks.

Every involved representation is a dask array with the same row chunks (a chunk is a
*row block*) and one column chunk. A pass is a graph with, per row block, one task that
receives that block of every involved array (each block is a node of the input graph,
so it is read once however many pairs use it). Blocks holding no selected row are not
read at all.

* linear statistics: the block tasks form a few *chains* (one per scheduler thread while
  the states are small); each task adds its block to its chain's state in place, so a
  pass holds one state per chain, never one per block. The chains' states are then
  merged (``split_every`` at a time).
* minibatch sums (a few floats per batch): each block task returns its partial sums,
  merged by a tree of merges (``split_every`` at a time) to one state.

The per-representation shift of the linear statistics is the mean of the first block
holding a selected row, taken by a task that reads that block and hands it on.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar, cast

import dask
import dask.array as da
import dask.local
import dask.system
import dask.threaded
import numpy as np
from dask.base import compute as _untyped_compute
from dask.base import get_scheduler as _untyped_get_scheduler
from dask.callbacks import Callback
from dask.delayed import Delayed
from dask.delayed import delayed as _untyped_delayed

from reprstore.stats import attention, counts, linear, minibatch
from reprstore.stats.linear import NUMPY, Backend
from reprstore.stats.views import RAW, apply_view

#: A minibatch pass's batch ids: an array (−1 for rows left out), a range of batches over
#: one (:class:`~reprstore.stats.minibatch.BatchRange`) or consecutive batches.
BatchIds = np.ndarray | minibatch.BatchRange | minibatch.ConsecutiveBatches

T = TypeVar("T")

# dask's scheduling functions carry no annotations (under --strict a call to one from
# typed code is an error): this module and the rest of reprstore.engine call them
# through these names, the boundary between the typed code and dask's untyped API.
#: ``dask.delayed``
dask_delayed: Callable[..., Any] = _untyped_delayed
#: ``dask.compute``
dask_compute: Callable[..., Any] = _untyped_compute
#: ``dask.base.get_scheduler``
dask_get_scheduler: Callable[..., Any] = _untyped_get_scheduler
#: ``dask.array.from_array``
dask_from_array: Callable[..., da.Array] = da.from_array
#: ``dask.array.rechunk`` (what ``Array.rechunk`` calls)
dask_rechunk: Callable[..., da.Array] = da.rechunk
#: dask's synchronous scheduler, as a callable (by name, dask would import distributed to
#: look for a client).
sync_scheduler: Callable[..., Any] = dask.local.get_sync


def is_dask_array(x: Any) -> TypeGuard[da.Array]:
    """Whether ``x`` is a dask array (the engine's other modules never import dask)."""
    return isinstance(x, da.Array)


DEFAULT_SPLIT_EVERY = 8


def row_blocks(arrays: Sequence[da.Array]) -> tuple[list[list[Delayed]], tuple[int, ...]]:
    """The row blocks of arrays sharing one row chunking, as delayed nodes.

    Parameters
    ----------
    arrays : sequence of dask arrays, each (n, p_i)
        Same row chunks; any column chunking (it is merged to one chunk).

    Returns
    -------
    (blocks, chunks)
        ``blocks[i][k]`` is block k of array i; ``chunks`` the row counts of the blocks.
    """
    chunks = arrays[0].chunks[0]
    out = []
    for a in arrays:
        if a.chunks[0] != chunks:
            raise ValueError("all arrays of one pass must share their row chunks")
        if len(a.chunks[1]) != 1:
            a = one_column_chunk(a)
        nodes: Any = cast(Any, a).to_delayed()  # dask's Array.to_delayed is unannotated
        out.append(list(nodes.ravel()))
    return out, chunks


def one_column_chunk(a: da.Array) -> da.Array:
    """``a.rechunk({1: -1})``: ``a`` with its columns in one chunk (dask's ``rechunk`` is
    unannotated)."""
    out: da.Array = cast(Any, a).rechunk({1: -1})
    return out


def _reduce_all(merge: Callable[[T, T], T], parts: list[T]) -> T:
    return functools.reduce(merge, parts)


def tree_reduce(parts: list[Any], merge: Callable[[T, T], T], split_every: int) -> Delayed:
    """Merge delayed partial states ``split_every`` at a time down to one."""
    if not parts:
        raise ValueError("nothing to reduce: no row block holds a selected row")
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}")
    while len(parts) > 1:
        parts = [
            dask_delayed(_reduce_all)(merge, parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    out = parts[0]
    return out if isinstance(out, Delayed) else dask_delayed(out)


def _select(block: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return block if rows is None else block[rows]


def _mask_slices(mask: np.ndarray | None, chunks: Sequence[int]) -> list[np.ndarray | None]:
    if mask is None:
        return [None] * len(chunks)
    bounds = np.cumsum((0, *chunks))
    return [mask[bounds[k] : bounds[k + 1]] for k in range(len(chunks))]


def _any(rows: np.ndarray | None) -> bool:
    return rows is None or bool(rows.any())


def live_block_indices(chunks: Sequence[int], mask: np.ndarray | None) -> list[int]:
    """Indices of the row blocks holding a selected row (the blocks a pass reads)."""
    rows = _mask_slices(mask, chunks)
    return [k for k in range(len(chunks)) if chunks[k] and _any(rows[k])]


class BlockReader:
    """One row block of a dask array, computed when called, inside the task that uses it.

    To ``dask.delayed`` this is a plain object, not a dependency: a chain's step reads its
    own block when its turn comes, so no scheduler thread reads blocks ahead that no chain
    can take yet (dask's local scheduler otherwise runs ready block reads on any idle
    thread, and memory grows with the number of blocks). The block's own graph runs
    synchronously; for ``from_array`` inputs (zarr, numpy) that is one slicing read.

    It holds the whole array and the block's number, and slices the block when called: the
    readers of one array share it, so a pass's graph holds no dask array per block (at a
    million rows those were 2.5 MiB of a minibatch pass's graph and most of its growth).

    Given the array's ``source`` (what the dask array was made from: a checked stored
    array, numpy, zarr, h5py; :attr:`PassContext.sources`), the block's rows are sliced
    from it directly: the same rows as the dask block, without a dask graph per read
    (5.1 ms against 3.3 ms for a 2,048 × 768 float16 chunk).
    """

    def __init__(self, array: da.Array, k: int, source: Any = None) -> None:
        self.array = array
        self.k = k
        self.source = source

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(state["source"], np.ndarray):  # to a worker: its rows once, not twice
            state["source"] = None  # (the dask array carries them; it reads them there)
        return state

    def __call__(self) -> np.ndarray:
        if self.source is not None:
            chunks = self.array.chunks[0]
            lo = sum(chunks[: self.k])
            return np.asarray(self.source[lo : lo + chunks[self.k]])
        (out,) = dask_compute(self.array.blocks[self.k], scheduler=dask.local.get_sync)
        return np.asarray(out)


def source_of(sources: Sequence[Any] | None, i: int) -> Any:
    """Input ``i``'s source for :class:`BlockReader` (``None``: read through dask)."""
    return sources[i] if sources is not None else None


class ViewReader:
    """A row view (:mod:`reprstore.stats.views`) of the block a :class:`BlockReader` reads."""

    def __init__(self, source: BlockReader, view: str) -> None:
        self.source = source
        self.view = view


def _read(
    readers: Sequence[BlockReader | ViewReader | None], rows: np.ndarray | None
) -> list[np.ndarray | None]:
    """Each stream's block; a stored block serving several views is read once."""
    raw: dict[int, np.ndarray] = {}

    def source(r: BlockReader) -> np.ndarray:
        if id(r) not in raw:
            raw[id(r)] = _select(r(), rows)
        return raw[id(r)]

    out: list[np.ndarray | None] = []
    for r in readers:
        if r is None:
            out.append(None)
        elif isinstance(r, ViewReader):
            out.append(apply_view(source(r.source), r.view))
        else:
            out.append(source(r))
    return out


def _first_offsets(
    readers: Sequence[BlockReader | ViewReader | None],
    rows: np.ndarray | None,
    shifts: Sequence[Any],
) -> tuple[list[np.ndarray | None], list[Any]]:
    """The first block of a pass whose offsets are not known yet: the block and the offsets
    (given ones kept, the others taken from the block)."""
    blocks = _read(readers, rows)
    known = [
        s if s is not None or b is None else linear.block_offset(b)
        for s, b in zip(shifts, blocks, strict=True)
    ]
    return blocks, known


def _linear_first(
    blocks: Sequence[np.ndarray | None],
    shifts: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    backend: Backend,
    threads: int,
) -> linear.LinearState:
    """The statistics of the first block, already read by :func:`_first_offsets`."""
    return linear.accumulate(None, blocks, shifts, pairs, own, backend, threads=threads)


def _linear_step(
    state: linear.LinearState | None,
    readers: Sequence[BlockReader | ViewReader | None],
    rows: np.ndarray | None,
    shifts: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    own: Sequence[int],
    backend: Backend,
    threads: int,
) -> linear.LinearState:
    blocks = _read(readers, rows)
    out = linear.accumulate(state, blocks, shifts, pairs, own, backend, threads=threads)
    del blocks
    trim_heap()
    return out


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


#: Allocations from this size on are mapped and unmapped by glibc on their own.
MMAP_THRESHOLD = 4 * 1024**2


@functools.cache
def fixed_mmap_threshold() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for the process.

    glibc raises the threshold after each large block is freed (up to 32 MiB), so that
    the next kernel tiles of the sample route come from the heap, and the freed ones stay
    resident in each thread's arena: RSS grew by several tiles beyond the plan. A fixed
    threshold gives every tile back when it is freed. Does nothing off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return


#: Seconds between two heap trims (a trim makes the next blocks' buffers fault in anew).
TRIM_INTERVAL_S = 2.0
_last_trim = [0.0]


def trim_heap(interval: float = TRIM_INTERVAL_S) -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``), at most
    once every ``interval`` seconds.

    The blocks of a long pass are allocated and freed by several threads (the chains and
    zarr's I/O thread), and glibc's per-thread heaps otherwise keep the freed space in
    pieces: resident memory crept up with the number of blocks. dask.distributed trims
    its workers' heaps the same way. Does nothing off glibc.
    """
    now = time.monotonic()
    trim = _malloc_trim()
    if trim is None or now - _last_trim[0] < interval:
        return
    _last_trim[0] = now
    trim(0)


def linear_pass(
    arrays: Sequence[da.Array],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    *,
    mask: np.ndarray | None = None,
    shifts: Sequence[Any] | None = None,
    backend: Backend = NUMPY,
    split_every: int = DEFAULT_SPLIT_EVERY,
    chains: int = 1,
    threads: int = 1,
    views: Sequence[tuple[int, str]] | None = None,
    blocks: Sequence[int] | None = None,
    start: linear.LinearState | None = None,
    inputs: Sequence[Any] | None = None,
) -> tuple[Delayed, list[Any]]:
    """Graph of one pass of linear statistics (own statistics of ``own``, cross of ``pairs``).

    With ``views``, the statistics are of *streams*: stream s is array ``views[s][0]`` seen
    through the row view ``views[s][1]``; ``own``, ``pairs`` and ``shifts`` then index
    streams, and each stored block is still read once per pass.

    The row blocks are dealt round-robin to ``chains`` chains; each chain folds its blocks
    into one state, in place, block after block, reading each block itself when its turn
    comes (:class:`BlockReader`), so that a pass holds ``chains`` states and about as many
    blocks whatever the number of blocks. The chains' states are then merged
    ``split_every`` at a time. Unknown shifts are taken from the first live block by a
    task that hands that block on to the first chain (so it is read once); every chain
    waits for that task only, not for the first block's products.

    Parameters
    ----------
    arrays : sequence of dask arrays, each (n, p_i), same row chunks
    own : indices of the arrays whose :class:`~reprstore.stats.linear.ReprMoments` to make
    pairs : index pairs whose :class:`~reprstore.stats.linear.PairMoments` to make
    mask : bool ndarray (n,) or None
        Rows to use.
    shifts : per array (stream), a known offset (Offset or shift ndarray) or None to
        derive it here from the first block.
    chains : int
        Blocks processed at once (run it with as many scheduler threads).
    threads : int
        Threads sharing the products of one block (see
        :func:`~reprstore.stats.linear.accumulate`); for a few large states.
    blocks : indices of the row blocks to read (default: every block holding a row); a
        segment of a checkpointed pass (:mod:`reprstore.engine.checkpoints`).
    start : a state to fold this pass's blocks into (the first chain's, in place), with
        every shift known; the state of the segments before.
    inputs : per array, what it was made from (:attr:`PassContext.sources`), read directly
        by its blocks' readers; ``None`` (or a ``None`` entry): through dask.

    Returns
    -------
    (Delayed, list)
        The delayed ``(dict of ReprMoments, dict of PairMoments)`` and the shifts used
        (pass them to later passes over the same arrays so that states stay compatible).
    """
    chunks = arrays[0].chunks[0]
    if any(a.chunks[0] != chunks for a in arrays):
        raise ValueError("all arrays of one pass must share their row chunks")
    rows = _mask_slices(mask, chunks)
    live = live_block_indices(chunks, mask)
    if blocks is not None:
        chosen = set(blocks)
        live = [k for k in live if k in chosen]
    if not live:
        raise ValueError("no row is selected")
    streams = list(views) if views is not None else [(i, RAW) for i in range(len(arrays))]
    involved = set(own) | {i for p in pairs for i in p}
    sources = {streams[s][0] for s in involved}
    whole = [one_column_chunk(a) if i in sources else a for i, a in enumerate(arrays)]

    def readers(k: int) -> list[BlockReader | ViewReader | None]:
        read = {i: BlockReader(whole[i], k, source_of(inputs, i)) for i in sorted(sources)}
        return [
            None if s not in involved else read[src] if view == RAW else ViewReader(read[src], view)
            for s, (src, view) in enumerate(streams)
        ]

    known: list[Any] = list(shifts) if shifts is not None else [None] * len(streams)
    args = (list(pairs), list(own), backend, threads)
    n_chains = max(1, min(chains, len(live)))
    heads: list[Any] = [None] * n_chains
    todo = list(live)
    rotate = 0
    if start is not None:
        if any(known[i] is None for i in involved):
            raise ValueError("a pass that starts from a state needs every shift known")
        heads[0] = dask_delayed(start, traverse=False, name=f"linear-start-{uuid.uuid4().hex}")
        shift_arg: Any = known
    elif any(known[i] is None for i in involved):
        first, found = dask_delayed(_first_offsets, nout=2)(readers(live[0]), rows[live[0]], known)
        heads[0], todo = dask_delayed(_linear_first)(first, found, *args), live[1:]
        shift_arg = found
        known = [found[i] for i in range(len(streams))]
        rotate = 1  # the first chain has read the first block already
    else:
        shift_arg = known
    parts: list[Any] = []
    for c in range(n_chains):
        state = heads[c]
        for k in todo[(c - rotate) % n_chains :: n_chains]:
            state = dask_delayed(_linear_step)(state, readers(k), rows[k], shift_arg, *args)
        if state is not None:
            parts.append(state)
    return tree_reduce(parts, linear.merge_into, split_every), known


def minibatch_pass(
    arrays: Sequence[da.Array],
    batch_ids: BatchIds,
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    *,
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend = NUMPY,
    split_every: int = DEFAULT_SPLIT_EVERY,
    chains: int | None = None,
    inputs: Sequence[Any] | None = None,
) -> Delayed:
    """Graph of one minibatch pass: the delayed :class:`~reprstore.stats.minibatch.MinibatchSums`.

    Consecutive batches (ids non-decreasing in row order) are folded by ``chains`` chains
    of contiguous blocks, each reading its own blocks in turn and holding one block and at
    most two batches' rows (:func:`~reprstore.stats.minibatch.fold_block`); the batches
    that straddle two chains are finished when the chains are merged. Random batches
    (a shuffle) are finished from pieces sent by every block that holds some of their rows.

    Parameters
    ----------
    arrays : sequence of dask arrays, each (n, p_i), same row chunks
    batch_ids : int ndarray (n,) or ConsecutiveBatches
        Batch of every stored row; −1 for rows this pass does not use. Consecutive batches
        of every row are best given as :class:`~reprstore.stats.minibatch.ConsecutiveBatches`
        (no array the size of n).
    chains : int, optional
        Chains for consecutive batches (default: the scheduler's threads).
    inputs : per array, what it was made from, read directly (see :func:`linear_pass`).
    """
    chunks = arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    first: np.ndarray | None
    if isinstance(batch_ids, minibatch.ConsecutiveBatches):
        totals, first = batch_ids.sizes, batch_ids.first_rows
    else:
        totals, first = _batch_layout(batch_ids, bounds)
    if first is not None:
        return _minibatch_chains(
            arrays, batch_ids, totals, first, own, pairs, kernel, sigma2, backend,
            chains or scheduler_threads(None), inputs,
        )  # fmt: skip
    assert not isinstance(batch_ids, minibatch.ConsecutiveBatches)  # it has its first rows
    extra = (list(own), list(pairs), kernel, list(sigma2), backend)
    return scattered_batches(
        arrays, batch_ids, totals, _involved(own, pairs), minibatch.block_minibatch,
        _finish_minibatch, minibatch.merge_sums, extra, split_every,
    )  # fmt: skip


def _involved(own: Sequence[int], pairs: Sequence[tuple[int, int]]) -> set[int]:
    return set(own) | {i for p in pairs for i in p}


def _finish_minibatch(from_blocks: Sequence[Any], b: int, *extra: Any) -> Any:
    return minibatch.finish_batches(from_blocks, [b], *extra)


def scattered_batches(
    arrays: Sequence[da.Array],
    batch_ids: np.ndarray | minibatch.BatchRange,
    totals: np.ndarray,
    involved: set[int],
    block: Callable[..., tuple[Any, Any]],
    finish: Callable[..., Any],
    merge: Callable[[Any, Any], Any],
    extra: tuple[Any, ...],
    split_every: int,
) -> Delayed:
    """Graph of a pass over batches in any row order (a shuffle).

    Each row block's task, ``block(blocks, ids, whole, *extra)``, returns the result of the
    batches wholly inside it and the pieces (rows by batch) of the others; each such batch
    is finished from its pieces by ``finish(pieces, b, *extra)``; all results are merged by
    ``merge``. ``totals`` is the number of rows of every batch.
    """
    blocks, chunks = row_blocks(arrays)
    bounds = np.cumsum((0, *chunks))
    parts: list[Any] = []
    pieces: dict[int, list[Any]] = {}
    for k in range(len(chunks)):
        ids = batch_ids[bounds[k] : bounds[k + 1]]
        present = np.unique(ids[ids >= 0])
        if present.size == 0:
            continue
        local = np.bincount(ids[ids >= 0], minlength=totals.size)[present]
        whole = present[local == totals[present]]
        part, piece = dask_delayed(block, nout=2)(
            [blocks[i][k] if i in involved else None for i in range(len(arrays))],
            ids, whole, *extra,
        )  # fmt: skip
        parts.append(part)
        for b in np.setdiff1d(present, whole).tolist():
            pieces.setdefault(b, []).append(piece)
    for b, got in pieces.items():
        parts.append(dask_delayed(finish)(got, b, *extra))
    return tree_reduce(parts, merge, split_every)


def _batch_layout(
    batch_ids: np.ndarray | minibatch.BatchRange, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of every batch, and the first row of every batch if the batches are consecutive
    (ids non-decreasing in row order; else None), one row block at a time (no temporary
    the size of ``batch_ids``: the pass's memory stays flat in N)."""
    totals = np.zeros(0, dtype=np.int64)
    starts: list[tuple[np.ndarray, np.ndarray]] | None = []  # (batch ids, their first rows)
    last = -1
    for k in range(len(bounds) - 1):
        ids = batch_ids[bounds[k] : bounds[k + 1]]
        at = np.flatnonzero(ids >= 0)
        if not at.size:
            continue
        used = ids[at]
        top = int(used.max()) + 1
        if top > totals.size:
            totals = np.concatenate([totals, np.zeros(top - totals.size, dtype=np.int64)])
        totals += np.bincount(used, minlength=totals.size)
        if starts is not None and (used[0] < last or (np.diff(used) < 0).any()):
            starts = None
        if starts is not None:
            new = np.flatnonzero(np.diff(used, prepend=last))  # where a batch begins
            starts.append((used[new], bounds[k] + at[new]))
            last = int(used[-1])
    if totals.size == 0:
        raise ValueError("no batch to compute")
    if starts is None:
        return totals, None
    first = np.full(totals.size, -1, dtype=np.int64)
    for ids, rows in starts:
        first[ids] = rows
    return totals, first


@dataclass(frozen=True)
class BlockIds:
    """The batch ids of rows [start, stop) of a consecutive layout, made inside the task
    that uses them (the graph holds three numbers, not the ids)."""

    layout: minibatch.ConsecutiveBatches
    start: int
    stop: int

    def __call__(self) -> np.ndarray:
        return self.layout.ids(self.start, self.stop)


def _block_ids(
    batch_ids: BatchIds,
    start: int,
    stop: int,
) -> np.ndarray | BlockIds:
    if isinstance(batch_ids, minibatch.ConsecutiveBatches):
        return BlockIds(batch_ids, start, stop)
    return batch_ids[start:stop]


def _chain_parts(
    batch_ids: BatchIds,
    bounds: np.ndarray,
    chains: int,
) -> list[tuple[BatchIds, list[int]]]:
    """The chains of a pass over consecutive batches: (their batch layout, their blocks).

    Consecutive batches of every row are split into chains of equal *batches*: a chain may
    begin inside a block that the chain before it ends in (the block is read once and
    handed to both), so that 5 blocks on 2 threads cost 2.5 blocks each rather than 3.
    Other consecutive layouts (a row filter) are split into chains of whole blocks.
    """
    blocks = range(len(bounds) - 1)
    if isinstance(batch_ids, minibatch.ConsecutiveBatches):
        b_lo = batch_ids.lo
        b_hi = len(batch_ids.sizes) if batch_ids.hi is None else batch_ids.hi
        n_chains = max(1, min(chains, b_hi - b_lo))
        parts: list[tuple[BatchIds, list[int]]] = []
        for c in range(n_chains):
            sub = batch_ids.segment(b_lo + c * (b_hi - b_lo) // n_chains,
                                    b_lo + (c + 1) * (b_hi - b_lo) // n_chains)  # fmt: skip
            lo, hi = sub.row_range()
            parts.append((sub, [k for k in blocks if bounds[k] < hi and bounds[k + 1] > lo]))
        return parts
    live = [k for k in blocks if (batch_ids[bounds[k] : bounds[k + 1]] >= 0).any()]
    n_chains = max(1, min(chains, len(live)))
    return [
        (batch_ids, live[c * len(live) // n_chains : (c + 1) * len(live) // n_chains])
        for c in range(n_chains)
    ]


def chain_tasks(
    batch_ids: BatchIds,
    bounds: np.ndarray,
    chains: int,
) -> int:
    """Block tasks of a minibatch pass over ``batch_ids`` in ``chains`` chains (for
    progress): the live blocks, those two chains share counted for each."""
    return sum(len(blocks) for _, blocks in _chain_parts(batch_ids, bounds, chains))


def _minibatch_chains(
    arrays: Sequence[da.Array],
    batch_ids: BatchIds,
    totals: np.ndarray,
    first: np.ndarray,
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend,
    chains: int,
    inputs: Sequence[Any] | None = None,
) -> Delayed:
    chunks = arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    involved = set(own) | {i for p in pairs for i in p}
    whole = [one_column_chunk(a) if i in involved else a for i, a in enumerate(arrays)]
    carries = []
    parts = _chain_parts(batch_ids, bounds, chains)
    uses = Counter(k for _, mine in parts for k in mine)
    shared: dict[int, Any] = {}  # a block two chains use: read once, handed to both
    for layout, mine in parts:
        start = bounds[mine[0]]
        carry: Any = None
        for k in mine:
            block_ids = _block_ids(layout, bounds[k], bounds[k + 1])
            ids = block_ids() if isinstance(block_ids, BlockIds) else block_ids
            present = np.unique(ids[ids >= 0])
            heads = [int(b) for b in present if first[b] < start]
            readers: Any = [
                BlockReader(whole[i], k, source_of(inputs, i)) if i in involved else None
                for i in range(len(arrays))
            ]
            if uses[k] > 1:
                if k not in shared:
                    shared[k] = dask_delayed(_read_shared)(readers)
                readers = shared[k]
            carry = dask_delayed(_minibatch_step)(
                carry, readers, block_ids, totals, heads, list(own), list(pairs), kernel,
                list(sigma2), backend,
            )  # fmt: skip
        carries.append(carry)
    merged: Delayed = dask_delayed(minibatch.merge_chains)(
        carries, list(own), list(pairs), kernel, list(sigma2), backend
    )
    return merged


@dataclass(frozen=True)
class SharedBlock:
    """A row block already read (every stream's rows), for the two chains that share it."""

    blocks: list[np.ndarray | None]


def _read_shared(readers: Sequence[BlockReader | None]) -> SharedBlock:
    return SharedBlock(_read(readers, None))


def _minibatch_step(
    carry: minibatch.Carry | None,
    readers: Sequence[BlockReader | None] | SharedBlock,
    batch_ids: np.ndarray | BlockIds,
    totals: np.ndarray,
    heads: Sequence[int],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend,
) -> minibatch.Carry:
    blocks = readers.blocks if isinstance(readers, SharedBlock) else _read(readers, None)
    ids = batch_ids() if isinstance(batch_ids, BlockIds) else batch_ids
    out = minibatch.fold_block(
        carry, blocks, ids, totals, heads, own, pairs, kernel, sigma2, backend
    )
    del blocks
    trim_heap()
    return out


def counts_pass(
    array: da.Array,
    mask: np.ndarray | None,
    tols: Sequence[float],
    codes: np.ndarray | None,
    n_classes: int,
    split_every: int = DEFAULT_SPLIT_EVERY,
) -> Delayed:
    """Delayed :class:`~reprstore.stats.counts.Counts` of the selected rows of ``array``.

    ``codes`` (n,) are the class code of every stored row (−1: no class).
    """
    blocks, chunks = row_blocks([array])
    rows = _mask_slices(mask, chunks)
    bounds = np.cumsum((0, *chunks))
    parts = []
    for k in range(len(chunks)):
        if not chunks[k] or not _any(rows[k]):
            continue
        sel = rows[k]
        code = None if codes is None else codes[bounds[k] : bounds[k + 1]]
        if code is not None and sel is not None:
            code = code[sel]
        block = dask_delayed(_select)(blocks[0][k], sel)
        parts.append(dask_delayed(counts.block_counts)(block, list(tols), code, n_classes))
    return tree_reduce(parts, counts.merge_counts, split_every)


def _attention_block(
    reader: BlockReader, rows: np.ndarray | None, heads: int
) -> attention.EntropySums:
    out = attention.block_entropy(_select(reader(), rows), heads)
    trim_heap()
    return out


def attention_pass(
    array: da.Array, mask: np.ndarray | None, heads: int, split_every: int = DEFAULT_SPLIT_EVERY
) -> Delayed:
    """Delayed :class:`~reprstore.stats.attention.EntropySums` of the selected rows of
    attention maps ``array`` (n, heads·T·T). Each block task reads its own block
    (:class:`BlockReader`: no block is read ahead of the task that uses it) and works
    through it in bounded slabs."""
    chunks = array.chunks[0]
    rows = _mask_slices(mask, chunks)
    whole = one_column_chunk(array)
    parts = [
        dask_delayed(_attention_block)(BlockReader(whole, k), rows[k], heads)
        for k in live_block_indices(chunks, mask)
    ]
    return tree_reduce(parts, attention.merge_entropy, split_every)


def gather_rows(array: da.Array, mask: np.ndarray | None, source: Any = None) -> Delayed:
    """Delayed in-memory copy of the selected rows of ``array`` (n, p) (small data only);
    with the array's ``source``, each block is sliced from it (:class:`BlockReader`)."""
    chunks = array.chunks[0]
    rows = _mask_slices(mask, chunks)
    live = live_block_indices(chunks, mask)
    whole = one_column_chunk(array)
    parts = [dask_delayed(_read_rows)(BlockReader(whole, k, source), rows[k]) for k in live]
    joined: Delayed = dask_delayed(np.concatenate)(parts)
    return joined


def _read_rows(reader: BlockReader, rows: np.ndarray | None) -> np.ndarray:
    return _select(reader(), rows)


def resolve_scheduler(scheduler: Any = None) -> Any:
    """``scheduler``, or for ``None`` the local threaded scheduler when no dask.distributed
    client can be active (``distributed`` not imported and no scheduler configured).

    dask's own default lookup imports ``distributed`` to look for a client, which costs
    a third of a second on the first comparison of a process.
    """
    if (
        scheduler is None
        and dask.config.get("scheduler", None) is None
        and "distributed" not in sys.modules
    ):
        return dask.threaded.get
    return scheduler


def is_local_threaded(scheduler: Any = None) -> bool:
    """Whether ``scheduler`` is dask's local threaded scheduler."""
    return dask_get_scheduler(scheduler=resolve_scheduler(scheduler)) is dask.threaded.get


def is_local(scheduler: Any = None) -> bool:
    """Whether ``scheduler`` runs in this process: dask's local threads or synchronous
    (``None`` from dask: no client is active, an array's default, local threads)."""
    get = dask_get_scheduler(scheduler=resolve_scheduler(scheduler))
    return get is None or get is dask.threaded.get or get is dask.local.get_sync


def scheduler_threads(scheduler: Any = None) -> int:
    """Tasks the scheduler runs at once: local threads, a dask.distributed cluster's
    threads, or 1 (synchronous and unknown schedulers)."""
    get = dask_get_scheduler(scheduler=resolve_scheduler(scheduler))
    if get is dask.threaded.get:
        return max(1, int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT))
    nthreads = getattr(getattr(get, "__self__", None), "nthreads", None)
    if callable(nthreads):  # a distributed Client's bound ``get``
        try:
            total: int = max(1, sum(nthreads().values()))
            return total
        except Exception:  # a client that cannot answer: assume one thread
            return 1
    return 1


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[None]:
    """Limit BLAS to ``limit`` threads (threadpoolctl, if installed); ``None``: as is."""
    if limit is None:
        yield
        return
    controller = _blas_controller()
    if controller is None:  # optional: without it BLAS and dask threads may oversubscribe
        yield
        return
    with controller.limit(limits=limit, user_api="blas"):
        yield


def run_jobs(threads: int, jobs: Sequence[Callable[[], Any]]) -> None:
    """Run ``jobs`` (per-representation or per-pair steps: decompositions, kernel tiles,
    products) on ``threads`` threads, each with single-threaded BLAS when several run."""
    if not jobs:
        return
    with blas_threads(1 if threads > 1 and len(jobs) > 1 else None):
        if threads <= 1 or len(jobs) == 1:
            for job in jobs:
                job()
            return
        with ThreadPoolExecutor(min(threads, len(jobs)), "reprstore-jobs") as pool:
            for f in [pool.submit(job) for job in jobs]:
                f.result()


@functools.cache
def _blas_controller() -> Any:
    """One threadpoolctl controller per process (finding the libraries costs ~10 ms)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def compute(
    *objs: Any, scheduler: Any = None, workers: int | None = None, blas: int | None = None
) -> tuple[Any, ...]:
    """``dask.compute`` sharing the cores between dask threads and BLAS threads.

    Under the local threaded scheduler, ``workers`` (default: all) tasks run at once and
    BLAS gets ``blas`` threads (default: the remaining share of the cores, one thread
    each when all tasks run at once): a pass of ``chains`` chains runs with
    ``workers=chains``, so no thread reads blocks ahead that no chain can take.
    """
    scheduler = resolve_scheduler(scheduler)
    get = dask_get_scheduler(scheduler=scheduler, collections=list(objs))
    out: tuple[Any, ...]
    if get is not dask.threaded.get:
        out = dask_compute(*objs, scheduler=scheduler)
        return out
    cores = scheduler_threads(scheduler)
    workers = max(1, min(workers or cores, cores))
    with blas_threads(blas or max(1, cores // workers)):
        out = dask_compute(*objs, scheduler=scheduler, num_workers=workers)
        return out


_BLOCK_TASKS = ("_linear_step", "_linear_first", "block_minibatch", "_select", "block_counts",
                "_minibatch_step", "_grouped_step", "_block_records",
                "_attention_block")  # fmt: skip


class _BlockCounter(Callback):
    """Counts finished row-block tasks of a local dask scheduler."""

    def __init__(self, on_block: Callable[[], None]) -> None:
        # dask's Callback.__init__ is unannotated
        super().__init__()  # type: ignore[no-untyped-call]
        self.on_block = on_block

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if name.startswith(_BLOCK_TASKS):
            self.on_block()


class Runner:
    """Runs the passes of one comparison and reports progress in row blocks.

    ``total`` is the number of row-block tasks expected over all passes. Under a local
    scheduler progress moves task by task; under dask.distributed, pass by pass.
    """

    def __init__(
        self, scheduler: Any, progress: Callable[[int, int], None] | None, total: int
    ) -> None:
        self.scheduler = scheduler
        self.progress = progress
        self.total = max(total, 1)
        self.done = 0

    def finish(self) -> None:
        """Report every expected task done (some passes skip blocks without their rows)."""
        if self.done < self.total:
            self._tick(self.total - self.done)

    def skip(self, k: int) -> None:
        """Count ``k`` blocks as done without reading them (a resumed pass)."""
        self._tick(k)

    def _tick(self, k: int = 1) -> None:
        self.done += k
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def __call__(
        self, *graphs: Any, blocks: int = 0, workers: int | None = None, blas: int | None = None
    ) -> tuple[Any, ...]:
        if self.progress is None:
            return compute(*graphs, scheduler=self.scheduler, workers=workers, blas=blas)
        start = self.done
        with _BlockCounter(self._tick):
            out = compute(*graphs, scheduler=self.scheduler, workers=workers, blas=blas)
        if self.done == start:  # a distributed scheduler: no per-task callbacks
            self._tick(blocks)
        return out
