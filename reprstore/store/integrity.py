"""``reprstore verify``: every chunk present, decodable and matching its recorded CRC-32.

Reads one chunk at a time, so verifying a store needs no more memory than one chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from reprstore.errors import NotFoundError, ReprstoreError
from reprstore.keys import ReprKey
from reprstore.store.encoding import Encoding
from reprstore.store.handle import Store
from reprstore.store.zarr_internals import default_buffer_prototype, sync


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one representation (or dataset)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class VerifyReport:
    """What ``verify`` checked and found."""

    representations: int = 0
    chunks: int = 0
    bytes_read: int = 0
    cache_entries: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _stored_size(arr: zarr.Array[Any], index: int) -> int | None:
    """Bytes of chunk ``index`` as stored, or None if its key is missing."""
    key = arr.metadata.encode_chunk_key((index, 0))
    path = f"{arr.path}/{key}" if arr.path else key
    buf = sync(arr.store_path.store.get(path, prototype=default_buffer_prototype()))
    return None if buf is None else len(buf)


def _check_layout(
    store: Store, key: ReprKey, arr: zarr.Array[Any], attrs: dict[str, Any]
) -> Iterator[str]:
    settings = attrs.get("settings", {})
    n_features = settings.get("n_features")
    if arr.ndim != 2:
        yield f"has {arr.ndim} dimensions; expected (n_samples, n_features)"
        return
    if n_features is not None and arr.shape[1] != n_features:
        yield f"has {arr.shape[1]} features; its settings say {n_features}"
    stored = attrs.get("stored_dtype")
    if stored is not None and str(arr.dtype) != str(Encoding(stored).zarr_dtype):
        yield f"has dtype {arr.dtype}; stored_dtype {stored} needs {Encoding(stored).zarr_dtype}"
    dataset = key.dataset
    if attrs.get("dataset") not in (None, dataset):
        yield f"lies under dataset {dataset!r} but its attributes say {attrs.get('dataset')!r}"
    try:
        n = store.dataset(str(dataset)).n_samples
    except NotFoundError:
        yield f"refers to dataset {dataset!r}, which does not exist"
        return
    if attrs.get("complete") and arr.shape[0] != n:
        yield f"has {arr.shape[0]} rows; dataset {dataset!r} has {n}"


def _check_chunks(
    arr: zarr.Array[Any], attrs: dict[str, Any], report: VerifyReport
) -> Iterator[str]:
    rows = int(arr.chunks[0])
    written = int(attrs.get("rows_written", 0))
    crcs = list(attrs.get("chunk_crc32", []))
    expected_chunks = -(-written // rows)
    if len(crcs) != expected_chunks:
        yield f"records {len(crcs)} checksums for {expected_chunks} written chunks"
    for index in range(min(expected_chunks, len(crcs))):
        lo, hi = index * rows, min((index + 1) * rows, written)
        where = f"chunk {index} (rows {lo}..{hi})"
        report.chunks += 1
        size = _stored_size(arr, index)
        if size is None:
            yield f"{where} is missing"
            continue
        report.bytes_read += size
        try:
            block = np.ascontiguousarray(arr[lo:hi])
        except Exception as err:  # codecs raise many types on corrupt bytes
            yield f"{where} does not decode ({type(err).__name__}: {err})"
            continue
        if zlib.crc32(block.tobytes()) != int(crcs[index]):
            yield f"{where} does not match its checksum (corrupted on disk)"


def verify_representation(store: Store, key: ReprKey, report: VerifyReport) -> None:
    """Append every problem of one representation to ``report``."""
    arr = store.array(key, allow_incomplete=True)
    attrs: dict[str, Any] = arr.attrs.asdict()
    report.representations += 1
    where = key.label()
    problems = list(_check_layout(store, key, arr, attrs))
    if not attrs.get("complete"):
        problems.append(
            f"is incomplete ({attrs.get('rows_written', 0)} of {arr.shape[0]} rows): "
            "run its extraction or import again to resume"
        )
    problems.extend(_check_chunks(arr, attrs, report))
    report.problems.extend(Problem(where, p) for p in problems)


def verify_datasets(store: Store, report: VerifyReport) -> None:
    """Ids and metadata columns have one entry per sample."""
    for name in store.datasets():
        try:
            _verify_dataset(store, name, report)
        except ReprstoreError as err:
            report.problems.append(Problem(f"dataset {name}", str(err)))


def _verify_dataset(store: Store, name: str, report: VerifyReport) -> None:
    ds = store.dataset(name)
    n = ds.n_samples
    if len(ds.ids()) != n:
        report.problems.append(
            Problem(f"dataset {name}", f"has {len(ds.ids())} ids for {n} samples")
        )
    for column in ds.meta_columns():
        rows = len(ds.meta(column))
        if rows != n:
            report.problems.append(
                Problem(f"dataset {name}", f"column {column!r} has {rows} rows, not {n}")
            )


def verify(
    store: str | Store,
    selector: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check the selected representations (all by default) and the datasets."""
    st = store if isinstance(store, Store) else Store.open(store)
    report = VerifyReport()
    verify_datasets(st, report)
    keys = [info.key for info in st.select(selector)]
    damaged = st.damaged(selector)
    if selector and not keys and not damaged:
        raise NotFoundError(
            f"No representation in {st.url} matches {selector!r}: nothing to verify."
        )
    for bad in damaged:
        report.representations += 1
        report.problems.append(Problem(bad.label, bad.message()))
    for done, key in enumerate(keys, 1):
        verify_representation(st, key, report)
        if progress is not None:
            progress(done, len(keys))
    if not selector:
        verify_cache(st, report)
    st.raise_if_upgraded()  # chunks an upgrade moved meanwhile are not damage
    return report


def verify_cache(st: Store, report: VerifyReport) -> None:
    """Check every entry of the result cache against its checksum (a damaged one is never
    used: the next comparison that needs it recomputes it)."""
    from reprstore.store.result_cache import summarize

    found = summarize(st, check=True)
    report.cache_entries = found.entries
    for key in found.damaged:
        report.problems.append(Problem(
            f"cache/{key}", "cached result fails its checksum (it is recomputed when next "
            "needed; 'reprstore cache STORE --clear' removes the cache)",
        ))  # fmt: skip
