"""The one planner of a comparison: a route per pair, its passes, bytes, FLOPs and memory.

Made from shapes only, before any chunk is read (SPEC: Routes, Plan):

* the *feature* route streams p × q statistics: ≈ n·(p² + q²) FLOPs for the sides (made
  once per representation, shared by its pairs) and 2·n·p·q for the pair; it holds
  (p² + q² + p·q) floats per pair, ``STATE_COPIES`` times while reading, then once with
  the measures' workspaces while finishing (:func:`reprstore.stats.plan.pass_bytes`);
* the *sample* route makes tiles of the n × n kernels: ≈ n²·p per representation and
  round (shared by its pairs), 2·n² per pair; it holds the tiles, the panels of rows and
  the slabs (:func:`reprstore.stats.gram_tiles.sample_layout`).

``auto`` takes, per pair whose measures all have a sample form (exact CKA), the route of
the smaller estimated time (FLOPs at :data:`FLOPS_PER_THREAD` per thread, plus reads at
:data:`READ_BYTES_PER_THREAD`), and the sample route wherever the feature statistics
exceed ``--memory``. Shape refusals (CCA with n ≤ p, …) and option clashes come here too.

Minibatch CKA's pass (and its RBF bandwidths) is counted here as well
(:func:`minibatch_layout`, :func:`bandwidth_layout`): the pass takes its block tasks at
once, its groups of shuffled batches and its bandwidth threads from the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reprstore.engine.pass_context import PassContext, converted, products_note
from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Spec
from reprstore.stats.gram_tiles import SampleLayout, sample_bytes, sample_layout
from reprstore.stats.plan import Reading, check_budget, finishing_reserve, human_bytes, pass_bytes
from reprstore.stats.views import RAW

ROUTES = ("auto", "features", "samples")
#: Sustained float64 FLOP/s of one thread in the products (GEMM with its overheads).
FLOPS_PER_THREAD = 20e9
#: Bytes one thread reads and decodes per second from a store.
READ_BYTES_PER_THREAD = 250e6
#: FLOPs of a symmetric n × n eigendecomposition with its vectors, per n³.
EIGH_FLOPS = 9.0
#: FLOP-equivalents of the elementwise work per kernel entry and round of exact rbf
#: (distances, the selection's bit histograms, expm1).
RBF_ENTRY_COST = 40.0
#: Selection rounds the exact RBF median usually takes (a plan's estimate; the run says).
MEDIAN_ROUNDS = 2
#: Minibatch CKA's RBF bandwidth: the exact median up to this many rows, beyond it the
#: median among SIGMA_SAMPLE_ROWS rows drawn with SIGMA_SEED.
SIGMA_EXACT_ROWS = 4096
SIGMA_SAMPLE_ROWS = 2048
SIGMA_SEED = 0
#: Representations whose rows the bandwidth pass gathers at once (one checkpoint each).
BANDWIDTHS_PER_SEGMENT = 4
#: A within-batch permutation test gathers permuted kernels into buffers of this size
#: (an eighth of a smaller ``--memory``; :func:`gather_bytes`).
PERMUTATION_GATHER_BYTES = 32 * 1024**2


def gather_bytes(memory: int) -> int:
    """The permuted kernels' gather buffer of a within-batch permutation test."""
    return min(PERMUTATION_GATHER_BYTES, max(1, memory // 8))


Pair = tuple[int, int]


class DryRun(Exception):
    """Raised after the plan when ``dry_run`` asked for the plan only."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan.line())
        self.plan = plan


@dataclass
class Plan:
    """What a comparison will do, from shapes (see the module docstring)."""

    routes: dict[Pair, str]
    n: int
    threads: int
    budget: int
    feature_passes: int = 0
    feature_memory: int = 0
    sample_rounds: int = 0
    sample_memory: int = 0
    layout: SampleLayout | None = None
    other_passes: int = 0
    #: Bytes held by the passes of their own (minibatch CKA and its bandwidths).
    other_memory: int = 0
    reads: float = 0.0
    #: Bytes of the involved arrays as stored, read once: ``reads / stored`` is how many
    #: times each chunk is read on average (the passes an array takes part in).
    stored: float = 0.0
    flops: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Whether the feature pass is the direct one (:mod:`reprstore.engine.direct`): the
    #: whole arrays read at once, no task graph.
    direct: bool = False

    @property
    def memory(self) -> int:
        return max(self.feature_memory, self.sample_memory, self.other_memory)

    @property
    def seconds(self) -> float:
        t = max(self.threads, 1)
        return self.flops / (FLOPS_PER_THREAD * t) + self.reads / (READ_BYTES_PER_THREAD * t)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.routes.values():
            out[r] = out.get(r, 0) + 1
        return out

    def line(self) -> str:
        """The plan in one line (printed before the first chunk is read)."""
        by = ", ".join(f"{k} by {r}" for r, k in sorted(self.counts().items()))
        steps = []
        if self.feature_passes:
            how = " (direct: whole arrays read at once)" if self.direct else ""
            steps.append(f"{self.feature_passes} feature pass(es){how}")
        if self.sample_rounds:
            lay = self.layout
            tiles = f" of {lay.tile}-row tiles, {lay.panels} panel(s)" if lay else ""
            steps.append(f"{self.sample_rounds} sample round(s){tiles}")
        if self.other_passes:
            steps.append(f"{self.other_passes} other pass(es)")
        return (
            f"{len(self.routes)} pair(s) ({by}) over {self.n} rows; "
            f"{' + '.join(steps) or 'no pass'}; "
            f"reads {human_bytes(self.reads)}{self._per_chunk()}; "
            f"~{self.flops:.2g} FLOP (~{_duration(self.seconds)}); "
            f"memory ~{human_bytes(self.memory)} of {human_bytes(self.budget)}"
            + "".join(f"; {n}" for n in self.notes)
        )

    def _per_chunk(self) -> str:
        """`` (each chunk read 2.8×)`` where chunks are read more than once."""
        if not self.stored or self.reads <= 1.005 * self.stored:
            return ""
        return f" (each chunk read {self.reads / self.stored:.2g}×)"


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 1 else "<1 s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def check_route(route: str) -> str:
    if route not in ROUTES:
        raise InputError(f"Unknown route {route!r}. Expected one of {', '.join(ROUTES)}.")
    return route


def needs_features(specs: Sequence[Spec]) -> list[Spec]:
    """The measures that only the feature route computes."""
    return [s for s in specs if not s.measure.special(s.opts) and not s.measure.sample_form(s.opts)]


def make_plan(
    ctx: Any,
    specs: Sequence[Spec],
    own: Sequence[int],
    route: str = "auto",
    uncertain: bool = False,
    ci: bool = False,
    permutations: int = 0,
) -> Plan:
    """The plan of one comparison (``ctx``: its
    :class:`~reprstore.engine.pass_context.PassContext`).

    Raises before any data is read: an unknown route, a route a measure cannot take, a
    shape refusal, or memory that no route fits.
    """
    check_route(route)
    n, widths = ctx.n, [int(a.shape[1]) for a in ctx.arrays]
    sizes = [int(a.dtype.itemsize) for a in ctx.arrays]
    unique: list[Pair] = list(ctx.pairs)
    _shape_refusals(ctx, specs, unique)
    fold_notes: list[str] = []
    _fold_refusals(ctx, specs, unique, uncertain, fold_notes)
    if ci:
        _interval_refusals(ctx, specs, unique)
    feats = needs_features(specs)
    sampled = [s for s in specs if s.measure.sample_form(s.opts)]
    rbf = [s for s in sampled if s.name == "cka" and s.opts["kernel"] == "rbf"]
    free = [s for s in sampled if s not in rbf]  # either route
    if route == "features" and rbf:
        raise InputError(
            "The exact rbf kernel has no feature route: it needs the n × n kernels "
            "(the sample route). Use --route auto or samples."
        )
    if route == "samples" and feats:
        raise InputError(
            f"{', '.join(s.key for s in feats)} has no exact sample-space form (it needs the "
            "p × q feature statistics): use --route auto or features, or compare it apart."
        )
    if uncertain and rbf:
        raise InputError(
            "--ci and --permutations are not available for the exact estimator with the rbf "
            "kernel (it runs on the sample route). Use --estimator minibatch (any kernel) or "
            "--kernel linear."
        )
    if uncertain and route == "samples":
        raise InputError(
            "--ci and --permutations run on the feature route; leave --route out or use "
            "--route features."
        )
    plan = Plan(routes={}, n=n, threads=ctx.threads, budget=ctx.memory, notes=fold_notes)
    products = products_note(ctx.backend)
    if products is not None:
        plan.notes.append(products)
    involved = {i for p in unique for i in p} | set(own)
    plan.stored = float(sum(ctx.arrays[i].shape[0] * widths[i] * sizes[i] for i in involved))
    deg = _degrees(unique)
    block = max(ctx.arrays[0].chunks[0])
    nuclear = any(s.measure.sample_form(s.opts) == "factors" for s in free)
    for pair in unique:
        if feats or (free and (route == "features" or uncertain)):
            plan.routes[pair] = "features"
        elif free and route == "samples":
            plan.routes[pair] = "samples"
        elif free:
            sides = [(pair[0], "raw"), (pair[1], "raw")]
            (finish,) = finishing_bytes(free, widths, sides, [(0, 1)])
            plan.routes[pair] = _cheaper(ctx, pair, widths, sizes, deg, block, nuclear, finish)
        elif rbf:
            plan.routes[pair] = "samples"
        else:  # passes of their own only
            plan.routes[pair] = str(next(s.measure.special(s.opts) for s in specs
                                         if s.measure.special(s.opts)))  # fmt: skip
    _cost_features(plan, ctx, specs, own, widths, sizes, block)
    sample_pairs = [p for p in unique if plan.routes[p] == "samples" or rbf]
    if sample_pairs:
        _cost_samples(plan, ctx, sample_pairs, widths, sizes, block, rbf, free)
    if _direct_candidate(ctx, specs, plan, uncertain):
        need = direct_bytes(ctx, specs, own, plan)
        if need <= ctx.memory:
            plan.direct, plan.feature_memory = True, need
    for s in specs:
        if s.measure.special(s.opts) == "minibatch":
            _cost_minibatch(plan, ctx, s.opts, sorted({i for p in unique for i in p}),
                            permutations)  # fmt: skip
    return plan


def _cost_minibatch(
    plan: Plan, ctx: Any, opts: dict[str, Any], idx: Sequence[int], permutations: int = 0
) -> None:
    """Passes, reads, FLOPs and memory of one minibatch CKA (and its RBF bandwidths)."""
    layout = minibatch_layout(ctx, idx, opts["batch_size"], opts["shuffle"], permutations)
    one_read = sum(ctx.n * int(ctx.arrays[i].shape[1]) * int(ctx.arrays[i].dtype.itemsize)
                   for i in idx)  # fmt: skip
    plan.other_passes += layout.groups
    plan.reads += one_read * layout.groups
    plan.flops += sum(2.0 * ctx.n * opts["batch_size"] * int(ctx.arrays[i].shape[1]) for i in idx)
    plan.other_memory = max(plan.other_memory, layout.memory)
    if opts["kernel"] == "rbf":
        bw = bandwidth_layout(ctx, idx)
        plan.other_passes += 1
        plan.reads += one_read
        plan.other_memory = max(plan.other_memory, bw.memory)


@dataclass(frozen=True)
class MinibatchLayout:
    """How a minibatch pass runs within ``--memory`` (:func:`minibatch_layout`).

    Attributes
    ----------
    workers : int
        Block tasks at once (at most the threads).
    task : int
        Bytes of one block task.
    group_rows : int
        Rows of the shuffled batches gathered in one group (one pass over the data each);
        ``n`` for consecutive batches, which need one pass.
    groups : int
        Passes over the data.
    memory : int
        Bytes held at once: the tasks, plus a group's pieces where batches are shuffled.
    """

    workers: int
    task: int
    group_rows: int
    groups: int
    memory: int


def minibatch_layout(
    ctx: Any, idx: Sequence[int], batch_size: int, shuffle: int | None, permutations: int = 0
) -> MinibatchLayout:
    """The memory model of a minibatch pass over representations ``idx``, from shapes.

    A block task holds its row block of every involved representation as stored
    (``STORED_COPIES`` times: zarr's compressed and decoded chunks, the checked block), the
    B × B kernel of every involved representation with two temporaries, one batch of one
    representation in float64 (the kernel's input), and two batches of rows as stored (the
    batch carried to the next block, and its joined copy). As many tasks run at once as fit
    ``ctx.memory``, and each chain of tasks after the first holds the block it shares with
    the chain before (read once for both). Shuffled batches have their rows in every
    block: their pieces (a copy, then the joined batch) are gathered a group at a time, as
    many rows per group as the memory left by the tasks holds; each group reads the data
    again; the batch ids (8 bytes a stored row, and temporaries) are held once: groups and
    segments are ranges over them (:class:`~reprstore.stats.minibatch.BatchRange`). With
    ``permutations`` (a within-batch test) each task also holds a gather buffer of
    permuted kernels (:func:`gather_bytes`), a scratch kernel and the permutations being
    drawn (within the same bound).
    Refuses, before anything is read, what one task cannot fit.
    """
    from reprstore.stats.minibatch import batch_sizes
    from reprstore.stats.plan import STORED_COPIES

    kernel = 8 * batch_size**2
    kernels = kernel * (len(idx) + 2)
    if permutations:  # the gather buffer (one kernel at least), a scratch kernel, the draws
        from reprstore.stats.resample import DRAW_BYTES, DRAW_COPIES

        kernels += kernel * (1 + min(permutations, max(1, gather_bytes(ctx.memory) // kernel)))
        one = DRAW_COPIES * 8 * batch_size  # one permutation drawn
        kernels += max(one, min(DRAW_BYTES, gather_bytes(ctx.memory), one * permutations))
    check_budget(f"The kernels of batches of {batch_size} rows", kernels, ctx.memory,
                 "Lower --batch-size.")  # fmt: skip
    row_bytes = sum(int(ctx.arrays[i].shape[1]) * int(ctx.arrays[i].dtype.itemsize) for i in idx)
    widest = max(int(ctx.arrays[i].shape[1]) for i in idx)
    block_rows = max(ctx.arrays[0].chunks[0])
    # the block's rows as stored, three copies; its batch ids and their helpers (24 bytes
    # a row); the kernels; one batch in float64; two batches carried across blocks
    task = (block_rows * (STORED_COPIES * row_bytes + 24) + kernels + 8 * batch_size * widest
            + 2 * batch_size * row_bytes)  # fmt: skip
    check_budget(
        f"One row block of the minibatch pass (blocks of {block_rows} rows and batches of "
        f"{batch_size})", task, ctx.memory, "Raise --memory or lower --batch-size.",
    )  # fmt: skip
    # a block two chains share (consecutive batches) stays read until the second uses it
    shared = block_rows * row_bytes
    workers = max(1, min(ctx.threads, (ctx.memory + shared) // (task + shared)))
    held = workers * task + (workers - 1) * shared
    # the batch ids of shuffled or filtered rows (8 bytes a stored row), shared by every
    # group and segment as ranges, and as much again in temporaries while they are drawn
    # or a range's rows are found; consecutive batches of every row need none
    ids = 0 if shuffle is None and ctx.mask is None else 32 * int(ctx.arrays[0].shape[0])
    if shuffle is None:
        check_budget("The minibatch pass's tasks and batch ids", held + ids, ctx.memory,
                     "Raise --memory.")  # fmt: skip
        return MinibatchLayout(workers, task, ctx.n, 1, held + ids)
    n_batches = len(batch_sizes(ctx.n, batch_size))
    per_batch = -(-ctx.n // n_batches)  # rows of the largest batch
    check_budget(
        f"The minibatch pass's tasks, batch ids and one shuffled batch of {per_batch} rows",
        held + ids + 2 * row_bytes * per_batch, ctx.memory,
        "Raise --memory or lower --batch-size.",
    )  # fmt: skip
    per_group = min(max(1, (ctx.memory - held - ids) // (2 * row_bytes * per_batch)), n_batches)
    rows = min(ctx.n, per_group * per_batch)
    groups = -(-n_batches // per_group)
    return MinibatchLayout(workers, task, rows, groups, held + ids + 2 * row_bytes * rows)


@dataclass(frozen=True)
class BandwidthLayout:
    """How minibatch CKA's RBF bandwidths are found (:func:`bandwidth_layout`).

    Attributes
    ----------
    rows : int
        Rows each median is taken over (all of them up to :data:`SIGMA_EXACT_ROWS`).
    threads : int
        Medians computed at once.
    memory : int
    """

    rows: int
    threads: int
    memory: int


def bandwidth_layout(ctx: Any, idx: Sequence[int]) -> BandwidthLayout:
    """The memory model of the bandwidth pass: :data:`BANDWIDTHS_PER_SEGMENT`
    representations' rows gathered at once (their blocks as read, the selected rows and
    their joined copy), then per median at once its rows' two float64 copies, the
    m(m−1)/2 squared distances above the diagonal and one block of Gram rows
    (:func:`reprstore.stats.kernels.upper_distances`; never the m × m matrix). As many
    medians run at once as fit ``ctx.memory``; refuses what one cannot fit."""
    from reprstore.stats.kernels import GRAM_BLOCK_BYTES
    from reprstore.stats.plan import STORED_COPIES

    m = ctx.n if ctx.n <= SIGMA_EXACT_ROWS else SIGMA_SAMPLE_ROWS
    widths = [int(ctx.arrays[i].shape[1]) for i in idx]
    itemsize = max(int(ctx.arrays[i].dtype.itemsize) for i in idx)
    per = min(BANDWIDTHS_PER_SEGMENT, len(idx))
    widest = sorted(widths, reverse=True)[:per]
    block = max(ctx.arrays[0].chunks[0])
    reading = STORED_COPIES * block * max(widths) * itemsize * max(1, ctx.threads)
    gathered = 2 * m * itemsize * sum(widest)
    # the distances above the diagonal, a block of Gram rows, the rows twice in float64
    one = 4 * m * m + min(GRAM_BLOCK_BYTES, 8 * m * m) + 16 * m * max(widths)
    check_budget(
        f"The RBF bandwidth (median of {m}² squared distances)", gathered + one, ctx.memory,
        "Raise --memory.",
    )  # fmt: skip
    threads = max(1, min(ctx.threads, per, (ctx.memory - gathered) // one))
    return BandwidthLayout(m, threads, gathered + max(reading, threads * one))


def _direct_candidate(ctx: Any, specs: Sequence[Spec], plan: Plan, uncertain: bool) -> bool:
    """Whether the comparison's linear statistics may come from the direct pass
    (:mod:`reprstore.engine.direct`), memory aside: one feature pass and nothing else
    (no sample route, no measure with a pass of its own, no interval or test), numpy
    products, a local scheduler (threads or synchronous), and inputs of at most
    :data:`~reprstore.engine.direct.DIRECT_MAX_BLOCKS` stored row blocks. Anything else
    takes the dask pass. The direct pass saves no checkpoint: a pass of a few blocks is
    over before a checkpoint would be due, and a killed one is cheaper to run again (the
    result cache still keeps its values)."""
    from reprstore.engine import dask_graph
    from reprstore.engine.direct import DIRECT_MAX_BLOCKS
    from reprstore.stats.linear import NumpyBackend

    return (
        plan.feature_passes == 1
        and not plan.sample_rounds
        and not uncertain
        and all(r == "features" for r in plan.routes.values())
        and not any(s.measure.special(s.opts) for s in specs)
        and isinstance(ctx.backend, NumpyBackend)
        and dask_graph.is_local(ctx.scheduler)
        and len(ctx.arrays[0].chunks[0]) <= DIRECT_MAX_BLOCKS
        and getattr(ctx, "sources", None) is not None
    )


def direct_bytes(ctx: Any, specs: Sequence[Spec], own: Sequence[int], plan: Plan) -> int:
    """The memory model of the direct pass, the larger of its two phases.

    While summing: every involved array as stored, whole, ``STORED_COPIES`` times (zarr's
    compressed and decoded chunks, the array, its selected rows), each row view's float64
    rows (:mod:`reprstore.stats.views`, and two temporaries of the largest while it is made),
    and the larger of the offsets' float64 copies of
    one row block per thread (taken first) and the statistics updated in place with their
    products' temporaries and the float64 working buffers
    (:func:`reprstore.stats.plan.in_place_bytes`, one row block's buffers). Then, the
    arrays freed, the statistics once and the measures' finishing workspaces."""
    from reprstore.stats.plan import STORED_COPIES, in_place_bytes, linear_state_bytes

    pairs = [p for p, r in plan.routes.items() if r == "features"]
    streams, plan_pairs, features = feature_streams(ctx, pairs, specs, own)
    own_s = sorted({k for p in plan_pairs for k in p if p[0] == p[1]})
    cross = [p for p in plan_pairs if p[0] != p[1]]
    reprs = sorted({i for i, _ in streams})
    n_total = int(ctx.arrays[0].shape[0])
    stored = sum(n_total * int(ctx.arrays[i].shape[1]) * int(ctx.arrays[i].dtype.itemsize)
                 for i in reprs)  # fmt: skip
    block = max(ctx.arrays[0].chunks[0])
    threads = max(1, ctx.threads)
    # each row view's float64 rows, kept; while one is made, two more of its size
    # (stats.views.apply_view: the float64 rows, their scaled copy, then the unit rows)
    sizes_v = [8 * ctx.n * int(ctx.arrays[i].shape[1]) for i, v in streams if v != RAW]
    views = sum(sizes_v) + 2 * max(sizes_v, default=0)
    # a block's float64 copy per offset taken at once (two where rows are not finite)
    offsets = 2 * 8 * block * max((int(ctx.arrays[i].shape[1]) for i in reprs), default=0)
    reading = Reading(min(ctx.n, block), threads)  # working buffers of one block
    summing = (
        STORED_COPIES * stored
        + views
        + max(min(threads, len(streams)) * offsets, in_place_bytes(features, own_s, cross, reading))
    )
    widths = [int(a.shape[1]) for a in ctx.arrays]
    held = finishing_reserve(finishing_bytes(specs, widths, streams, plan_pairs), threads)
    return int(max(summing, linear_state_bytes(features, own_s, cross) + held))


def _shape_refusals(ctx: Any, specs: Sequence[Spec], unique: Sequence[Pair]) -> None:
    for s in specs:
        for i, j in unique:
            if s.measure.pairing != "rows":
                continue
            p, q = int(ctx.arrays[i].shape[1]), int(ctx.arrays[j].shape[1])
            why = s.measure.shape_refusal(s.opts, ctx.n, p, q)
            if why:
                raise ComparisonError(why)


def _fold_refusals(
    ctx: Any, specs: Sequence[Spec], unique: Sequence[Pair], uncertain: bool, notes: list[str]
) -> None:
    """linreg:folds keeps every fold's sums in one pass: k × (p² + pq + q²) floats."""
    from reprstore.engine.grouped import own_bytes, pair_bytes

    for s in specs:
        if s.measure.special(s.opts) != "folds":
            continue
        if uncertain:
            raise InputError(
                f"--ci and --permutations are not available for {s.key} (a cross-validated "
                "R²): leave them out, or ask for linreg without folds."
            )
        column = s.opts["fold_by"]
        if column is not None:
            if s.opts["folds"] is not None:
                raise InputError("Give linreg:folds=k or linreg:fold_by=COLUMN, not both.")
            if column not in ctx.columns:
                raise InputError(
                    f"linreg:fold_by={column}: the dataset has no metadata column {column!r} "
                    "(reprstore import --meta, or columns= in the Python API)."
                )
            k = len(set(ctx.columns[column].tolist()))
            if k < 2:
                raise InputError(
                    f"linreg:fold_by={column} needs at least 2 distinct values over the rows "
                    f"compared. Got {k}."
                )
        else:
            k = int(s.opts["folds"])
            if not 2 <= k <= ctx.n:
                raise InputError(f"linreg:folds must be between 2 and the {ctx.n} rows. Got {k}.")
        widths = [int(a.shape[1]) for a in ctx.arrays]
        reprs = {i for p in unique for i in p}
        own = sum(own_bytes(widths[i]) for i in reprs)
        need = k * (own + sum(pair_bytes(widths[i], widths[j]) for i, j in unique if i != j))
        plan_note = f"{s.key}: the sums of {k} folds kept in the pass"
        if plan_note not in notes:
            notes.append(plan_note)
        check_budget(f"{s.key}, which keeps the sums of each of its {k} folds,", need,
                     ctx.memory, "Raise --memory or use fewer folds.")  # fmt: skip


def _interval_refusals(ctx: Any, specs: Sequence[Spec], unique: Sequence[Pair]) -> None:
    """Refuse ``--ci`` for a measure beyond the features-to-rows ratio at which the
    coverage simulation found its interval at the nominal level (docs/uncertainty.md)."""
    for s in specs:
        limit = s.measure.ci_limit(s.opts)
        if limit is None:
            continue
        if limit == 0.0:
            raise InputError(
                f"--ci is not offered for {s.key}: its interval missed the population value "
                "at every features-to-rows ratio of the coverage simulation "
                "(docs/uncertainty.md). Use cka:estimator=debiased (the default)."
            )
        for i, j in unique:
            p, q = int(ctx.arrays[i].shape[1]), int(ctx.arrays[j].shape[1])
            if max(p, q) / ctx.n > limit:
                raise InputError(
                    f"--ci for {s.name} is refused at {max(p, q)} features over {ctx.n} rows "
                    f"(p/n = {max(p, q) / ctx.n:.3g}): its interval held the nominal level "
                    f"only up to p/n = {limit:g} in the coverage simulation "
                    f"(docs/uncertainty.md). Compare at least {math.ceil(max(p, q) / limit)} "
                    "rows or fewer features, or leave --ci out."
                )


def _degrees(unique: Sequence[Pair]) -> dict[int, int]:
    deg: dict[int, int] = {}
    for i, j in unique:
        for k in {i, j}:
            deg[k] = deg.get(k, 0) + 1
    return deg


def _cheaper(
    ctx: Any, pair: Pair, widths: list[int], sizes: list[int], deg: dict[int, int], block: int,
    nuclear: bool = False, finishing: int = 0,
) -> str:  # fmt: skip
    """The route of the smaller estimated time for a pair whose measures all have a sample
    form (with ``nuclear``, procrustes/shape: n × n Gram matrices and their eigenproblems);
    the sample route wherever the feature pass (:func:`pass_bytes`) would not fit."""
    n = ctx.n
    i, j = pair
    p, q = widths[i], widths[j]
    reading = Reading(block, ctx.threads, sizes, ctx.blocks, _in_place(ctx))
    if pass_bytes(widths, [i, j], [(i, j)], reading, finishing) > ctx.memory:
        return "samples"
    sides = {i, j}
    f_flops = sum(n * widths[k] ** 2 / deg[k] for k in sides) + (2.0 * n * p * q if i != j else 0)
    s_flops = sum(float(n) * n * widths[k] / deg[k] for k in sides) + 3.0 * n * n
    if nuclear:
        from reprstore.engine.sample_pass import factor_bytes

        if factor_bytes(n, len(sides)) > ctx.memory:
            return "features"
        s_flops += sum(EIGH_FLOPS * float(n) ** 3 / deg[k] for k in sides)
        # the feature route's per-representation factorisations are of Cxx (p × p): a
        # representation's eigenproblem on the route of the smaller of n and p
        f_flops += sum(EIGH_FLOPS * float(widths[k]) ** 3 / deg[k] for k in sides)
    layout = sample_layout(n, [widths[k] for k in sides], [sizes[k] for k in sides],
                           ctx.memory, ctx.threads, block, converted(ctx.backend))  # fmt: skip
    if layout is None:
        return "features"
    stored = sum(n * widths[k] * sizes[k] for k in sides)
    t = max(ctx.threads, 1)
    f_time = f_flops / (FLOPS_PER_THREAD * t) + stored / (READ_BYTES_PER_THREAD * t)
    s_reads = stored * (1 if layout.panels == 1 else layout.reads / layout.panels)
    s_time = s_flops / (FLOPS_PER_THREAD * t) + s_reads / (READ_BYTES_PER_THREAD * t)
    return "samples" if s_time < f_time else "features"


def finishing_bytes(
    specs: Sequence[Spec], widths: Sequence[int], streams: Sequence[tuple[int, str]],
    stream_pairs: Sequence[Pair],
) -> list[int]:  # fmt: skip
    """What finishing each stream pair of a feature pass holds on one thread besides its
    statistics: the largest workspace of the measures' steps (:meth:`Measure.workspace`).
    The one place the finishing steps enter the memory model (a pass reserves its
    ``threads`` largest: :func:`reprstore.stats.plan.finishing_reserve`)."""
    out = []
    for s, t in stream_pairs:
        p, q = widths[streams[s][0]], widths[streams[t][0]]
        out.append(max((x.measure.workspace(x.opts, p, q) for x in specs), default=0))
    return out


def kept_bytes(
    specs: Sequence[Spec], widths: Sequence[int], streams: Sequence[tuple[int, str]]
) -> list[int]:
    """What the measures keep of each stream's representation from its pass until the
    comparison ends (:meth:`Measure.kept_parts`), counted once per representation: a part
    that several measures keep (the shared side, one whitening) once."""
    out, seen = [], set()
    for i, _ in streams:
        parts: dict[Any, int] = {}
        for x in specs if i not in seen else ():
            for name, size in x.measure.kept_parts(x.opts, widths[i]).items():
                parts[name] = max(parts.get(name, 0), size)
        out.append(sum(parts.values()))
        seen.add(i)
    return out


def _cost_features(plan: Plan, ctx: Any, specs: Sequence[Spec], own: Sequence[int],
                   widths: list[int], sizes: list[int], block: int) -> None:  # fmt: skip
    """Passes, reads, FLOPs and memory of the feature route's pairs (and ``own``)."""
    from reprstore.stats.plan import plan_linear_passes

    pairs = [p for p, r in plan.routes.items() if r == "features"]
    streams, plan_pairs, features = feature_streams(ctx, pairs, specs, own)
    if not streams:
        return
    finishing = finishing_bytes(specs, widths, streams, plan_pairs)
    kept = kept_bytes(specs, widths, streams)
    try:
        itemsizes = [sizes[i] for i, _ in streams]
        passes = plan_linear_passes(features, plan_pairs, ctx.memory, block, finishing,
                                    ctx.threads, kept, itemsizes, ctx.blocks,
                                    _in_place(ctx))  # fmt: skip
    except ComparisonError as err:
        raise ComparisonError(_feature_refusal(str(err), specs)) from None
    plan.feature_passes = len(passes)
    n = plan.n
    reserve = dict(zip(plan_pairs, finishing, strict=True))
    done: set[int] = set()
    for own_s, batch in passes:
        reprs = {streams[k][0] for pair in batch for k in pair} | {streams[k][0] for k in own_s}
        plan.reads += sum(ctx.arrays[0].shape[0] * widths[i] * sizes[i] for i in reprs)
        held = finishing_reserve([reserve[p] for p in batch], ctx.threads)
        reading = Reading(block, ctx.threads, itemsizes, ctx.blocks, _in_place(ctx))
        mem = sum(kept[k] for k in done) + pass_bytes(features, own_s, batch, reading, held)
        done |= set(own_s)
        plan.feature_memory = max(plan.feature_memory, mem)
        plan.flops += sum(n * features[k] ** 2 for k in set(own_s))
        plan.flops += sum(2.0 * n * features[a] * features[b] for a, b in batch if a != b)


def _in_place(ctx: Any) -> bool:
    """Whether a linear pass of one chain updates its state in place (local threads)."""
    from reprstore.engine import dask_graph

    return dask_graph.is_local_threaded(ctx.scheduler)


def _feature_refusal(message: str, specs: Sequence[Spec]) -> str:
    """The feature route's memory refusal with advice for the measures asked for."""
    head = message.split(" Raise --memory", 1)[0]
    feats = [s.key for s in needs_features(specs)]
    if feats:
        return (
            f"{head} {', '.join(feats)} need(s) these p × q statistics (no sample-space form). "
            "Raise --memory, or compare fewer features."
        )
    return f"{head} Raise --memory, or leave --route out: the sample route holds no p × p."


def _cost_samples(plan: Plan, ctx: Any, pairs: Sequence[Pair], widths: list[int],
                  sizes: list[int], block: int, rbf: Sequence[Spec],
                  free: Sequence[Spec]) -> None:  # fmt: skip
    """Rounds, reads, FLOPs and memory of the sample route's pairs: one round of tiles per
    measure (cka, rsa, procrustes/shape), and the exact median's rounds for rbf."""
    from reprstore.engine.sample_pass import check_factors, factor_bytes

    idx = sorted({i for p in pairs for i in p})
    w, s = [widths[i] for i in idx], [sizes[i] for i in idx]
    layout = sample_layout(plan.n, w, s, ctx.memory, ctx.threads, block, converted(ctx.backend))
    if layout is None:
        raise ComparisonError(
            f"The sample route cannot hold one row block ({block} rows of {sum(w)} features "
            f"over {len(idx)} representation(s)) and its tiles within the memory limit "
            f"{human_bytes(ctx.memory)}. Raise --memory, or compare fewer representations "
            "at once."
        )
    plan.layout = layout
    rounds = len(rbf) * (1 + MEDIAN_ROUNDS) + len(free)
    plan.sample_rounds = rounds
    plan.sample_memory = sample_bytes(layout, w, s, ctx.threads, block, converted(ctx.backend))
    n = plan.n
    if any(x.measure.sample_form(x.opts) == "factors" for x in free):
        need = factor_bytes(n, len(idx))
        check_factors(n, len(idx), ctx.memory)
        plan.sample_memory = max(plan.sample_memory, need)
        plan.flops += EIGH_FLOPS * float(n) ** 3 * len(idx)
    stored = sum(ctx.arrays[0].shape[0] * widths[i] * sizes[i] for i in idx)
    plan.reads += stored if layout.panels == 1 else stored * rounds * (layout.reads / layout.panels)
    plan.flops += rounds * sum(float(n) * n * widths[i] for i in idx)
    plan.flops += 2.0 * n * n * (len(pairs) + len(idx)) * rounds
    if rbf:
        plan.flops += RBF_ENTRY_COST * float(n) * n / 2 * len(idx) * (1 + MEDIAN_ROUNDS) * len(rbf)
        plan.notes.append("rbf σ from the exact median of the n² squared distances")


# ------------------------------------------------------- streams of the feature route


def involved(pairs: Sequence[Pair]) -> list[int]:
    """Every representation some pair involves, in order."""
    return sorted({i for p in pairs for i in p})


def union_views(specs: Sequence[Spec], what: str) -> list[str]:
    """The row views (``own`` or ``cross``) that any of ``specs`` needs, raw first."""
    views: set[str] = set()
    for s in specs:
        if s.measure.special(s.opts) is None or what == "own":
            views |= getattr(s.measure, f"{what}_views")(s.opts)
    return sorted(views, key=lambda v: (v != RAW, v))


def feature_streams(
    c: PassContext, pairs: Sequence[Pair], specs: Sequence[Spec], own: Sequence[int] = ()
) -> tuple[list[tuple[int, str]], list[Pair], list[int]]:
    """The linear statistics the feature route makes for unique ``pairs`` and ``own``:
    the (representation, view) streams, the stream pairs to plan (own statistics first)
    and each stream's width."""
    own_views = union_views(specs, "own")
    cross_views = union_views([s for s in specs if s.measure.pairing == "rows"], "cross")
    if not own_views:
        return [], [], []
    reprs = sorted(set(involved(pairs)) | set(own))
    streams = [(i, v) for i in reprs for v in own_views]
    index = {st: k for k, st in enumerate(streams)}
    plan_pairs = [(index[st],) * 2 for st in streams]
    for i, j in pairs:
        if i != j:
            plan_pairs += [(index[(i, v)], index[(j, v)]) for v in cross_views]
    features = [int(c.arrays[i].shape[1]) for i, _ in streams]
    return streams, plan_pairs, features
