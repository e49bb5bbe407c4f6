"""Sample-level uncertainty of every measure: confidence intervals and permutation tests.

The glue between the engine's :class:`~reprstore.engine.pass_context.PassContext` and the pure
resampling math of :mod:`reprstore.stats.resample`:

* every measure on the linear statistics (cka's exact estimators, cca, svcca, pwcca,
  procrustes, shape, linreg, rsa, cosine, pca within one dataset): rows are hashed into
  G groups by (seed, sample id); one pass keeps the engine's streamed sums per group
  (:mod:`reprstore.engine.grouped`); each measure's own ``partial``/``finalize`` run
  on every leave-one-group-out combination, giving the delete-group jackknife's
  estimate ± t_{G−1}·SE of every scalar column (:mod:`reprstore.uncertainty.generic`);
* permutation tests of "A and B are unrelated": for cka, B's rows permuted over all rows
  while cheap, otherwise within minibatches (:mod:`reprstore.uncertainty.linear`); for
  the other row-paired measures, B's rows over all rows, the cross sums re-made per
  permutation (:mod:`reprstore.uncertainty.generic`);
* minibatch cka: one pass keeps each batch's HSIC values
  (:mod:`reprstore.uncertainty.batches`); the interval resamples whole batches (Poisson
  bootstrap), permutations permute B's rows within each batch.

Entry points for the engine: :func:`check_measures` (refuses, before any work, what has
no meaning) and :func:`measure` (called by :func:`reprstore.engine.arrays.measure_arrays` when
it is given ``uncertainty=``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.errors import InputError
from reprstore.metrics.cka import CKAResult
from reprstore.uncertainty.base import (
    CI_COLUMNS as CI_COLUMNS,
)
from reprstore.uncertainty.base import (
    DEFAULT_REPLICATES as DEFAULT_REPLICATES,
)
from reprstore.uncertainty.base import (
    EXACT_PERMUTATION_MACS as EXACT_PERMUTATION_MACS,
)
from reprstore.uncertainty.base import (
    P_COLUMNS as P_COLUMNS,
)
from reprstore.uncertainty.base import (
    UncertainResult as UncertainResult,
)
from reprstore.uncertainty.base import (
    UncertaintySettings as UncertaintySettings,
)
from reprstore.uncertainty.base import (
    clip_interval as clip_interval,
)
from reprstore.uncertainty.base import (
    columns_of as columns_of,
)
from reprstore.uncertainty.base import (
    result_columns as result_columns,
)
from reprstore.uncertainty.base import (
    say as say,
)
from reprstore.uncertainty.base import (
    with_uncertainty as with_uncertainty,
)

if TYPE_CHECKING:
    from reprstore.engine.pass_context import PassContext
    from reprstore.engine.passes import Outcome
    from reprstore.metrics.base import Spec


@dataclass(frozen=True)
class UncertaintyOptions(UncertaintySettings):
    """:class:`~reprstore.uncertainty.base.UncertaintySettings` that the engine can run:
    it calls :meth:`measure` on what it is given as ``uncertainty=`` (the engine never
    imports this package)."""

    def measure(
        self,
        ctx: PassContext,
        pairs: Sequence[tuple[int, int]],
        specs: Sequence[Spec],
        *,
        ids: np.ndarray | None = None,
        own: Sequence[int] = (),
    ) -> Outcome:
        """The measures of ``pairs`` with these intervals and tests (:func:`measure`)."""
        return measure(ctx, pairs, specs, self, ids=ids, own=own)


def options(
    ci: float | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    seed: int | None = None,
    permute: str = "auto",
    report: Callable[[str], None] | None = None,
) -> UncertaintyOptions | None:
    """The options of the public API (``None`` when nothing is asked); refuses
    ``bootstrap`` without ``ci``."""
    if ci is None and bootstrap is not None:
        raise InputError("--bootstrap needs --ci LEVEL (e.g. --ci 0.95 --bootstrap 200).")
    opts = UncertaintyOptions(
        ci=ci,
        bootstrap=DEFAULT_REPLICATES if bootstrap is None else bootstrap,
        permutations=permutations,
        seed=0 if seed is None else seed,
        permute=permute,
        report=report,
    )
    return opts if opts.active else None


def _selected_ids(ctx: PassContext, ids: np.ndarray | None) -> np.ndarray:
    """The selected rows' sample ids (default: row numbers)."""
    n_total = ctx.arrays[0].shape[0]
    all_ids = np.arange(n_total) if ids is None else np.asarray(ids)
    if all_ids.shape[0] != n_total:
        raise InputError(f"Expected {n_total} sample ids, one per row. Got {all_ids.shape[0]}.")
    return all_ids if ctx.mask is None else all_ids[ctx.mask]


