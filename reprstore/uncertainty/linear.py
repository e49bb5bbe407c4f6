"""Intervals and permutation tests of the exact linear estimators (biased, debiased).

Interval: rows are hashed into G groups by (seed, sample id)
(:func:`~reprstore.stats.resample.group_ids`); one pass accumulates the streamed linear
moments of :mod:`reprstore.stats.linear` per group; leaving group g out is then
``total − state_g``, exactly the estimator on the other rows. The interval is
estimate ± t_{G'−1}·SE_jackknife over the G' non-empty groups.

Permutation test: the rows of B are permuted against A over all rows; each permutation
costs one p × q product (the sides' own statistics do not change). It holds both sides'
selected rows in memory, so it is used while that and R·n·p·q stay small; otherwise the
minibatch statistic is permuted within batches (:mod:`reprstore.uncertainty.batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from reprstore import passes
from reprstore.errors import ComparisonError
from reprstore.metrics.cka import CKAResult, cka_linear, cka_linear_sides, linear_side
from reprstore.passes import PassContext
from reprstore.stats import dask_graph, linear
from reprstore.stats import resample as rs
from reprstore.stats.plan import human_bytes
from reprstore.uncertainty import (
    EXACT_PERMUTATION_MACS,
    MIN_GROUPS,
    UncertaintyOptions,
    clip_interval,
    with_uncertainty,
)

Pair = tuple[int, int]
REPR_FIELDS = ("n", "total", "gram", "sqnorm", "sqnorm2", "sqnorm_x", "nonfinite")
PAIR_FIELDS = ("cross", "a_y", "b_x", "ab")


# ------------------------------------------------------------------------------ plan


def _own_bytes(p: int) -> int:
    return 8 * (p * p + 2 * p + 4)


def _pair_bytes(p: int, q: int) -> int:
    return 8 * (p * q + p + q + 1)


def _group_bytes(features: Sequence[int], pairs: Sequence[Pair]) -> int:
    """Bytes of one group's state for ``pairs`` (own statistics of every involved side)."""
    own = {i for pair in pairs for i in pair}
    return sum(_own_bytes(features[i]) for i in own) + sum(
        _pair_bytes(features[i], features[j]) for i, j in set(pairs) if i != j
    )


def plan_groups(
    features: Sequence[int], pairs: Sequence[Pair], asked: int, memory: int, data_bytes: int
) -> tuple[int, list[list[Pair]]]:
    """Groups G (≤ ``asked``) and passes of pairs whose G group states fit ``memory``.

    Raises
    ------
    ComparisonError
        Not even ``MIN_GROUPS`` states of the largest pair fit.
    """
    room = memory - data_bytes
    widest = max(_group_bytes(features, [p]) for p in pairs)
    fit = room // widest if room > 0 else 0
    least = min(asked, MIN_GROUPS)
    if fit < least:
        raise ComparisonError(
            f"The interval needs {least} group states of {human_bytes(widest)} each "
            f"({human_bytes(least * widest + data_bytes)} with the row blocks), more than the "
            f"memory limit {human_bytes(memory)}. Raise --memory (or use --estimator minibatch)."
        )
    groups = int(min(asked, fit))
    passes: list[list[Pair]] = []
    for pair in pairs:
        if passes and _group_bytes(features, [*passes[-1], pair]) * groups <= room:
            passes[-1].append(pair)
        else:
            passes.append([pair])
    return groups, passes


# ------------------------------------------------------------------ the grouped pass


