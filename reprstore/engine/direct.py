"""The direct linear pass: inputs of a few row blocks read whole, summed without a graph.

For a comparison whose involved arrays span at most :data:`DIRECT_MAX_BLOCKS` row blocks
(a pair of 5,000 × 768 arrays: three), the dask pass costs more around the products than
they take: the graph and its scheduling, reading chunk by chunk, the first block's
offsets computed alone before the chains start, and three blocks dealt 2 + 1 to two
chains. The direct pass instead

1. reads every involved array whole (one read: a zarr array decodes all its chunks at
   once, on zarr's threads; an in-memory array is not copied), then selects the rows;
2. takes each stream's offset (a representation seen through a row view) from the rows
   of its first row block holding a selected row, as the dask pass does
   (:func:`reprstore.stats.linear.block_offset`);
3. accumulates the same statistics (:func:`reprstore.stats.linear.accumulate`) over all
   rows, a row block's worth at a time through the same working buffers, the
   conversions and then the products shared by the threads.

The statistics are the dask pass's sums in another order of additions (equal to rounding;
the measures' steps after the pass are the same). The planner decides
(:func:`reprstore.engine.planner.direct_bytes`, :func:`~reprstore.engine.planner.make_plan`)
and counts the whole arrays in its memory figure; the plan line says ``direct``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from reprstore.engine import dask_graph
from reprstore.stats import linear
from reprstore.stats.fused import WORK_BYTES
from reprstore.stats.linear import LinearState
from reprstore.stats.views import apply_view

#: The direct pass is taken for inputs of at most this many row blocks (and within memory).
DIRECT_MAX_BLOCKS = 4


def read_whole(c: Any, i: int) -> np.ndarray:
    """Array ``i`` of the pass context ``c``, every stored row, in one read: its source
    (numpy, zarr, h5py …) sliced whole, or a dask input computed on local threads."""
    source = c.sources[i] if c.sources is not None else None
    if source is not None:
        return np.asarray(source[:])
    (out,) = dask_graph.compute(c.arrays[i], scheduler=dask_graph.resolve_scheduler(c.scheduler))
    return np.asarray(out)


def first_rows(c: Any) -> slice:
    """The rows of the first row block holding a selected row (where offsets come from)."""
    chunks = c.arrays[0].chunks[0]
    k = dask_graph.live_block_indices(chunks, c.mask)[0]
    start = int(sum(chunks[:k]))
    return slice(start, start + int(chunks[k]))


def direct_linear(
    c: Any,
    streams: Sequence[tuple[int, str]],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
) -> LinearState:
    """The linear statistics of one pass (own of ``own``, cross of ``pairs``; both index
    ``streams``, each an array seen through a row view) from the whole arrays: what
    :func:`reprstore.engine.checkpoints.run_linear` hands back, without a task graph."""
    involved = sorted(set(own) | {s for p in pairs for s in p})
    sources = sorted({streams[s][0] for s in involved})
    threads = max(1, c.threads)
    with dask_graph.blas_threads(1 if threads > 1 else None):
        whole = {i: read_whole(c, i) for i in sources}  # zarr decodes on its own threads
        head = first_rows(c)
        rows = None if c.mask is None else c.mask[head]

        def offset(s: int, found: dict[int, linear.Offset]) -> None:
            i, view = streams[s]
            block = whole[i][head]
            found[s] = linear.block_offset(apply_view(block if rows is None else block[rows], view))

        found: dict[int, linear.Offset] = {}
        dask_graph.run_jobs(threads, [partial(offset, s, found) for s in involved])
        if c.mask is not None:
            for i in sources:
                whole[i] = whole[i][c.mask]
        blocks: list[np.ndarray | None] = [None] * len(streams)
        shifts: list[Any] = [None] * len(streams)
        for s in involved:
            i, view = streams[s]
            blocks[s], shifts[s] = apply_view(whole[i], view), found[s]
        whole.clear()  # the blocks hold what is used
        # working buffers of one row block, reused, and at most fused.WORK_BYTES of them
        # (what the plan counts: stats.plan.in_place_bytes)
        width = sum(int(b.shape[1]) for b in blocks if b is not None)
        step = min(max(c.arrays[0].chunks[0]), max(1, WORK_BYTES // (8 * max(width, 1))))
        return linear.accumulate(None, blocks, shifts, list(pairs), list(own), c.backend,
                                 rows=step, threads=threads)  # fmt: skip
