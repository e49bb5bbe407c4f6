"""Intervals and permutation tests of minibatch CKA, from per-batch HSIC values.

One pass keeps, per batch b, HSIC₁(K_b, L_b), HSIC₁(K_b, K_b), HSIC₁(L_b, L_b) and, for a
permutation test, HSIC₁(K_b, L_b^π) for R permutations π of the batch's rows of B: the
batch's kernels are built once and permuted by index (B × B work per permutation and
batch). Minibatch CKA is a ratio of means over batches, so

* the interval resamples whole batches: Poisson(1) weights per (seed, replicate, batch);
  SE = the replicates' standard deviation, interval estimate ± t_{k−1}·SE;
* the test's null values are T_π = Σ_b HSIC₁(K_b, L_b^π) / √(Σ_b HSIC₁(K_b,K_b) Σ_b
  HSIC₁(L_b,L_b)) (the denominators do not change under permutation).

Permutation r of batch b depends on (seed, r, b) only, and a batch's rows are always in
stored order, so the p-value is the same for any chunking, workers or rerun. That also
makes the pass resumable: it runs in segments of whole batches
(:func:`reprstore.engine.passes.batch_segments`) and saves the finished batches' records
(:func:`reprstore.engine.checkpoints.run_segments`), so a killed run goes on from the
last saved segment, to the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from reprstore.engine import checkpoints, dask_graph, planner
from reprstore.engine.checkpoints import live_blocks
from reprstore.engine.pass_context import PassContext, kernel_products
from reprstore.engine.passes import batch_segments, rbf_bandwidths
from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.cka import CKAResult, cka_minibatch
from reprstore.stats import resample as rs
from reprstore.stats.batch_kernels import relative_spread
from reprstore.stats.hsic import MIN_ROWS_UNBIASED, GramSummary, gram_terms, hsic1, hsic1_scale
from reprstore.stats.linear import NUMPY, Backend, count_nonfinite
from reprstore.stats.minibatch import (
    BatchRange,
    MinibatchSums,
    assign_batches,
    batch_gram,
    batch_range,
)
from reprstore.stats.plan import batch_groups
from reprstore.uncertainty import resume
from reprstore.uncertainty.base import UncertaintySettings, clip_interval, with_uncertainty

Pair = tuple[int, int]
#: Permuted kernels are gathered this many bytes at a time.
GATHER_BYTES = planner.PERMUTATION_GATHER_BYTES


@dataclass
class BatchRecord:
    """The HSIC₁ values of one batch (see module docstring)."""

    n: int
    own: dict[int, float]
    pairs: dict[Pair, float]
    null: dict[Pair, np.ndarray] = field(default_factory=dict)  # (R,) per pair
    spread: dict[int, float] = field(default_factory=dict)
    scale: dict[int, float] = field(default_factory=dict)
    own_scale: dict[int, float] = field(default_factory=dict)


Records = tuple[dict[int, BatchRecord], dict[int, int]]  # per batch; NaN/Inf rows per side


def permuted_hsic(
    ka: GramSummary, kb: GramSummary, perms: np.ndarray, gather: int = GATHER_BYTES
) -> np.ndarray:
    """HSIC₁(K, L^π) for each row π of ``perms`` (R, n), L^π = L[π][:, π]: shape (R,).

    Both kernels are built once per batch; a permutation only gathers L^π (B² copies) and
    takes its inner product with K. The gather is two ``np.take`` calls into buffers kept
    across permutations (whole rows, then columns within each row): 1.6-2.5× faster than
    one broadcast fancy index ``L[π[:, None], π[None, :]]``, which computes every element's
    address on its own. The products and sums are the same ones in the same order, so
    the values are bit-for-bit those of the plain formula.
    """
    n = ka.n
    k, l_ = ka.kt, kb.kt
    out = np.empty(perms.shape[0])
    step = max(1, gather // (8 * n * n))  # permuted kernels gathered at once
    block = np.empty((min(step, perms.shape[0]), n, n))
    rows = np.empty((n, n))
    for s in range(0, perms.shape[0], step):
        p = perms[s : s + step]
        gathered = block[: p.shape[0]]
        for c, order in enumerate(p):
            _permute_kernel(l_, order, rows, gathered[c])
        tr = np.einsum("ij,cij->c", k, gathered)
        sum_kl = kb.rows[p] @ ka.rows
        out[s : s + step] = (
            tr + ka.total * kb.total / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)
        ) / (n * (n - 3))
    return out


def _permute_kernel(l_: np.ndarray, order: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out`` ← L[order][:, order], through the scratch buffer ``rows`` (both (n, n)).

    ``mode="clip"``: with ``mode="raise"`` (the default) and ``out`` given, numpy copies
    into a temporary first; the indices are a permutation, so none is ever clipped.
    """
    np.take(l_, order, axis=0, out=rows, mode="clip")
    np.take(rows, order, axis=1, out=out, mode="clip")


