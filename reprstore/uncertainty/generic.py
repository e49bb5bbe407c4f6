"""Intervals and permutation tests of every measure written on the linear statistics.

The measures of :mod:`reprstore.metrics` that need no pass of their own (cca, svcca, pwcca,
procrustes, shape, linreg, rsa, cosine, pca within one dataset, and cka's exact linear
estimators) see only finished streamed sums: per representation and row view the
:class:`~reprstore.stats.linear.ReprMoments`, per pair the ``PairMoments``. So:

* **interval**: one grouped pass (:mod:`reprstore.engine.grouped`) keeps those sums
  per row group; for each non-empty group g the engine's own two steps (each measure's
  ``partial`` on every side, ``finalize`` on every pair, :func:`reprstore.engine.passes._partials`
  / ``_finalize``) run on ``total − state_g``, giving every scalar column with g left out;
  the delete-group jackknife SE and estimate ± t_{G'−1}·SE follow per column
  (``<col>_lo``, ``<col>_hi``, ``<col>_se``);
* **permutation test** (row-paired measures): the involved streams' selected rows are held
  in memory; each permutation π re-makes the pair's cross sums of (A, B[π]) (one p × q
  product per view) and re-runs ``finalize`` on the unchanged partials;
  p = (1 + #{T_π ≥ T}) / (R + 1) per scalar column (``<col>_p``), T the column (its
  negative for distances, where smaller means more alike). The permutations run in
  checkpointed segments (:mod:`reprstore.uncertainty.resume`): a killed test resumes
  from the null values saved, to the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from reprstore.engine import dask_graph, passes
from reprstore.engine import grouped as gp
from reprstore.engine.pass_context import PassContext
from reprstore.engine.passes import Layout, Outcome, measure_sums
from reprstore.errors import ComparisonError
from reprstore.metrics.base import Cross, Side, Spec
from reprstore.stats import linear
from reprstore.stats import resample as rs
from reprstore.stats.plan import STORED_COPIES, check_budget, human_bytes
from reprstore.stats.resample import DRAW_BYTES, DRAW_COPIES
from reprstore.uncertainty import resume
from reprstore.uncertainty.base import UncertaintySettings, say

Pair = tuple[int, int]
#: Row permutations of the non-cka measures are refused (under ``permute="auto"``) beyond
#: this many multiply-adds: about 10 minutes of float64 BLAS on two cores.
PERMUTATION_MACS = 2e12


def scalar_columns(specs: Sequence[Spec]) -> list[tuple[Spec, str]]:
    """(spec, result column) of every scalar the specs give."""
    return [(s, s.column(c)) for s in specs for c in s.measure.columns(s.opts)[0]]


def _value(row: dict[str, Any], column: str) -> float:
    v = row.get(column)
    return float(v) if isinstance(v, (int, float, np.number)) and v is not None else np.nan


def _map(threads: int, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on ``threads`` threads with single-threaded BLAS."""
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with dask_graph.blas_threads(1), ThreadPoolExecutor(threads, "reprstore-jackknife") as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------------ intervals


def orientations(ordered: Sequence[Pair]) -> dict[Pair, list[Pair]]:
    orient: dict[Pair, list[Pair]] = {}
    for a, b in dict.fromkeys(ordered):
        orient.setdefault((min(a, b), max(a, b)), []).append((a, b))
    return orient


#: What :func:`_plan` gives: orientations, unordered pairs, layout, row-block bytes, G,
#: passes of pair indices.
_Plan = tuple[dict[Pair, list[Pair]], list[Pair], Layout, int, int, list[list[int]]]


