"""The context every pass shares: the inputs as aligned dask arrays, the selected rows,
the backend of the per-block products (numpy or torch), the memory budget and the
scheduler. :func:`context` builds it from numpy, dask, zarr or torch arrays without reading
them."""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.engine import dask_graph
from reprstore.errors import ComparisonError, InputError
from reprstore.stats.linear import NUMPY, Backend, NumpyBackend
from reprstore.stats.plan import live_blocks, parse_memory

if TYPE_CHECKING:
    import dask.array as da

#: Target bytes of one row block (all involved arrays, float64) for in-memory inputs.
TARGET_BLOCK_BYTES = 32 * 1024**2

Progress = Callable[[int, int], None]
Pair = tuple[int, int]


@dataclass(frozen=True)
class PassContext:
    """What every pass shares: the aligned arrays, the unique pairs, the rows."""

    arrays: list[da.Array]
    pairs: list[Pair]  # unique, i <= j
    blocks: int  # row blocks holding a selected row
    mask: np.ndarray | None
    n: int  # selected rows
    names: list[str]
    backend: Backend
    memory: int
    scheduler: Any
    split_every: int
    progress: Progress | None
    threads: int = 1
    #: Per-row metadata columns the measures name (``linreg:fold_by``), of the selected rows.
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    #: Where the passes save their state as they go (:mod:`reprstore.engine.checkpoints`).
    checkpoints: Any = None
    #: Per array, the array-like it wraps (numpy, zarr …; None for a dask input): what the
    #: direct pass reads whole (:mod:`reprstore.engine.direct`).
    sources: list[Any] | None = None


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


def float64_products(backend: Backend) -> Backend:
    """``backend``'s device with float64 products: for steps whose rank decisions need
    them (the sample route's factors, where float32 rounding would read as more rank)."""
    if isinstance(backend, NumpyBackend):
        return NUMPY
    if isinstance(backend, TorchBackend):
        return TorchBackend(backend.device, "float64")
    return backend


def kernel_products(backend: Backend, kernel: str) -> Backend:
    """The backend a ``kernel``'s products run on: ``backend`` for the linear kernel, its
    float64 products for rbf, whose distances ‖x‖² + ‖y‖² − 2g cancel for rows close
    together or far from the shift (float32 products there lost 0.3 of the rbf CKA of tight
    clusters on the sample route, and drift minibatch values at 1e-7)."""
    return backend if kernel == "linear" else float64_products(backend)


def converted(backend: Backend) -> bool:
    """Whether ``backend`` multiplies converted copies of the blocks (float32, or torch)
    rather than the float64 blocks themselves: the memory model counts those copies."""
    return backend is not NUMPY


def products_note(backend: Backend) -> str | None:
    """Where the block products run, as the plan line says it (``None``: numpy float64,
    the default, which the line leaves out)."""
    if isinstance(backend, NumpyBackend):
        return None if backend.dtype == np.float64 else f"products in {backend.dtype.name}"
    if isinstance(backend, TorchBackend):
        return f"products on torch {backend.device} ({backend.dtype})"
    return f"products by {backend!r}"


# ------------------------------------------------------------------------ array inputs


def from_torch(x: Any) -> Any:
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


def array_like(x: Any) -> Any:
    """``x`` as an array-like with ``shape`` and row slicing (torch tensors and nested
    sequences converted to numpy), or ``x`` itself when it is a dask array."""
    if dask_graph.is_dask_array(x):
        return x
    x = from_torch(x)
    if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        x = np.asarray(x)
    return x


def as_dask(x: Any, block_rows: int | None = None) -> da.Array:
    """A 2-D dask array over ``x`` without reading it (torch tensors are converted).

    Parameters
    ----------
    x : array-like, shape (n, p)
    block_rows : int, optional
        Rows per block for inputs that are not dask arrays already.
    """
    x = array_like(x)
    if len(x.shape) != 2:
        raise InputError(
            f"Expected a 2-D array (n_samples, n_features). Got shape {tuple(x.shape)} instead."
        )
    if dask_graph.is_dask_array(x):
        return x
    rows = block_rows or _default_block_rows(x)
    stored = _stored_rows(x)
    if stored and rows % stored:  # a block straddling stored chunks would decode them twice
        rows = max(stored, rows - rows % stored)
    if isinstance(x, np.ndarray):
        x = _Rows(x)  # dask would copy an ndarray into its graph chunk by chunk, at once
    return dask_graph.dask_from_array(
        x, chunks=(rows, -1), name=_Rows.name(x), meta=np.empty((0, 0), x.dtype)
    )