def batch_record(
    rows: Sequence[np.ndarray | None],
    batch: int,
    own: Sequence[int],
    pairs: Sequence[Pair],
    kernel: str,
    sigma2: Sequence[float | None],
    backend: Backend,
    seed: int,
    permutations: int,
    permuted: Sequence[Pair] = (),
    gather: int = GATHER_BYTES,
) -> BatchRecord:
    """The record of one batch: rows (B, p_i) of each side (None where not involved).

    ``permuted``: the pairs (a side with itself included) whose permuted HSIC₁ to keep;
    ``gather``: bytes of permuted kernels gathered at once (:func:`permuted_hsic`), and
    the bound of the permutations drawn at once.
    """
    needed = sorted(set(own) | {i for p in pairs for i in p})
    made = {i: batch_gram(rows[i], kernel, sigma2[i], backend) for i in needed}  # type: ignore[arg-type]
    grams = {i: g for i, (g, _) in made.items()}
    unit = {i: u for i, (_, u) in made.items()}  # every batch's HSIC in the raw rows' units
    rec = BatchRecord(
        n=grams[needed[0]].n,
        own={i: hsic1(gram_terms(grams[i], grams[i])) * unit[i] ** 2 for i in own},
        pairs={(i, j): hsic1(gram_terms(grams[i], grams[j])) * unit[i] * unit[j] for i, j in pairs},
        spread={i: relative_spread(rows[i]) for i in own},  # type: ignore[arg-type]
        scale={i: 1.0 for i in own},
        own_scale={i: hsic1_scale(grams[i]) * unit[i] ** 2 for i in own},
    )
    if permutations:  # drawn a step at a time (the same permutations: counter-based)
        nulls: dict[Pair, list[np.ndarray]] = {p: [] for p in permuted}
        step = rs.permutation_step(rec.n, gather)  # draws held within the same bound
        for s in range(0, permutations, step):
            perms = rs.permutations(seed, min(step, permutations - s), batch, rec.n, start=s)
            for i, j in permuted:
                null = permuted_hsic(grams[i], grams[j], perms, gather)
                nulls[(i, j)].append(null * unit[i] * unit[j])
        rec.null = {p: np.concatenate(v) for p, v in nulls.items()}
    return rec


def _block_records(
    blocks: Sequence[np.ndarray | None], ids: np.ndarray, whole: np.ndarray, *args: Any
) -> tuple[Records, dict[int, list[np.ndarray | None]]]:
    """What one row block gives: records of its whole batches, pieces of the others."""
    used = ids >= 0
    bad = {i: count_nonfinite(b[used]) for i, b in enumerate(blocks) if b is not None}
    recs: dict[int, BatchRecord] = {}
    pieces: dict[int, list[np.ndarray | None]] = {}
    whole_set = set(whole.tolist())
    for b in np.unique(ids[used]).tolist():
        sel = ids == b
        rows = [None if x is None else x[sel] for x in blocks]
        if b in whole_set:
            recs[b] = batch_record(rows, b, *args)
        else:
            pieces[b] = rows
    return (recs, bad), pieces


