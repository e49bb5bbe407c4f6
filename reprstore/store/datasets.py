"""Datasets: the probe set's sample ids, metadata columns and input fingerprint.

``datasets/<name>/ids`` holds one id per row, ``datasets/<name>/meta/<column>`` the
optional metadata. A dataset is created by the first import or extraction that uses it
and checked by every later one: the same row count, the same ids when ids are given,
and (for extraction) the same fingerprint of the input data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from reprstore.errors import DatasetMismatchError, NotFoundError
from reprstore.keys import dataset_path, validate_name
from reprstore.store.attrs import utc_now
from reprstore.store.lock import Lease

#: Dataset attribute listing the metadata columns whose values are completely written.
META_COLUMNS = "meta_columns"


@dataclass(frozen=True)
class Dataset:
    """A read-only view of one dataset group."""

    name: str
    group: zarr.Group

    @property
    def n_samples(self) -> int:
        attrs: dict[str, Any] = self.group.attrs.asdict()
        return int(attrs["n_samples"])

    @property
    def fingerprint(self) -> str | None:
        value = self.group.attrs.get("fingerprint")
        return str(value) if value is not None else None

    def ids(self) -> np.ndarray:
        """The sample ids, shape ``(n_samples,)``."""
        return _as_column(np.asarray(_array(self.group, "ids")[:]))

    def meta_columns(self) -> list[str]:
        """The complete metadata columns: those the dataset's ``meta_columns`` attribute
        lists (a column is listed once its values are written, so a concurrent reader
        never sees one half-made); every stored column in stores made before the list."""
        listed = self.group.attrs.get(META_COLUMNS)
        if listed is not None:
            return sorted(str(c) for c in listed)  # type: ignore[union-attr]
        return _stored_columns(self.group)

    def meta(self, column: str) -> np.ndarray:
        """One metadata column, shape ``(n_samples,)``."""
        if column not in self.meta_columns():
            raise NotFoundError(
                f"Dataset {self.name!r} has no metadata column {column!r}. "
                f"Columns: {', '.join(self.meta_columns()) or 'none'}."
            )
        return _as_column(np.asarray(_array(self.group, f"meta/{column}")[:]))

    def table(self) -> dict[str, np.ndarray]:
        """``id`` plus every metadata column, for row filters."""
        return {"id": self.ids(), **{c: self.meta(c) for c in self.meta_columns()}}


def _stored_columns(group: zarr.Group) -> list[str]:
    """The metadata arrays present in ``group``, complete or not."""
    if "meta" not in group:
        return []
    meta = group["meta"]
    assert isinstance(meta, zarr.Group)
    return sorted(meta.array_keys())


def _array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    """An array of a dataset; a missing or unreadable one is a CorruptDataError naming it."""
    from reprstore.errors import CorruptDataError

    where = f"{group.path}/{path}"
    try:
        node = group[path]
    except KeyError:
        node = None
    except Exception as err:  # a damaged zarr.json
        raise CorruptDataError(
            f"{where} cannot be read ({type(err).__name__}); the store is damaged: "
            "run 'reprstore verify STORE'."
        ) from None
    if not isinstance(node, zarr.Array):
        raise CorruptDataError(
            f"{where} is missing: the dataset's sample ids/metadata are gone from the store; "
            "run 'reprstore verify STORE' and import the dataset again."
        )
    return node


def _as_column(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "T":  # numpy's variable-width StringDType, as zarr 3 reads str
        return np.array(values.tolist(), dtype=str)
    if values.dtype.kind in "OUS":
        return values.astype(str)
    return values


def _write_column(group: zarr.Group, name: str, values: np.ndarray) -> None:
    values = _as_column(values)
    dtype = str if values.dtype.kind == "U" else values.dtype
    arr = group.create_array(
        name, shape=values.shape, dtype=dtype, chunks=(max(1, len(values)),), overwrite=True
    )
    arr[:] = values


def open_dataset(root: zarr.Group, name: str) -> Dataset:
    """The dataset ``name``; :class:`NotFoundError` if it does not exist."""
    path = dataset_path(name)
    group = root.get(path)
    # n_samples is written last: a group without it is still being created (or was not)
    if not isinstance(group, zarr.Group) or "n_samples" not in group.attrs:
        raise NotFoundError(f"No dataset {name!r} in this store.")
    return Dataset(name, group)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = _as_column(a), _as_column(b)
    if a.dtype.kind == "U" or b.dtype.kind == "U":
        return a.shape == b.shape and bool(np.all(a.astype(str) == b.astype(str)))
    return a.shape == b.shape and bool(np.array_equal(a, b))


def check_dataset(
    root: zarr.Group,
    name: str,
    n_samples: int,
    ids: np.ndarray | None = None,
    meta: Mapping[str, np.ndarray] | None = None,
    fingerprint: str | None = None,
) -> bool:
    """Check new rows against an existing dataset; return False if it does not exist yet.

    Nothing is written: callers validate every input before the first write.
    """
    validate_name(name, "dataset")
    for column, values in (meta or {}).items():  # new datasets too
        if len(values) != n_samples:
            raise DatasetMismatchError(
                f"Metadata column {column!r} has {len(values)} rows; dataset {name!r} has "
                f"{n_samples} samples. Give one metadata row per sample, in order."
            )
    if ids is not None and len(ids) != n_samples:
        raise DatasetMismatchError(f"--ids has {len(ids)} entries; the input has {n_samples} rows.")
    try:
        ds = open_dataset(root, name)
    except NotFoundError:
        return False
    if ds.n_samples != n_samples:
        raise DatasetMismatchError(
            f"Dataset {name!r} has {ds.n_samples} samples; the input has {n_samples} rows. "
            "Use the same probe set, or a new --dataset name."
        )
    if ids is not None and not _same(ds.ids(), ids):
        raise DatasetMismatchError(
            f"The ids given do not match dataset {name!r}'s ids (same count, other values "
            "or order). Use the same probe set, or a new --dataset name."
        )
    if fingerprint is not None and ds.fingerprint not in (None, fingerprint):
        raise DatasetMismatchError(
            f"The input data differ from the data dataset {name!r} was extracted from "
            f"(fingerprint {fingerprint[:12]} ≠ {ds.fingerprint[:12]}). "
            "Use the same samples in the same order, or a new --dataset name."
        )
    for column, values in (meta or {}).items():
        if len(values) != n_samples:
            raise DatasetMismatchError(
                f"Metadata column {column!r} has {len(values)} rows; dataset {name!r} has "
                f"{n_samples}."
            )
        if column in ds.meta_columns() and not _same(ds.meta(column), values):
            raise DatasetMismatchError(
                f"Metadata column {column!r} differs from the one stored in dataset {name!r}."
            )
    return True


def write_dataset(
    root: zarr.Group,
    name: str,
    n_samples: int,
    ids: np.ndarray | None = None,
    meta: Mapping[str, np.ndarray] | None = None,
    fingerprint: str | None = None,
    source: str | None = None,
) -> Dataset:
    """Create the dataset, or add what is new to it (run :func:`check_dataset` first).

    Concurrent writers of one store serialise here through a short lease on the dataset.
    Readers (and writers checking their input before they take the lease) see a dataset
    only once its ``n_samples`` is written, and a metadata column only once it is listed
    in ``meta_columns``: both are written after the values they stand for.
    """
    for column in meta or {}:
        validate_name(column, "metadata column")
    with Lease(root.store, dataset_path(name)).acquire(wait=30.0):
        exists = check_dataset(root, name, n_samples, ids, meta, fingerprint)
        if not exists:
            if ids is not None and len(ids) != n_samples:
                raise DatasetMismatchError(
                    f"--ids has {len(ids)} entries; the input has {n_samples} rows."
                )
            group = root.require_group(dataset_path(name))
            _write_column(group, "ids", ids if ids is not None else np.arange(n_samples))
            for column, values in (meta or {}).items():
                _write_column(group.require_group("meta"), column, np.asarray(values))
            group.update_attributes(
                {
                    "n_samples": n_samples,
                    "fingerprint": fingerprint,
                    "source": source,
                    "created": utc_now(),
                    META_COLUMNS: sorted(meta or {}),
                }
            )
            return open_dataset(root, name)
        ds = open_dataset(root, name)
        if fingerprint is not None and ds.fingerprint is None:
            ds.group.update_attributes({"fingerprint": fingerprint})
        new = [c for c in meta or {} if c not in ds.meta_columns()]
        if new:
            listed = ds.meta_columns()
            ds.group.update_attributes({META_COLUMNS: listed})  # a store made before the list
            for column in new:
                _write_column(ds.group.require_group("meta"), column, np.asarray(meta[column]))  # type: ignore[index]
            ds.group.update_attributes({META_COLUMNS: sorted([*listed, *new])})
        return ds
