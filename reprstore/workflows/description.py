"""Measures of single representations over a store (``reprstore describe``).

:func:`describe` selects representations, streams the statistics their measures need
(per dataset, one linear pass for the moments, one counting pass for ``sparsity`` and
``selectivity``, one attention pass for ``attention_entropy`` and
``head_specialization``) and returns one row per representation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.engine.cluster import dask_scheduler as _scheduler
from reprstore.engine.options import ComputeOptions
from reprstore.engine.pass_context import Progress, context
from reprstore.engine.passes import attention, counts, run
from reprstore.errors import InputError, NotFoundError
from reprstore.keys import Selector
from reprstore.metrics.base import Spec
from reprstore.metrics.registry import parse_measures
from reprstore.workflows.comparison import (
    KEY_FIELDS,
    GridPlan,
    dataset_arrays,
    grid_cell,
    open_store,
    select_reprs,
)

if TYPE_CHECKING:
    import pandas as pd

    from reprstore.store import Store

DEFAULT_MEASURES = "pr,erank,variance"


def describe(
    store: Store | str | os.PathLike[str],
    selector: str | Selector | None = None,
    *,
    measures: str | Sequence[str] = DEFAULT_MEASURES,
    where: str | None = None,
    allow_incomplete: bool = False,
    memory: int | str | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Single-representation measures (``pr``, ``erank``, ``variance``, ``sparsity``,
    ``selectivity:label=COL``, and of attention maps ``attention_entropy`` and
    ``head_specialization``) of every selected representation.

    Returns
    -------
    pandas.DataFrame
        One row per representation: its keys, ``dataset``, ``n_samples`` and one column
        per scalar (per-unit selectivities as a list column).
    """
    import pandas as pd

    run_opts = ComputeOptions(memory=memory, workers=workers, scheduler=scheduler)  # checked once
    memory = run_opts.budget
    specs = parse_measures(measures)
    paired = [s.name for s in specs if s.measure.pairing != "single"]
    if paired:
        raise InputError(
            f"{', '.join(paired)} compare(s) two representations: use reprstore compare. "
            "describe takes pr, erank, variance, sparsity, selectivity, attention_entropy, "
            "head_specialization."
        )
    st = open_store(store)
    infos = select_reprs(st, selector, "SELECTOR")
    for info in infos:
        if not info.complete and not allow_incomplete:
            from reprstore.errors import IncompleteError

            raise IncompleteError(
                f"{info.key.label()} is incomplete ({info.rows_written} of {info.shape[0]} "
                "rows): resume its extraction or pass --allow-incomplete."
            )
    heads = _attention_heads(infos, specs)
    plan = GridPlan(infos, [(i, i) for i in range(len(infos))])
    labels = _labels(st, specs, plan)
    rows: list[dict[str, Any]] = []
    with _scheduler(workers, scheduler) as sched:
        for dataset in sorted({info.dataset for info in infos}):
            idx = [i for i, info in enumerate(infos) if info.dataset == dataset]
            arrays, mask, n = dataset_arrays(
                st, plan, idx, dataset, where, allow_incomplete, 2, memory
            )
            ctx = context(arrays, [], names=[infos[i].key.label() for i in idx], mask=mask,
                          memory=memory, scheduler=sched, progress=progress,
                          min_rows=2)  # fmt: skip
            extras = _counts(ctx, specs, labels.get(dataset), len(idx))
            if heads:
                found = attention(ctx, list(range(len(idx))), [heads[i] for i in idx])
                for k, sums in found.items():
                    extras.setdefault(("side", k), {})["attention"] = sums
            out = run(ctx, [], specs, own=list(range(len(idx))), extras=extras)
            for k, i in enumerate(idx):
                row: dict[str, Any] = {k2: getattr(infos[i].key, k2) for k2 in KEY_FIELDS}
                row.update(dataset=dataset, n_samples=n)
                for s in specs:
                    got = out.partials[k][s.key]  # the values (SingleMeasure.partial)
                    row.update({s.column(c): grid_cell(v) for c, v in got.items()})
                rows.append(row)
    columns = [*KEY_FIELDS, "dataset", "n_samples"]
    for s in specs:
        scalars, arrays_ = s.measure.columns(s.opts)
        columns += [s.column(c) for c in (*scalars, *arrays_)]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["notes"] = _dead_notes(df, specs)
    return df