def _finish(parts: Sequence[dict[int, list[np.ndarray | None]]], b: int, *args: Any) -> Records:
    got = [p[b] for p in parts if b in p]
    rows = [None if got[0][i] is None else np.concatenate([g[i] for g in got])
            for i in range(len(got[0]))]  # fmt: skip
    return {b: batch_record(rows, b, *args)}, {}


def _merge(a: Records, b: Records) -> Records:
    bad = {k: a[1].get(k, 0) + b[1].get(k, 0) for k in a[1].keys() | b[1].keys()}
    return {**a[0], **b[0]}, bad


def records_pass(
    arrays: Sequence[Any], batch_ids: np.ndarray | BatchRange, own: Sequence[int],
    pairs: Sequence[Pair],
    args: tuple[Any, ...], split_every: int,
) -> Any:  # fmt: skip
    """Graph of one pass: the delayed :data:`Records` of the batches in ``batch_ids``."""
    totals = np.bincount(batch_range(batch_ids).used())
    involved = set(own) | {i for p in pairs for i in p}
    extra = (list(own), list(pairs), *args)
    return dask_graph.scattered_batches(
        arrays, batch_ids, totals, involved, _block_records, _finish, _merge, extra, split_every
    )


def batch_records(
    ctx: PassContext, *, kernel: str, sigma: float, batch_size: int, shuffle: int | None,
    seed: int, permutations: int,
) -> tuple[dict[int, BatchRecord], dict[int, int], dict[int, Any]]:  # fmt: skip
    """Every batch's record, the NaN/Inf row counts, and the rbf bandwidths (if any)."""
    if batch_size < MIN_ROWS_UNBIASED:
        raise InputError(
            f"--batch-size must be at least {MIN_ROWS_UNBIASED}. Got {batch_size} instead."
        )
    idx = sorted({i for p in ctx.pairs for i in p})
    # the minibatch pass's memory model (the plan counted it): tasks, shuffled groups
    model = planner.minibatch_layout(ctx, idx, batch_size, shuffle, permutations)
    ids = np.full(ctx.arrays[0].shape[0], -1, dtype=np.int64)
    sel = np.flatnonzero(ctx.mask) if ctx.mask is not None else np.arange(ids.size)
    ids[sel] = assign_batches(ctx.n, batch_size, shuffle)
    groups = batch_groups(ids, model.group_rows, batch_size, shuffle)
    run = dask_graph.Runner(
        ctx.scheduler, ctx.progress, ctx.blocks * (len(groups) + len(idx) * (kernel == "rbf"))
    )
    bws: dict[int, Any] = {}
    if kernel == "rbf":
        bws = rbf_bandwidths(ctx, idx, sigma, run, len(idx) * ctx.blocks)
    sigma2 = [bws[i].sigma2 if i in bws else None for i in range(len(ctx.arrays))]
    cross = [(i, j) for i, j in ctx.pairs if i != j]
    backend = kernel_products(ctx.backend if ctx.backend is not None else NUMPY, kernel)
    args = (kernel, sigma2, backend, seed, permutations, list(ctx.pairs),
            planner.gather_bytes(ctx.memory))  # fmt: skip
    bounds = np.cumsum((0, *ctx.arrays[0].chunks[0]))
    # with permutations a batch costs far more than reading its rows: a segment per block
    per = 1 if permutations else checkpoints.BLOCKS_PER_SEGMENT
    threads = model.workers  # block tasks at once, as the model counts them
    widths = sum(int(ctx.arrays[i].shape[1]) for i in idx)
    segments = []
    for g in groups:
        shuffled = 1
        if shuffle is not None:  # every segment reads every block: while worth it
            in_group = batch_range(g).used()
            used = in_group.size
            kernels = widths + len(idx) + len(cross) + permutations * len(ctx.pairs)
            shuffled = checkpoints.shuffled_segments(float(used) * batch_size * kernels,
                                                     float(used) * widths,
                                                     len(np.unique(in_group)))  # fmt: skip
            del in_group
        segments += batch_segments(g, len(live_blocks(g, bounds)), threads, per, shuffled)

    def step(k: int, state: Records | None) -> Records:
        graph = records_pass(ctx.arrays, segments[k], idx, cross, args, ctx.split_every)
        ((got, nonfinite),) = run(graph, blocks=len(live_blocks(segments[k], bounds)),
                                  workers=threads)  # fmt: skip
        recs, bad = state if state is not None else ({}, {})
        recs.update(got)
        bad = {k: bad.get(k, 0) + nonfinite.get(k, 0) for k in bad.keys() | nonfinite.keys()}
        return recs, bad

    def skip(done: int) -> None:
        run.skip(sum(len(live_blocks(p, bounds)) for p in segments[:done]))

    layout = ["batch records", kernel, sigma2, batch_size, shuffle, seed, permutations,
              ctx.n, ctx.arrays[0].chunks[0], [len(g) for g in groups], len(segments),
              [list(p) for p in ctx.pairs], backend]  # fmt: skip
    key = resume.checkpoint_key(ctx, idx, layout)
    form = checkpoints.Segments(
        partial(_encode_records, idx, cross, list(ctx.pairs)),
        partial(_decode_records, idx, cross, list(ctx.pairs), permutations),
        _records_bytes(int(ids.max()) + 1 if (ids >= 0).any() else 0, idx, cross,
                       len(ctx.pairs), permutations),
    )  # fmt: skip
    ckpt = getattr(ctx, "checkpoints", None)
    recs, bad = checkpoints.run_segments(ckpt, key, len(segments), step, form, ctx.memory,
                                         skip) or ({}, {})  # fmt: skip
    run.finish()
    return recs, bad, bws


