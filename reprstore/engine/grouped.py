"""The grouped pass: the streamed linear statistics of row streams, one state per row group.

A *stream* is an array seen through a row view (:mod:`reprstore.stats.views`), as in the
engine (:func:`reprstore.engine.passes.run`): ``(array index, view)``. Rows are hashed into G groups
by (seed, sample id) (:func:`~reprstore.stats.resample.group_ids`); one pass accumulates,
per group, the sums of :class:`~reprstore.stats.linear.ReprMoments` of every stream asked
for and the :class:`~reprstore.stats.linear.PairMoments` of every pair of streams asked for.
Every stored block is read once per pass and every view is applied to it once. Leaving
group g out is then ``total − state_g``: exactly the statistics of the other rows.

The states are stacked arrays (G, ...) keyed ``("r", s, field)`` and ``("p", s, t, field)``
(stream indices s, t); :func:`repr_moments` / :func:`pair_moments` read one combination of
them back as the engine's moment objects.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.engine import checkpoints, dask_graph
from reprstore.stats import linear
from reprstore.stats.plan import check_budget, human_bytes
from reprstore.stats.views import RAW, apply_view

if TYPE_CHECKING:
    from reprstore.engine.pass_context import PassContext

Stream = tuple[int, str]
#: Fewer groups than this give too few degrees of freedom for a useful interval.
MIN_GROUPS = 10
Pair = tuple[int, int]
REPR_FIELDS = ("n", "total", "gram", "sqnorm", "sqnorm2", "sqnorm_x", "nonfinite")
PAIR_FIELDS = ("cross", "a_y", "b_x", "ab")
#: A key of the group sums: ``("r", stream, field)`` or ``("p", stream, stream, field)``.
SumKey = tuple[str | int, ...]
#: Group sums by key: stacked (G, ...) or one combination of them (e.g. ``total − state_g``).
Sums = dict[SumKey, np.ndarray]


# ------------------------------------------------------------------------------ plan


def own_bytes(p: int) -> int:
    """Bytes of one group's own sums of a p-feature stream."""
    return 8 * (p * p + 2 * p + 4)


def pair_bytes(p: int, q: int) -> int:
    """Bytes of one group's cross sums of a p- and a q-feature stream."""
    return 8 * (p * q + p + q + 1)


def unit_bytes(features: Sequence[int], own: Sequence[int], cross: Sequence[Pair]) -> int:
    """Bytes of one group's state of the streams ``own`` and stream pairs ``cross``."""
    return sum(own_bytes(features[s]) for s in set(own)) + sum(
        pair_bytes(features[s], features[t]) for s, t in set(cross)
    )


def plan_groups(
    sizes: Sequence[int], asked: int, memory: int, data_bytes: int, fuse: Any,
    replicas: int = 0, finishing: int = 0,
) -> tuple[int, list[list[int]]]:  # fmt: skip
    """Groups G (≤ ``asked``) and passes (lists of unit indices) that fit ``memory``.

    The memory model of an interval (:func:`reprstore.uncertainty.generic.intervals`), in
    its two phases: reading, G states per chain (the chains share ``memory −
    data_bytes``: :func:`grouped_pass`) with the row blocks; then the G states, their
    total and the left-out state of each of the ``replicas − 1`` threads that recompute
    the measures (``replicas`` extra states in all), with ``finishing`` (the measures'
    workspaces on those threads).

    Parameters
    ----------
    sizes : bytes of one group's state of each unit (a pair of arrays, with its sides)
    fuse : callable(list of unit indices) -> bytes of one group's state of them together

    Raises
    ------
    ComparisonError
        Not even ``MIN_GROUPS`` groups of the largest unit fit.
    """
    widest = max(sizes)
    least = min(asked, MIN_GROUPS)

    def fits(state: int, groups: int) -> bool:
        reading = groups * state + data_bytes
        finish = (groups + replicas) * state + finishing
        return max(reading, finish) <= memory

    if not fits(widest, least):
        need = max(least * widest + data_bytes, (least + replicas) * widest + finishing)
        check_budget(
            f"The interval's {least} group states of {human_bytes(widest)} each (with the "
            "row blocks and the recomputations' work)", need, memory,
            "Raise --memory (or use --estimator minibatch).",
        )  # fmt: skip
    groups = least
    while groups < asked and fits(widest, groups + 1):
        groups += 1
    passes: list[list[int]] = []
    for k in range(len(sizes)):
        if passes and fits(fuse([*passes[-1], k]), groups):
            passes[-1].append(k)
        else:
            passes.append([k])
    return groups, passes


