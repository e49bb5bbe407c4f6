"""The engine: compare in-memory or out-of-core arrays by any registered measures.

:func:`measure_arrays` computes every measure asked for (``"cka,cca,procrustes"``, see
:mod:`reprstore.metrics.registry`) for every pair of arrays (numpy, dask, zarr, torch or
any array-like with ``shape``, ``dtype`` and row slicing) from one pass over the data
(:mod:`reprstore.passes`); :func:`describe_arrays` the single-representation measures.
:func:`cka` and :func:`compare_arrays` are the CKA-only entry points, unchanged for their
users: they run the ``cka`` measure and hand back
:class:`~reprstore.metrics.cka.CKAResult` objects. The store-level grids are
:func:`reprstore.comparison.compare` and :func:`reprstore.description.describe`.

Passes (one memory model, ``memory`` bytes):

* linear statistics of every (representation, row view) stream and every pair of streams
  (n, Σx, XᵀX, XᵀY, row-norm sums): one pass reads every row block once; a grid whose
  statistics exceed ``memory`` is split over several passes;
* minibatch CKA: chains of consecutive blocks (or groups of random batches that fit);
  with the RBF kernel, one earlier pass for σ;
* exact RBF CKA: the n × n kernels in memory, refused beyond ``memory``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np

from reprstore import passes
from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Spec
from reprstore.metrics.cka import CKAResult, check_options
from reprstore.metrics.registry import parse_measures, parse_spec
from reprstore.passes import PassContext, Progress, check_sigma
from reprstore.planner import DryRun, make_plan
from reprstore.stats import dask_graph
from reprstore.stats.hsic import MIN_ROWS_UNBIASED
from reprstore.stats.linear import NUMPY, Backend, NumpyBackend
from reprstore.stats.plan import live_blocks, parse_memory

DEFAULT_BATCH_SIZE = 256
#: Target bytes of one row block (all involved arrays, float64) for in-memory inputs.
TARGET_BLOCK_BYTES = 32 * 1024**2

Pair = tuple[int, int]
__all__ = ["PassContext", "Progress", "cka", "compare_arrays", "measure_arrays", "parse_memory"]


# ---------------------------------------------------------------------------- options


PRECISIONS = ("float64", "float32")


class TorchBackend:
    """Per-block products with torch on ``device`` (e.g. ``cuda``); sums stay float64.

    torch is imported only when a product runs, so the object pickles to dask workers.
    """

    def __init__(self, device: str = "cuda", dtype: str = "float64") -> None:
        self.device = device
        self.dtype = dtype

    def prepare(self, x: np.ndarray) -> Any:
        import torch

        dtype = getattr(torch, self.dtype)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, dtype)

    def cross(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray((a.T @ b).cpu().numpy(), dtype=np.float64)

    def outer(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray((a @ b.T).cpu().numpy(), dtype=np.float64)

    def __repr__(self) -> str:
        return f"TorchBackend({self.device!r}, {self.dtype!r})"


def resolve_backend(device: str | Backend, precision: str = "float64") -> Backend:
    """The backend for ``device``: ``cpu`` (numpy), ``cuda``/``cuda:N`` (torch) or a backend.

    ``precision`` (``float64`` or ``float32``) is that of the per-block products.
    """
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}. Expected float64 or float32.")
    if not isinstance(device, str):
        return device
    if device == "cpu":
        return NUMPY if precision == "float64" else NumpyBackend(precision)
    if re.fullmatch(r"cuda(:\d+)?", device):
        try:
            import torch
        except ImportError as err:
            raise InputError("--device cuda needs PyTorch, which is not installed.") from err
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {device} was asked for, but no CUDA GPU is available "
                "(torch.cuda.is_available() is False). Use --device cpu."
            )
        return TorchBackend(device, precision)
    raise InputError(f"Unknown device {device!r}. Expected 'cpu' or 'cuda[:N]'.")


# ------------------------------------------------------------------------ array inputs


def _from_torch(x: Any) -> Any:
    """A numpy view/copy of a torch tensor, without importing torch."""
    if type(x).__module__.split(".")[0] != "torch":
        return x
    x = x.detach()
    if str(x.dtype) == "torch.bfloat16":
        x = x.float()
    return x.cpu().numpy()


def _stored_rows(x: Any) -> int | None:
    """Row count of one stored chunk of an array-like (zarr, h5py), if it says."""
    chunks = getattr(x, "chunks", None)
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], int):
        return int(chunks[0])
    return None


def as_dask(x: Any, block_rows: int | None = None) -> da.Array:
    """A 2-D dask array over ``x`` without reading it (torch tensors are converted).

    Parameters
    ----------
    x : array-like, shape (n, p)
    block_rows : int, optional
        Rows per block for inputs that are not dask arrays already.
    """
    if not isinstance(x, da.Array):
        x = _from_torch(x)
        if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
            x = np.asarray(x)
    if len(x.shape) != 2:
        raise InputError(
            f"Expected a 2-D array (n_samples, n_features). Got shape {tuple(x.shape)} instead."
        )
    if isinstance(x, da.Array):
        return x
    rows = block_rows or _default_block_rows(x)
    stored = _stored_rows(x)
    if stored and rows % stored:  # a block straddling stored chunks would decode them twice
        rows = max(stored, rows - rows % stored)
    if isinstance(x, np.ndarray):
        x = _Rows(x)  # dask would copy an ndarray into its graph chunk by chunk, at once
    return da.from_array(x, chunks=(rows, -1), name=_Rows.name(x), meta=np.empty((0, 0), x.dtype))


class _Rows:
    """An in-memory array seen by dask as an array-like: blocks are sliced when read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.data[key]

    @staticmethod
    def name(x: Any) -> str | None:
        if isinstance(x, _Rows):
            return f"reprstore-rows-{id(x.data):x}-{x.shape}-{x.dtype}"
        return None