def _records_bytes(batches: int, own: Sequence[int], cross: Sequence[Pair], permuted: int,
                   r: int) -> int:  # fmt: skip
    """Bytes of the records of ``batches`` batches (a checkpoint's size)."""
    return 8 * batches * (2 + 4 * len(own) + len(cross) + permuted * r)


def _encode_records(own: Sequence[int], cross: Sequence[Pair], permuted: Sequence[Pair],
                    state: Records) -> dict[str, np.ndarray]:  # fmt: skip
    """Batch records and NaN/Inf counts as plain arrays (one entry per batch, in order)."""
    recs, bad = state
    order = sorted(recs)
    arrays = {"batches": np.array(order, dtype=np.int64),
              "n": np.array([recs[b].n for b in order], dtype=np.int64),
              "bad": np.array([[k, v] for k, v in sorted(bad.items())],
                              dtype=np.int64).reshape(-1, 2)}  # fmt: skip
    for i in own:
        for name in ("own", "spread", "scale", "own_scale"):
            arrays[f"{name}{i}"] = np.array([getattr(recs[b], name)[i] for b in order],
                                            dtype=np.float64)  # fmt: skip
    for i, j in cross:
        arrays[f"pair{i}_{j}"] = np.array([recs[b].pairs[(i, j)] for b in order],
                                          dtype=np.float64)  # fmt: skip
    for i, j in permuted:
        if order and (i, j) in recs[order[0]].null:
            arrays[f"null{i}_{j}"] = np.array([recs[b].null[(i, j)] for b in order],
                                              dtype=np.float64)  # fmt: skip
    return arrays


