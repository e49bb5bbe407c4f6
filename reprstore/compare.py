"""CKA grids over a store: plan the pairs, pick the rows, run the engine, tabulate.

:func:`compare` takes two selectors (A and B), forms every A × B pair allowed by
``match`` / ``differ`` (and an explicit pairs list), checks that each pair shares its
dataset and rows, and runs :func:`reprstore.engine.compare_arrays` once per dataset:
one pass over the data computes every pair, reading each stored chunk of each involved
array once (row blocks are a multiple of every array's stored chunk rows).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from reprstore.engine import (
    DEFAULT_BATCH_SIZE,
    TARGET_BLOCK_BYTES,
    Progress,
    compare_arrays,
)
from reprstore.errors import (
    ComparisonError,
    DatasetMismatchError,
    IncompleteError,
    InputError,
    NotFoundError,
)
from reprstore.keys import SELECTOR_KEYS, ReprKey, Selector, differ_match_filter
from reprstore.metrics.cka import CKAResult, check_options
from reprstore.uncertainty import columns_of as uncertainty_columns
from reprstore.uncertainty import options as uncertainty_options
from reprstore.uncertainty import result_columns as uncertainty_result_columns

if TYPE_CHECKING:
    import pandas as pd

    from reprstore.store import ReprInfo, Store

KEY_FIELDS = ("model", "seed", "checkpoint", "layer")
RESULT_COLUMNS = [
    *(f"a_{k}" for k in KEY_FIELDS),
    *(f"b_{k}" for k in KEY_FIELDS),
    "dataset",
    "estimator",
    "kernel",
    "n_samples",
    "cka",
]
EXTRA_COLUMNS = [
    "n_batches",
    "batch_size",
    "sigma",
    "sigma_method",
    "hsic_ab",
    "hsic_aa",
    "hsic_bb",
]


@dataclass(frozen=True)
class GridPlan:
    """The representations and pairs of one comparison.

    Attributes
    ----------
    reprs : list of ReprInfo
        Every involved representation, once.
    pairs : list of (int, int)
        Indices into ``reprs``, A first, in A-major order.
    """

    reprs: list[ReprInfo]
    pairs: list[tuple[int, int]]

    @property
    def datasets(self) -> list[str]:
        return sorted({self.reprs[i].dataset for i, _ in self.pairs})


def _fields(info: ReprInfo) -> dict[str, str]:
    return {**info.key.as_dict(), "dataset": info.dataset}


def read_pairs_file(path: str | os.PathLike[str]) -> list[tuple[ReprKey, ReprKey]]:
    """Pairs from a CSV with columns ``a_model,a_seed,a_checkpoint,a_layer,b_model,…``.

    A results file written by ``reprstore cka --out`` is a valid pairs file.
    """
    want = [f"{s}_{k}" for s in "ab" for k in KEY_FIELDS]
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as err:
        raise InputError(f"Cannot read the pairs file {os.fspath(path)}: {err.strerror}.") from err
    missing = [c for c in want if c not in header]
    if missing:
        raise InputError(
            f"The pairs file {os.fspath(path)} must have the columns {', '.join(want)}. "
            f"Missing: {', '.join(missing)}."
        )
    return [
        (
            ReprKey(*(row[f"a_{k}"].strip() for k in KEY_FIELDS)),
            ReprKey(*(row[f"b_{k}"].strip() for k in KEY_FIELDS)),
        )
        for row in rows
    ]


def _select(store: Store, selector: str | Selector | None, option: str) -> list[ReprInfo]:
    if isinstance(selector, str) and selector.strip() in ("", "*"):
        selector = None  # everything
    infos = store.select(selector)
    if not infos:
        raise NotFoundError(f"No representation matches {option} {str(selector or '*')!r}.")
    return sorted(infos, key=lambda info: info.key)


def plan_grid(
    store: Store,
    a: str | Selector | None,
    b: str | Selector | None,
    *,
    match: Sequence[str] = (),
    differ: Sequence[str] = (),
    pairs: Sequence[tuple[ReprKey, ReprKey]] | None = None,
    allow_incomplete: bool = False,
) -> GridPlan:
    """Every A × B pair that ``match``/``differ`` (and ``pairs``, if given) allow.

    Raises
    ------
    NotFoundError
        A selection is empty, or a listed pair names a missing representation.
    ComparisonError
        No pair is left.
    DatasetMismatchError
        A pair mixes datasets or row counts.
    IncompleteError
        An involved representation is incomplete and ``allow_incomplete`` is false.
    """
    if a is None and b is None and pairs is None:
        raise InputError("Give --a and --b selectors (or a --pairs file).")
    for key in (*match, *differ):
        if key not in SELECTOR_KEYS:
            raise InputError(f"Unknown key {key!r}. Expected some of {', '.join(SELECTOR_KEYS)}.")
    side_a, side_b = _select(store, a, "--a"), _select(store, b, "--b")
    wanted = set(pairs) if pairs is not None else None
    if wanted is not None:
        for listed in {k for pair in wanted for k in pair}:
            if not store.exists(listed):
                raise NotFoundError(f"The pairs file names {listed.label()}, which is not stored.")
    chosen = [
        (x, y)
        for x in side_a
        for y in side_b
        if differ_match_filter(_fields(x), _fields(y), match, differ)
        and (wanted is None or (x.key, y.key) in wanted)
    ]
    if not chosen:
        raise ComparisonError(
            f"No pair left to compare: {len(side_a)} A × {len(side_b)} B representations, "
            f"none kept by --match {','.join(match) or '-'} --differ {','.join(differ) or '-'}"
            + (" and the pairs file." if wanted is not None else ".")
        )
    index: dict[ReprKey, int] = {}
    reprs: list[ReprInfo] = []
    for info in (i for pair in chosen for i in pair):
        if info.key not in index:
            index[info.key] = len(reprs)
            reprs.append(info)
    for x, y in chosen:
        _check_pair(x, y)
    for info in reprs:
        if not info.complete and not allow_incomplete:
            raise IncompleteError(
                f"{info.key.label()} is incomplete ({info.rows_written} of {info.shape[0]} rows): "
                "resume its extraction or pass --allow-incomplete."
            )
    return GridPlan(reprs, [(index[x.key], index[y.key]) for x, y in chosen])


def _check_pair(x: ReprInfo, y: ReprInfo) -> None:
    if x.dataset != y.dataset:
        raise DatasetMismatchError(
            f"Cannot compare {x.key.label()} (dataset {x.dataset!r}) with {y.key.label()} "
            f"(dataset {y.dataset!r}): rows must be the same samples. Add dataset=NAME to the "
            "selectors or --match dataset."
        )
    if x.complete and y.complete and x.shape[0] != y.shape[0]:
        raise DatasetMismatchError(
            f"Cannot compare {x.key.label()} ({x.shape[0]} rows) with {y.key.label()} "
            f"({y.shape[0]} rows): row counts differ."
        )


def row_mask(store: Store, dataset: str, where: str | None) -> np.ndarray | None:
    """Rows of ``dataset`` kept by the safe condition ``where`` over ``id`` and its metadata.

    ``where`` is parsed by :mod:`reprstore.expr`, which never runs code.

    Returns
    -------
    bool ndarray (n,) or None when ``where`` is empty.
    """
    if not where:
        return None
    from reprstore.expr import parse_row_filter

    flt = parse_row_filter(where)
    return flt.mask(store.dataset(dataset).table())


def block_rows_for(infos: Sequence[ReprInfo], target_bytes: int = TARGET_BLOCK_BYTES) -> int:
    """Rows per block: a multiple of every stored chunk row count, near ``target_bytes``.

    The block holds float64 rows of all ``infos`` at once.
    """
    base = math.lcm(*(int(info.chunks[0]) for info in infos))
    row_bytes = 8 * sum(int(info.shape[1]) for info in infos)
    return base * max(1, target_bytes // max(base * row_bytes, 1))


@contextlib.contextmanager
def dask_scheduler(workers: int | None = None, scheduler: Any = None) -> Iterator[Any]:
    """The dask scheduler to compute with, for the duration of a comparison.

    ``workers=N`` starts a local dask.distributed cluster of N worker processes (one
    thread each) and closes it afterwards; ``scheduler`` is the address of a running
    scheduler (``tcp://host:8786``), a ``distributed.Client``, or any value
    ``dask.compute(scheduler=…)`` takes. Neither: local threads.
    """
    if workers is not None and scheduler is not None:
        raise InputError("Give either --workers or --scheduler, not both.")
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1. Got {workers} instead.")
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    if isinstance(scheduler, str) and "://" in scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout=10)
        except (OSError, TimeoutError) as err:
            raise InputError(f"Cannot reach the dask scheduler at {scheduler}: {err}") from None
        with client:
            yield client
        return
    yield scheduler


def _open(store: Store | str | os.PathLike[str]) -> Store:
    from reprstore.store import Store

    return store if isinstance(store, Store) else Store.open(store)


def _dask_array(store: Store, info: ReprInfo, rows: int, allow_incomplete: bool) -> da.Array:
    arr = store.array(info.key, allow_incomplete=allow_incomplete)
    name = f"reprstore-{store.url}-{info.key.path}-{rows}"
    return da.from_array(arr, chunks=(rows, -1), name=name)


def _row(a: ReprInfo, b: ReprInfo, r: CKAResult) -> dict[str, Any]:
    row: dict[str, Any] = {f"a_{k}": getattr(a.key, k) for k in KEY_FIELDS}
    row.update({f"b_{k}": getattr(b.key, k) for k in KEY_FIELDS})
    row.update(
        dataset=a.dataset, estimator=r.estimator, kernel=r.kernel, n_samples=r.n_samples,
        cka=r.cka, n_batches=r.n_batches, batch_size=r.batch_size, sigma=r.sigma,
        sigma_method=r.sigma_method, hsic_ab=r.hsic_ab, hsic_aa=r.hsic_aa, hsic_bb=r.hsic_bb,
    )  # fmt: skip
    row.update(uncertainty_columns(r))
    return row


def _run_dataset(
    store: Store,
    plan: GridPlan,
    dataset: str,
    *,
    where: str | None,
    allow_incomplete: bool,
    progress: Progress | None,
    **options: Any,
) -> dict[tuple[int, int], CKAResult]:
    pairs = [(i, j) for i, j in plan.pairs if plan.reprs[i].dataset == dataset]
    idx = sorted({i for p in pairs for i in p})
    infos = [plan.reprs[i] for i in idx]
    n = min(info.rows_written if not info.complete else info.shape[0] for info in infos)
    rows = block_rows_for(infos)
    arrays = [_dask_array(store, info, rows, allow_incomplete) for info in infos]
    arrays = [x if x.shape[0] == n else x[:n] for x in arrays]
    mask = row_mask(store, dataset, where)
    if mask is not None:
        if len(mask) < n:
            raise DatasetMismatchError(
                f"Dataset {dataset!r} lists {len(mask)} samples; its representations have {n}."
            )
        mask = mask[:n]
        kept = int(mask.sum())
        need = 2 if options["estimator"] == "biased" else 4
        if kept < need:
            raise ComparisonError(
                f"--where {where!r} keeps {kept} of {n} rows of dataset {dataset!r}: expected "
                f"at least {need} rows."
            )
    pos = {i: k for k, i in enumerate(idx)}
    if options.get("uncertainty") is not None:  # resampling groups are keyed by sample id
        options = {**options, "ids": store.dataset(dataset).ids()[:n]}
    results = compare_arrays(
        arrays,
        [(pos[i], pos[j]) for i, j in pairs],
        names=[info.key.label() for info in infos],
        mask=mask,
        progress=progress,
        **options,
    )
    return dict(zip(pairs, results, strict=True))


def compare(
    store: Store | str | os.PathLike[str],
    a: str | Selector | None,
    b: str | Selector | None,
    *,
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: int | None = None,
    where: str | None = None,
    match: Sequence[str] = (),
    differ: Sequence[str] = (),
    pairs: Sequence[tuple[ReprKey, ReprKey]] | None = None,
    allow_incomplete: bool = False,
    device: str = "cpu",
    precision: str = "float64",
    memory: int | str | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    split_every: int | None = None,
    progress: Progress | None = None,
    ci: float | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    seed: int | None = None,
    report: Any = None,
) -> pd.DataFrame:
    """CKA of every selected A with every selected B, in one pass over the data.

    Parameters
    ----------
    store : Store or path/URL
    a, b : selectors (``model=m,layer=encoder.*``) of the two sides
    estimator, kernel, sigma, batch_size, shuffle, device, precision, memory
        As for :func:`reprstore.cka`.
    where : str, optional
        condition over the dataset's ``id`` and metadata columns (:mod:`reprstore.expr`,
        never evaluated as code); the same rows are
        used on both sides.
    match, differ : keys that must agree / differ within a pair (``layer``, ``seed`` …)
    pairs : explicit (A key, B key) pairs to keep (see :func:`read_pairs_file`)
    allow_incomplete : compare incomplete representations on their rows written so far
    workers : start a local dask.distributed cluster of this many processes
    scheduler : address of a running dask scheduler (or a Client / dask scheduler)
    split_every : fan-in of the reduction tree
    progress : callable(done, total) in row blocks
    ci, bootstrap, permutations, seed
        Confidence interval (level, replicates) and permutation test (see
        :mod:`reprstore.uncertainty`); ``seed`` defaults to 0 and is recorded.
    report : callable(str), optional
        Receives the uncertainty plan (passes, memory) before the work starts.

    Returns
    -------
    pandas.DataFrame
        One row per pair: :data:`RESULT_COLUMNS` then :data:`EXTRA_COLUMNS`, then
        ``cka_lo``, ``cka_hi``, ``cka_se`` … / ``cka_p`` … where asked.
    """
    import pandas as pd

    check_options(estimator, kernel)
    unc = uncertainty_options(ci, bootstrap, permutations, seed, report=report)
    st = _open(store)
    plan = plan_grid(
        st, a, b, match=match, differ=differ, pairs=pairs, allow_incomplete=allow_incomplete
    )
    options: dict[str, Any] = dict(
        estimator=estimator, kernel=kernel, sigma=sigma, batch_size=batch_size,
        shuffle=shuffle, device=device, precision=precision, memory=memory, uncertainty=unc,
    )  # fmt: skip
    if split_every is not None:
        options["split_every"] = split_every
    found: dict[tuple[int, int], CKAResult] = {}
    with dask_scheduler(workers, scheduler) as sched:
        for dataset in plan.datasets:
            found.update(
                _run_dataset(
                    st,
                    plan,
                    dataset,
                    where=where,
                    allow_incomplete=allow_incomplete,
                    progress=progress,
                    scheduler=sched,
                    **options,
                )
            )
    rows = [_row(plan.reprs[i], plan.reprs[j], found[(i, j)]) for i, j in plan.pairs]
    return pd.DataFrame(
        rows, columns=RESULT_COLUMNS + EXTRA_COLUMNS + uncertainty_result_columns(unc)
    )