def _dead_notes(df: pd.DataFrame, specs: Sequence[Spec]) -> list[str]:
    """One statement per selectivity whose representations had dead units (class means all
    zero): how many, and what was done with them (``selectivity:dead``)."""
    notes = []
    done = {"skip": "left out of the mean", "zero": "counted as 0"}
    for s in specs:
        if s.name != "selectivity":
            continue
        dead = df[s.column("selectivity_dead")]
        if dead.sum() > 0:
            notes.append(
                f"{s.column('selectivity')}: {int(dead.sum())} dead unit(s) (every class mean "
                f"zero) in {int((dead > 0).sum())} of {len(df)} representation(s), "
                f"{done[s.opts['dead']]} (selectivity:dead=skip|zero|error); per "
                f"representation in column {s.column('selectivity_dead')}."
            )
    return notes


def _attention_heads(infos: Sequence[Any], specs: Sequence[Spec]) -> dict[int, int]:
    """Heads of every selected representation, when an attention measure is asked for;
    an error (before any data is read) for one that is not attention maps."""
    asked = [s.name for s in specs if s.measure.special(s.opts) == "attention"]
    if not asked:
        return {}
    from reprstore.capture.sink import ATTENTION, ATTENTION_LAYOUT
    from reprstore.engine.arrays import attention_shape

    out = {}
    for i, info in enumerate(infos):
        shape = list(info.attrs.get("original_shape") or [])
        reduction = info.attrs.get("reduction")
        if reduction != ATTENTION or info.attrs.get("layout") != ATTENTION_LAYOUT:
            raise InputError(
                f"{asked[0]} needs attention maps (extract --attentions); "
                f"{info.key.label()} is {reduction or 'a'} representation of per-sample "
                f"shape {tuple(shape)}."
            )
        out[i] = int(shape[0])
        attention_shape(int(info.shape[1]), out[i], info.key.label())
    return out


def _labels(st: Store, specs: Sequence[Spec], plan: GridPlan) -> dict[str, tuple[np.ndarray, int]]:
    """Per dataset, the class codes (n,) and number of classes of the selectivity label."""
    wanted = {s.opts["label"] for s in specs if s.name == "selectivity"}
    if not wanted:
        return {}
    if len(wanted) > 1:
        raise InputError("Give one selectivity label column per describe run.")
    (column,) = wanted
    import pandas as pd

    out = {}
    for dataset in {info.dataset for info in plan.reprs}:
        table = st.dataset(dataset).table()
        if column not in table:
            cols = ", ".join(c for c in table if c != "id") or "none"
            raise NotFoundError(
                f"Dataset {dataset!r} has no metadata column {column!r} for selectivity:label. "
                f"Columns: {cols}."
            )
        codes, classes = pd.factorize(pd.Series(table[column]))
        out[dataset] = (np.asarray(codes, dtype=np.int64), len(classes))
    return out


def _counts(
    ctx: Any, specs: Sequence[Spec], label: tuple[np.ndarray, int] | None, count: int
) -> dict[Any, dict[str, Any]]:
    tols = sorted({float(s.opts["tol"]) for s in specs if s.name == "sparsity"})
    if not any(s.measure.special(s.opts) == "counts" for s in specs):
        return {}
    codes, n_classes = label if label is not None else (None, 0)
    if codes is not None:
        codes = codes[: ctx.arrays[0].shape[0]]
    found = counts(ctx, list(range(count)), tols, codes, n_classes)
    return {("side", i): {"counts": c} for i, c in found.items()}