def _default_block_rows(x: Any) -> int:
    stored = _stored_rows(x) or 1
    itemsize = 8 * max(int(x.shape[1]), 1)
    rows = max(TARGET_BLOCK_BYTES // itemsize, 1)
    return max(stored * (rows // stored), stored)


def align_rows(arrays: Sequence[da.Array]) -> list[da.Array]:
    """Give every array the row chunks of the first (rechunking only those that differ)."""
    n = arrays[0].shape[0]
    for a in arrays:
        if a.shape[0] != n:
            raise ComparisonError(
                f"Row counts differ: expected {n} rows on both sides. Got {a.shape[0]} instead."
            )
    chunks = arrays[0].chunks[0]
    return [a if a.chunks[0] == chunks else a.rechunk({0: chunks}) for a in arrays]


# ------------------------------------------------------------------------------ engine


def context(
    arrays: Sequence[Any],
    pairs: Sequence[Pair],
    *,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    device: str | Backend = "cpu",
    memory: int | str | None = None,
    scheduler: Any = None,
    split_every: int = dask_graph.DEFAULT_SPLIT_EVERY,
    progress: Progress | None = None,
    precision: str = "float64",
    block_rows: int | None = None,
    min_rows: int = 1,
    what: str = "the measures",
) -> PassContext:
    """Aligned dask arrays, rows and settings shared by the passes of one comparison.

    Blocks of inputs that are not dask arrays are sized so that the scheduler's threads
    each holding a few float64 blocks stay within ``memory`` (:func:`block_rows_within`).
    """
    backend = resolve_backend(device, precision)
    budget = parse_memory(memory)
    labels = list(names) if names is not None else [str(i) for i in range(len(arrays))]
    threads = dask_graph.scheduler_threads(scheduler)
    width = sum(int(getattr(a, "shape", (0, 0))[1]) for a in arrays if len(a.shape) == 2)
    fit = block_rows_within(budget, width, threads)
    # dask inputs keep their blocks (smaller ones would read a stored chunk more than once)
    dasks = align_rows([as_dask(a, min(block_rows or fit, fit)) for a in arrays])
    n_total = dasks[0].shape[0]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n_total,):
            raise InputError(
                f"The row mask must have shape ({n_total},). Got {mask.shape} instead."
            )
    n = int(mask.sum()) if mask is not None else n_total
    if n < min_rows:
        raise ComparisonError(
            f"Too few samples for {what}: expected at least {min_rows} rows. Got {n} instead."
        )
    unique = list(dict.fromkeys((min(i, j), max(i, j)) for i, j in pairs))
    return PassContext(
        arrays=dasks, pairs=unique, blocks=live_blocks(dasks[0].chunks[0], mask), mask=mask,
        n=n, names=labels, backend=backend, memory=budget, scheduler=scheduler,
        split_every=split_every, progress=progress, threads=threads,
    )  # fmt: skip


#: Of ``memory``, the share that the row blocks in flight (raw, float64 and products'
#: temporaries, about four copies per thread) may take.
BLOCK_SHARE = 4


def block_rows_within(memory: int, width: int, threads: int) -> int:
    """Rows per block such that ``threads`` blocks in flight take at most 1/``BLOCK_SHARE``
    of ``memory`` (and never more than ``TARGET_BLOCK_BYTES`` a block)."""
    row_bytes = 8 * max(width, 1)
    per_block = min(TARGET_BLOCK_BYTES, memory // (BLOCK_SHARE * 4 * max(threads, 1)))
    return max(1, per_block // row_bytes)


def measure_arrays(
    arrays: Sequence[Any],
    pairs: Sequence[Pair],
    measures: str | Sequence[str] | Sequence[Spec] = "cka",
    *,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    own: Sequence[int] = (),
    uncertainty: Any = None,
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
        Receives the plan line (:mod:`reprstore.planner`) before any chunk is read.
    dry_run : bool
        Plan only: raise :class:`reprstore.planner.DryRun` (holding the plan) after it.
    columns : dict of name → array-like (n,), optional
        Per-row metadata the measures name (``linreg:fold_by=COL``), for every stored row
        (the mask selects them as it selects the rows).
    checkpoints : reprstore.checkpoints.PassCheckpoints, optional
        Where the linear passes save their sums as they go, so that a killed run resumes.
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
    )
    if report is not None:
        report(plan.line())
    if dry_run:
        raise DryRun(plan)
    if uncertainty is not None:
        from reprstore import uncertainty as unc

        return unc.measure(ctx, pairs, specs, uncertainty, ids=ids, own=own)
    return passes.run(ctx, pairs, specs, own, routes=plan.routes)


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
            got = out.partials[i][s.key]  # the values (_Single.partial)
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
    uncertainty: Any = None,
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


# -------------------------------------------------------------------------- public API


def cka(
    x: Any,
    y: Any,
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: int | None = None,
    device: str | Backend = "cpu",
    *,
    memory: int | str | None = None,
    scheduler: Any = None,
    split_every: int = dask_graph.DEFAULT_SPLIT_EVERY,
    precision: str = "float64",
    ci: float | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    seed: int | None = None,
    route: str = "auto",
) -> CKAResult:
    """Centred kernel alignment of two representations of the same samples.

    Parameters
    ----------
    x : array-like, shape (n_samples, p)
        numpy, dask, zarr or torch array (or any array-like with ``shape``, ``dtype`` and
        row slicing). Out-of-core inputs are streamed; float16 and friends are accumulated
        in float64.
    y : array-like, shape (n_samples, q)
    estimator : {"debiased", "biased", "minibatch"}
        ``debiased`` (default): Song et al.'s unbiased HSIC; ``biased``: Kornblith et al.
        (2019); ``minibatch``: Nguyen et al. (2021) over batches of ``batch_size`` rows.
    kernel : {"linear", "rbf"}
    sigma : float
        RBF width as a multiple of the median distance: σ² = sigma² × median ‖xᵢ − xⱼ‖².
    batch_size : int
        Rows per minibatch (``minibatch`` only).
    shuffle : int, optional
        Seed of random batch membership; ``None`` = consecutive rows.
    device : {"cpu", "cuda", "cuda:N"}
        Where the per-block products run (float64 either way).
    memory : int or str, optional
        Bytes (or ``"2GB"``) the statistics of one pass may take; default 2 GiB.
    scheduler : dask scheduler, optional
    split_every : int
        Fan-in of the reduction tree.
    precision : {"float64", "float32"}
        Precision of the per-block products (accumulation is always float64). float32 is
        faster and, thanks to the shift, stayed within ~1e-8 of float64 in our tests.
    ci, bootstrap, permutations, seed
        A confidence interval at level ``ci`` from ``bootstrap`` replicates (default 200)
        and/or a permutation test with ``permutations`` permutations; ``seed`` (default 0)
        keys both. See :mod:`reprstore.uncertainty` and docs/uncertainty.md.
    route : {"auto", "features", "samples"}
        How an exact value is computed: p × q feature statistics, or tiles of the n × n
        kernels (any width); ``auto`` takes the cheaper. The rbf kernel always takes
        ``samples``.

    Returns
    -------
    CKAResult
        ``.cka`` is the value; the other fields say how it was computed (with ``ci`` or
        ``permutations``, a :class:`~reprstore.uncertainty.UncertainResult`: ``cka_lo``,
        ``cka_hi``, ``cka_se``, ``cka_p`` …).

    Raises
    ------
    ComparisonError
        Too few rows, a constant representation, NaN/Inf in the input, different row counts.
    InputError
        Unknown estimator, kernel or device; bad sigma or batch size.
    """
    same = x is y  # one representation with itself: one side, exactly 1 (SPEC: exactness)
    unc = _uncertainty_options(ci, bootstrap, permutations, seed)
    # (y, x) computed as (x, y) and swapped: the same bits both ways (SPEC: exactness)
    flip = not same and unc is None and content_key(y) < content_key(x)
    arrays = [x] if same else [y, x] if flip else [x, y]
    (result,) = compare_arrays(
        arrays,
        [(0, 0)] if same else [(0, 1)],
        names=["A"] if same else ["B", "A"] if flip else ["A", "B"],
        estimator=estimator,
        kernel=kernel,
        sigma=sigma,
        batch_size=batch_size,
        shuffle=shuffle,
        device=device,
        memory=memory,
        scheduler=scheduler,
        split_every=split_every,
        precision=precision,
        uncertainty=unc,
        route=route,
    )
    if flip:
        from reprstore.metrics.cka import swapped

        return swapped(result)
    return result


def content_key(x: Any) -> tuple[Any, ...]:
    """An order of inputs that does not depend on argument order: shape, dtype and a hash
    of the first and last 64 rows (a dask array: its content-derived name)."""
    import hashlib

    if isinstance(x, da.Array):
        return (tuple(x.shape), str(x.dtype), x.name)
    x = _from_torch(x)
    shape = tuple(getattr(x, "shape", np.shape(x)))
    h = hashlib.blake2b(digest_size=16)
    for part in (x[:64], x[-64:]):
        h.update(np.ascontiguousarray(np.asarray(part)).tobytes())
    return (shape, str(getattr(x, "dtype", "")), h.hexdigest())


def _uncertainty_options(
    ci: float | None, bootstrap: int | None, permutations: int | None, seed: int | None
) -> Any:
    if ci is None and bootstrap is None and permutations is None:
        return None
    from reprstore.uncertainty import options

    return options(ci=ci, bootstrap=bootstrap, permutations=permutations, seed=seed)