def _add_in_place(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """c += aᵀb in place through BLAS (beta = 1): no p × q temporary per group and block."""
    from scipy.linalg.blas import dgemm

    out = dgemm(1.0, b, a, beta=1.0, c=c.T, trans_a=True, overwrite_c=True)  # cᵀ += bᵀa
    if not np.shares_memory(out, c):  # pragma: no cover - BLAS made a copy after all
        c[...] = out.T


def _zeros(
    features: Sequence[int], pairs: Sequence[Pair], own: Sequence[int], n_groups: int
) -> dict:
    """Empty stacked group sums (G, ...) keyed ``("r", i, field)`` / ``("p", i, j, field)``.

    ``np.zeros`` maps its pages lazily, so untouched groups take no memory.
    """
    out: dict = {}
    for i in own:
        p = features[i]
        shapes = dict(n=(), total=(p,), gram=(p, p), sqnorm=(), sqnorm2=(), sqnorm_x=(p,),
                      nonfinite=())  # fmt: skip
        out.update({("r", i, f): np.zeros((n_groups, *shapes[f])) for f in REPR_FIELDS})
    for i, j in pairs:
        p, q = features[i], features[j]
        shapes = dict(cross=(p, q), a_y=(q,), b_x=(p,), ab=())
        out.update({("p", i, j, f): np.zeros((n_groups, *shapes[f])) for f in PAIR_FIELDS})
    return out


def _add_group(
    s: dict, g: int, sub: Sequence[np.ndarray | None], shifts: Sequence[np.ndarray | None],
    pairs: Sequence[Pair], own: Sequence[int],
) -> None:  # fmt: skip
    """Add group ``g``'s rows of one block to the stacked sums ``s`` in place (the sums of
    :func:`~reprstore.stats.linear.update_repr` / ``update_pair``, products via BLAS)."""
    prep = {i: linear.prepare_block(sub[i], shifts[i]) for i in own}  # type: ignore[arg-type]
    for i in own:
        b = prep[i]
        s[("r", i, "n")][g] += b.x.shape[0]
        s[("r", i, "total")][g] += b.x.sum(axis=0)
        _add_in_place(s[("r", i, "gram")][g], b.x, b.x)
        s[("r", i, "sqnorm")][g] += float(b.sqn.sum())
        s[("r", i, "sqnorm2")][g] += float(b.sqn @ b.sqn)
        s[("r", i, "sqnorm_x")][g] += b.sqn @ b.x
        s[("r", i, "nonfinite")][g] += b.nonfinite
    for i, j in pairs:
        a, b = prep[i], prep[j]
        _add_in_place(s[("p", i, j, "cross")][g], a.x, b.x)
        s[("p", i, j, "a_y")][g] += a.sqn @ b.x
        s[("p", i, j, "b_x")][g] += b.sqn @ a.x
        s[("p", i, j, "ab")][g] += float(a.sqn @ b.sqn)


def _grouped_step(
    state: dict | None,
    reader: list[dask_graph.BlockReader | None],
    rows: np.ndarray | None,
    groups: np.ndarray,
    n_groups: int,
    shifts: Sequence[np.ndarray | None],
    pairs: Sequence[Pair],
    own: Sequence[int],
) -> dict:
    """Add one row block to the stacked group sums (``groups``: group of each selected row)."""
    blocks = [None if r is None else (r() if rows is None else r()[rows]) for r in reader]
    if state is None:
        features = [0 if s is None else len(s) for s in shifts]
        state = _zeros(features, pairs, own, n_groups)
    order = np.argsort(groups, kind="stable")
    present, starts = np.unique(groups[order], return_index=True)
    ends = [*starts[1:].tolist(), order.size]
    for g, a, b in zip(present.tolist(), starts.tolist(), ends, strict=True):
        idx = np.sort(order[a:b])
        _add_group(state, g, [None if x is None else x[idx] for x in blocks], shifts, pairs, own)
    return state


def _merge_groups(a: dict, b: dict) -> dict:
    for k, v in b.items():
        a[k] += v
    return a


def _first_shifts(ctx: PassContext, idx: Sequence[int]) -> list[np.ndarray | None]:
    """Each involved side's shift: the column mean of its first block's selected rows."""
    chunks = ctx.arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    for k in range(len(chunks)):
        rows = None if ctx.mask is None else ctx.mask[bounds[k] : bounds[k + 1]]
        if chunks[k] and (rows is None or rows.any()):
            break
    got = dask.compute(*[ctx.arrays[i].blocks[k] for i in idx], scheduler="sync")
    shifts: list[np.ndarray | None] = [None] * len(ctx.arrays)
    for i, x in zip(idx, got, strict=True):
        shifts[i] = linear.block_shift(np.asarray(x if rows is None else x[rows]))
    return shifts


def grouped_pass(
    ctx: PassContext, pairs: Sequence[Pair], groups: np.ndarray, n_groups: int, room: int
) -> tuple[dict, list[np.ndarray | None]]:
    """One pass: the linear statistics of ``pairs`` (and their sides) per row group.

    Returns the stacked group sums (G, ...) keyed ``("r", i, field)`` and
    ``("p", i, j, field)`` (fields of ReprMoments / PairMoments), and the shifts.

    Parameters
    ----------
    groups : int ndarray (n,)
        Group of each selected row, in stored order.
    room : bytes the chains' states may take together.
    """
    idx = sorted({i for p in pairs for i in p})
    shifts = _first_shifts(ctx, idx)
    chunks = ctx.arrays[0].chunks[0]
    bounds = np.cumsum((0, *chunks))
    full = np.full(int(bounds[-1]), -1, dtype=np.int64)
    full[np.flatnonzero(ctx.mask) if ctx.mask is not None else slice(None)] = groups
    whole = [a.rechunk({1: -1}) if i in idx else a for i, a in enumerate(ctx.arrays)]
    live = []
    for k in range(len(chunks)):
        rows = None if ctx.mask is None else ctx.mask[bounds[k] : bounds[k + 1]]
        if chunks[k] and (rows is None or rows.any()):
            live.append((k, rows))
    threads = dask_graph.scheduler_threads(ctx.scheduler)
    per_chain = n_groups * _group_bytes([a.shape[1] for a in ctx.arrays], pairs)
    chains = max(1, min(threads, len(live), room // max(per_chain, 1)))
    cross = [p for p in pairs if p[0] != p[1]]
    parts: list[Any] = []
    for c in range(chains):
        state: Any = None
        for k, rows in live[c::chains]:
            reader = [dask_graph.BlockReader(a.blocks[k]) if i in idx else None
                      for i, a in enumerate(whole)]  # fmt: skip
            g = full[bounds[k] : bounds[k + 1]]
            g = g if rows is None else g[rows]
            step = dask.delayed(_grouped_step)
            state = step(state, reader, rows, g, n_groups, shifts, cross, idx)
        parts.append(state)
    graph = dask_graph.tree_reduce(parts, _merge_groups, ctx.split_every)
    run = dask_graph.Runner(ctx.scheduler, ctx.progress, len(live))
    (states,) = run(graph, blocks=len(live), workers=chains, blas=max(1, threads // chains))
    return states, shifts


# ------------------------------------------------------------- states → statistics


def _moments(s: dict, i: int, shift: np.ndarray) -> linear.ReprMoments:
    v = {f: s[("r", i, f)] for f in REPR_FIELDS}
    return linear.ReprMoments(
        n=round(float(v["n"])), shift=shift, total=v["total"], gram=v["gram"],
        sqnorm=float(v["sqnorm"]), sqnorm2=float(v["sqnorm2"]), sqnorm_x=v["sqnorm_x"],
        nonfinite=round(float(v["nonfinite"])),
    )  # fmt: skip


def cka_statistic(
    pairs: Sequence[Pair], shifts: Sequence[Any], estimator: str, names: Sequence[str]
) -> Any:
    """``statistic(sums)``: the CKA of each pair from one combination of group sums."""

    def statistic(s: dict) -> np.ndarray:
        out = np.empty(len(pairs))
        for k, (i, j) in enumerate(pairs):
            a, b = _moments(s, i, shifts[i]), _moments(s, j, shifts[j])
            ab = None
            if i != j:
                f = {x: s[("p", i, j, x)] for x in PAIR_FIELDS}
                ab = linear.PairMoments(f["cross"], f["a_y"], f["b_x"], float(f["ab"]))
            out[k] = cka_linear(a, b, ab, estimator, (names[i], names[j])).cka
        return out

    return statistic


# ------------------------------------------------------------------------ intervals


def exact_intervals(
    ctx: PassContext, opts: UncertaintyOptions, estimator: str, ids: np.ndarray
) -> dict[Pair, CKAResult]:
    """Point estimate and delete-group jackknife interval of every pair of ``ctx``."""
    assert opts.ci is not None
    features = [a.shape[1] for a in ctx.arrays]
    data = 2 * 8 * max(ctx.arrays[0].chunks[0]) * sum(features)
    n_groups, passes = plan_groups(features, ctx.pairs, opts.bootstrap, ctx.memory, data)
    _say(opts, f"interval: delete-group jackknife over {n_groups} row groups "
         f"({opts.bootstrap} asked), {len(passes)} pass(es), group states "
         f"{human_bytes(n_groups * max(_group_bytes(features, p) for p in passes))} "
         f"(--memory {human_bytes(ctx.memory)})")  # fmt: skip
    groups = rs.group_ids(ids, opts.seed, n_groups)
    used = np.flatnonzero(np.bincount(groups, minlength=n_groups))
    if used.size < 2:
        raise ComparisonError("The interval needs rows in at least 2 groups: too few rows.")
    out: dict[Pair, CKAResult] = {}
    for batch in passes:
        stacked, shifts = grouped_pass(ctx, batch, groups, n_groups, ctx.memory - data)
        total = {k: v.sum(axis=0) for k, v in stacked.items()}
        loo = _jackknife(stacked, cka_statistic(batch, shifts, estimator, ctx.names), used)
        se = rs.jackknife_se(loo)
        for k, (i, j) in enumerate(batch):
            base = _point_result(total, shifts, estimator, ctx.names, i, j)
            lo, hi = rs.t_interval(base.cka, se[k], opts.ci, used.size - 1)
            clo, chi = clip_interval(float(lo), float(hi))
            out[(i, j)] = with_uncertainty(
                base, cka_lo=clo, cka_hi=chi, cka_se=float(se[k]), ci_level=opts.ci,
                ci_method=f"jackknife-t, {used.size} groups", ci_replicates=int(used.size),
                resample_seed=opts.seed,
            )  # fmt: skip
    return out


def _jackknife(stacked: dict, stat: Any, used: np.ndarray) -> np.ndarray:
    try:
        return rs.jackknife_values(stacked, stat, used)
    except ComparisonError as err:
        raise ComparisonError(
            f"A leave-one-group-out replicate is undefined ({err}); use fewer groups "
            "(--bootstrap) or more rows."
        ) from None


def _point_result(
    total: dict, shifts: Sequence[Any], estimator: str, names: Sequence[str], i: int, j: int
) -> CKAResult:
    """The estimate on all rows (the sum of the group states), with the engine's checks."""
    side_a = linear_side(_moments(total, i, shifts[i]), estimator, names[i])
    if i == j:
        return cka_linear_sides(side_a, side_a, None, estimator)
    side_b = linear_side(_moments(total, j, shifts[j]), estimator, names[j])
    f = {x: total[("p", i, j, x)] for x in PAIR_FIELDS}
    ab = linear.PairMoments(f["cross"], f["a_y"], f["b_x"], float(f["ab"]))
    return cka_linear_sides(side_a, side_b, ab, estimator)


# --------------------------------------------------------------------- permutations


def _linear_exact(ctx: PassContext, estimator: str) -> list[CKAResult]:
    """The plain exact linear estimator of ``ctx.pairs`` (the engine's own pass)."""
    from reprstore.engine import cka_spec

    out = passes.run(ctx, ctx.pairs, [cka_spec(estimator=estimator)])
    return [out.pairs[p]["_result"] for p in ctx.pairs]


def row_permutation_cost(ctx: PassContext, pairs: Sequence[Pair], r: int) -> tuple[float, int]:
    """(multiply-adds, bytes held) of R exact row permutations of ``pairs``."""
    f = [a.shape[1] for a in ctx.arrays]
    macs = float(r) * ctx.n * sum(f[i] * f[j] for i, j in pairs if i != j)
    held = 8 * ctx.n * sum(f[i] for i in {k for p in pairs for k in p}) * 2
    return macs, held


def permute_rows(
    ctx: PassContext, opts: UncertaintyOptions, estimator: str
) -> dict[Pair, dict[str, Any]]:
    """p-values from R permutations of B's rows against A's over all selected rows."""
    assert opts.permutations is not None
    r = int(opts.permutations)
    idx = sorted({i for p in ctx.pairs for i in p})
    run = dask_graph.Runner(ctx.scheduler, ctx.progress, len(idx) * ctx.blocks)
    data = run(*[dask_graph.gather_rows(ctx.arrays[i], ctx.mask) for i in idx],
               blocks=len(idx) * ctx.blocks)  # fmt: skip
    prepared = {}
    for i, x in zip(idx, data, strict=True):
        m = linear.moments(np.asarray(x))
        side = linear_side(m, estimator, ctx.names[i])
        prepared[i] = (linear.prepare_block(np.asarray(x), m.offset), side)
    out: dict[Pair, dict[str, Any]] = {}
    step = max(1, 2**22 // max(ctx.n, 1))  # permutations drawn at a time (32 MiB of indices)
    for i, j in ctx.pairs:
        (xa, sa), (xb, sb) = prepared[i], prepared[j]

        def stat(order: np.ndarray | None, xa: Any = xa, xb: Any = xb, sa: Any = sa,
                 sb: Any = sb) -> float:  # fmt: skip
            y = xb.x if order is None else xb.x[order]
            bn = xb.sqn if order is None else xb.sqn[order]
            ab = linear.PairMoments(xa.x.T @ y, xa.sqn @ y, bn @ xa.x, float(xa.sqn @ bn))
            return cka_linear_sides(sa, sb, ab, estimator).cka

        observed = stat(None)
        null = np.concatenate([
            [stat(p) for p in rs.permutations(opts.seed, min(step, r - s), 0, ctx.n, start=s)]
            for s in range(0, r, step)
        ])  # fmt: skip
        out[(i, j)] = dict(
            cka_p=float(rs.permutation_p(observed, null)), cka_p_resolution=1.0 / (r + 1),
            cka_p_statistic=observed, permutations=r,
            permutation_method=f"rows of B permuted over all {ctx.n} rows; {estimator} CKA",
            resample_seed=opts.seed,
        )  # fmt: skip
    return out


# -------------------------------------------------------------------------- driver


def _say(opts: UncertaintyOptions, line: str) -> None:
    if opts.report is not None:
        opts.report(line)


def run_exact(
    ctx: PassContext,
    opts: UncertaintyOptions,
    *,
    estimator: str,
    ids: np.ndarray,
    batch_size: int,
    shuffle: int | None,
) -> list[CKAResult]:
    """The exact estimator's results of ``ctx.pairs`` with intervals and/or p-values."""
    from reprstore.uncertainty import batches

    if opts.ci is not None:
        found = exact_intervals(ctx, opts, estimator, ids)
    else:
        found = dict(zip(ctx.pairs, _linear_exact(ctx, estimator), strict=True))
    if opts.permutations is None:
        return [found[p] for p in ctx.pairs]
    macs, held = row_permutation_cost(ctx, ctx.pairs, int(opts.permutations))
    cheap = macs <= EXACT_PERMUTATION_MACS and held <= ctx.memory
    if opts.permute == "rows" or (opts.permute == "auto" and cheap):
        if held > ctx.memory:
            raise ComparisonError(
                f"Permuting rows holds both sides in memory ({human_bytes(held)}), more than "
                f"--memory {human_bytes(ctx.memory)}. Raise --memory or permute within batches."
            )
        _say(opts, f"test: {opts.permutations} permutations of rows, 1 pass holding "
             f"{human_bytes(held)}, {macs / 1e9:.3g} G multiply-adds")  # fmt: skip
        tests = permute_rows(ctx, opts, estimator)
    else:
        tests = batches.permute_batches(
            ctx, opts, batch_size=batch_size, shuffle=shuffle, why=f"{macs / 1e9:.3g} G "
            "multiply-adds of exact row permutations would be too slow"
        )  # fmt: skip
    return [with_uncertainty(found[p], **tests[p]) for p in ctx.pairs]
