"""The sample route's passes: exact CKA of any width from tiles of the n × n kernels.

:func:`sample_cka` computes exact (biased or debiased) CKA, linear or RBF, for pairs of
aligned arrays without ever holding an n × n or p × p matrix: the rows are read in
panels, every representation's kernel tile K_IJ is made once per round and shared by
all its pairs (:mod:`reprstore.stats.gram_tiles`). The RBF kernel first takes the exact
median of the n² squared distances by rounds of the same tiles
(:mod:`reprstore.stats.selection`): one round when every row fits and the middle bin is
small, usually two. Memory: :func:`reprstore.stats.gram_tiles.sample_layout`.

:func:`sample_cka` and :func:`sample_rsa` save checkpoints (``c.checkpoints``) after each
outer panel's segment of a round and resume from them bit-identically (see
*checkpoints* below, :mod:`reprstore.engine.checkpoints`); :func:`sample_factors` does
not (its state is n × n per representation, its time mostly the eigendecompositions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from reprstore.engine import checkpoints, dask_graph
from reprstore.engine.pass_context import converted, float64_products, kernel_products
from reprstore.errors import ComparisonError
from reprstore.metrics.base import clip_unit
from reprstore.metrics.cka import (
    CONSTANT_RTOL,
    CKAResult,
    bandwidth_fields,
    check_bandwidth,
    check_finite,
    constant_error,
    ratio,
)
from reprstore.stats.gram_tiles import (
    SLAB_FEATURES,
    KernelSums,
    SampleLayout,
    biased_hsic,
    distances_in_place,
    gram_tile,
    hsic_terms,
    raw_sqsum,
    row_sqnorms,
    sample_layout,
    spread,
    tile_bounds,
    tile_product,
)
from reprstore.stats.hsic import HsicTerms, hsic1
from reprstore.stats.kernels import Bandwidth
from reprstore.stats.linear import NUMPY, Backend, Offset, block_offset, count_nonfinite
from reprstore.stats.plan import check_budget, human_bytes
from reprstore.stats.selection import OrderStatistics, median_ranks

if TYPE_CHECKING:
    from reprstore.engine.pass_context import PassContext

Pair = tuple[int, int]
#: Raw rows of one tile, by representation.
RowsOf = dict[int, np.ndarray]


@dataclass
class _Panel:
    """Consecutive row blocks read and held together: (block, selected rows) and where
    their rows start among the selected rows."""

    blocks: list[tuple[int, np.ndarray | None, int]]  # block, its selection, rows selected
    start: int
    rows: int


@dataclass
class _Rows:
    """The panels of one comparison and the rows of those held now (raw, as stored)."""

    ctx: PassContext
    idx: list[int]
    panels: list[_Panel]
    group: int  # bytes of blocks one read brings at once (SampleLayout.group)
    held: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    reads: int = 0


def _panels(chunks: Sequence[int], mask: np.ndarray | None, rows: int) -> list[_Panel]:
    """Live row blocks grouped into panels of at most ``rows`` selected rows (one block
    at least)."""
    bounds = np.cumsum((0, *chunks))
    out: list[_Panel] = []
    start = 0
    for k, c in enumerate(chunks):
        sel = None if mask is None else mask[bounds[k] : bounds[k + 1]]
        m = c if sel is None else int(sel.sum())
        if not m:
            continue
        if not out or out[-1].rows + m > rows:
            out.append(_Panel([], start, 0))
        out[-1].blocks.append((k, sel, m))
        out[-1].rows += m
        start += m
    return out


def _read_panel(
    c: PassContext, idx: Sequence[int], panel: _Panel, threads: int, group_bytes: int
) -> dict[int, np.ndarray]:
    """The selected rows of ``panel`` of every representation of ``idx``, as stored.

    Each panel is allocated once and filled by computations on the comparison's
    scheduler (a cluster's workers read the chunks) of at most ``group_bytes`` of blocks
    each (one block at least; :func:`~reprstore.stats.gram_tiles.read_group`): the panel
    is never held twice.
    """
    arrays = c.arrays
    out = {i: np.empty((panel.rows, arrays[i].shape[1]), dtype=arrays[i].dtype) for i in idx}
    jobs = []  # (representation, block, selection, first row in the panel)
    for i in idx:
        at = 0
        for k, sel, m in panel.blocks:
            jobs.append((i, k, sel, at))
            at += m
    group: list[tuple[int, int, np.ndarray | None, int]] = []
    size = 0
    for job in [*jobs, None]:
        if job is not None:
            nbytes = int(arrays[job[0]].blocks[job[1]].nbytes)
            if not group or size + nbytes <= group_bytes:
                group.append(job)
                size += nbytes
                continue
        got = dask_graph.compute(*[arrays[i].blocks[k] for i, k, _, _ in group],
                                 scheduler=c.scheduler, workers=threads)  # fmt: skip
        for (i, _, sel, at), block in zip(group, got, strict=True):
            rows = np.asarray(block) if sel is None else np.asarray(block)[sel]
            out[i][at : at + rows.shape[0]] = rows
        del got
        if job is None:
            break
        group, size = [job], int(arrays[job[0]].blocks[job[1]].nbytes)
    return out


@dataclass
class _State:
    """Per representation: its offset, row norms, sums; per pair: tr(K_r K_s)."""

    offsets: dict[int, Offset]
    norms: dict[int, np.ndarray]
    raw_sq: dict[int, float]
    sums: dict[int, KernelSums]
    traces: dict[Pair, float]


# --------------------------------------------------------------------- checkpoints
#
# The sample route's passes are segmented by outer panel: a round's segment I is every
# tile pair of the panel pairs (I, J ≥ I), and the segments of all rounds are numbered in
# order (round r's segment I is number r·m + I, m panels). The state after a segment is
# what the later segments and the result depend on: each representation's offset, raw
# squared norm, kernel sums, the pairs' traces (rsa: the RDM sums) and an RBF median's
# selection (its targets and this round's histograms and kept values). The row norms
# are not saved: every segment reads its panels again and takes their norms there. A
# resumed run folds the same segments in the same order as an uninterrupted one, so its
# values are the same bits.


def _saves(
    c: PassContext, kind: list[Any], idx: Sequence[int], pairs: Sequence[Pair],
    layout: SampleLayout, panels: Sequence[_Panel],
) -> checkpoints.SegmentSaves | None:  # fmt: skip
    """The checkpoints of a sample pass (None: no checkpoints asked, or one panel). The
    key holds the pass kind and its options (``kind``), the representations'
    fingerprints and the rows (:class:`~reprstore.engine.checkpoints.PassCheckpoints`),
    the panels' blocks, the tile and slab sizes; the round is in the segments' numbers."""
    ckpt = c.checkpoints
    if ckpt is None or len(panels) < 2:
        return None
    key = None
    if ckpt.files is not None:
        at = {i: k for k, i in enumerate(idx)}
        cut = [[p.start, p.rows, [[b, m] for b, _, m in p.blocks]] for p in panels]
        lay = [*kind, c.arrays[0].chunks[0], cut, layout.panel, layout.tile, layout.slab,
               c.backend, c.n]  # fmt: skip
        key = ckpt.key([(i, "raw") for i in idx], list(range(len(idx))),
                       [(at[i], at[j]) for i, j in pairs], lay)  # fmt: skip
    form = checkpoints.Segments(partial(_encode, idx, pairs), partial(_decode, c, idx, pairs),
                                _state_bytes)  # fmt: skip
    return checkpoints.SegmentSaves(ckpt, key, form, c.memory)


#: What a sample pass saves: its _State, an RBF median's selections (or an rsa's sums),
#: and the round.
Saved = tuple[_State, Any, int]


def _resume(
    saves: checkpoints.SegmentSaves | None, m: int, state: _State, extra: Any,
    fits: Callable[[Any, int], bool],
) -> tuple[int, int]:  # fmt: skip
    """(round, first segment of it) to go on with, ``state`` and ``extra`` (a dict or an
    :class:`_RdmSums`) filled from the pass's checkpoint when there is one that
    ``fits(extra, round)``."""
    if saves is None:
        return 0, 0
    got, done = saves.resume(lambda s, done: s[2] == done // m and fits(s[1], s[2]))
    if got is None:
        return 0, 0
    saved, more, _ = got
    state.offsets, state.raw_sq = saved.offsets, saved.raw_sq
    state.sums, state.traces = saved.sums or state.sums, saved.traces or state.traces
    if isinstance(extra, dict):
        extra.clear()
        extra.update(more)
    else:
        extra.__dict__.update(more.__dict__)
    return divmod(done, m)


def _selections_fit(rbf: bool, idx: Sequence[int], order: dict[int, OrderStatistics],
                    r: int) -> bool:  # fmt: skip
    """Whether saved selections are those of round ``r`` (all done: the kernel round)."""
    if not isinstance(order, dict):
        return False
    if not rbf:
        return not order and r == 0
    if sorted(order) != list(idx):
        return False
    if all(o.done for o in order.values()):
        return r == max(o.rounds for o in order.values())
    return all(o.rounds == r if not o.done else o.rounds < r for o in order.values())


def _encode(idx: Sequence[int], pairs: Sequence[Pair], saved: Saved) -> dict[str, np.ndarray]:
    """A sample pass's state as plain arrays (the held arrays themselves: no copy)."""
    state, extra, r = saved
    kind = "order" if isinstance(extra, dict) else "rdm"
    out: dict[str, np.ndarray] = {
        "head": np.array(json.dumps({"format": 1, "idx": list(idx), "round": r, "extra": kind})),
        "scale": np.array([state.offsets[i].scale for i in idx], dtype=np.float64),
        "raw_sq": np.array([state.raw_sq[i] for i in idx], dtype=np.float64),
    }
    for i in idx:
        out[f"shift.{i}"] = state.offsets[i].shift
    if state.sums:
        out["traces"] = np.array([state.traces[p] for p in pairs], dtype=np.float64)
        for i in idx:
            out[f"rows.{i}"], out[f"diag.{i}"] = state.sums[i].rows, state.sums[i].diag
    if isinstance(extra, dict):
        for i, o in extra.items():
            out.update({f"order.{i}.{k}": v for k, v in o.to_arrays().items()})
    else:
        cross = [(i, j) for i, j in pairs if i != j]
        for name in ("shift", "s1", "s2"):
            out[f"rdm.{name}"] = np.array([getattr(extra, name)[i] for i in idx])
        out["rdm.s12"] = np.array([extra.s12[p] for p in cross], dtype=np.float64)
    return out


def _decode(c: PassContext, idx: Sequence[int], pairs: Sequence[Pair],
            arrays: dict[str, np.ndarray]) -> Saved:  # fmt: skip
    """The state :func:`_encode` saved, checked against this pass (ValueError if not)."""
    head = json.loads(str(arrays["head"]))
    if head.get("format") != 1 or head["idx"] != list(idx):
        raise ValueError("not the state of this pass")
    n = c.n
    scale, raw_sq = arrays["scale"], arrays["raw_sq"]
    offsets = {}
    for k, i in enumerate(idx):
        shift = arrays[f"shift.{i}"]
        if shift.shape != (c.arrays[i].shape[1],):
            raise ValueError("not the state of this pass")
        offsets[i] = Offset(shift, float(scale[k]))
    state = _State(offsets, {}, {i: float(raw_sq[k]) for k, i in enumerate(idx)}, {}, {})
    if "traces" in arrays:
        state.traces = dict(zip(pairs, (float(v) for v in arrays["traces"]), strict=True))
        for i in idx:
            rows, diag = arrays[f"rows.{i}"], arrays[f"diag.{i}"]
            if rows.shape != (n,) or diag.shape != (n,):
                raise ValueError("not the state of this pass")
            state.sums[i] = KernelSums(rows, diag)
    extra: Any
    if head["extra"] == "order":
        extra = {}
        for i in idx:
            at = f"order.{i}."
            mine = {k[len(at) :]: v for k, v in arrays.items() if k.startswith(at)}
            if mine:
                extra[i] = OrderStatistics.from_arrays(mine)
                if extra[i].total != n * n:
                    raise ValueError("not the state of this pass")
    else:
        cross = [(i, j) for i, j in pairs if i != j]
        means, s1, s2 = ({i: float(v) for i, v in zip(idx, arrays[f"rdm.{name}"], strict=True)}
                         for name in ("shift", "s1", "s2"))  # fmt: skip
        s12 = dict(zip(cross, (float(v) for v in arrays["rdm.s12"]), strict=True))
        extra = _RdmSums(means, s1, s2, s12)
    return state, extra, int(head["round"])


def _state_bytes(saved: Saved) -> int:
    """Bytes of a sample pass's saved state (an object store uploads it from a copy)."""
    state, extra, _ = saved
    size = sum(8 * 2 * len(k.rows) for k in state.sums.values())
    size += sum(o.shift.nbytes for o in state.offsets.values())
    if isinstance(extra, dict):
        size += sum(o.nbytes() for o in extra.values())
    return size


def sample_cka(
    c: PassContext,
    unique: Sequence[Pair],
    *,
    estimator: str,
    kernel: str,
    sigma: float,
    layout: SampleLayout | None = None,
) -> dict[Pair, CKAResult]:
    """Exact CKA of every pair of ``unique`` (i ≤ j indices into ``c.arrays``) by the
    sample route; ``c`` is the comparison's :class:`~reprstore.engine.pass_context.PassContext`."""
    arrays, n, names = c.arrays, c.n, c.names
    threads, mask = c.threads, c.mask
    idx = sorted({i for p in unique for i in p})
    rbf = kernel == "rbf"
    dask_graph.fixed_mmap_threshold()
    if layout is None:
        layout = layout_for(c, idx)
    panels = _panels(arrays[0].chunks[0], mask, layout.panel)
    rows = _Rows(c, idx, panels, layout.group)
    pairs = sorted(set(unique) | {(i, i) for i in idx})
    state = _State({}, {i: np.zeros(n) for i in idx}, dict.fromkeys(idx, 0.0),
                   {i: KernelSums.empty(n) for i in idx}, dict.fromkeys(pairs, 0.0))  # fmt: skip
    order = {i: OrderStatistics(n * n, median_ranks(n * n)) for i in idx} if rbf else {}
    rounds = _Progress(c.progress)
    saves = _saves(c, ["samples-cka", estimator, kernel, sigma], idx, pairs, layout, panels)
    r, start = _resume(saves, len(panels), state, order, partial(_selections_fit, rbf, idx))
    tiles = _segment_tiles(panels, layout.tile)
    rounds.extend(r * sum(tiles))
    rounds.skip(r * sum(tiles) + sum(tiles[:start]))

    def saved(pi: int) -> None:  # after panel pi's segment of round r
        if saves is not None and pi + 1 < len(panels):
            saves.after(r * len(panels) + pi + 1, (state, order, r))

    bws: dict[int, Bandwidth] = {}
    sigma2: dict[int, float] = {}
    backend = kernel_products(c.backend, "rbf" if rbf else "linear")
    if rbf:
        visit = partial(_median_tile, state, order, layout.slab, threads, backend)
        while not all(o.done for o in order.values()):
            rounds.extend(sum(tiles))
            first = all(o.rounds == 0 for o in order.values())
            _sweep(rows, layout, state, threads, visit, rounds, first=first, start=start,
                   after=saved)  # fmt: skip
            start = 0
            for o in order.values():
                if not o.done:
                    o.end_round()
            r += 1
            if saves is not None:  # the next round's start
                saves.after(r * len(panels), (state, order, r))
        for i in idx:
            lo, hi = order[i].results()
            median = (lo + hi) / 2.0
            scale2 = state.offsets[i].scale ** 2
            method = (f"exact median of all {n}² squared distances (selection over tiles, "
                      f"{order[i].rounds} rounds)")  # fmt: skip
            bws[i] = Bandwidth(sigma, median * scale2, method, state.raw_sq[i] / n)
            check_bandwidth(bws[i], names[i], n)
            sigma2[i] = sigma**2 * median
    rounds.extend(sum(tiles))
    visit = partial(_kernel_tile, state, pairs, sigma2 if rbf else None, layout.slab, threads,
                    backend)  # fmt: skip
    _sweep(rows, layout, state, threads, visit, rounds, first=not rbf, start=start, after=saved)
    rounds.finish()
    out: dict[Pair, CKAResult] = {}
    for i, j in unique:
        out[(i, j)] = _result(state, i, j, estimator, kernel, names, n,
                              (bws[i], bws[j]) if rbf else None)  # fmt: skip
    return out


def layout_for(c: PassContext, idx: Sequence[int]) -> SampleLayout:
    """The sample route's layout for these arrays within ``c.memory`` (or a refusal)."""
    arrays = c.arrays
    widths = [int(arrays[i].shape[1]) for i in idx]
    sizes = [int(arrays[i].dtype.itemsize) for i in idx]
    block = max(arrays[0].chunks[0])
    layout = sample_layout(c.n, widths, sizes, c.memory, c.threads, block, converted(c.backend))
    if layout is None:
        raise ComparisonError(
            f"The sample route cannot hold one row block ({block} rows of "
            f"{sum(widths)} features) and its tiles within the memory limit "
            f"{human_bytes(c.memory)}. Raise --memory."
        )
    return layout


class _Progress:
    """Tile pairs done over every round, reported as ``progress(done, total)``."""

    def __init__(self, progress: Callable[[int, int], None] | None) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0

    def extend(self, k: int) -> None:
        self.total += k

    def skip(self, k: int) -> None:
        """Count ``k`` tile pairs a resumed pass does not make again."""
        self.done += k

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


def _segment_tiles(panels: Sequence[_Panel], tile: int) -> list[int]:
    """Tile pairs of each panel's segment of a round (its panel pairs (I, J ≥ I))."""
    bounds = [len(tile_bounds(p.rows, tile)) for p in panels]
    return [t * (t + 1) // 2 + t * sum(bounds[a + 1 :]) for a, t in enumerate(bounds)]


def _tile_count(panels: Sequence[_Panel], tile: int) -> int:
    return sum(_segment_tiles(panels, tile))


def _sweep(
    rows: _Rows,
    layout: SampleLayout,
    state: _State,
    threads: int,
    visit: Callable[[dict[int, np.ndarray], dict[int, np.ndarray], int, int, bool], None],
    progress: _Progress,
    first: bool,
    start: int = 0,
    after: Callable[[int], None] | None = None,
) -> None:
    """One round: every tile pair (I ≤ J) of the selected rows, visited with the raw rows
    of I and of J of every representation and the tiles' starts among the selected rows;
    from outer panel ``start`` on (a resumed round), ``after(I)`` once panel I's segment
    (its pairs (I, J ≥ I)) is done."""
    last = len(rows.panels) - 1
    for pi, pj, a, b in _panel_pairs(rows, threads, state, first, start):
        ta = tile_bounds(rows.panels[pi].rows, layout.tile)
        tb = ta if pi == pj else tile_bounds(rows.panels[pj].rows, layout.tile)
        for x, (s0, s1) in enumerate(ta):
            for y, (t0, t1) in enumerate(tb):
                if pi == pj and y < x:
                    continue
                same = pi == pj and x == y
                ra = {i: m[s0:s1] for i, m in a.items()}
                rb = ra if same else {i: m[t0:t1] for i, m in b.items()}
                visit(ra, rb, rows.panels[pi].start + s0, rows.panels[pj].start + t0, same)
                progress.tick()
        if pj == last and after is not None:
            after(pi)


def _panel_pairs(
    rows: _Rows, threads: int, state: _State, first: bool, start: int = 0
) -> Iterator[tuple[int, int, dict[int, np.ndarray], dict[int, np.ndarray]]]:
    """Panel pairs (I ≤ J, I ≥ ``start``) with their rows: I held while every J ≥ I
    streams. A single panel is read once and kept for every round."""
    m = len(rows.panels)
    for pi in range(start, m):
        a = rows.held.get(pi)
        if a is None:
            a = _load(rows, pi, threads, state, first)
            if m == 1:
                rows.held[pi] = a
        yield pi, pi, a, a
        for pj in range(pi + 1, m):
            yield pi, pj, a, _load(rows, pj, threads, state, False)
        del a


def _load(rows: _Rows, k: int, threads: int, state: _State, first: bool) -> dict[int, np.ndarray]:
    """Read panel ``k``; its rows' norms (and on the first round, offsets, NaN/Inf checks
    and raw squared norms) are taken here."""
    got = _read_panel(rows.ctx, rows.idx, rows.panels[k], threads, rows.group)
    rows.reads += 1
    names, n = rows.ctx.names, rows.ctx.n
    p = rows.panels[k]
    for i, x in got.items():
        if i not in state.offsets:  # the first block's selected rows, as the feature route
            state.offsets[i] = block_offset(x[: p.blocks[0][2]])
        if first:
            check_finite(names[i], count_nonfinite(x), n)
            state.raw_sq[i] += raw_sqsum(x, SLAB_FEATURES)
        state.norms[i][p.start : p.start + p.rows] = row_sqnorms(x, state.offsets[i], SLAB_FEATURES)
    return got


def _median_tile(
    state: _State, order: dict[int, OrderStatistics], slab: int, threads: int, backend: Backend,
    a: dict[int, np.ndarray], b: dict[int, np.ndarray], s: int, t: int, same: bool,
) -> None:  # fmt: skip
    """A selection round's tile: the squared distances of every representation, counted."""

    def one(i: int) -> None:
        g = gram_tile(a[i], None if same else b[i], state.offsets[i], slab, backend)
        d = distances_in_place(g, state.norms[i][s : s + g.shape[0]],
                               state.norms[i][t : t + g.shape[1]], same)  # fmt: skip
        order[i].add(d, 1 if same else 2)

    dask_graph.run_jobs(threads, [partial(one, i) for i in a])


def _kernel_tile(
    state: _State, pairs: Sequence[Pair], sigma2: dict[int, float] | None, slab: int,
    threads: int, backend: Backend, a: dict[int, np.ndarray], b: dict[int, np.ndarray], s: int,
    t: int, same: bool,
) -> None:  # fmt: skip
    """The kernel round's tile: K_IJ of every representation, its sums and the traces."""
    tiles: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        k = gram_tile(a[i], None if same else b[i], state.offsets[i], slab, backend)
        if sigma2 is not None:
            distances_in_place(k, state.norms[i][s : s + k.shape[0]],
                               state.norms[i][t : t + k.shape[1]], same)  # fmt: skip
            k *= -1.0 / (2.0 * sigma2[i])
            np.expm1(k, out=k)  # K − 1: HSIC is unchanged by the constant
        sums = state.sums[i]
        if same:
            sums.diag[s : s + k.shape[0]] = np.diagonal(k)
            sums.rows[s : s + k.shape[0]] += k.sum(axis=1)
        else:
            sums.rows[s : s + k.shape[0]] += k.sum(axis=1)
            sums.rows[t : t + k.shape[1]] += k.sum(axis=0)
        tiles[i] = k

    dask_graph.run_jobs(threads, [partial(one, i) for i in a])
    weight = 1.0 if same else 2.0
    found: dict[Pair, float] = {}

    def trace(pair: Pair) -> None:
        found[pair] = weight * float(np.vdot(tiles[pair[0]], tiles[pair[1]]))

    dask_graph.run_jobs(threads, [partial(trace, p) for p in pairs])
    for p in pairs:
        state.traces[p] += found[p]


def _result(
    state: _State, i: int, j: int, estimator: str, kernel: str, names: Sequence[str], n: int,
    bws: tuple[Bandwidth, Bandwidth] | None,
) -> CKAResult:  # fmt: skip
    """CKA of pair (i, j) from the accumulated sums."""
    label = (names[i], names[j])
    if kernel == "linear":
        for k in (i, j):
            shift = state.offsets[k].shift / state.offsets[k].scale
            magnitude = float(state.sums[k].diag.sum()) + n * float(shift @ shift)
            if spread(state.sums[k]) <= CONSTANT_RTOL * magnitude or spread(state.sums[k]) <= 0:
                raise constant_error(names[k], n)

    def hsic(a: int, b: int) -> float:
        key = (min(a, b), max(a, b))
        if estimator == "biased":
            return biased_hsic(state.sums[a], state.sums[b], state.traces[key])
        return hsic1(HsicTerms(n, *hsic_terms(state.sums[a], state.sums[b], state.traces[key])))

    haa, hbb = hsic(i, i), hsic(j, j)
    hab = haa if i == j else hsic(i, j)
    if estimator == "biased":
        scales = (state.traces[(i, i)], state.traces[(j, j)]) if kernel == "linear" else None
    else:
        si, sj = (
            (state.traces[(k, k)] - float(state.sums[k].diag @ state.sums[k].diag))
            / max(n * (n - 3), 1)
            for k in (i, j)
        )
        scales = (si, sj)
    value = ratio(hab, haa, hbb, label, n, scales)
    extra = bandwidth_fields(bws[0].sigma if bws else None, bws)
    return CKAResult(
        cka=value,
        estimator=estimator,
        kernel=kernel,
        n_samples=n,
        hsic_ab=hab,
        hsic_aa=haa,
        hsic_bb=hbb,
        route="samples",
        **extra,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------ rsa


@dataclass
class _RdmSums:
    """Σ over i < j of the shifted RDM entries e = E − shift, and of e², per
    representation; Σ e_a·e_b per pair."""

    shift: dict[int, float] = field(default_factory=dict)
    s1: dict[int, float] = field(default_factory=dict)
    s2: dict[int, float] = field(default_factory=dict)
    s12: dict[Pair, float] = field(default_factory=dict)


def _setup(c: PassContext, idx: Sequence[int]) -> tuple[SampleLayout, _Rows, _State]:
    n = c.n
    dask_graph.fixed_mmap_threshold()
    layout = layout_for(c, idx)
    rows = _Rows(c, list(idx), _panels(c.arrays[0].chunks[0], c.mask, layout.panel), layout.group)
    state = _State({}, {i: np.zeros(n) for i in idx}, dict.fromkeys(idx, 0.0), {}, {})
    return layout, rows, state


def unit_gram_tile(
    a: np.ndarray, b: np.ndarray | None, centre: bool, backend: Backend = NUMPY
) -> np.ndarray:
    """uᵢ·uⱼ of the unit rows u = x/‖x‖ (rows centred across features first if
    ``centre``) of raw rows ``a`` and ``b`` (``None``: ``a`` with itself), float64; the
    product by ``backend`` (:func:`~reprstore.stats.gram_tiles.tile_product`)."""

    def units(x: np.ndarray) -> npt.NDArray[np.float64]:
        y = np.asarray(x, dtype=np.float64)
        if centre:
            y = y - y.mean(axis=1, keepdims=True)
        norm: npt.NDArray[np.float64] = np.sqrt(np.einsum("ij,ij->i", y, y))  # einsum: Any
        if not (norm > 0).all():
            raise ComparisonError(
                f"{int((norm <= 0).sum())} row(s) have a zero norm"
                + (" after centring across features" if centre else "")
                + ": their cosine distances are undefined; filter them (--where)."
            )
        return y / norm[:, None]

    return tile_product(units(a), None if b is None else units(b), backend)


def sample_rsa(c: PassContext, unique: Sequence[Pair], rdm: str) -> dict[Pair, dict[str, float]]:
    """RSA (Pearson correlation of the RDMs' upper triangles) of every pair by the sample
    route: each representation's RDM tile made once per tile pair, never the n × n RDM."""
    n, names, threads = c.n, c.names, c.threads
    if n < 3:
        raise ComparisonError(f"RSA needs at least 3 rows. Got {n} instead.")
    idx = sorted({i for p in unique for i in p})
    layout, rows, state = _setup(c, idx)
    exact = float64_products(c.backend)  # distances and 1 − uᵢ·uⱼ cancel: float64 products
    sums = _RdmSums()
    pairs = sorted(set(unique) | {(i, i) for i in idx})
    progress = _Progress(c.progress)
    tiles = _segment_tiles(rows.panels, layout.tile)
    progress.extend(sum(tiles))
    m = len(rows.panels)
    saves = _saves(c, ["samples-rsa", rdm], idx, pairs, layout, rows.panels)
    _, start = _resume(saves, m, state, sums, lambda more, r: isinstance(more, _RdmSums) and r == 0)
    progress.skip(sum(tiles[:start]))

    def saved(pi: int) -> None:
        if saves is not None and pi + 1 < m:
            saves.after(pi + 1, (state, sums, 0))

    def visit(a: RowsOf, b: RowsOf, s: int, t: int, same: bool) -> None:
        tiles: dict[int, np.ndarray] = {}

        def one(i: int) -> None:
            if rdm == "sqeuclidean":
                e = gram_tile(a[i], None if same else b[i], state.offsets[i], layout.slab, exact)
                distances_in_place(e, state.norms[i][s : s + e.shape[0]],
                                   state.norms[i][t : t + e.shape[1]], same)  # fmt: skip
            else:
                e = unit_gram_tile(a[i], None if same else b[i], rdm == "correlation", exact)
                e *= -1.0  # D = 1 − G: the constant does not change a correlation
            if i not in sums.shift:  # the first tile's mean: sums of small numbers
                sums.shift[i] = float(e.mean())
            e -= sums.shift[i]
            tiles[i] = e

        dask_graph.run_jobs(threads, [partial(one, i) for i in a])
        for i, e in tiles.items():
            d = np.diagonal(e)
            s1, s2 = float(e.sum()), float(np.vdot(e, e))
            if same:
                s1, s2 = (s1 - float(d.sum())) / 2.0, (s2 - float(d @ d)) / 2.0
            sums.s1[i] = sums.s1.get(i, 0.0) + s1
            sums.s2[i] = sums.s2.get(i, 0.0) + s2
        for i, j in pairs:
            if i == j:
                continue
            x = float(np.vdot(tiles[i], tiles[j]))
            if same:
                x = (x - float(np.diagonal(tiles[i]) @ np.diagonal(tiles[j]))) / 2.0
            sums.s12[(i, j)] = sums.s12.get((i, j), 0.0) + x

    _sweep(rows, layout, state, threads, visit, progress, first=True, start=start, after=saved)
    progress.finish()
    count = n * (n - 1) / 2.0
    var = {i: sums.s2[i] - sums.s1[i] ** 2 / count for i in idx}
    for i in idx:
        if not var[i] > 1e-12 * abs(sums.s2[i]):
            raise ComparisonError(
                f"The {rdm} RDM of {names[i]} is constant over its {n} rows: RSA is undefined."
            )
    out: dict[Pair, dict[str, float]] = {}
    for i, j in unique:
        if i == j:
            value = 1.0
        else:
            cov = sums.s12[(i, j)] - sums.s1[i] * sums.s1[j] / count
            value = clip_unit(cov / math.sqrt(var[i]) / math.sqrt(var[j]), "RSA",
                              (names[i], names[j]))  # fmt: skip
        out[(i, j)] = {"rsa": value}
    return out


# ------------------------------------------------------------ factors of the Gram matrix


def factor_bytes(n: int, reprs: int) -> int:
    """What :func:`sample_factors` holds: every representation's n × n Gram matrix, then
    an eigendecomposition's workspace (about three more n × n) and the factors."""
    return 8 * n * n * (reprs + 3)


def check_factors(n: int, reprs: int, memory: int) -> None:
    """Refuse factors of ``reprs`` representations of ``n`` rows beyond ``memory`` (the
    planner asks first; the pass asks again for factors it makes outside a plan)."""
    check_budget(
        f"The sample route's factors (cca, svcca, linreg, procrustes, shape: the {n} × {n} "
        f"Gram matrices of {reprs} representation(s))", factor_bytes(n, reprs), memory,
        "Raise --memory, compare fewer representations at once, or use fewer rows (--where).",
    )  # fmt: skip


def sample_factors(c: PassContext, idx: Sequence[int]) -> dict[int, np.ndarray]:
    """A factor F (n × r, stored units) of each representation's centred Gram matrix
    K̄ = HKH = FFᵀ, r its rank, made from tiles (never the n × p rows at once).

    K̄ = V Λ Vᵀ gives F = V Λ^½, and X̄ = F Q for a Q with orthonormal rows: F has the
    covariance spectrum, the principal directions (in its own basis) and every
    orthogonally invariant statistic of X̄ (cca and its ridge forms, svcca, linreg,
    procrustes, shape, cka), with r ≤ n − 1 columns however wide X is.
    """
    from reprstore.stats.hsic import double_centre

    n, names, threads = c.n, c.names, c.threads
    check_factors(n, len(idx), c.memory)
    layout, rows, state = _setup(c, idx)
    grams = {i: np.zeros((n, n)) for i in idx}
    backend = float64_products(c.backend)  # the factors' ranks need float64 products
    progress = _Progress(c.progress)
    progress.extend(_tile_count(rows.panels, layout.tile))

    def visit(a: RowsOf, b: RowsOf, s: int, t: int, same: bool) -> None:
        def one(i: int) -> None:
            g = gram_tile(a[i], None if same else b[i], state.offsets[i], layout.slab, backend)
            grams[i][s : s + g.shape[0], t : t + g.shape[1]] = g
            if not same:
                grams[i][t : t + g.shape[1], s : s + g.shape[0]] = g.T

        dask_graph.run_jobs(threads, [partial(one, i) for i in a])

    _sweep(rows, layout, state, threads, visit, progress, first=True)
    progress.finish()
    factors: dict[int, np.ndarray] = {}
    for i in idx:
        k = double_centre(grams.pop(i))
        spread_i = float(np.trace(k))
        shift = state.offsets[i].shift / state.offsets[i].scale
        magnitude = float(state.norms[i].sum()) + n * float(shift @ shift)
        if spread_i <= CONSTANT_RTOL * magnitude or spread_i <= 0.0:
            raise constant_error(names[i], n)
        w, v = np.linalg.eigh(k)
        del k
        keep = w > 1e-12 * w[-1]  # the measures apply their own rank rule on top
        factors[i] = v[:, keep] * (np.sqrt(w[keep]) * state.offsets[i].scale)
        del w, v
    return factors
