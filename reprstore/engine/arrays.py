"""The engine: compare in-memory or out-of-core arrays by any registered measures.

:func:`measure_arrays` computes every measure asked for (``"cka,cca,procrustes"``, see
:mod:`reprstore.metrics.registry`) for every pair of arrays (numpy, dask, zarr, torch or
any array-like with ``shape``, ``dtype`` and row slicing) from one pass over the data
(:mod:`reprstore.engine.passes`); :func:`describe_arrays` the single-representation measures.
:func:`cka` and :func:`compare_arrays` are the CKA-only entry points, unchanged for their
users: they run the ``cka`` measure and hand back
:class:`~reprstore.metrics.cka.CKAResult` objects. The store-level grids are
:func:`reprstore.workflows.comparison.compare` and :func:`reprstore.workflows.description.describe`.

Passes (one memory model, ``memory`` bytes):

* linear statistics of every (representation, row view) stream and every pair of streams
  (n, Σx, XᵀX, XᵀY, row-norm sums): one pass reads every row block once; a grid whose
  statistics exceed ``memory`` is split over several passes;
* minibatch CKA: chains of consecutive blocks (or groups of random batches that fit);
  with the RBF kernel, one earlier pass for σ;
* exact RBF CKA: the n × n kernels in memory, refused beyond ``memory``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from reprstore.engine import dask_graph, passes
from reprstore.engine.pass_context import (
    PassContext,
    Progress,
    context,
)
from reprstore.engine.passes import Resampling, check_sigma
from reprstore.engine.planner import DryRun, make_plan
from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Spec
from reprstore.metrics.cka import CKAResult, check_options
from reprstore.metrics.registry import parse_measures, parse_spec
from reprstore.stats.hsic import MIN_ROWS_UNBIASED
from reprstore.stats.linear import Backend

DEFAULT_BATCH_SIZE = 256

Pair = tuple[int, int]
__all__ = ["compare_arrays", "describe_arrays", "measure_arrays"]


def measure_arrays(
    arrays: Sequence[Any],
    pairs: Sequence[Pair],
    measures: str | Sequence[str] | Sequence[Spec] = "cka",
    *,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    own: Sequence[int] = (),
    uncertainty: Resampling | None = None,
    ids: np.ndarray | None = None,
    route: str = "auto",
    report: Callable[[str], None] | None = None,
    dry_run: bool = False,
    columns: dict[str, Any] | None = None,
    checkpoints: Any = None,
    **settings: Any,
) -> passes.Outcome:
    """Every measure for every ordered pair ``(i, j)`` of ``arrays`` (same rows), reading
    each block of each involved array once per pass.

    Parameters
    ----------
    arrays : sequence of array-likes, each (n, p_i)
    pairs : ordered (A, B) index pairs
    measures : ``"cka,cca,svcca:keep=0.9"``, a list of such names, or parsed specs
    own : arrays that need only their per-representation step (feature-paired pairs
        with arrays of other datasets)
    uncertainty : reprstore.uncertainty.UncertaintyOptions, optional
        Intervals and/or permutation tests (:mod:`reprstore.uncertainty`).
    ids : ndarray (n,), optional
        Sample ids of the rows (default: row numbers); they key the resampling groups.
    route : {"auto", "features", "samples"}
        How exact CKA is computed (SPEC: Routes); ``auto`` takes the cheaper per pair.
    report : callable(str), optional
        Receives the plan line (:mod:`reprstore.engine.planner`) before any chunk is read.
    dry_run : bool
        Plan only: raise :class:`reprstore.engine.planner.DryRun` (holding the plan) after it.
    columns : dict of name → array-like (n,), optional
        Per-row metadata the measures name (``linreg:fold_by=COL``), for every stored row
        (the mask selects them as it selects the rows).
    checkpoints : reprstore.engine.checkpoints.PassCheckpoints, optional
        Where the passes save their state as they go, so that a killed run resumes.
    settings : device, memory, scheduler, split_every, progress, precision, block_rows

    Returns
    -------
    passes.Outcome
        ``.pairs[(i, j)]``: the result columns; ``.partials[i]``: per measure key, the
        per-representation results.
    """
    specs: list[Spec] = (
        [m for m in measures if isinstance(m, Spec)]
        if _all_specs(measures)
        else parse_measures(measures)  # type: ignore[arg-type]
    )
    if not pairs and not own:
        raise ComparisonError("Nothing to compare: the list of pairs is empty.")
    for s in specs:
        if s.measure.pairing == "single" and pairs:
            raise InputError(f"{s.name} describes one representation: use reprstore describe.")
    min_rows = max((_min_rows(s) for s in specs), default=1)
    ctx = context(arrays, pairs, names=names, mask=mask, min_rows=min_rows,
                  what=_what(specs, min_rows), **settings)  # fmt: skip
    check_widths(ctx, specs, pairs)
    if columns:
        ctx = replace(ctx, columns=_selected_columns(ctx, columns))
    if checkpoints is not None:
        ctx = replace(ctx, checkpoints=checkpoints)
    plan = make_plan(
        ctx,
        specs,
        own,
        route,
        uncertain=uncertainty is not None,
        ci=uncertainty is not None and uncertainty.ci is not None,
        permutations=int(getattr(uncertainty, "permutations", None) or 0),
    )
    if report is not None:
        report(plan.line())
    if dry_run:
        raise DryRun(plan)
    if uncertainty is not None:
        return uncertainty.measure(ctx, pairs, specs, ids=ids, own=own)
    return passes.run(ctx, pairs, specs, own, routes=plan.routes, direct=plan.direct)


def _selected_columns(ctx: PassContext, columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each metadata column's values of the selected rows (as the row mask selects them)."""
    n_total = ctx.arrays[0].shape[0]
    out = {}
    for name, values in columns.items():
        v = np.asarray(values)[:n_total]
        if v.shape != (n_total,):
            raise InputError(
                f"Metadata column {name!r} must have one value per row ({n_total}). "
                f"Got shape {v.shape} instead."
            )
        out[name] = v if ctx.mask is None else v[ctx.mask]
    return out