# ------------------------------------------------------------------ the grouped pass


def _add_in_place(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """c += aᵀb in place through BLAS (beta = 1): no p × q temporary per group and block."""
    from scipy.linalg.blas import dgemm

    out = dgemm(1.0, b, a, beta=1.0, c=c.T, trans_a=True, overwrite_c=True)  # cᵀ += bᵀa
    if not np.shares_memory(out, c):  # pragma: no cover - BLAS made a copy after all
        c[...] = out.T


def _zeros(features: Sequence[int], own: Sequence[int], cross: Sequence[Pair], g: int) -> Sums:
    """Empty stacked group sums (G, ...); ``np.zeros`` maps its pages lazily, so untouched
    groups take no memory."""
    out: Sums = {}
    for s in own:
        p = features[s]
        shapes = dict(n=(), total=(p,), gram=(p, p), sqnorm=(), sqnorm2=(), sqnorm_x=(p,),
                      nonfinite=())  # fmt: skip
        out.update({("r", s, f): np.zeros((g, *shapes[f])) for f in REPR_FIELDS})
    for s, t in cross:
        p, q = features[s], features[t]
        shapes = dict(cross=(p, q), a_y=(q,), b_x=(p,), ab=())
        out.update({("p", s, t, f): np.zeros((g, *shapes[f])) for f in PAIR_FIELDS})
    return out


def _add_group(
    state: Sums, g: int, sub: dict[int, np.ndarray], offsets: Sequence[Any],
    own: Sequence[int], cross: Sequence[Pair],
) -> None:  # fmt: skip
    """Add group ``g``'s rows of one block (``sub``: stream → rows) to the sums in place
    (the sums of :func:`~reprstore.stats.linear.update_repr` / ``update_pair``)."""
    prep = {s: linear.prepare_block(x, offsets[s]) for s, x in sub.items()}
    for s in own:
        b = prep[s]
        state[("r", s, "n")][g] += b.x.shape[0]
        state[("r", s, "total")][g] += b.x.sum(axis=0)
        _add_in_place(state[("r", s, "gram")][g], b.x, b.x)
        state[("r", s, "sqnorm")][g] += float(b.sqn.sum())
        state[("r", s, "sqnorm2")][g] += float(b.sqn @ b.sqn)
        state[("r", s, "sqnorm_x")][g] += b.sqn @ b.x
        state[("r", s, "nonfinite")][g] += b.nonfinite
    for s, t in cross:
        a, b = prep[s], prep[t]
        _add_in_place(state[("p", s, t, "cross")][g], a.x, b.x)
        state[("p", s, t, "a_y")][g] += a.sqn @ b.x
        state[("p", s, t, "b_x")][g] += b.sqn @ a.x
        state[("p", s, t, "ab")][g] += float(a.sqn @ b.sqn)


def _stream_blocks(
    readers: Mapping[int, Callable[[], np.ndarray]], rows: np.ndarray | None,
    streams: Sequence[Stream], wanted: Sequence[int],
) -> dict[int, np.ndarray]:  # fmt: skip
    """The selected rows of one block of each wanted stream (each array read once)."""
    raw = {i: r() if rows is None else r()[rows] for i, r in readers.items()}
    out = {}
    for s in wanted:
        i, view = streams[s]
        out[s] = raw[i] if view == RAW else apply_view(raw[i], view)
    return out


def _grouped_step(
    state: Sums | None,
    readers: dict[int, dask_graph.BlockReader],
    rows: np.ndarray | None,
    groups: np.ndarray,
    n_groups: int,
    offsets: Sequence[Any],
    streams: Sequence[Stream],
    own: Sequence[int],
    cross: Sequence[Pair],
) -> Sums:
    """Add one row block to the stacked group sums (``groups``: group of each selected row).

    The name starts with ``_grouped_step`` so that the engine's progress counts it as a
    row-block task (:class:`reprstore.engine.dask_graph.Runner`).
    """
    wanted = sorted(set(own) | {s for p in cross for s in p})
    blocks = _stream_blocks(readers, rows, streams, wanted)
    if state is None:
        features = [0 if o is None else len(o) for o in offsets]
        state = _zeros(features, own, cross, n_groups)
    order = np.argsort(groups, kind="stable")
    present, starts = np.unique(groups[order], return_index=True)
    ends = [*starts[1:].tolist(), order.size]
    for g, a, b in zip(present.tolist(), starts.tolist(), ends, strict=True):
        idx = np.sort(order[a:b])
        _add_group(state, g, {s: x[idx] for s, x in blocks.items()}, offsets, own, cross)
    return state


def _merge_groups(a: Sums, b: Sums) -> Sums:
    for k, v in b.items():
        a[k] += v
    return a


def _live(ctx: PassContext) -> list[tuple[int, np.ndarray | None]]:
    chunks = ctx.arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    live = []
    for k in range(len(chunks)):
        rows = None if ctx.mask is None else ctx.mask[bounds[k] : bounds[k + 1]]
        if chunks[k] and (rows is None or rows.any()):
            live.append((k, rows))
    return live


def first_offsets(ctx: PassContext, streams: Sequence[Stream], wanted: Sequence[int]) -> list[Any]:
    """Each wanted stream's :class:`~reprstore.stats.linear.Offset` from the selected rows of
    the first live block, as the engine's plain pass takes them (``None`` elsewhere)."""
    k, rows = _live(ctx)[0]
    arrays = sorted({streams[s][0] for s in wanted})
    got = dask_graph.dask_compute(
        *[ctx.arrays[i].blocks[k] for i in arrays], scheduler=dask_graph.sync_scheduler
    )
    readers = {i: _Fixed(np.asarray(x)) for i, x in zip(arrays, got, strict=True)}
    blocks = _stream_blocks(readers, rows, streams, wanted)
    offsets: list[Any] = [None] * len(streams)
    for s, x in blocks.items():
        offsets[s] = linear.block_offset(np.asarray(x))
    return offsets


class _Fixed:
    """A block already in memory, read like a :class:`~reprstore.engine.dask_graph.BlockReader`."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __call__(self) -> np.ndarray:
        return self.x


def grouped_pass(
    ctx: PassContext,
    streams: Sequence[Stream],
    own: Sequence[int],
    cross: Sequence[Pair],
    groups: np.ndarray,
    n_groups: int,
    room: int,
    offsets: Sequence[Any],
    runner: dask_graph.Runner,
) -> dict[Any, Any]:  # Sums, to which a caller may add keys (the fold pass: "_offsets")
    """One pass: the stacked per-group sums (G, ...) of the streams ``own`` and the stream
    pairs ``cross``; in checkpointed segments when ``ctx.checkpoints`` is set
    (:func:`reprstore.engine.checkpoints.run_segments`), in one graph otherwise.

    Parameters
    ----------
    groups : int ndarray (n,)
        Group of each selected row, in stored order.
    room : bytes the chains' states may take together.
    offsets : per stream, the offset its rows are accumulated with.
    runner : the comparison's runner (its progress counts this pass's blocks).
    """
    chunks = ctx.arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    full = np.full(int(bounds[-1]), -1, dtype=np.int64)
    full[np.flatnonzero(ctx.mask) if ctx.mask is not None else slice(None)] = groups
    arrays = sorted({streams[s][0] for s in set(own) | {s for p in cross for s in p}})
    whole = {i: dask_graph.one_column_chunk(ctx.arrays[i]) for i in arrays}
    live = _live(ctx)
    threads = dask_graph.scheduler_threads(ctx.scheduler)
    features = [0 if o is None else len(o) for o in offsets]
    per_chain = n_groups * unit_bytes(features, own, cross)
    chains = max(1, min(threads, len(live), room // max(per_chain, 1)))
    args = (n_groups, list(offsets), list(streams), list(own), list(cross))

    def segment(blocks: list[tuple[int, np.ndarray | None]], start: Sums | None) -> Sums:
        """The sums of ``blocks`` folded into ``start`` (in place, the first chain's)."""
        parts: list[Any] = []
        for c in range(min(chains, len(blocks))):
            state: Any = None
            if c == 0 and start is not None:
                state = dask_graph.dask_delayed(
                    start, traverse=False, name=f"grouped-start-{uuid.uuid4().hex}"
                )
            for k, rows in blocks[c::chains]:
                readers = {i: dask_graph.BlockReader(a, k) for i, a in whole.items()}
                g = full[bounds[k] : bounds[k + 1]]
                g = g if rows is None else g[rows]
                state = dask_graph.dask_delayed(_grouped_step)(state, readers, rows, g, *args)
            parts.append(state)
        graph = dask_graph.tree_reduce(parts, _merge_groups, ctx.split_every)
        workers = min(chains, len(blocks))
        out: Sums
        (out,) = runner(graph, blocks=len(blocks), workers=workers,
                        blas=max(1, threads // workers))  # fmt: skip
        return out

    ckpt = getattr(ctx, "checkpoints", None)
    local = dask_graph.is_local_threaded(ctx.scheduler)
    per = checkpoints.segment_blocks(len(live), chains, distributed=not local)
    segments = [live[k : k + per] for k in range(0, len(live), per)]
    if ckpt is None or len(segments) < 2:
        return segment(live, None)
    layout = ["grouped", chunks, per, chains, n_groups, _digest(groups, offsets), ctx.n]
    key = ckpt.key(streams, own, cross, layout) if ckpt.files is not None else None
    shapes = {k: v.shape for k, v in _zeros(features, own, cross, n_groups).items()}
    form = checkpoints.Segments(_encode_sums, partial(_decode_sums, shapes),
                                n_groups * unit_bytes(features, own, cross))  # fmt: skip

    def skip(done: int) -> None:
        runner.skip(sum(len(s) for s in segments[:done]))

    summed: Sums = checkpoints.run_segments(
        ckpt,
        key,
        len(segments),
        lambda k, state: segment(segments[k], state),
        form,
        ctx.memory,
        skip,
    )
    return summed


def _digest(groups: np.ndarray, offsets: Sequence[Any]) -> str:
    """A hash of the row groups and the offsets a grouped pass accumulates with (in its
    checkpoint's key: the seed, the groups' number, the fold column … all show in them)."""
    h = hashlib.sha256(np.ascontiguousarray(groups, dtype=np.int64).tobytes())
    for off in offsets:
        if off is not None:
            o = linear.as_offset(off)
            h.update(np.ascontiguousarray(o.shift, dtype=np.float64).tobytes())
            h.update(repr(float(o.scale)).encode())
        h.update(b"|")
    return h.hexdigest()


def _encode_sums(stacked: Sums) -> dict[str, np.ndarray]:
    """Stacked group sums as plain named arrays: ``("p", 0, 1, "cross")`` → ``p.0.1.cross``."""
    return {".".join(map(str, k)): v for k, v in stacked.items()}


def _decode_sums(shapes: dict[SumKey, tuple[int, ...]], arrays: dict[str, np.ndarray]) -> Sums:
    """The stacked group sums of :func:`_encode_sums`, checked against the pass's shapes."""
    out: Sums = {}
    for name, v in arrays.items():
        kind, *idx, f = name.split(".")
        out[(kind, *map(int, idx), f)] = np.asarray(v, dtype=np.float64)
    if out.keys() != shapes.keys() or any(v.shape != shapes[k] for k, v in out.items()):
        raise ValueError("its sums are not those of this pass")
    return out


# ------------------------------------------------------------- states → statistics


def repr_moments(sums: Sums, s: int, offset: linear.Offset) -> linear.ReprMoments:
    """The :class:`~reprstore.stats.linear.ReprMoments` of stream ``s`` from one
    combination of group sums (e.g. ``total − state_g``)."""
    v = {f: sums[("r", s, f)] for f in REPR_FIELDS}
    return linear.ReprMoments(
        n=round(float(v["n"])), shift=offset.shift, scale=offset.scale, total=v["total"],
        gram=v["gram"], sqnorm=float(v["sqnorm"]), sqnorm2=float(v["sqnorm2"]),
        sqnorm_x=v["sqnorm_x"], nonfinite=round(float(v["nonfinite"])),
    )  # fmt: skip


def pair_moments(sums: Sums, s: int, t: int) -> linear.PairMoments:
    """The :class:`~reprstore.stats.linear.PairMoments` of streams (s, t) from group sums."""
    f = {x: sums[("p", s, t, x)] for x in PAIR_FIELDS}
    return linear.PairMoments(f["cross"], f["a_y"], f["b_x"], float(f["ab"]))


def total(stacked: Sums) -> Sums:
    """The sums over all groups (the statistics of every row)."""
    return {k: v.sum(axis=0) for k, v in stacked.items()}


def left_out(stacked: Sums, full: Sums, g: int) -> Sums:
    """The sums without group ``g``."""
    return {k: full[k] - v[g] for k, v in stacked.items()}