def _plan(ctx: PassContext, ordered: Sequence[Pair], specs: Sequence[Spec],
          opts: UncertaintySettings) -> _Plan:  # fmt: skip
    """(orientations, unordered pairs, layout, row-block bytes, G, passes of pair indices)."""
    orient = orientations(ordered)
    units = list(orient)
    lay = Layout(ctx, specs, units)
    reprs = sorted({k for p in units for k in p})
    widths = [int(a.shape[1]) for a in ctx.arrays]
    threads = max(1, ctx.threads)
    # each chain holds a block of every array as a plain pass does (Reading), and its
    # rows sorted by group (one more copy as stored)
    block = max(ctx.arrays[0].chunks[0])
    chains = min(threads, max(1, ctx.blocks))
    copies = STORED_COPIES + 1
    data = (
        chains
        * block
        * sum(widths[i] * (8 + copies * int(ctx.arrays[i].dtype.itemsize)) for i in reprs)
    )
    # each recomputing thread finishes its pairs one at a time, keeping every side's step
    work = max(s.measure.workspace(s.opts, widths[a], widths[b]) for s in specs for a, b in units)
    kept = sum(s.measure.kept(s.opts, widths[i]) for s in specs for i in reprs)
    sizes = [lay.unit_bytes([u]) for u in units]
    n_groups, plan = gp.plan_groups(
        sizes, opts.bootstrap, ctx.memory, data, lambda ks: lay.unit_bytes([units[k] for k in ks]),
        replicas=1 + threads, finishing=threads * (work + kept),
    )  # fmt: skip
    return orient, units, lay, data, n_groups, plan


def interval_blocks(ctx: PassContext, ordered: Sequence[Pair], specs: Sequence[Spec],
                    opts: UncertaintySettings) -> int:  # fmt: skip
    """Row-block tasks of the interval's passes (for the progress bar)."""
    return len(_plan(ctx, ordered, specs, opts)[5]) * ctx.blocks


def test_blocks(ctx: PassContext, ordered: Sequence[Pair]) -> int:
    """Row-block tasks of the permutation test's gather pass (for the progress bar)."""
    return len({i for p in ordered for i in p}) * ctx.blocks


def intervals(
    ctx: PassContext, ordered: Sequence[Pair], specs: Sequence[Spec], opts: UncertaintySettings,
    ids: np.ndarray, runner: dask_graph.Runner,
) -> dict[Pair, dict[str, Any]]:  # fmt: skip
    """Every ordered pair's columns with the jackknife interval of each scalar column.

    Returns, per ordered pair, the engine's columns plus ``<col>_lo``, ``<col>_hi``,
    ``<col>_se`` and the shared ``ci_level``, ``ci_method``, ``ci_replicates``,
    ``resample_seed``.
    """
    assert opts.ci is not None
    orient, units, lay, data, n_groups, plan = _plan(ctx, ordered, specs, opts)
    state = n_groups * max(lay.unit_bytes([units[k] for k in ks]) for ks in plan)
    sides = len({i for u in units for i in u})
    say(opts, f"interval: delete-group jackknife over {n_groups} row groups "
        f"({opts.bootstrap} asked), {len(plan)} pass(es), group states {human_bytes(state)} "
        f"(--memory {human_bytes(ctx.memory)}); then {n_groups} leave-one-group-out "
        f"recomputations of {', '.join(s.name + s.suffix for s in specs)} ({sides} "
        f"representation and {len(ordered)} pair steps each, {n_groups} × the finalize "
        "time)")  # fmt: skip
    groups = rs.group_ids(ids, opts.seed, n_groups)
    used = np.flatnonzero(np.bincount(groups, minlength=n_groups))
    if used.size < 2:
        raise ComparisonError("The interval needs rows in at least 2 groups: too few rows.")
    offsets = gp.first_offsets(ctx, lay.streams, list(range(len(lay.streams))))
    columns = scalar_columns(specs)
    out: dict[Pair, dict[str, Any]] = {}
    for ks in plan:
        batch = {units[k]: orient[units[k]] for k in ks}
        pairs = list(batch)
        stacked = gp.grouped_pass(ctx, lay.streams, lay.own_of(pairs), lay.cross_of(pairs),
                                  groups, n_groups, ctx.memory - data, offsets, runner)  # fmt: skip
        full = gp.total(stacked)
        point = measure_sums(ctx, lay, specs, batch, full, offsets)

        def replicate(g: int, stacked: gp.Sums = stacked, full: gp.Sums = full,
                      batch: dict[Pair, list[Pair]] = batch,
                      ) -> dict[Pair, dict[str, Any]]:  # fmt: skip
            return measure_sums(ctx, lay, specs, batch, gp.left_out(stacked, full, g), offsets)

        try:
            reps = _map(ctx.threads, replicate, used.tolist())
        except ComparisonError as err:
            raise ComparisonError(
                f"A leave-one-group-out replicate is undefined ({err}); use fewer groups "
                "(--bootstrap) or more rows."
            ) from None
        del stacked
        for pair, row in point.items():
            out[pair] = {**row, **_interval_columns(row, [r[pair] for r in reps], columns, opts,
                                                    int(used.size))}  # fmt: skip
    return out


