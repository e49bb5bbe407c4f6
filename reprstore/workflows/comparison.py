"""Comparisons over a store (the compare use case): plan the pairs, pick the rows, run
the measures, tabulate with run attributes and provenance.

:func:`compare` (``reprstore.compare``) takes two selectors (A and B), forms every A × B
pair allowed by ``match`` / ``differ`` / ``pair_where`` (and an explicit pairs list), checks
that each row-paired pair shares its dataset and rows, and runs the engine once per dataset:
one pass over the data computes every pair, reading each stored chunk of each involved
array once (row blocks are a multiple of every array's stored chunk rows).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.engine.arrays import DEFAULT_BATCH_SIZE, measure_arrays
from reprstore.engine.cluster import LOCAL_WORKERS, dask_scheduler
from reprstore.engine.pass_context import TARGET_BLOCK_BYTES, Progress, lazy_rows
from reprstore.engine.passes import finalize_features
from reprstore.errors import (
    ComparisonError,
    DatasetMismatchError,
    IncompleteError,
    InputError,
    NotFoundError,
)
from reprstore.keys import (
    CONDITION_KEYS,
    SELECTOR_KEYS,
    ReprKey,
    Selector,
    differ_match_filter,
    key_order,
)
from reprstore.metrics.base import Spec
from reprstore.store.csvtext import unescape_cell
from reprstore.workflows.compare_options import CompareOptions

if TYPE_CHECKING:
    import dask.array as da
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
    "route",
    "n_batches",
    "batch_size",
    "sigma",
    "bandwidth_a",
    "bandwidth_b",
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
    attributes : list of dict
        The run attributes of each of ``reprs`` (``{"tasks": "sst2,mnli", …}``).
    """

    reprs: list[ReprInfo]
    pairs: list[tuple[int, int]]
    attributes: list[dict[str, str]] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return sorted({self.reprs[i].dataset for i, _ in self.pairs})


def _fields(info: ReprInfo) -> dict[str, str]:
    return {**info.key.as_dict(), "dataset": info.dataset}


PAIR_KEYS = CONDITION_KEYS  # the key fields and step; run attributes may not take them


def _run_attributes(store: Store, info: ReprInfo) -> dict[str, str]:
    """The run attributes of one representation (none when the store keeps none)."""
    read = getattr(store, "attributes", None)
    return {str(k): str(v) for k, v in read(info.key).items()} if read is not None else {}


def pair_fields(info: ReprInfo, attributes: dict[str, str]) -> dict[str, Any]:
    """What a pair filter sees of one side: attributes, then the key, dataset and step."""
    return {**attributes, **_fields(info), "step": info.step}


def _pair_filter(text: str | None, fields: list[dict[str, Any]]) -> Any:
    if not text:
        return None
    from reprstore.expr import parse_pair_filter

    known = {k for f in fields for k in f} | set(PAIR_KEYS)
    return parse_pair_filter(text, known)


def read_pairs_file(path: str | os.PathLike[str]) -> list[tuple[ReprKey, ReprKey]]:
    """Pairs from a CSV with columns ``a_model,a_seed,a_checkpoint,a_layer,b_model,…``.

    The dataset of each side comes from ``a_dataset``/``b_dataset`` or the ``dataset``
    column (``default`` when the file has neither). A results file written by
    ``reprstore cka --out`` is a valid pairs file, whatever its format (.csv, .json,
    .parquet).
    """
    want = [f"{s}_{k}" for s in "ab" for k in KEY_FIELDS]
    if os.fspath(path).lower().endswith((".json", ".parquet")):
        from reprstore.report import read_results

        records = read_results(path).to_dict(orient="records")
        rows = [{str(k): str(v) for k, v in r.items() if v is not None} for r in records]
        header = rows[0].keys() if rows else []
    else:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
                header = rows[0].keys() if rows else []
        except OSError as err:
            raise InputError(
                f"Cannot read the pairs file {os.fspath(path)}: {err.strerror}."
            ) from err
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError(
                f"The pairs file {os.fspath(path)} is not a text CSV ({type(err).__name__}); "
                "give a CSV such as a results file of 'reprstore cka --out'."
            ) from None
    missing = [c for c in want if c not in header]
    if missing:
        raise InputError(
            f"The pairs file {os.fspath(path)} must have the columns {', '.join(want)}. "
            f"Missing: {', '.join(missing)}."
        )

    def side(row: dict[str, str], s: str) -> ReprKey:
        dataset = row.get(f"{s}_dataset") or row.get("dataset") or "default"
        model, seed, checkpoint, layer = (
            unescape_cell(row[f"{s}_{k}"].strip()) for k in KEY_FIELDS
        )  # a result CSV escapes names such as '-m (reprstore.store.csvtext)
        return ReprKey(model, seed, checkpoint, unescape_cell(dataset.strip()), layer)

    return [(side(row, "a"), side(row, "b")) for row in rows]


