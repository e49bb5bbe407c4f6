"""The passes over the data one comparison makes, and the measures' two steps around them.

:func:`run` takes aligned arrays (same rows), the ordered pairs to compare and the
measures asked for (:class:`~reprstore.metrics.base.Spec`), and

1. takes the union of the measures' needs: the row views whose own statistics every
   involved representation needs, those whose cross statistics every pair needs, and the
   passes of their own some measures need (minibatch and exact-rbf CKA, counts);
2. plans the linear statistics of every (representation, view) *stream* and of every
   pair of streams into passes within ``memory`` (one memory model,
   :func:`reprstore.stats.plan.plan_linear_passes`); each pass reads every block of
   every involved array once, whatever the views and pairs that use it;
3. after each pass, makes every finished representation's :class:`Side` and each
   measure's per-representation step on it (``partial``; the decompositions are shared),
   then each finished pair's per-pair step (``finalize``), and drops the statistics.

Per-row weights (a bootstrap) or a permutation of one side's rows would enter here: the
linear accumulation takes blocks of rows, so a weighted pass multiplies each block's
rows by √wᵢ (own and cross sums then carry the weights) and a permuted pass reads the
permuted side's rows through a row index; the measures are unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from reprstore.engine import checkpoints, dask_graph, planner
from reprstore.engine import grouped as gp
from reprstore.engine.pass_context import PassContext, kernel_products
from reprstore.engine.planner import (
    feature_streams,
    finishing_bytes,
    involved,
    kept_bytes,
    union_views,
)
from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Cross, Side, Spec
from reprstore.metrics.cka import (
    CKAResult,
    check_bandwidth,
    check_finite,
    cka_minibatch,
    swapped,
)
from reprstore.stats.hsic import MIN_ROWS_UNBIASED
from reprstore.stats.kernels import Bandwidth, bandwidth
from reprstore.stats.linear import (
    PairMoments,
    count_nonfinite,
    self_pair,
    transposed,
)
from reprstore.stats.minibatch import (
    BatchRange,
    ConsecutiveBatches,
    MinibatchSums,
    assign_batches,
    batch_range,
    merge_sums,
    sums_from_arrays,
    sums_to_arrays,
)
from reprstore.stats.plan import (
    Reading,
    batch_groups,
    pass_chains,
    plan_linear_passes,
)

Pair = tuple[int, int]


@dataclass
class Outcome:
    """What :func:`run` hands back: per ordered pair its columns, per array its partials."""

    pairs: dict[Pair, dict[str, Any]] = field(default_factory=dict)
    partials: dict[int, dict[str, Any]] = field(default_factory=dict)


class Resampling(Protocol):
    """What the engine runs when intervals or tests are asked for
    (:class:`reprstore.uncertainty.UncertaintyOptions`): the engine calls it and never
    imports the uncertainty package, which builds on the passes."""

    ci: float | None

    def measure(
        self,
        ctx: PassContext,
        pairs: Sequence[Pair],
        specs: Sequence[Spec],
        *,
        ids: np.ndarray | None = None,
        own: Sequence[int] = (),
    ) -> Outcome: ...


def run(
    c: PassContext,
    ordered: Sequence[Pair],
    specs: Sequence[Spec],
    own: Sequence[int] = (),
    extras: dict[Any, dict[str, Any]] | None = None,
    routes: dict[Pair, str] | None = None,
    widths: dict[int, int] | None = None,
    direct: bool = False,
) -> Outcome:
    """Every measure of ``specs`` for every ordered pair, in as few passes as fit.

    ``c.pairs`` are the unique unordered pairs (i ≤ j) of ``ordered``; ``own`` lists
    arrays that need their partials only (sides of feature-paired pairs across datasets,
    or the representations ``describe`` measures); ``extras`` are results of passes made
    beforehand, by ``("side", i)`` (e.g. counts); ``routes`` (from
    :func:`reprstore.engine.planner.make_plan`) puts unique pairs on the ``samples`` route
    (default: every pair on ``features``); ``widths`` are the widths of the
    representations the arrays stand for (factors of the sample route), by array;
    ``direct`` (the plan's :attr:`~reprstore.engine.planner.Plan.direct`) makes a single
    linear pass the direct one (:mod:`reprstore.engine.direct`).
    """
    out = Outcome()
    routes = routes or {}
    orient: dict[Pair, list[Pair]] = {}
    for a, b in dict.fromkeys(ordered):
        orient.setdefault((min(a, b), max(a, b)), []).append((a, b))
    if _one_fold_pass(specs, routes, own) and not extras:
        return _with_folds(c, orient, specs)
    extras = {**(extras or {}), **_special_passes(c, specs, orient, routes)}
    own_views = union_views(specs, "own")
    cross_views = union_views([s for s in specs if s.measure.pairing == "rows"], "cross")
    reprs = sorted(set(involved(c.pairs)) | set(own))
    featured = [k for k in orient if routes.get(k, "features") == "features"]
    streams, plan_pairs, features = feature_streams(c, featured, specs, own)
    in_streams = {i for i, _ in streams}
    for i in reprs:
        if i not in in_streams:
            _partials(out, specs, i, Side(c.names[i], {}), extras)
    if not streams:
        for key in orient:
            _finalize(out, specs, key, orient[key], Cross(c.n, {}, {}, _names(c, key)), extras)
        return out
    block_rows = max(c.arrays[0].chunks[0])
    widths_ = [int(a.shape[1]) for a in c.arrays]
    finishing = finishing_bytes(specs, widths_, streams, plan_pairs)
    itemsizes = [int(c.arrays[i].dtype.itemsize) for i, _ in streams]
    kept = kept_bytes(specs, widths_, streams)
    local = dask_graph.is_local_threaded(c.scheduler)
    passes = plan_linear_passes(features, plan_pairs, c.memory, block_rows, finishing,
                                c.threads, kept, itemsizes, c.blocks, local)  # fmt: skip
    runner = dask_graph.Runner(c.scheduler, c.progress, len(passes) * c.blocks)
    offsets: list[Any] = [None] * len(streams)  # from the first block, for every view
    have: dict[int, dict[str, Any]] = {}
    pending: dict[Pair, dict[str, PairMoments]] = {}
    for own_s, batch in passes:
        reading = Reading(block_rows, c.threads, itemsizes, c.blocks, local)
        chains = pass_chains(features, own_s, batch, reading)
        inner = max(1, c.threads // chains) if local else 1
        if direct and len(passes) == 1:
            from reprstore.engine.direct import direct_linear

            moments, cross = direct_linear(c, streams, own_s, batch)
            runner.skip(c.blocks)
        else:
            moments, cross = checkpoints.run_linear(c, runner, streams, own_s, batch, offsets,
                                                    chains, inner)  # fmt: skip
        for st, m in moments.items():
            offsets[st] = m.offset
            have.setdefault(streams[st][0], {})[streams[st][1]] = m
        ready = [i for i, views in have.items() if len(views) == len(own_views)]
        sides = {i: Side(c.names[i], have.pop(i)) for i in ready}
        for i, side in sides.items():
            side.width = (widths or {}).get(i, side.p)
        _parallel(c.threads, [partial(_partials, out, specs, i, sides[i], extras) for i in ready])
        jobs = []
        for i in ready:
            if (i, i) in orient and routes.get((i, i), "features") == "features":
                views = {v: self_pair(sides[i].moments[v]) for v in cross_views}
                cr = Cross(sides[i].n, views, {}, (sides[i].name,) * 2)
                jobs.append(partial(_finalize, out, specs, (i, i), orient[(i, i)], cr, extras))
        del sides
        for (st, tt), pm in cross.items():
            (i, v), (j, _) = streams[st], streams[tt]
            pending.setdefault((i, j), {})[v] = pm
        del moments, cross
        for key in [k for k, views in pending.items() if len(views) == len(cross_views)]:
            if key[0] in out.partials and key[1] in out.partials:
                cr = Cross(c.n, pending.pop(key), {}, _names(c, key))
                jobs.append(partial(_finalize, out, specs, key, orient[key], cr, extras))
        _parallel(c.threads, jobs)
        jobs.clear()  # each finished pair's Cross (its moments and shared products) goes now
    for key in orient:
        if orient[key][0] not in out.pairs:
            cr = Cross(c.n, pending.pop(key, {}), {}, _names(c, key))
            _finalize(out, specs, key, orient[key], cr, extras)
    return out


def _parallel(threads: int, jobs: Sequence[Callable[[], Any]]) -> None:
    """Run the measures' per-representation or per-pair steps (:func:`dask_graph.run_jobs`)."""
    dask_graph.run_jobs(threads, jobs)


def _names(c: PassContext, pair: Pair) -> tuple[str, str]:
    return c.names[pair[0]], c.names[pair[1]]


def _partials(out: Outcome, specs: Sequence[Spec], i: int, side: Side,
              extras: dict[Any, dict[str, Any]]) -> None:  # fmt: skip
    """The per-representation step of every measure on ``side`` (its decompositions shared)."""
    side.extra.update(extras.get(("side", i), {}))
    out.partials[i] = {
        s.key: None
        # on the sample route only, or measured by a pass of its own
        if not side.moments
        and (s.measure.sample_form(s.opts) or s.measure.special(s.opts) == "folds")
        else s.measure.partial(side, s.opts)
        for s in specs
    }


def _reverse(cross: Cross) -> Cross:
    views = {v: transposed(m) for v, m in cross.views.items()}
    return Cross(cross.n, views, {}, (cross.names[1], cross.names[0]))


def _finalize(
    out: Outcome,
    specs: Sequence[Spec],
    key: Pair,
    orientations: Sequence[Pair],
    cross: Cross,
    extras: dict[Any, dict[str, Any]],
) -> None:
    """The per-pair step of every measure for each asked orientation of the pair ``key``.

    A symmetric measure is computed once, in the ``key`` orientation, and the other
    orientation is its mirror (:meth:`Measure.mirrored`): the two cells of a grid hold the
    same bits. An asymmetric one (linreg, pwcca, pca) is computed per orientation.
    """
    keyed: dict[str, dict[str, Any]] = {}
    reverse: Cross | None = None

    def columns(s: Spec, pair: Pair, cr: Cross) -> dict[str, Any]:
        cr.extra = extras.get(("pair", *pair), {}).get(s.key, {})
        if "columns" in cr.extra:  # computed on the sample route
            return dict(cr.extra["columns"])
        pa, pb = out.partials[pair[0]], out.partials[pair[1]]
        return s.measure.finalize(pa[s.key], pb[s.key], cr, s.opts)

    for a, b in orientations:
        row: dict[str, Any] = {}
        for s in specs:
            if s.measure.pairing == "single":
                continue
            if (a, b) == key or s.measure.symmetric:
                if s.key not in keyed:
                    keyed[s.key] = columns(s, key, cross)
                got = keyed[s.key] if (a, b) == key else s.measure.mirrored(keyed[s.key])
            else:
                reverse = reverse or _reverse(cross)
                got = columns(s, (a, b), reverse)
            row.update({s.column(k): v for k, v in got.items()})
        out.pairs[(a, b)] = row


def finalize_features(
    specs: Sequence[Spec], a: dict[str, Any], b: dict[str, Any], names: tuple[str, str], n: int
) -> dict[str, Any]:
    """Columns of a feature-paired pair from its sides' partials (no cross statistics)."""
    row: dict[str, Any] = {}
    cross = Cross(n, {}, {}, names)
    for s in specs:
        got = s.measure.finalize(a[s.key], b[s.key], cross, s.opts)
        row.update({s.column(k): v for k, v in got.items()})
    return row


# ----------------------------------------------------------------- passes of their own


def _special_passes(
    c: PassContext, specs: Sequence[Spec], orient: dict[Pair, list[Pair]],
    routes: dict[Pair, str],
) -> dict[Any, dict[str, Any]]:  # fmt: skip
    """The passes some measures need of their own: minibatch CKA, and the sample route's
    (tiles for cka and rsa; factors of the Gram matrices for the orthogonally invariant
    measures). Extras by ("pair", a, b) → measure key → ``cka`` result or ``columns``."""
    unique = list(orient)
    extras: dict[Any, dict[str, Any]] = {}
    sampled = [p for p in unique if routes.get(p) == "samples"]
    for s in specs:
        o = s.opts
        if s.measure.special(o) == "minibatch":
            got = _minibatch(
                c, unique, kernel=o["kernel"], sigma=o["sigma"],
                batch_size=o["batch_size"], shuffle=o["shuffle"],
            )  # fmt: skip
            found = dict(zip(unique, got, strict=True))
        elif s.measure.special(o) == "folds":
            for (a, b), value in _cross_validated(c, s, orient).items():
                extras.setdefault(("pair", a, b), {})[s.key] = {"columns": {"linreg": value}}
            continue
        elif s.measure.sample_form(o) == "tiles":
            rbf = s.name == "cka" and o["kernel"] == "rbf"
            on = unique if rbf else sampled
            if not on:
                continue
            if s.name == "rsa":
                from reprstore.engine.sample_pass import sample_rsa

                for (i, j), cols in sample_rsa(c, on, o["rdm"]).items():
                    extras.setdefault(("pair", i, j), {})[s.key] = {"columns": cols}
                    extras.setdefault(("pair", j, i), {})[s.key] = {"columns": cols}
                continue
            from reprstore.engine.sample_pass import sample_cka

            found = sample_cka(c, on, estimator=o["estimator"], kernel=o["kernel"],
                               sigma=o["sigma"])  # fmt: skip
        else:
            continue
        for (i, j), r in found.items():
            extras.setdefault(("pair", i, j), {})[s.key] = {"cka": r}
            extras.setdefault(("pair", j, i), {})[s.key] = {"cka": swapped(r)}
    factored = [s for s in specs if s.measure.sample_form(s.opts) == "factors"]
    if factored and sampled:
        ordered = [ab for p in sampled for ab in orient[p]]
        found_cols = _factor_columns(c, factored, ordered)
        for a, b in found_cols:
            for s in factored:
                # a symmetric measure: one orientation's values for both (bitwise symmetric)
                key = (min(a, b), max(a, b)) if s.measure.symmetric else (a, b)
                cols = found_cols.get(key, found_cols[(a, b)])
                names = {s.column(k): k for k in _columns_of(s)}
                mine = {names[k]: v for k, v in cols.items() if k in names}
                extras.setdefault(("pair", a, b), {})[s.key] = {"columns": mine}
    return extras


def folds_of(c: PassContext, s: Spec) -> tuple[np.ndarray, int]:
    """The fold of every selected row and the number of folds of a linreg:folds spec: k
    consecutive blocks, or the distinct values of the ``fold_by`` column (in sorted order,
    scikit-learn's ``PredefinedSplit``)."""
    from reprstore.metrics.linreg import fold_ids

    column = s.opts["fold_by"]
    if column is None:
        return fold_ids(c.n, int(s.opts["folds"])), int(s.opts["folds"])
    _, codes = np.unique(c.columns[column], return_inverse=True)
    return codes.astype(np.int64), int(codes.max()) + 1


def _fold_pass(c: PassContext, streams: Sequence[tuple[int, str]], own: Sequence[int],
               cross: Sequence[Pair], s: Spec) -> dict[Any, Any]:  # fmt: skip
    """One pass keeping the sums of every fold of ``s`` for ``streams``
    (:mod:`reprstore.engine.grouped`); also gives the offsets used."""
    groups, k = folds_of(c, s)
    offsets = gp.first_offsets(c, streams, list(range(len(streams))))
    runner = dask_graph.Runner(c.scheduler, c.progress, c.blocks)
    stacked = gp.grouped_pass(c, streams, own, cross, groups, k, c.memory, offsets,
                              runner)  # fmt: skip
    runner.finish()
    stacked["_offsets"] = offsets
    return stacked


def _fold_values(
    c: PassContext, s: Spec, orient: dict[Pair, list[Pair]], stacked: dict[Any, Any],
    index: dict[int, int],
) -> dict[Pair, float]:  # fmt: skip
    """linreg:folds of every ordered pair from the per-fold sums: each fold fitted on the
    others' sums and scored on its own (:func:`reprstore.metrics.linreg.cross_validated_r2`);
    ``index`` maps a representation to its raw stream."""
    from reprstore.metrics.linreg import Sums, cross_validated_r2

    k = folds_of(c, s)[1]

    def sums(f: int, a: int, b: int) -> Sums:
        sa, sb = index[a], index[b]
        ra = {x: stacked[("r", sa, x)][f] for x in ("n", "total", "gram")}
        rb = {x: stacked[("r", sb, x)][f] for x in ("total", "gram")}
        if a == b:
            xy = ra["gram"]
        elif sa < sb:
            xy = stacked[("p", sa, sb, "cross")][f]
        else:
            xy = stacked[("p", sb, sa, "cross")][f].T
        return Sums(float(ra["n"]), ra["total"], rb["total"], ra["gram"], xy, rb["gram"])

    out: dict[Pair, float] = {}
    for orientations in orient.values():
        for a, b in orientations:
            value = cross_validated_r2([sums(f, a, b) for f in range(k)], s.opts["ridge"])
            if not np.isfinite(value):
                raise ComparisonError(
                    f"The cross-validated R² of {c.names[b]} from {c.names[a]} is not finite."
                )
            out[(a, b)] = value
    return out


def _cross_validated(c: PassContext, s: Spec, orient: dict[Pair, list[Pair]]) -> dict[Pair, float]:
    """linreg:folds=k of every ordered pair, from a pass of its own (the raw streams)."""
    reprs = sorted({i for p in orient for i in p})
    index = {i: t for t, i in enumerate(reprs)}
    cross = [(index[i], index[j]) for i, j in orient if i != j]
    stacked = _fold_pass(c, [(i, "raw") for i in reprs], list(range(len(reprs))), cross, s)
    return _fold_values(c, s, orient, stacked, index)


def _with_folds(c: PassContext, orient: dict[Pair, list[Pair]], specs: Sequence[Spec]) -> Outcome:
    """Every measure from one pass of per-fold sums: their total is every row's statistics
    (the other measures' input), each fold's own gives linreg:folds (SPEC: one pass)."""
    folds = [s for s in specs if s.measure.special(s.opts) == "folds"]
    plain = [s for s in specs if s not in folds]
    lay = Layout(c, specs, list(orient))
    if "raw" not in lay.cross_views:
        lay.cross_views = ["raw", *lay.cross_views]
    units = list(orient)
    stacked = _fold_pass(c, lay.streams, lay.own_of(units), lay.cross_of(units), folds[0])
    offsets = stacked.pop("_offsets")
    out = Outcome()
    if plain:
        out.pairs = measure_sums(c, lay, plain, orient, gp.total(stacked), offsets)
    index = {i: lay.index[(i, "raw")] for p in orient for i in p}
    for s in folds:
        for pair, value in _fold_values(c, s, orient, stacked, index).items():
            out.pairs.setdefault(pair, {})[s.column("linreg")] = value
    return out


def _one_fold_pass(specs: Sequence[Spec], routes: dict[Pair, str], own: Sequence[int]) -> bool:
    """Whether linreg:folds and the other measures can share one pass of fold sums (the
    others on the feature route, one k, no other pass of their own)."""
    folds = {(s.opts["folds"], s.opts["fold_by"]) for s in specs
             if s.measure.special(s.opts) == "folds"}  # fmt: skip
    others = [s for s in specs if s.measure.special(s.opts) not in (None, "folds")]
    return (len(folds) == 1 and not others and not own
            and all(r in ("features", "folds") for r in routes.values()))  # fmt: skip


def _columns_of(s: Spec) -> list[str]:
    scalars, arrays = s.measure.columns(s.opts)
    return [*scalars, *arrays, *s.measure.info]


def _factor_columns(
    c: PassContext, specs: Sequence[Spec], ordered: Sequence[Pair]
) -> dict[Pair, dict[str, Any]]:
    """Columns of the factor measures for ``ordered`` pairs: every involved
    representation replaced by a factor F of its centred Gram matrix (n × r, r < n; see
    :func:`reprstore.engine.sample_pass.sample_factors`), then the feature route on the factors,
    with each side's ridge scaled by its own width."""
    from reprstore.engine.pass_context import context
    from reprstore.engine.sample_pass import sample_factors

    idx = sorted({i for p in ordered for i in p})
    factors = sample_factors(c, idx)
    pos = {i: k for k, i in enumerate(idx)}
    local = [(pos[a], pos[b]) for a, b in ordered]
    sub = context([factors[i] for i in idx], local, names=[c.names[i] for i in idx],
                  memory=c.memory, progress=None, precision="float64")  # fmt: skip
    widths = {pos[i]: int(c.arrays[i].shape[1]) for i in idx}
    out = run(sub, local, specs, widths=widths)
    return {(a, b): out.pairs[(pos[a], pos[b])] for a, b in ordered}


def rbf_bandwidths(
    c: PassContext, idx: list[int], sigma: float, run: dask_graph.Runner, blocks: int
) -> dict[int, Bandwidth]:
    """σ of each representation in ``idx`` from one pass: exact up to SIGMA_EXACT_ROWS rows.

    The representations are taken :data:`~reprstore.engine.planner.BANDWIDTHS_PER_SEGMENT`
    at a time, each segment
    checkpointed (``c.checkpoints``): a killed run keeps the bandwidths found so far. Each
    bandwidth depends on its representation's rows alone, so the segments change no bit.
    """
    rows = np.flatnonzero(c.mask) if c.mask is not None else np.arange(c.arrays[0].shape[0])
    if c.n <= planner.SIGMA_EXACT_ROWS:
        method = f"exact median of all {c.n}² squared distances"
    else:
        rng = np.random.default_rng(planner.SIGMA_SEED)
        rows = np.sort(rng.choice(rows, size=planner.SIGMA_SAMPLE_ROWS, replace=False))
        method = (
            f"median estimated from the {planner.SIGMA_SAMPLE_ROWS}² squared distances among "
            f"{planner.SIGMA_SAMPLE_ROWS} of {c.n} rows drawn at random (seed {planner.SIGMA_SEED})"
        )
    sample = np.zeros(c.arrays[0].shape[0], dtype=bool)
    sample[rows] = True
    per = planner.BANDWIDTHS_PER_SEGMENT
    threads = planner.bandwidth_layout(c, idx).threads
    segments = [idx[k : k + per] for k in range(0, len(idx), per)]
    each = blocks // max(len(idx), 1)  # the blocks of one representation's gather

    def step(k: int, state: dict[int, Bandwidth] | None) -> dict[int, Bandwidth]:
        out = dict(state or {})
        part = segments[k]
        gathers = [dask_graph.gather_rows(c.arrays[i], sample, dask_graph.source_of(c.sources, i))
                   for i in part]  # fmt: skip
        data = run(*gathers, blocks=each * len(part))

        def one(i: int, x: np.ndarray) -> None:
            out[i] = checked_bandwidth(x, sigma, method, c.names[i], c.n)

        _parallel(threads, [partial(one, i, x) for i, x in zip(part, data, strict=True)])
        return out

    def skip(done: int) -> None:
        run.skip(each * sum(len(p) for p in segments[:done]))

    key = None
    ckpt = c.checkpoints
    if ckpt is not None and ckpt.files is not None:
        layout = ["rbf bandwidths", sigma, c.n, planner.SIGMA_EXACT_ROWS, planner.SIGMA_SAMPLE_ROWS,
                  planner.SIGMA_SEED, per]  # fmt: skip
        key = ckpt.key([(i, "raw") for i in idx], list(range(len(idx))), [], layout)
    form = checkpoints.Segments(_encode_bandwidths, _decode_bandwidths, 64 * len(idx))
    out = checkpoints.run_segments(ckpt, key, len(segments), step, form, c.memory, skip) or {}
    return {i: out[i] for i in idx}


def _encode_bandwidths(state: dict[int, Bandwidth]) -> dict[str, np.ndarray]:
    order = sorted(state)
    head = [[i, state[i].method] for i in order]
    return {
        "head": np.array(json.dumps(head)),
        "values": np.array([[state[i].sigma, state[i].median, state[i].scale] for i in order],
                           dtype=np.float64).reshape(-1, 3),
    }  # fmt: skip


def _decode_bandwidths(arrays: dict[str, np.ndarray]) -> dict[int, Bandwidth]:
    head = json.loads(str(arrays["head"]))
    values = arrays["values"]
    if values.dtype != np.float64 or values.shape != (len(head), 3):
        raise ValueError(f"bandwidths of shape {values.shape}")
    return {int(i): Bandwidth(float(v[0]), float(v[1]), str(m), float(v[2]))
            for (i, m), v in zip(head, values, strict=True)}  # fmt: skip


def checked_bandwidth(x: np.ndarray, sigma: float, method: str, name: str, n: int) -> Bandwidth:
    check_finite(name, count_nonfinite(x), x.shape[0])
    bw = bandwidth(x, sigma, method)
    check_bandwidth(bw, name, n)
    return bw


def _minibatch(
    c: PassContext,
    unique: Sequence[Pair],
    *,
    kernel: str,
    sigma: float,
    batch_size: int,
    shuffle: int | None,
) -> list[CKAResult]:
    if batch_size < MIN_ROWS_UNBIASED:
        raise InputError(
            f"--batch-size must be at least {MIN_ROWS_UNBIASED}. Got {batch_size} instead."
        )
    idx = involved(unique)
    model = planner.minibatch_layout(c, idx, batch_size, shuffle)
    workers = model.workers
    backend = kernel_products(c.backend, kernel)
    groups: list[Any]
    if shuffle is None and c.mask is None:  # every row, consecutive: no array of size n
        groups = [ConsecutiveBatches(c.n, batch_size)]
    else:
        ids = assign_batches(c.n, batch_size, shuffle)
        if c.mask is not None:  # −1: rows left out
            ids, kept = np.full(c.arrays[0].shape[0], -1, dtype=np.int64), ids
            ids[c.mask] = kept
            del kept
        groups = batch_groups(ids, model.group_rows, batch_size, shuffle)
    cross = [(i, j) for i, j in unique if i != j]
    bounds = np.cumsum((0, *c.arrays[0].chunks[0]))
    widths = sum(int(c.arrays[i].shape[1]) for i in idx)
    segments: list[tuple[int, Any]] = []  # (group, its part)
    for number, g in enumerate(groups):
        live = checkpoints.live_blocks(g, bounds)
        shuffled = 1
        if shuffle is not None and isinstance(g, BatchRange):  # batches' rows anywhere
            in_group = g.used()
            work = float(in_group.size) * batch_size * (widths + len(idx) + len(cross))
            shuffled = checkpoints.shuffled_segments(work, float(in_group.size) * widths,
                                                     len(np.unique(in_group)))  # fmt: skip
            del in_group
        parts = batch_segments(g, len(live), workers, shuffled=shuffled)
        segments += [(number, part) for part in parts]
    last = {number: k for k, (number, _) in enumerate(segments)}
    # block tasks of each segment (a chain that begins inside a block reads it too)
    tasks = [dask_graph.chain_tasks(part, bounds, workers) for _, part in segments]
    run = dask_graph.Runner(c.scheduler, c.progress,
                            sum(tasks) + len(idx) * c.blocks * (kernel == "rbf"))  # fmt: skip
    bws = {}
    if kernel == "rbf":
        bws = rbf_bandwidths(c, idx, sigma, run, len(idx) * c.blocks)
    sigma2 = [bws[i].sigma2 if i in bws else None for i in range(len(c.arrays))]

    def step(k: int, state: tuple[MinibatchSums, MinibatchSums | None] | None
             ) -> tuple[MinibatchSums, MinibatchSums | None]:  # fmt: skip
        """Sums of the groups done, and of the segments of this group done so far."""
        done, inner = state if state is not None else (MinibatchSums(), None)
        number, part = segments[k]
        graph = dask_graph.minibatch_pass(
            c.arrays, part, idx, cross, kernel=kernel, sigma2=sigma2,
            backend=backend, split_every=c.split_every, chains=workers, inputs=c.sources,
        )  # fmt: skip
        got = run(graph, blocks=tasks[k], workers=workers)[0]
        inner = got if inner is None else merge_sums(inner, got)
        if last[number] == k:  # the group's last segment: its sums join the others
            return merge_sums(done, inner), None
        return done, inner

    ckpt = c.checkpoints
    layout = ["minibatch", c.arrays[0].chunks[0], kernel, sigma2, batch_size, shuffle,
              [[n, len(checkpoints.live_blocks(p, bounds))] for n, p in segments],
              backend, c.n]  # fmt: skip
    key = None
    if ckpt is not None and ckpt.files is not None:
        streams = [(i, "raw") for i in idx]
        at = {i: k for k, i in enumerate(idx)}
        key = ckpt.key(streams, list(range(len(idx))),
                       [(at[i], at[j]) for i, j in cross], layout)  # fmt: skip

    def skip(done: int) -> None:
        run.skip(sum(tasks[:done]))

    form = checkpoints.Segments(_encode_nested, _decode_nested, 128 * (len(idx) + len(cross)))
    got = checkpoints.run_segments(ckpt, key, len(segments), step, form, c.memory, skip)
    sums = got[0] if got is not None else MinibatchSums()
    run.finish()
    return [
        cka_minibatch(
            sums,
            i,
            j,
            kernel=kernel,
            batch_size=batch_size,
            names=(c.names[i], c.names[j]),
            bandwidths=(bws[i], bws[j]) if bws else None,
        )
        for i, j in unique
    ]


def _encode_nested(state: tuple[MinibatchSums, MinibatchSums | None]) -> dict[str, np.ndarray]:
    """A minibatch pass's state: the sums of the groups done and of the current one."""
    done, inner = state
    arrays = {f"done.{k}": v for k, v in sums_to_arrays(done).items()}
    if inner is not None:
        arrays.update({f"group.{k}": v for k, v in sums_to_arrays(inner).items()})
    return arrays


def _decode_nested(arrays: dict[str, np.ndarray]) -> tuple[MinibatchSums, MinibatchSums | None]:
    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    inner = part("group.")
    return sums_from_arrays(part("done.")), sums_from_arrays(inner) if inner else None


def batch_segments(batches: ConsecutiveBatches | np.ndarray | BatchRange, live: int, workers: int,
                   per: int = checkpoints.BLOCKS_PER_SEGMENT,
                   shuffled: int = 1) -> list[Any]:  # fmt: skip
    """The segments of a minibatch pass: runs of whole batches, each its own graph, so
    that a killed pass resumes from the last one saved
    (:func:`reprstore.engine.checkpoints.run_segments`). Over consecutive batches, a block
    that holds the edge of two segments is read by both: about one segment per ``per``
    blocks (:data:`checkpoints.BLOCKS_PER_SEGMENT`) keeps the re-reads a small part of the
    pass (a pass whose batches cost far more than their rows, a permutation test's, can
    take ``per=1``). Random batches (a shuffle) have their rows in every block, so each
    segment reads them all: they make ``shuffled`` segments
    (:func:`checkpoints.shuffled_segments`). Segments without a row are left out."""
    if isinstance(batches, ConsecutiveBatches):
        total = len(batches.sizes)
    else:
        whole = batch_range(batches)
        used = whole.used()
        if not used.size:
            return [batches]
        first, total = int(used.min()), int(used.max()) + 1
        if (np.diff(used) < 0).any():  # a shuffle
            if shuffled <= 1:
                return [batches]
            edges = [first + round(k * (total - first) / shuffled) for k in range(shuffled + 1)]
            return _batch_ranges(whole, used, edges)
    count = checkpoints.minibatch_segments(live, workers, total, per)
    edges = [round(k * total / count) for k in range(count + 1)]
    if isinstance(batches, ConsecutiveBatches):
        return [batches.segment(lo, hi) for lo, hi in itertools.pairwise(edges)]
    return _batch_ranges(whole, used, edges)


def _batch_ranges(whole: BatchRange, used: np.ndarray, edges: Sequence[int]) -> list[BatchRange]:
    """The batches of ``whole`` in each range of ``edges`` that holds a row (``used``:
    their ids), as ranges over the same ids (no array of n each)."""
    present = np.unique(used)
    return [whole.within(lo, hi) for lo, hi in itertools.pairwise(edges)
            if np.any((present >= lo) & (present < hi))]  # fmt: skip


def counts(
    c: PassContext, idx: Sequence[int], tols: Sequence[float], codes: np.ndarray | None,
    n_classes: int,
) -> dict[int, Any]:  # fmt: skip
    """Counts (:mod:`reprstore.stats.counts`) of arrays ``idx`` in one computation."""
    run = dask_graph.Runner(c.scheduler, c.progress, len(idx) * c.blocks)
    graphs = [
        dask_graph.counts_pass(c.arrays[i], c.mask, tols, codes, n_classes, c.split_every)
        for i in idx
    ]
    return dict(zip(idx, run(*graphs, blocks=len(idx) * c.blocks), strict=True))


def attention(c: PassContext, idx: Sequence[int], heads: Sequence[int]) -> dict[int, Any]:
    """Entropy sums (:mod:`reprstore.stats.attention`) of the attention maps ``idx``, of
    ``heads[k]`` heads each, in one computation."""
    run = dask_graph.Runner(c.scheduler, c.progress, len(idx) * c.blocks)
    graphs = [
        dask_graph.attention_pass(c.arrays[i], c.mask, h, c.split_every)
        for i, h in zip(idx, heads, strict=True)
    ]
    return dict(zip(idx, run(*graphs, blocks=len(idx) * c.blocks), strict=True))


def check_sigma(sigma: float | None) -> None:
    if sigma is None or not sigma > 0 or not math.isfinite(sigma):
        raise InputError(f"sigma must be a positive number. Got {sigma!r} instead.")


# ------------------------------------------------- statistics kept per row group


class Layout:
    """The streams and stream pairs the specs need for some array pairs (as the engine)."""

    def __init__(self, ctx: PassContext, specs: Sequence[Spec], pairs: Sequence[Pair]) -> None:
        self.own_views = union_views(specs, "own")
        self.cross_views = union_views([s for s in specs if s.measure.pairing == "rows"],
                                         "cross")  # fmt: skip
        reprs = sorted({i for p in pairs for i in p})
        self.streams: list[gp.Stream] = [(i, v) for i in reprs for v in self.own_views]
        self.index = {st: k for k, st in enumerate(self.streams)}
        self.features = [int(ctx.arrays[i].shape[1]) for i, _ in self.streams]

    def own_of(self, pairs: Sequence[Pair]) -> list[int]:
        return sorted({self.index[(i, v)] for p in pairs for i in p for v in self.own_views})

    def cross_of(self, pairs: Sequence[Pair]) -> list[Pair]:
        return [(self.index[(i, v)], self.index[(j, v)])
                for i, j in pairs if i != j for v in self.cross_views]  # fmt: skip

    def unit_bytes(self, pairs: Sequence[Pair]) -> int:
        return gp.unit_bytes(self.features, self.own_of(pairs), self.cross_of(pairs))


def measure_sums(
    ctx: PassContext, lay: Layout, specs: Sequence[Spec], orient: dict[Pair, list[Pair]],
    sums: gp.Sums, offsets: Sequence[Any],
) -> dict[Pair, dict[str, Any]]:  # fmt: skip
    """The engine's columns of every ordered pair of ``orient`` from one combination of
    group sums: each measure's ``partial`` per side, ``finalize`` per pair."""
    out = Outcome()
    for i in sorted({k for p in orient for k in p}):
        views = {v: gp.repr_moments(sums, lay.index[(i, v)], offsets[lay.index[(i, v)]])
                 for v in lay.own_views}  # fmt: skip
        _partials(out, specs, i, Side(ctx.names[i], views), {})
    for (i, j), orientations in orient.items():
        n = round(float(sums[("r", lay.index[(i, lay.own_views[0])], "n")]))
        pair_sums: dict[str, PairMoments]
        if i == j:
            pair_sums = {v: self_pair(gp.repr_moments(sums, lay.index[(i, v)],
                                                             offsets[lay.index[(i, v)]]))
                         for v in lay.cross_views}  # fmt: skip
        else:
            pair_sums = {v: gp.pair_moments(sums, lay.index[(i, v)], lay.index[(j, v)])
                         for v in lay.cross_views}  # fmt: skip
        cross = Cross(n, pair_sums, {}, (ctx.names[i], ctx.names[j]))
        _finalize(out, specs, (i, j), orientations, cross, {})
    return out.pairs