def _interval_columns(
    row: dict[str, Any], reps: Sequence[dict[str, Any]], columns: Sequence[tuple[Spec, str]],
    opts: UncertaintySettings, groups: int,
) -> dict[str, Any]:  # fmt: skip
    assert opts.ci is not None
    extra: dict[str, Any] = {}
    corrected: list[str] = []
    clipped: list[str] = []
    for spec, col in columns:
        est = _value(row, col)
        loo = np.array([_value(r, col) for r in reps])
        if not (np.isfinite(est) and np.isfinite(loo).all()):
            extra.update({f"{col}_lo": None, f"{col}_hi": None, f"{col}_se": None})
            continue
        se = float(rs.jackknife_se(loo))
        centre = est
        base = col[: -len(spec.suffix)] if spec.suffix else col
        if base in spec.measure.biased_plugin:
            centre = float(rs.jackknife_corrected(est, loo))
            corrected.append(col)
        t_lo, t_hi = rs.t_interval(centre, se, opts.ci, groups - 1)
        (lo, hi), was_clipped = _within_range(col, float(t_lo), float(t_hi))
        if was_clipped:
            clipped.append(col)
        extra.update({f"{col}_lo": lo, f"{col}_hi": hi, f"{col}_se": se})
    method = f"jackknife-t, {groups} groups"
    if corrected:
        method += f"; centred on the bias-corrected estimate for {', '.join(corrected)}"
    if clipped:
        method += f"; clipped to the measure's range for {', '.join(clipped)}"
    extra.update(ci_level=opts.ci, ci_method=method, ci_replicates=groups,
                 resample_seed=opts.seed)  # fmt: skip
    return extra


def _within_range(col: str, lo: float, hi: float) -> tuple[tuple[float, float], bool]:
    """The interval clipped to the range ``col`` lies in by definition (cca in [0, 1]),
    and whether that changed it: a clip never drops a value the measure can take."""
    from reprstore.metrics.registry import column_range

    bounds = column_range(col)
    if bounds is None or (bounds[0] <= lo and hi <= bounds[1]):
        return (lo, hi), False
    return (max(lo, bounds[0]), min(hi, bounds[1])), True


# --------------------------------------------------------------------- permutations