def select_reprs(store: Store, selector: str | Selector | None, option: str) -> list[ReprInfo]:
    if isinstance(selector, str) and selector.strip() in ("", "*"):
        selector = None  # everything
    damaged = store.damaged(selector)
    if damaged:
        from reprstore.errors import CorruptDataError

        raise CorruptDataError(f"{option} {str(selector or '*')!r} needs {damaged[0].message()}.")
    infos = store.select(selector, must_match=option)
    return sorted(infos, key=lambda info: key_order(info.key))


def plan_grid(
    store: Store,
    a: str | Selector | None,
    b: str | Selector | None,
    *,
    match: Sequence[str] = (),
    differ: Sequence[str] = (),
    pairs: Sequence[tuple[ReprKey, ReprKey]] | None = None,
    pair_where: str | None = None,
    allow_incomplete: bool = False,
    row_paired: bool = True,
    unordered: bool = False,
) -> GridPlan:
    """Every A × B pair that ``match``/``differ``, ``pairs`` and ``pair_where`` allow.

    ``unordered`` keeps one of each mirror pair: of (X, Y) and (Y, X), both kept by the
    filters, only the one whose A comes first in natural key order stays (see
    :func:`drop_mirrors`); self-pairs (X, X) and pairs without a mirror stay.

    ``pair_where`` is a condition over both sides (``a.seed != b.seed and not (a.tasks &
    b.tasks)``) reading :data:`PAIR_KEYS` and run attributes, checked by
    :func:`reprstore.expr.parse_pair_filter` (never run as code).

    ``row_paired=False`` (feature-paired measures only) lets a pair span two datasets.

    Raises
    ------
    NotFoundError
        A selection is empty, or a listed pair names a missing representation.
    ComparisonError
        No pair is left.
    ExpressionError
        ``pair_where`` is not an allowed condition, or reads an unknown key or attribute.
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
    side_a, side_b = select_reprs(store, a, "--a"), select_reprs(store, b, "--b")
    attrs = {i.key: _run_attributes(store, i) for i in (*side_a, *side_b)}
    seen = {i.key: pair_fields(i, attrs[i.key]) for i in (*side_a, *side_b)}
    keep = _pair_filter(pair_where, list(seen.values()))
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
        and (keep is None or keep(seen[x.key], seen[y.key]))
    ]
    if unordered:
        chosen = drop_mirrors(chosen)
    if not chosen:
        raise ComparisonError(
            f"No pair left to compare: {len(side_a)} A × {len(side_b)} B representations, "
            f"none kept by --match {','.join(match) or '-'} --differ {','.join(differ) or '-'}"
            + (f" --pair-where {pair_where!r}" if pair_where else "")
            + (" --unordered" if unordered else "")
            + (" and the pairs file." if wanted is not None else ".")
        )
    index: dict[ReprKey, int] = {}
    reprs: list[ReprInfo] = []
    for info in (i for pair in chosen for i in pair):
        if info.key not in index:
            index[info.key] = len(reprs)
            reprs.append(info)
    for x, y in chosen:
        if row_paired:
            _check_pair(x, y)
    for info in reprs:
        if not info.complete and not allow_incomplete:
            raise IncompleteError(
                f"{info.key.label()} is incomplete ({info.rows_written} of {info.shape[0]} rows): "
                "resume its extraction or pass --allow-incomplete."
            )
    pairs_kept = [(index[x.key], index[y.key]) for x, y in chosen]
    return GridPlan(reprs, pairs_kept, [attrs[info.key] for info in reprs])


def drop_mirrors(pairs: Sequence[tuple[ReprInfo, ReprInfo]]) -> list[tuple[ReprInfo, ReprInfo]]:
    """``pairs`` less the mirror of each pair: of (X, Y) and (Y, X), the one whose A comes
    later in natural key order (:func:`reprstore.keys.key_order`) is dropped. Self-pairs
    and pairs whose mirror is not in ``pairs`` stay; the order is kept."""
    present = {(x.key, y.key) for x, y in pairs}
    return [
        (x, y)
        for x, y in pairs
        if (y.key, x.key) not in present or key_order(x.key) <= key_order(y.key)
    ]


def attribute_columns(plan: GridPlan) -> dict[str, list[str | None]]:
    """``a_<attr>``/``b_<attr>`` columns for every run attribute, one value per pair.

    A side without the attribute gets None; attributes sort by name, A's columns first.
    """
    names = sorted({name for attrs in plan.attributes for name in attrs})
    return {
        f"{side}_{name}": [plan.attributes[pair[k]].get(name) for pair in plan.pairs]
        for k, side in enumerate("ab")
        for name in names
    }


def rows_used(
    store: Store, plan: GridPlan, where: str | None, masks: dict[str, Any] | None = None
) -> dict[str, dict[str, int]]:
    """Per dataset: its samples and the rows ``where`` keeps (what the results used);
    ``masks`` are the datasets' row masks when already evaluated."""
    out = {}
    for dataset in sorted({plan.reprs[k].dataset for pair in plan.pairs for k in pair}):
        n = store.dataset(dataset).n_samples
        mask = masks[dataset] if masks is not None else row_mask(store, dataset, where)
        out[dataset] = {"n_samples": n, "rows_used": n if mask is None else int(mask.sum())}
    return out


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