def run_special(ctx: PassContext, opts: UncertaintyOptions, spec: Spec) -> list[CKAResult]:
    """Minibatch CKA of ``ctx.pairs`` with its batch bootstrap and/or within-batch test."""
    from reprstore.uncertainty import batches

    o = spec.opts
    if o["estimator"] != "minibatch":
        raise InputError(
            f"--ci and --permutations are not available for the exact {o['estimator']} "
            "estimator with the rbf kernel. Use --estimator minibatch (any kernel) or "
            "--kernel linear."
        )
    return batches.run_minibatch(ctx, opts, kernel=o["kernel"], sigma=o["sigma"],
                                 batch_size=o["batch_size"], shuffle=o["shuffle"])  # fmt: skip


def _has_interval() -> list[str]:
    from reprstore.metrics.registry import REGISTRY, get

    return [n for n in REGISTRY if get(n).pairing != "single"]


def _has_test() -> list[str]:
    from reprstore.metrics.registry import REGISTRY, get

    return [n for n in REGISTRY if get(n).pairing == "rows"]


def check_measures(specs: Sequence[Spec], opts: UncertaintyOptions | None = None) -> None:
    """Refuse, before any work, measures that have no interval or test."""
    single = [s.key for s in specs if s.measure.pairing == "single"]
    if single:
        raise InputError(
            f"{', '.join(single)} describe(s) one representation and has no interval here; "
            f"--ci is available for {', '.join(_has_interval())}."
        )
    special = [s for s in specs if s.measure.special(s.opts)]
    if special and len(specs) > 1:
        raise InputError(
            f"--ci and --permutations of {special[0].key} (its own pass: batch bootstrap, "
            "within-batch permutations) run on their own: compare it without "
            f"{', '.join(s.key for s in specs if s is not special[0])}, or use the exact "
            "estimator (cka:estimator=debiased) with them."
        )
    untested = [s.key for s in specs if s.measure.pairing != "rows"]
    if opts is not None and opts.permutations is not None and untested:
        raise InputError(
            f"{', '.join(untested)} has no permutation test (it pairs features, not rows: "
            f"nothing to permute); --permutations is available for {', '.join(_has_test())}."
        )


def measure(
    ctx: PassContext,
    ordered: Sequence[tuple[int, int]],
    specs: Sequence[Spec],
    opts: UncertaintyOptions,
    *,
    ids: np.ndarray | None = None,
    own: Sequence[int] = (),
) -> Outcome:
    """The engine's :class:`~reprstore.engine.passes.Outcome` of ``specs`` for the ordered pairs,
    with the uncertainty columns ``opts`` asks for (see :func:`result_columns`)."""
    from reprstore.engine.passes import Outcome
    from reprstore.metrics.cka import result_columns as cka_columns
    from reprstore.metrics.cka import swapped

    check_measures(specs, opts)
    if own:
        raise InputError(
            "--ci and --permutations resample rows of one dataset; these pairs span "
            "datasets (different samples on each side). Compare within one dataset, or "
            "without --ci/--permutations."
        )
    out = Outcome()
    if any(s.measure.special(s.opts) for s in specs):
        (spec,) = specs
        found = run_special(ctx, opts, spec)
        by_pair = dict(zip(ctx.pairs, found, strict=True))
        for a, b in ordered:
            r = by_pair[(min(a, b), max(a, b))]
            r = swapped(r) if a > b else r
            cols = {**cka_columns(r), **columns_of(r)}
            out.pairs[(a, b)] = {spec.column(k): v for k, v in cols.items()}
        return out
    out.pairs = _linear_measures(ctx, ordered, specs, opts, _selected_ids(ctx, ids))
    return out