def _decode_records(own: Sequence[int], cross: Sequence[Pair], permuted: Sequence[Pair],
                    r: int, arrays: dict[str, np.ndarray]) -> Records:  # fmt: skip
    order = [int(b) for b in arrays["batches"]]
    ns = arrays["n"]
    columns = {f"{name}{i}": arrays[f"{name}{i}"]
               for i in own for name in ("own", "spread", "scale", "own_scale")}  # fmt: skip
    pairs = {p: arrays[f"pair{p[0]}_{p[1]}"] for p in cross}
    nulls = {p: arrays[f"null{p[0]}_{p[1]}"] for p in permuted} if r else {}
    for name, v in [*columns.items(), *pairs.items(), *nulls.items()]:
        if v.dtype != np.float64 or v.shape[:1] != (len(order),):
            raise ValueError(f"{name} of shape {v.shape}")
    if any(v.shape[1:] != (r,) for v in nulls.values()):
        raise ValueError("null values of another number of permutations")
    recs = {}
    for k, b in enumerate(order):
        recs[b] = BatchRecord(
            n=int(ns[k]),
            own={i: float(columns[f"own{i}"][k]) for i in own},
            pairs={p: float(v[k]) for p, v in pairs.items()},
            null={p: v[k].copy() for p, v in nulls.items()},
            spread={i: float(columns[f"spread{i}"][k]) for i in own},
            scale={i: float(columns[f"scale{i}"][k]) for i in own},
            own_scale={i: float(columns[f"own_scale{i}"][k]) for i in own},
        )
    bad = {int(k): int(v) for k, v in arrays["bad"].reshape(-1, 2)}
    return recs, bad


def sums_of(recs: dict[int, BatchRecord], bad: dict[int, int]) -> MinibatchSums:
    """The engine's :class:`MinibatchSums` from batch records (summed in batch order)."""
    order = sorted(recs)
    sums = MinibatchSums(n_batches=len(order), n_rows=sum(recs[b].n for b in order))
    first = recs[order[0]] if order else BatchRecord(0, {}, {})
    sums.own = {i: float(sum(recs[b].own[i] for b in order)) for i in first.own}
    sums.pairs = {p: float(sum(recs[b].pairs[p] for b in order)) for p in first.pairs}
    sums.spread = {i: float(sum(recs[b].spread[i] for b in order)) for i in first.spread}
    sums.scale = {i: float(sum(recs[b].scale[i] for b in order)) for i in first.scale}
    sums.own_scale = {i: float(sum(recs[b].own_scale[i] for b in order)) for i in first.own_scale}
    sums.nonfinite = dict(bad)
    return sums