class _Rows:
    """An in-memory array seen by dask as an array-like: blocks are sliced when read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        rows: np.ndarray = self.data[key]  # indexing by an untyped key is typed Any
        return rows

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
    return [a if a.chunks[0] == chunks else dask_graph.dask_rechunk(a, {0: chunks}) for a in arrays]


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
    inputs = [array_like(a) for a in arrays]
    # dask inputs keep their blocks (smaller ones would read a stored chunk more than once)
    dasks = align_rows([as_dask(a, min(block_rows or fit, fit)) for a in inputs])
    sources = [input_source(a) for a in inputs]
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
        split_every=split_every, progress=progress, threads=threads, sources=sources,
    )  # fmt: skip


#: Of ``memory``, the share that the row blocks in flight (raw, float64 and products'
#: temporaries, about four copies per thread) may take.
BLOCK_SHARE = 4


def block_bytes_within(memory: int, threads: int) -> int:
    """Bytes of one row block (all involved arrays, float64) such that ``threads`` blocks in
    flight, about four copies each, take at most 1/``BLOCK_SHARE`` of ``memory``; never
    more than ``TARGET_BLOCK_BYTES``. The one block-size rule of every pass."""
    return max(1, min(TARGET_BLOCK_BYTES, memory // (BLOCK_SHARE * 4 * max(threads, 1))))


def block_rows_within(memory: int, width: int, threads: int) -> int:
    """Rows per block of ``width`` float64 columns within :func:`block_bytes_within`."""
    return max(1, block_bytes_within(memory, threads) // (8 * max(width, 1)))


#: The sources of the dask arrays :func:`lazy_rows` made, by dask name, while they live:
#: a pass's block readers slice them directly (:class:`~reprstore.engine.dask_graph.BlockReader`).
_LAZY_SOURCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def lazy_rows(source: Any, rows: int, name: str) -> da.Array:
    """A dask array over ``source`` (an array-like that reads its rows on demand, such as
    a checked store reader) in blocks of ``rows`` rows, nothing read yet; ``name`` must
    change when the content does (dask caches by name)."""
    out = dask_graph.dask_from_array(source, chunks=(rows, -1), name=name, asarray=False)
    with contextlib.suppress(TypeError):  # a source without weak references: read by dask
        _LAZY_SOURCES[out.name] = source
    return out


def input_source(x: Any) -> Any:
    """What input ``x`` reads its rows from: itself (numpy, zarr, h5py …), the source of a
    dask array made by :func:`lazy_rows`, or ``None`` (another dask array: read by dask)."""
    if not dask_graph.is_dask_array(x):
        return x
    return _LAZY_SOURCES.get(x.name)


def content_key(x: Any) -> tuple[Any, ...]:
    """An order of inputs that does not depend on argument order: shape, dtype and a hash
    of the first and last 64 rows (a dask array: its content-derived name; a zarr array:
    where it is stored, so that no chunk is decoded for it)."""
    import hashlib

    if dask_graph.is_dask_array(x):
        return (tuple(x.shape), str(x.dtype), x.name)
    x = from_torch(x)
    shape = tuple(getattr(x, "shape", np.shape(x)))
    if type(x).__module__.split(".")[0] == "zarr" and getattr(x, "store_path", None) is not None:
        return (shape, str(x.dtype), str(x.store_path))
    h = hashlib.blake2b(digest_size=16)
    for part in (x[:64], x[-64:]):
        h.update(np.ascontiguousarray(np.asarray(part)).tobytes())
    return (shape, str(getattr(x, "dtype", "")), h.hexdigest())
