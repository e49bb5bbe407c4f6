"""Permutation tests of CKA's exact linear estimators (biased, debiased).

(Their interval is the delete-group jackknife every linear measure has:
:mod:`reprstore.uncertainty.generic`.)

Permutation test: the rows of B are permuted against A over all rows; each permutation
costs one p × q product (the sides' own statistics do not change). It holds both sides'
selected rows in memory, so it is used while that and R·n·p·q stay small; otherwise the
minibatch statistic is permuted within batches (:mod:`reprstore.uncertainty.batches`).
Both resume after a kill from their checkpoints, bit-identically
(:mod:`reprstore.uncertainty.resume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprstore.engine import dask_graph
from reprstore.engine.pass_context import PassContext
from reprstore.metrics.cka import cka_linear_sides, linear_side
from reprstore.stats import linear
from reprstore.stats import resample as rs
from reprstore.stats.plan import check_budget, human_bytes
from reprstore.uncertainty import resume
from reprstore.uncertainty.base import EXACT_PERMUTATION_MACS, UncertaintySettings, say

Pair = tuple[int, int]


def row_permutation_cost(ctx: PassContext, pairs: Sequence[Pair], r: int) -> tuple[float, int]:
    """(multiply-adds, bytes held) of R exact row permutations of ``pairs``: both sides'
    rows as gathered and offset in float64, drawing a step of permutations
    (:func:`~reprstore.stats.resample.permutation_step`), one permuted copy of B's rows and
    the cross moments."""
    f = [a.shape[1] for a in ctx.arrays]
    macs = float(r) * ctx.n * sum(f[i] * f[j] for i, j in pairs if i != j)
    reprs = {k for p in pairs for k in p}
    rows = ctx.n * sum(f[i] * (8 + int(ctx.arrays[i].dtype.itemsize)) for i in reprs)
    per_pair = max((8 * (ctx.n * f[j] + f[i] * f[j]) for i, j in pairs), default=0)
    draw = max(rs.DRAW_BYTES, rs.DRAW_COPIES * 8 * ctx.n)
    return macs, rows + draw + per_pair


def permute_rows(
    ctx: PassContext,
    opts: UncertaintySettings,
    estimator: str,
    runner: dask_graph.Runner | None = None,
) -> dict[Pair, dict[str, Any]]:
    """p-values from R permutations of B's rows against A's over all selected rows."""
    assert opts.permutations is not None
    r = int(opts.permutations)
    idx = sorted({i for p in ctx.pairs for i in p})
    run = runner or dask_graph.Runner(ctx.scheduler, ctx.progress, len(idx) * ctx.blocks)
    gathers = [dask_graph.gather_rows(ctx.arrays[i], ctx.mask, dask_graph.source_of(ctx.sources, i))
               for i in idx]  # fmt: skip
    data = run(*gathers, blocks=len(idx) * ctx.blocks)
    prepared = {}
    for i, x in zip(idx, data, strict=True):
        m = linear.moments(np.asarray(x))
        side = linear_side(m, estimator, ctx.names[i])
        prepared[i] = (linear.prepare_block(np.asarray(x), m.offset), side)
    stats = []
    for i, j in ctx.pairs:
        (xa, sa), (xb, sb) = prepared[i], prepared[j]

        def stat(order: np.ndarray | None, xa: Any = xa, xb: Any = xb, sa: Any = sa,
                 sb: Any = sb) -> float:  # fmt: skip
            y = xb.x if order is None else xb.x[order]
            bn = xb.sqn if order is None else xb.sqn[order]
            ab = linear.PairMoments(xa.x.T @ y, xa.sqn @ y, bn @ xa.x, float(xa.sqn @ bn))
            return cka_linear_sides(sa, sb, ab, estimator).cka

        stats.append(stat)

    def block(u: int, start: int, count: int) -> dict[str, np.ndarray]:
        """The null values of permutations start … start + count − 1 of pair u."""
        chunk = rs.permutations(opts.seed, count, 0, ctx.n, start=start)
        return {"cka": np.array([stats[u](p) for p in chunk], dtype=np.float64)}

    layout = ["permutations", "cka rows", estimator, r, opts.seed, ctx.n,
              [list(p) for p in ctx.pairs]]  # fmt: skip
    key = resume.checkpoint_key(ctx, idx, layout)
    nulls = resume.run_nulls(ctx, key, len(ctx.pairs), r, ctx.n, [1] * len(ctx.pairs), block)
    out: dict[Pair, dict[str, Any]] = {}
    for u, (i, j) in enumerate(ctx.pairs):
        observed = stats[u](None)
        out[(i, j)] = dict(
            cka_p=float(rs.permutation_p(observed, nulls[u]["cka"])),
            cka_p_resolution=1.0 / (r + 1), cka_p_statistic=observed, permutations=r,
            permutation_method=f"rows of B permuted over all {ctx.n} rows; {estimator} CKA",
            resample_seed=opts.seed,
        )  # fmt: skip
    return out


# -------------------------------------------------------------------------- driver


def permutes_rows(ctx: PassContext, opts: UncertaintySettings) -> bool:
    """Whether the test permutes rows (else within minibatches, a pass of its own)."""
    macs, held = row_permutation_cost(ctx, ctx.pairs, int(opts.permutations or 0))
    cheap = macs <= EXACT_PERMUTATION_MACS and held <= ctx.memory
    return opts.permute == "rows" or (opts.permute == "auto" and cheap)


def cka_tests(
    ctx: PassContext,
    opts: UncertaintySettings,
    *,
    estimator: str,
    batch_size: int,
    shuffle: int | None,
    runner: dask_graph.Runner | None = None,
) -> dict[Pair, dict[str, Any]]:
    """The permutation test of the exact estimator for every pair of ``ctx``: rows while
    cheap (or asked), otherwise within minibatches (the fields of ``UncertainResult``)."""
    from reprstore.uncertainty import batches

    assert opts.permutations is not None
    macs, held = row_permutation_cost(ctx, ctx.pairs, int(opts.permutations))
    if permutes_rows(ctx, opts):
        check_budget("Permuting rows (both sides held in memory)", held, ctx.memory,
                     "Raise --memory or permute within batches.")  # fmt: skip
        say(opts, f"test: {opts.permutations} permutations of rows, 1 pass holding "
            f"{human_bytes(held)}, {macs / 1e9:.3g} G multiply-adds")  # fmt: skip
        return permute_rows(ctx, opts, estimator, runner)
    return batches.permute_batches(
        ctx, opts, batch_size=batch_size, shuffle=shuffle, why=f"{macs / 1e9:.3g} G "
        "multiply-adds of exact row permutations would be too slow"
    )  # fmt: skip