def _ratio(hab: np.ndarray, haa: np.ndarray, hbb: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((haa > 0) & (hbb > 0), hab / np.sqrt(np.abs(haa * hbb)), np.nan)


def _hsic_of(recs: dict[int, BatchRecord], order: list[int], i: int, j: int) -> np.ndarray:
    if i == j:
        return np.array([recs[b].own[i] for b in order])
    return np.array([recs[b].pairs[(i, j)] for b in order])


def batch_interval(
    recs: dict[int, BatchRecord], pair: Pair, point: float, opts: UncertaintySettings
) -> dict[str, Any]:
    """Poisson bootstrap over batches: SE and estimate ± t_{k−1}·SE."""
    assert opts.ci is not None
    order = sorted(recs)
    k = len(order)
    if k < 2:
        raise ComparisonError(
            f"The minibatch interval resamples batches and needs at least 2; got {k}. "
            "Lower --batch-size."
        )
    i, j = pair
    hab, haa, hbb = (
        _hsic_of(recs, order, i, j),
        _hsic_of(recs, order, i, i),
        _hsic_of(recs, order, j, j),
    )
    w = rs.poisson_weights(opts.seed, opts.bootstrap, k)
    values = _ratio(w @ hab, w @ haa, w @ hbb)
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ComparisonError("Too few bootstrap replicates are defined; use more batches.")
    se = float(rs.half_sample_se(values))  # the replicates' standard deviation
    lo, hi = rs.t_interval(point, se, opts.ci, k - 1)
    clo, chi = clip_interval(float(lo), float(hi))
    return dict(
        cka_lo=clo, cka_hi=chi, cka_se=se, ci_level=opts.ci, ci_replicates=int(values.size),
        ci_method=f"batch bootstrap-t, {k} batches, {values.size} replicates",
        resample_seed=opts.seed,
    )  # fmt: skip


def batch_test(
    recs: dict[int, BatchRecord], pair: Pair, opts: UncertaintySettings, method: str
) -> dict[str, Any]:
    """p-value of the within-batch permutation test of ``pair``."""
    assert opts.permutations is not None
    order = sorted(recs)
    i, j = pair
    den = np.sqrt(_hsic_of(recs, order, i, i).sum() * _hsic_of(recs, order, j, j).sum())
    observed = float(_hsic_of(recs, order, i, j).sum() / den)
    null = np.sum([recs[b].null[pair] for b in order], axis=0) / den
    r = int(opts.permutations)
    return dict(
        cka_p=float(rs.permutation_p(observed, null)), cka_p_resolution=1.0 / (r + 1),
        cka_p_statistic=observed, permutations=r, permutation_method=method,
        resample_seed=opts.seed,
    )  # fmt: skip


def _method(recs: dict[int, BatchRecord], kernel: str) -> str:
    sizes = sorted({r.n for r in recs.values()})
    span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    return (
        f"rows of B permuted within each of {len(recs)} batches of {span} rows; "
        f"minibatch CKA ({kernel} kernel)"
    )


def _batches(n: int, batch_size: int, shuffle: int | None) -> int:
    ids = assign_batches(n, max(batch_size, MIN_ROWS_UNBIASED), shuffle)
    return int(ids.max()) + 1 if (ids >= 0).any() else 0


def run_minibatch(
    ctx: PassContext, opts: UncertaintySettings, *, kernel: str, sigma: float,
    batch_size: int, shuffle: int | None,
) -> list[CKAResult]:  # fmt: skip
    """Minibatch CKA of ``ctx.pairs`` with a batch-bootstrap interval and/or the test."""
    r = opts.permutations or 0
    if opts.report is not None:
        k = _batches(ctx.n, batch_size, shuffle)
        line = f"minibatch: 1 pass, {k} batches"
        if opts.ci is not None:
            line += f"; interval: {opts.bootstrap} bootstrap resamples of the batches"
        if r:
            line += f"; test: {r} permutations within batches ({r} × {k} × B² kernel gathers)"
        opts.report(line)
    recs, bad, bws = batch_records(ctx, kernel=kernel, sigma=sigma, batch_size=batch_size,
                                   shuffle=shuffle, seed=opts.seed, permutations=r)  # fmt: skip
    sums = sums_of(recs, bad)
    out: list[CKAResult] = []
    for i, j in ctx.pairs:
        base = cka_minibatch(
            sums, i, j, kernel=kernel, batch_size=batch_size, names=(ctx.names[i], ctx.names[j]),
            bandwidths=(bws[i], bws[j]) if bws else None,
        )  # fmt: skip
        extra: dict[str, Any] = {}
        if opts.ci is not None:
            extra.update(batch_interval(recs, (i, j), base.cka, opts))
        if r:
            extra.update(batch_test(recs, (i, j), opts, _method(recs, kernel)))
        out.append(with_uncertainty(base, **extra))
    return out


def permute_batches(
    ctx: PassContext, opts: UncertaintySettings, *, batch_size: int, shuffle: int | None,
    why: str,
) -> dict[Pair, dict[str, Any]]:  # fmt: skip
    """The within-batch permutation test for exact-estimator pairs (linear kernel)."""
    r = int(opts.permutations or 0)
    k = _batches(ctx.n, batch_size, shuffle)
    if opts.report is not None:
        opts.report(f"test: {r} permutations within {k} batches of {batch_size} rows "
                    f"(minibatch CKA statistic; {why}), 1 pass")  # fmt: skip
    recs, _, _ = batch_records(ctx, kernel="linear", sigma=1.0, batch_size=batch_size,
                               shuffle=shuffle, seed=opts.seed, permutations=r)  # fmt: skip
    if not recs:
        raise ComparisonError("No minibatch of at least 4 rows for the permutation test.")
    method = _method(recs, "linear") + " (exact row permutations too costly)"
    return {p: batch_test(recs, p, opts, method) for p in ctx.pairs}