def permutation_cost(ctx: PassContext, specs: Sequence[Spec], pairs: Sequence[Pair],
                     r: int) -> tuple[float, int]:  # fmt: skip
    """(multiply-adds, bytes held) of R row permutations of the row-paired ``pairs``.

    Held: every stream's rows as stored and offset in float64, drawing a step of
    permutations (:func:`~reprstore.stats.resample.permutation_step`), what the measures
    keep of each side, and on each thread a permuted copy of B's rows, the pair's cross
    moments and the measures' workspace."""
    lay = Layout(ctx, specs, pairs)
    f = [int(a.shape[1]) for a in ctx.arrays]
    cross = sum(f[i] * f[j] for i, j in pairs) * max(len(lay.cross_views), 1)
    rows = ctx.n * sum(
        p * (8 + int(ctx.arrays[i].dtype.itemsize)) for (i, _), p in zip(lay.streams,
                                                                          lay.features, strict=True)
    )  # fmt: skip
    reprs = {k for p in pairs for k in p}
    kept = sum(s.measure.kept(s.opts, f[i]) for s in specs for i in reprs)
    per_thread = max(
        8 * (ctx.n * f[j] + 2 * f[i] * f[j]) + max(s.measure.workspace(s.opts, f[i], f[j])
                                                   for s in specs)
        for i, j in pairs
    )  # fmt: skip
    draw = DRAW_COPIES * 8 * ctx.n  # one permutation, when n alone exceeds DRAW_BYTES
    held = rows + max(DRAW_BYTES, draw) + kept + max(1, ctx.threads) * per_thread
    return float(r) * ctx.n * cross, held


def _held_streams(ctx: PassContext, lay: Layout, runner: dask_graph.Runner) -> dict[int, Any]:
    """Every stream's selected rows, offset and prepared, with its full own moments."""
    arrays = sorted({i for i, _ in lay.streams})
    gathers = [dask_graph.gather_rows(ctx.arrays[i], ctx.mask, dask_graph.source_of(ctx.sources, i))
               for i in arrays]  # fmt: skip
    data = runner(*gathers, blocks=len(arrays) * ctx.blocks)
    raw = {i: np.asarray(x) for i, x in zip(arrays, data, strict=True)}
    held = {}
    for s, (i, view) in enumerate(lay.streams):
        x = raw[i] if view == "raw" else _view(raw[i], view)
        m = linear.moments(x)
        held[s] = (linear.prepare_block(x, m.offset), m)
    return held


def _view(x: np.ndarray, view: str) -> np.ndarray:
    from reprstore.stats.views import apply_view

    return apply_view(x, view)


def _permuted_pair(a: linear.Prepared, b: linear.Prepared, order: np.ndarray | None
                   ) -> linear.PairMoments:  # fmt: skip
    y = b.x if order is None else b.x[order]
    bn = b.sqn if order is None else b.sqn[order]
    return linear.PairMoments(a.x.T @ y, a.sqn @ y, bn @ a.x, float(a.sqn @ bn))


def plan_test(
    ctx: PassContext, ordered: Sequence[Pair], specs: Sequence[Spec], opts: UncertaintySettings
) -> None:
    """Refuse a row permutation test beyond ``--memory`` or the budget; say its cost."""
    assert opts.permutations is not None
    r = int(opts.permutations)
    macs, held_bytes = permutation_cost(ctx, specs, list(orientations(ordered)), r)
    names = ", ".join(s.name + s.suffix for s in specs)
    check_budget(
        f"The permutation test of {names} (the compared rows held in memory)", held_bytes,
        ctx.memory, "Raise --memory or compare fewer rows (--where).",
    )  # fmt: skip
    if opts.permute == "batches" or (opts.permute == "auto" and macs > PERMUTATION_MACS):
        raise ComparisonError(
            f"{r} row permutations of {names} would take {macs / 1e9:.3g} G multiply-adds "
            f"(more than the {PERMUTATION_MACS / 1e9:.0f} G budget; within-batch permutations "
            "exist for cka only): lower --permutations, compare fewer rows (--where), or "
            "force them with reprstore.uncertainty.options(permute='rows') in Python."
        )
    say(opts, f"test of {names}: {r} permutations of rows, 1 pass holding "
        f"{human_bytes(held_bytes)}, {macs / 1e9:.3g} G multiply-adds and {r} × "
        f"{len(ordered)} finalize steps")  # fmt: skip