def open_store(store: Store | str | os.PathLike[str]) -> Store:
    from reprstore.store import Store

    return store if isinstance(store, Store) else Store.open(store)


def stored_array(store: Store, info: ReprInfo, rows: int, allow_incomplete: bool) -> da.Array:
    """The representation as a dask array whose blocks are read CRC-checked chunk by chunk."""
    from reprstore.store.checked import CheckedRows

    arr = store.array(info.key, allow_incomplete=allow_incomplete)
    checked = CheckedRows.from_array(store.url, arr, info.key.label())
    name = f"reprstore-{checked.location}-{info.key.path}-{rows}-{hash(checked.crcs)}"
    return lazy_rows(checked, rows, name)


def dataset_arrays(
    store: Store,
    plan: GridPlan,
    idx: Sequence[int],
    dataset: str,
    where: str | None,
    allow_incomplete: bool,
    min_rows: int,
    memory: int | str | None,
    masks: dict[str, Any] | None = None,
) -> tuple[list[da.Array], np.ndarray | None, int]:
    """The arrays of ``plan.reprs[idx]`` (one dataset), their row mask and row count
    (``masks``: the datasets' row masks when already evaluated)."""
    infos = [plan.reprs[i] for i in idx]
    n = min(info.rows_written if not info.complete else info.shape[0] for info in infos)
    rows = block_rows_for(infos, _block_target(infos, memory))
    arrays = [stored_array(store, info, rows, allow_incomplete) for info in infos]
    arrays = [x if x.shape[0] == n else x[:n] for x in arrays]
    mask = masks[dataset] if masks is not None else row_mask(store, dataset, where)
    if mask is not None:
        if len(mask) < n:
            raise DatasetMismatchError(
                f"Dataset {dataset!r} lists {len(mask)} samples; its representations have {n}."
            )
        mask = mask[:n]
        kept = int(mask.sum())
        if kept < min_rows:
            raise ComparisonError(
                f"--where {where!r} keeps {kept} of {n} rows of dataset {dataset!r}: expected "
                f"at least {min_rows} rows."
            )
    return arrays, mask, (int(mask.sum()) if mask is not None else n)


def _block_target(infos: Sequence[ReprInfo], memory: int | str | None) -> int:
    """Bytes of one row block: :data:`TARGET_BLOCK_BYTES`, less under a small ``memory``."""
    from reprstore.engine.dask_graph import scheduler_threads
    from reprstore.engine.pass_context import block_bytes_within
    from reprstore.stats.plan import parse_memory

    return block_bytes_within(parse_memory(memory), scheduler_threads(None))