def _linear_measures(
    ctx: PassContext, ordered: Sequence[tuple[int, int]], specs: Sequence[Spec],
    opts: UncertaintyOptions, ids: np.ndarray,
) -> dict[tuple[int, int], dict[str, Any]]:  # fmt: skip
    """Columns of every ordered pair for measures on the linear statistics (cka exact too)."""
    from reprstore.engine import passes
    from reprstore.engine.dask_graph import Runner
    from reprstore.uncertainty import generic, linear

    ckas = [s for s in specs if s.name == "cka"]
    others = [s for s in specs if s.name != "cka"]
    blocks = generic.interval_blocks(ctx, ordered, specs, opts) if opts.ci is not None else 0
    if opts.permutations is not None:
        blocks += generic.test_blocks(ctx, ordered) if others else 0
        blocks += generic.test_blocks(ctx, ordered) * len(ckas) * linear.permutes_rows(ctx, opts)
    if opts.permutations is not None and others:
        generic.plan_test(ctx, ordered, others, opts)  # refused or said before any work
    runner = Runner(ctx.scheduler, ctx.progress, blocks)
    if opts.ci is not None:
        rows = generic.intervals(ctx, ordered, specs, opts, ids, runner)
    else:  # the plain pass first, on the same progress bar
        seen = [0]
        bar = ctx.progress

        def first(done: int, total: int) -> None:
            seen[0] = total
            if bar is not None:
                bar(done, total + blocks)

        rows = passes.run(replace(ctx, progress=first), ordered, specs).pairs
        runner.done, runner.total = seen[0], seen[0] + blocks
    tests: dict[Any, dict[tuple[int, int], dict[str, Any]]] = {}
    if opts.permutations is not None:
        if others:
            tests[None] = generic.permutation_tests(ctx, ordered, others, opts, runner)
        for s in ckas:
            tests[s.key] = linear.cka_tests(
                ctx, opts, estimator=s.opts["estimator"], batch_size=s.opts["batch_size"],
                shuffle=s.opts["shuffle"], runner=runner,
            )  # fmt: skip
    runner.finish()
    out = {}
    for a, b in ordered:
        row = dict(rows[(a, b)])
        methods = []
        if None in tests:
            row.update(tests[None][(a, b)])
            names = ", ".join(s.name + s.suffix for s in others)
            methods.append((f"{names}: ", row["permutation_method"]))
        for s in ckas:
            col = s.column("cka")
            fields: dict[str, Any] = {}
            if opts.ci is not None:
                lo, hi = row.pop(f"{col}_lo"), row.pop(f"{col}_hi")
                if lo is not None:
                    lo, hi = clip_interval(lo, hi)
                fields.update(cka_lo=lo, cka_hi=hi, cka_se=row.pop(f"{col}_se"),
                              ci_level=opts.ci, ci_method=row["ci_method"],
                              ci_replicates=row["ci_replicates"])  # fmt: skip
            if s.key in tests:
                fields.update(tests[s.key][(min(a, b), max(a, b))])
                methods.append((f"{col}: ", fields["permutation_method"]))
            fields["resample_seed"] = opts.seed
            r = with_uncertainty(row[s.column("_result")], **fields)
            row[s.column("_result")] = r
            row.update(columns_of(r, col))
        if len(methods) > 1:
            row["permutation_method"] = "; ".join(label + m for label, m in methods)
        out[(a, b)] = row
    return out