def permutation_tests(
    ctx: PassContext, ordered: Sequence[Pair], specs: Sequence[Spec], opts: UncertaintySettings,
    runner: dask_graph.Runner,
) -> dict[Pair, dict[str, Any]]:  # fmt: skip
    """Per ordered pair, ``<col>_p`` of every scalar column of the row-paired specs, from R
    permutations of B's rows against A's over all selected rows, and the shared
    ``p_resolution``, ``permutations``, ``permutation_method``, ``resample_seed``
    (:func:`plan_test` checks and says the cost first)."""
    assert opts.permutations is not None
    r = int(opts.permutations)
    orient = orientations(ordered)
    lay = Layout(ctx, specs, list(orient))
    held = _held_streams(ctx, lay, runner)
    sides: dict[int, dict[str, Any]] = {}
    twins: dict[int, dict[str, Any]] = {}  # B side of a self pair: a distinct object
    for i in sorted({k for p in orient for k in p}):
        views = {v: held[lay.index[(i, v)]][1] for v in lay.own_views}
        for store in (sides, twins) if (i, i) in orient else (sides,):
            out = Outcome()
            passes._partials(out, specs, i, Side(ctx.names[i], views), {})
            store[i] = out.partials[i]
    columns = scalar_columns(specs)
    units = list(orient.items())

    def stat(u: int, order: np.ndarray | None) -> dict[Pair, np.ndarray]:
        (i, j), o = units[u]
        views = {v: _permuted_pair(held[lay.index[(i, v)]][0], held[lay.index[(j, v)]][0],
                                   order) for v in lay.cross_views}  # fmt: skip
        cross = Cross(ctx.n, views, {}, (ctx.names[i], ctx.names[j]))
        return {(a, b): _row(specs, sides[a], twins[b] if a == b else sides[b],
                             cross if (a, b) == (i, j) else passes._reverse(cross), columns)
                for a, b in o}  # fmt: skip

    def block(u: int, start: int, count: int) -> dict[str, np.ndarray]:
        """The null values of permutations start … start + count − 1 of unit u."""
        chunk = rs.permutations(opts.seed, count, 0, ctx.n, start=start)
        got = _map(ctx.threads, partial(stat, u), list(chunk))
        return {f"{a},{b}": np.array([g[(a, b)] for g in got]) for a, b in units[u][1]}

    layout = ["permutations", "rows", r, opts.seed, ctx.n,
              [s.key + "|" + s.suffix for s in specs],
              [[list(p), [list(o) for o in os_]] for p, os_ in units], lay.streams,
              lay.cross_views]  # fmt: skip
    key = resume.checkpoint_key(ctx, sorted({k for p in orient for k in p}), layout)
    widths = [len(os_) * len(columns) for _, os_ in units]
    nulls = resume.run_nulls(ctx, key, len(units), r, ctx.n, widths, block)
    found: dict[Pair, dict[str, Any]] = {}
    for u, (_, orientations_) in enumerate(units):
        observed = stat(u, None)
        for p in orientations_:
            pv = rs.permutation_p(observed[p], nulls[u][f"{p[0]},{p[1]}"])
            found[p] = {f"{c}_p": float(v) for (_, c), v in zip(columns, pv, strict=True)}
            found[p].update(
                p_resolution=1.0 / (r + 1), permutations=r, resample_seed=opts.seed,
                permutation_method=f"rows of B permuted over all {ctx.n} rows",
            )  # fmt: skip
    return found


def _row(specs: Sequence[Spec], pa: dict[str, Any], pb: dict[str, Any], cross: Cross,
         columns: Sequence[tuple[Spec, str]]) -> np.ndarray:  # fmt: skip
    """The signed scalar columns of one pair from its partials and (permuted) cross sums."""
    row: dict[str, Any] = {}
    for s in specs:
        got = s.measure.finalize(pa[s.key], pb[s.key], cross, s.opts)
        row.update({s.column(k): v for k, v in got.items()})
    return np.array([_signed(c, _value(row, c)) for _, c in columns])


def _signed(column: str, value: float) -> float:
    """The test's statistic: the value, or its negative for a declared distance."""
    from reprstore.metrics.registry import is_distance

    return -value if is_distance(column) else value