def _run_dataset(
    store: Store,
    plan: GridPlan,
    dataset: str,
    specs: Sequence[Spec],
    *,
    where: str | None,
    allow_incomplete: bool,
    progress: Progress | None,
    own: Sequence[int] = (),
    keeper: _Keeper | None = None,
    masks: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[dict[tuple[int, int], dict[str, Any]], dict[int, dict[str, Any]], int]:
    """Every pair of ``dataset`` (and the partials of ``own``): columns by plan pair."""
    from reprstore.engine.arrays import min_rows_for

    pairs = [
        (i, j)
        for i, j in plan.pairs
        if plan.reprs[i].dataset == dataset and plan.reprs[j].dataset == dataset
    ]
    idx = sorted({i for p in pairs for i in p} | set(own))
    need = min_rows_for(specs)
    arrays, mask, n = dataset_arrays(store, plan, idx, dataset, where, allow_incomplete, need,
                                      options.get("memory"), masks)  # fmt: skip
    pos = {i: k for k, i in enumerate(idx)}
    if not options.get("dry_run"):
        from reprstore.engine.checkpoints import PassCheckpoints

        saver = keeper.checkpoints(idx, dataset) if keeper is not None else PassCheckpoints(
            None, [None] * len(idx), "")  # fmt: skip
        options = {**options, "checkpoints": saver}
    if options.get("uncertainty") is not None:  # resampling groups are keyed by sample id
        options = {**options, "ids": store.dataset(dataset).ids()[: arrays[0].shape[0]]}
    named = sorted({s.opts["fold_by"] for s in specs if s.opts.get("fold_by")})
    if named:  # metadata columns the measures name (linreg:fold_by)
        table = store.dataset(dataset).table()
        options = {**options, "columns": {c: np.asarray(table[c]) for c in named if c in table}}
    out = measure_arrays(
        arrays,
        [(pos[i], pos[j]) for i, j in pairs],
        specs,
        names=[plan.reprs[i].key.label() for i in idx],
        mask=mask,
        own=[pos[i] for i in own],
        progress=progress,
        **options,
    )
    found = {(i, j): out.pairs[(pos[i], pos[j])] for i, j in pairs}
    return found, {i: out.partials[pos[i]] for i in own}, n


def _run_grid(
    st: Store,
    plan: GridPlan,
    specs: Sequence[Spec],
    *,
    plans: list[str],
    rows_of: dict[str, int],
    dry_run: bool,
    **settings: Any,
) -> dict[tuple[int, int], dict[str, Any]]:
    """Every pair of ``plan``, dataset by dataset (one pass each), then the feature-paired
    pairs that span two datasets from their sides' partials. Plan lines of a dry run go to
    ``plans``; each dataset's row count to ``rows_of``."""
    from reprstore.engine.planner import DryRun

    across = [(i, j) for i, j in plan.pairs if plan.reprs[i].dataset != plan.reprs[j].dataset]
    found: dict[tuple[int, int], dict[str, Any]] = {}
    partials: dict[int, dict[str, Any]] = {}
    for dataset in _datasets(plan):
        own = sorted({k for p in across for k in p if plan.reprs[k].dataset == dataset})
        try:
            got, part, rows_of[dataset] = _run_dataset(
                st, plan, dataset, specs, own=own, dry_run=dry_run, **settings
            )
        except DryRun as planned:
            plans.append(planned.plan.line())
            continue
        found.update(got)
        partials.update(part)
    if not dry_run:
        for i, j in across:
            names = (plan.reprs[i].key.label(), plan.reprs[j].key.label())
            found[(i, j)] = finalize_features(specs, partials[i], partials[j], names, 0)
    return found


_KEY_COLUMNS = {*(f"{s}_{k}" for s in "ab" for k in KEY_FIELDS), "dataset", "b_dataset",
                "n_samples", "b_n_samples"}  # fmt: skip


@dataclass
class _Keeper:
    """The result cache as one comparison uses it: which (pair, measure) entries are there,
    which to compute, keeping the new ones, and the checkpoints of its passes."""

    cache: Any
    plan: GridPlan
    specs: list[Spec]
    unc: Any
    prints: list[str | None]
    rows: dict[str, str]
    keys: dict[tuple[int, int], list[str | None]] = field(default_factory=dict)
    hits: dict[tuple[int, int], dict[int, dict[str, Any]]] = field(default_factory=dict)
    passes: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, st: Store, plan: GridPlan, specs: Sequence[Spec], masks: dict[str, Any],
              unc: Any, report: Any, refresh: bool,
              settings: dict[str, Any]) -> _Keeper:  # fmt: skip
        from reprstore.store.result_cache import ResultCache, fingerprint, rows_fingerprint

        cache = ResultCache.of(st, refresh=refresh, note=report)
        rows = {d: rows_fingerprint(st.dataset(d).ids(), mask) for d, mask in masks.items()}
        keeper = cls(cache, plan, list(specs), unc, [fingerprint(i) for i in plan.reprs], rows)
        settings = {**settings, "uncertainty": None if unc is None else [
            unc.ci, unc.bootstrap if unc.ci is not None else None, unc.permutations, unc.seed,
            unc.permute]}  # fmt: skip
        for i, j in plan.pairs:
            fa, fb = keeper.prints[i], keeper.prints[j]
            a, b = plan.reprs[i].dataset, plan.reprs[j].dataset
            rows_key = rows[a] if a == b else f"{rows[a]}/{rows[b]}"
            keys: list[str | None] = [
                None if fa is None or fb is None
                else cache.key(fa, fb, rows_key, (s.key, s.suffix, s.items), settings)
                for s in specs
            ]  # fmt: skip
            keeper.keys[(i, j)] = keys
            for k, key in enumerate(keys):
                got = cache.get(fa, fb, key) if key is not None else None  # type: ignore[arg-type]
                if got is not None:
                    keeper.hits.setdefault((i, j), {})[k] = got
        cache.stats.pairs = len(plan.pairs)
        cache.stats.reused = sum(len(keeper.hits.get(p, {})) == len(specs) for p in plan.pairs)
        cache.stats.entries = len(plan.pairs) * len(specs)
        cache.stats.entries_reused = sum(len(h) for h in keeper.hits.values())
        if cache.stats.entries_reused or refresh:
            cache.report()
        bare = sum(p is None for p in keeper.prints)
        if bare and report is not None:
            report(f"note: {bare} representation(s) have no recorded chunk checksums (an older "
                   "writer); their results are not cached")  # fmt: skip
        return keeper

    def todo(self) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(measures, pairs) still to compute, grouped by the measures a pair lacks."""
        groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for pair in self.plan.pairs:
            missing = tuple(k for k in range(len(self.specs)) if k not in self.hits.get(pair, {}))
            if missing:
                groups.setdefault(missing, []).append(pair)
        return [(list(k), pairs) for k, pairs in groups.items()]

    def checkpoints(self, idx: Sequence[int], dataset: str) -> Any:
        """Where the passes over ``plan.reprs[idx]`` (of ``dataset``) save their sums."""
        from reprstore.engine.checkpoints import PassCheckpoints

        saver = PassCheckpoints(self.cache.files, [self.prints[i] for i in idx],
                                self.rows[dataset], self.cache.note)  # fmt: skip
        self.passes.append(saver)
        return saver

    def keep(self, got: dict[tuple[int, int], dict[str, Any]], specs: Sequence[Spec],
             rows_of: dict[str, int]) -> None:  # fmt: skip
        """Put the newly computed values of ``specs`` into the cache, entry by entry."""
        from reprstore.uncertainty import result_columns as uncertainty_columns

        for s in specs:
            k = next(n for n, t in enumerate(self.specs) if t is s)
            wanted = [c for c in (*result_columns([s]), *uncertainty_columns(self.unc, [s]))
                      if c not in _KEY_COLUMNS]  # fmt: skip
            for (i, j), row in got.items():
                key = self.keys[(i, j)][k]
                if key is None:
                    continue
                cols = {c: grid_cell(row[c]) for c in wanted if c in row}
                cols["n_samples"] = rows_of[self.plan.reprs[i].dataset]
                if self.plan.reprs[i].dataset != self.plan.reprs[j].dataset:
                    cols["b_n_samples"] = rows_of[self.plan.reprs[j].dataset]
                fa, fb = self.prints[i], self.prints[j]
                self.cache.put(fa, fb, key, s.key + s.suffix, cols)

    def finish(self, found: dict[tuple[int, int], dict[str, Any]], rows_of: dict[str, int]) -> None:
        """Fill ``found`` with the cached values, drop this run's checkpoints, say what the
        cache could not keep."""
        for (i, j), by_spec in self.hits.items():
            row = found.setdefault((i, j), {})
            for cols in by_spec.values():
                row.update(cols)
                rows_of.setdefault(self.plan.reprs[i].dataset, int(cols["n_samples"]))
                if "b_n_samples" in cols:
                    rows_of.setdefault(self.plan.reprs[j].dataset, int(cols["b_n_samples"]))
        for saver in self.passes:
            saver.remove()
        self.cache.report_writes()


def compare(
    store: Store | str | os.PathLike[str],
    a: str | Selector | None,
    b: str | Selector | None,
    *,
    measures: str | Sequence[str] = "cka",
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: int | None = None,
    where: str | None = None,
    match: str | Sequence[str] = (),
    differ: str | Sequence[str] = (),
    pairs: Sequence[tuple[ReprKey, ReprKey]] | None = None,
    pair_where: str | None = None,
    unordered: bool = False,
    allow_incomplete: bool = False,
    device: str = "cpu",
    precision: str = "float64",
    memory: int | str | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    split_every: int | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    ci: float | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    seed: int | None = None,
    report: Any = None,
    route: str = "auto",
    dry_run: bool = False,
    cache: bool = True,
    refresh: bool = False,
) -> pd.DataFrame:
    """Every requested measure of every selected A with every selected B, in one pass.

    Parameters
    ----------
    store : Store or path/URL
    a, b : selectors (``model=m,layer=encoder.*``) of the two sides
    measures : ``"cka,cca,svcca:keep=0.99,pca:k=20"`` (see :func:`reprstore.measures`)
    estimator, kernel, sigma, batch_size, shuffle
        Options of ``cka`` (``cka:estimator=…`` in ``measures`` overrides them).
    device, precision, memory
        As for :func:`reprstore.cka`.
    where : str, optional
        condition over the dataset's ``id`` and metadata columns (:mod:`reprstore.expr`,
        never evaluated as code); the same rows are
        used on both sides.
    match, differ : keys that must agree / differ within a pair: ``"layer,seed"`` or a list
    pairs : explicit (A key, B key) pairs to keep (see :func:`read_pairs_file`)
    pair_where : condition over both sides' keys and run attributes (see :func:`plan_grid`)
    unordered : keep one of each mirror pair (X, Y)/(Y, X) and every self-pair
        (see :func:`drop_mirrors`)
    allow_incomplete : compare incomplete representations on their rows written so far
    workers : compute with this many threads of this process (:data:`LOCAL_WORKERS`)
    scheduler : address of a running dask scheduler (or a Client / dask scheduler)
    split_every : fan-in of the reduction tree
    progress : callable(done, total) in row blocks
    timeout : seconds a cluster may go without an answering scheduler or any worker
        before the comparison fails (default 60)
    ci, bootstrap, permutations, seed
        Confidence interval (level, replicates) and permutation test of each measure (see
        :mod:`reprstore.uncertainty`); ``seed`` defaults to 0 and is recorded.
    report : callable(str), optional
        Receives the plan line of each dataset's comparison (routes, passes, bytes to
        read, FLOPs and time, memory; :mod:`reprstore.engine.planner`) and the uncertainty plan,
        before any chunk is read.
    route : {"auto", "features", "samples"}
        How exact CKA is computed: p × q feature statistics or tiles of the n × n kernels
        (any width); ``auto`` takes the cheaper per pair.
    dry_run : bool
        Plan only: read no chunk and return an empty table whose ``attrs["plans"]`` holds
        the plan lines.
    cache, refresh : bool
        Keep every pair's values in the store's result cache and reuse them when the same
        pair is asked for again with the same data, rows and options
        (:mod:`reprstore.store.result_cache`); the streamed passes save checkpoints there, so
        a killed run resumes (:mod:`reprstore.engine.checkpoints`). ``refresh`` recomputes and
        overwrites; ``cache=False`` neither reads nor writes the cache.

    Returns
    -------
    pandas.DataFrame
        One row per pair: the keys, ``dataset``, ``n_samples``, then one column per
        scalar of each measure (``cka`` keeps :data:`RESULT_COLUMNS` and
        :data:`EXTRA_COLUMNS`), array-valued outputs as list columns; then ``cka_lo``,
        ``cka_hi``, ``cka_se`` … / ``cka_p`` … where asked.
    """
    request = CompareOptions.make(
        a, b, measures=measures, estimator=estimator, kernel=kernel, sigma=sigma,
        batch_size=batch_size, shuffle=shuffle, where=where, match=match, differ=differ,
        pairs=pairs, pair_where=pair_where, unordered=unordered,
        allow_incomplete=allow_incomplete, device=device, precision=precision, memory=memory,
        workers=workers, scheduler=scheduler, split_every=split_every, timeout=timeout, ci=ci,
        bootstrap=bootstrap, permutations=permutations, seed=seed, route=route,
        dry_run=dry_run, cache=cache, refresh=refresh, report=report,
    )  # fmt: skip
    return run_comparison(store, request, progress=progress, report=report)


def run_comparison(
    store: Store | str | os.PathLike[str],
    request: CompareOptions,
    *,
    progress: Progress | None = None,
    report: Any = None,
) -> pd.DataFrame:
    """:func:`compare` of a request already checked (:class:`CompareOptions`): what the
    command line calls after it has built the request from its options."""
    from reprstore.uncertainty import result_columns as uncertainty_columns

    sel, run, unc = request.selection, request.compute, request.uncertainty
    specs = list(request.specs)
    row_paired = [s.name for s in specs if s.measure.pairing == "rows"]
    st = open_store(store)
    plan = plan_grid(
        st, sel.a, sel.b, match=sel.match, differ=sel.differ,
        pairs=None if sel.pairs is None else list(sel.pairs), pair_where=sel.pair_where,
        allow_incomplete=sel.allow_incomplete, row_paired=bool(row_paired),
        unordered=sel.unordered,
    )  # fmt: skip
    settings = run.engine_settings()
    across = [(i, j) for i, j in plan.pairs if plan.reprs[i].dataset != plan.reprs[j].dataset]
    if unc is not None and across:
        raise InputError(
            "--ci and --permutations resample rows of one dataset; some pairs span datasets "
            "(different samples on each side). Compare within one dataset (--match dataset)."
        )
    where = sel.where
    masks = {d: row_mask(st, d, where) for d in sorted({i.dataset for i in plan.reprs})}
    keeper = _Keeper.start(st, plan, specs, masks, unc, report, run.refresh, dict(
        route=run.route, device=run.device_kind, precision=run.precision,
    )) if run.cache else None  # fmt: skip
    found: dict[tuple[int, int], dict[str, Any]] = {}
    rows_of: dict[str, int] = {}
    plans: list[str] = []
    groups = keeper.todo() if keeper is not None else [(list(range(len(specs))), plan.pairs)]
    if run.workers is not None and groups and report is not None:
        report("workers: " + LOCAL_WORKERS.format(n=run.workers))
    # --workers N is N local threads (no cluster): a dry run plans with them too, so its
    # plan line is the real run's; nothing to compute (all cached): no scheduler at all
    with dask_scheduler(run.workers if groups else None, run.scheduler if groups else None,
                        run.timeout) as sched:  # fmt: skip
        for chosen, todo in groups:
            sub = GridPlan(plan.reprs, todo, plan.attributes)
            got = _run_grid(
                st, sub, [specs[k] for k in chosen], where=where,
                allow_incomplete=sel.allow_incomplete, progress=progress, scheduler=sched,
                uncertainty=unc, report=report, dry_run=run.dry_run, plans=plans,
                rows_of=rows_of, keeper=keeper, masks=masks, **settings,
            )  # fmt: skip
            for pair, row in got.items():
                found.setdefault(pair, {}).update(row)
            if keeper is not None and not run.dry_run:
                keeper.keep(got, [specs[k] for k in chosen], rows_of)
    if run.dry_run:
        import pandas as pd

        empty = pd.DataFrame(columns=result_columns(specs, bool(across)))
        empty.attrs["plans"] = plans
        return empty
    if keeper is not None:
        keeper.finish(found, rows_of)
    df = _table(plan, specs, found, rows_of, bool(across), uncertainty_columns(unc, specs))
    return annotate(
        df, st, plan, a=sel.a, b=sel.b, match=sel.match, differ=sel.differ,
        pairs=sel.pairs, pair_where=sel.pair_where, where=where, masks=masks,
        options={
            **run.provenance(), **request.cka, "measures": [s.key for s in specs],
            "unordered": sel.unordered,
            "cache": "off" if keeper is None else keeper.cache.stats.summary(run.refresh),
            **({} if unc is None else {
                "ci": unc.ci, "bootstrap": unc.bootstrap if unc.ci is not None else None,
                "permutations": unc.permutations, "seed": unc.seed,
            }),
        },
    )  # fmt: skip


def annotate(
    df: pd.DataFrame,
    store: Store,
    plan: GridPlan,
    *,
    a: Any,
    b: Any,
    match: Sequence[str],
    differ: Sequence[str],
    pairs: Sequence[tuple[ReprKey, ReprKey]] | None,
    pair_where: str | None,
    where: str | None,
    options: dict[str, Any],
    masks: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """``df`` (one row per ``plan.pairs``) with its run attribute columns and provenance.

    Adds ``a_<attr>``/``b_<attr>`` (:func:`attribute_columns`) after the existing columns
    and sets ``df.attrs["reprstore"]``, the record every result file carries (see
    :mod:`reprstore.resultfiles.provenance`).
    """
    from reprstore.resultfiles.provenance import make_provenance

    for column, values in attribute_columns(plan).items():
        if column not in df:
            df[column] = values
    df.attrs["reprstore"] = make_provenance(
        store=store.url, a=str(a) if a is not None else None,
        b=str(b) if b is not None else None, match=list(match), differ=list(differ),
        pair_where=pair_where, pairs_listed=None if pairs is None else len(pairs),
        where=where, rows=rows_used(store, plan, where, masks), n_pairs=len(plan.pairs),
        options={k: v for k, v in options.items() if k != "scheduler"},
    )  # fmt: skip
    return df


def _datasets(plan: GridPlan) -> list[str]:
    return sorted({plan.reprs[k].dataset for p in plan.pairs for k in p})


def result_columns(specs: Sequence[Spec], across: bool = False) -> list[str]:
    """The columns of a result table for these measures (see :func:`compare`)."""
    keys = [*(f"a_{k}" for k in KEY_FIELDS), *(f"b_{k}" for k in KEY_FIELDS), "dataset"]
    if across:
        keys += ["b_dataset", "b_n_samples"]
    main: list[str] = []
    info: list[str] = []
    for s in specs:
        scalars, arrays = s.measure.columns(s.opts)
        main += [s.column(c) for c in (*scalars, *arrays)]
        info += [s.column(c) for c in s.measure.info]
    cka = next((s for s in specs if s.name == "cka" and not s.suffix), None)
    if cka is None:
        return [*keys, "n_samples", *main, *info]
    head = [*keys, "estimator", "kernel", "n_samples", "cka"]
    rest = [c for c in main if c != "cka"]
    extra = EXTRA_COLUMNS + [c for c in info if c not in (*EXTRA_COLUMNS, "estimator", "kernel")]
    return head + rest + extra


def grid_cell(value: Any) -> Any:
    """Result values as plain Python: arrays become lists of floats."""
    if isinstance(value, np.ndarray):
        return [float(v) for v in value.ravel()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _table(
    plan: GridPlan,
    specs: Sequence[Spec],
    found: dict[tuple[int, int], dict[str, Any]],
    rows_of: dict[str, int],
    across: bool,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    import pandas as pd

    columns = [*result_columns(specs, across), *extra]
    rows = []
    for i, j in plan.pairs:
        a, b = plan.reprs[i], plan.reprs[j]
        row: dict[str, Any] = {f"a_{k}": getattr(a.key, k) for k in KEY_FIELDS}
        row.update({f"b_{k}": getattr(b.key, k) for k in KEY_FIELDS})
        row.update(dataset=a.dataset, n_samples=rows_of[a.dataset])
        if across:
            row.update(b_dataset=b.dataset, b_n_samples=rows_of[b.dataset])
        row.update({k: grid_cell(v) for k, v in found[(i, j)].items() if not k.startswith("_")})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