def describe_arrays(
    arrays: Sequence[Any],
    measures: str | Sequence[str] = "pr,erank,variance",
    *,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    heads: int | Sequence[int] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Single-representation measures of each of ``arrays`` (same rows), in one pass (and
    one counting pass for ``sparsity``/``selectivity``, one attention pass for
    ``attention_entropy``/``head_specialization``).

    Parameters
    ----------
    labels : array-like (n,), optional
        Class of every row, for ``selectivity`` (its ``label`` option names the column
        in a store; here the values are given).
    heads : int or one per array, optional
        Heads H of attention maps stored as rows (n, H·T·T) in the order (head, query,
        key), for the attention measures (a store records it as ``original_shape``).

    Returns
    -------
    list of dict, one per array: column → value
    """
    specs = parse_measures(measures)
    for s in specs:
        if s.measure.pairing != "single":
            raise InputError(f"{s.name} compares two representations: use measure_arrays.")
    ctx = context(arrays, [], names=names, mask=mask, min_rows=2, **settings)
    extras: dict[Any, dict[str, Any]] = {}
    if any(s.measure.special(s.opts) == "counts" for s in specs):
        tols = sorted({float(s.opts["tol"]) for s in specs if s.name == "sparsity"})
        codes, n_classes = None, 0
        if labels is not None:
            import pandas as pd

            codes_, classes = pd.factorize(pd.Series(np.asarray(labels)))
            codes, n_classes = np.asarray(codes_, dtype=np.int64), len(classes)
        found = passes.counts(ctx, list(range(len(arrays))), tols, codes, n_classes)
        extras = {("side", i): {"counts": c} for i, c in found.items()}
    if any(s.measure.special(s.opts) == "attention" for s in specs):
        if heads is None:
            raise InputError("The attention measures need heads=H (maps stored as H·T·T).")
        per = [heads] * len(arrays) if isinstance(heads, int) else list(heads)
        for i, h in enumerate(per):
            attention_shape(int(ctx.arrays[i].shape[1]), h, ctx.names[i])
        for i, sums in passes.attention(ctx, list(range(len(arrays))), per).items():
            extras.setdefault(("side", i), {})["attention"] = sums
    out = passes.run(ctx, [], specs, own=list(range(len(arrays))), extras=extras)
    rows = []
    for i in range(len(arrays)):
        row: dict[str, Any] = {}
        for s in specs:
            got = out.partials[i][s.key]  # the values (SingleMeasure.partial)
            row.update({s.column(k): v for k, v in got.items()})
        rows.append(row)
    return rows


def attention_shape(width: int, heads: int, name: str) -> tuple[int, int]:
    """``(heads, T)`` of attention maps ``width = heads·T·T`` wide, or a one-line error."""
    from reprstore.stats.attention import map_shape

    try:
        return map_shape(width, heads)
    except ValueError as err:
        raise InputError(f"{name} is not attention maps of {heads} heads: {err}.") from None


def min_rows_for(specs: Sequence[Spec]) -> int:
    """The fewest rows every measure of ``specs`` is defined on."""
    return max((_min_rows(s) for s in specs), default=1)


def _all_specs(measures: Any) -> bool:
    return not isinstance(measures, str) and all(isinstance(m, Spec) for m in measures)


def _min_rows(spec: Spec) -> int:
    if spec.name == "cka":
        return 2 if spec.opts["estimator"] == "biased" else MIN_ROWS_UNBIASED
    return 3 if spec.name == "rsa" else 2


def _what(specs: Sequence[Spec], rows: int) -> str:
    for s in specs:
        if _min_rows(s) == rows:
            return f"the {s.opts['estimator']} estimator" if s.name == "cka" else s.name
    return "the measures"


def check_widths(ctx: PassContext, specs: Sequence[Spec], pairs: Sequence[Pair]) -> None:
    """Refuse, before any pass, a measure that needs equal widths on unequal ones."""
    for s in specs:
        if not s.measure.equal_width:
            continue
        for i, j in pairs:
            p, q = ctx.arrays[i].shape[1], ctx.arrays[j].shape[1]
            if p != q:
                raise ComparisonError(
                    f"{s.name} needs the same number of features on both sides: "
                    f"{ctx.names[i]} has {p}, {ctx.names[j]} has {q}."
                )


def compare_arrays(
    arrays: Sequence[Any],
    pairs: Sequence[Pair],
    *,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: int | None = None,
    device: str | Backend = "cpu",
    memory: int | str | None = None,
    scheduler: Any = None,
    split_every: int = dask_graph.DEFAULT_SPLIT_EVERY,
    progress: Progress | None = None,
    precision: str = "float64",
    block_rows: int | None = None,
    uncertainty: Resampling | None = None,
    ids: np.ndarray | None = None,
    route: str = "auto",
) -> list[CKAResult]:
    """CKA of each pair ``(i, j)`` of ``arrays``, reading every block once per pass.

    Parameters
    ----------
    arrays : sequence of array-likes, each (n, p_i)
        Same n; converted with :func:`as_dask` and aligned to the first one's row blocks.
    pairs : sequence of (int, int)
    names : labels for messages (default ``"0"``, ``"1"`` …)
    mask : bool ndarray (n,), optional
        Rows to compare (the same on both sides).
    estimator, kernel, sigma, batch_size, shuffle, device, memory
        See :func:`cka`.
    scheduler : dask scheduler (``None``: the current default, local threads)
    split_every : int
        Partial states merged per node of the reduction tree.
    progress : callable(done, total), optional
        Called after each pass.
    precision : {"float64", "float32"}
        Precision of the per-block matrix products; accumulation is float64 regardless.
    block_rows : int, optional
        Rows per block for inputs that are not dask arrays (default: about 32 MiB of
        float64 per array, a multiple of the stored chunk rows, within ``memory``).
    uncertainty : reprstore.uncertainty.UncertaintyOptions, optional
        Intervals and/or permutation tests (:mod:`reprstore.uncertainty`).
    ids : ndarray (n,), optional
        Sample ids of the rows (default: row numbers); they key the resampling groups.
    route : {"auto", "features", "samples"}
        How exact CKA is computed (see :func:`measure_arrays`).

    Returns
    -------
    list of CKAResult, in the order of ``pairs`` (with ``uncertainty``,
    :class:`~reprstore.uncertainty.UncertainResult`)
    """
    check_options(estimator, kernel)
    check_sigma(sigma)
    if not pairs:
        raise ComparisonError("Nothing to compare: the list of pairs is empty.")
    spec = cka_spec(estimator=estimator, kernel=kernel, sigma=sigma, batch_size=batch_size,
                    shuffle=shuffle)  # fmt: skip
    out = measure_arrays(
        arrays, pairs, [spec], names=names, mask=mask, device=device, memory=memory,
        scheduler=scheduler, split_every=split_every, progress=progress, precision=precision,
        block_rows=block_rows, uncertainty=uncertainty, ids=ids, route=route,
    )  # fmt: skip
    return [out.pairs[p]["_result"] for p in pairs]


def cka_spec(**options: Any) -> Spec:
    """The :class:`Spec` of ``cka`` with these options (the others at their defaults)."""
    return parse_spec("cka", {k: v for k, v in options.items() if v is not None})
