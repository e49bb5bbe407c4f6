"""Checked reads: every chunk a comparison reads is checked against its recorded CRC-32.

The writer records the CRC-32 of each chunk's decoded values (``chunk_crc32``). A
:class:`CheckedRows` is an array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``) that
``dask.array.from_array`` wraps instead of the bare zarr array: a block read decodes the
whole chunks it covers, checks each one's CRC and only then hands the rows on. So a deleted
chunk (which zarr reads back as zeros), flipped bytes, swapped chunk files or a truncated
chunk are an error naming the representation and the chunk, never a plausible value.

It pickles to dask.distributed workers as the store's absolute location plus the
array's path and checksums; a worker opens the array itself on first use.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from reprstore.errors import CorruptDataError

VERIFY_HINT = "run 'reprstore verify STORE' to see every damaged chunk"


def absolute_location(url: str) -> str:
    """A store URL that means the same store from any working directory.

    Local paths (and ``file://`` URLs) become absolute paths; other URLs pass unchanged.
    """
    if url.startswith("file://"):
        return str(Path(url[len("file://") :]).resolve())
    if "://" in url:
        return url
    return str(Path(url).resolve())


@dataclass
class CheckedRows:
    """Rows of one stored representation, each chunk checked on read.

    Attributes
    ----------
    location : str
        Absolute store path or URL.
    path : str
        Array path inside the store.
    label : str
        The representation's name in messages.
    shape : (int, int)
    dtype : numpy dtype
    chunk_rows : int
        Rows per stored chunk.
    crcs : tuple of int
        CRC-32 of each written chunk's values.
    rows_written : int
    """

    location: str
    path: str
    label: str
    shape: tuple[int, int]
    dtype: np.dtype
    chunk_rows: int
    crcs: tuple[int, ...]
    rows_written: int
    _array: zarr.Array[Any] | None = field(default=None, repr=False, compare=False)

    ndim = 2

    @classmethod
    def from_array(cls, url: str, array: zarr.Array[Any], label: str) -> CheckedRows:
        """Wrap an open zarr array of a store at ``url`` (its attributes give the CRCs)."""
        attrs: dict[str, Any] = array.attrs.asdict()
        return cls(
            location=absolute_location(url),
            path=array.path,
            label=label,
            shape=(int(array.shape[0]), int(array.shape[1])),
            dtype=np.dtype(array.dtype),
            chunk_rows=int(array.chunks[0]),
            crcs=tuple(int(c) for c in attrs.get("chunk_crc32", [])),
            rows_written=int(attrs.get("rows_written", 0)),
            _array=array,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None  # a worker opens its own
        return state

    @property
    def array(self) -> zarr.Array[Any]:
        if self._array is None:
            try:
                self._array = zarr.open_array(self.location, path=self.path, mode="r")
            except Exception as err:  # missing or damaged metadata on this worker
                raise CorruptDataError(
                    f"Cannot open {self.label} at {self.location}/{self.path}: "
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
                    f"{VERIFY_HINT}."
                ) from None
        return self._array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        rows, cols = _split_index(index)
        lo, hi, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("CheckedRows reads contiguous row ranges only")
        if hi <= lo:
            return np.empty((0, self.shape[1]), self.dtype)[:, cols]
        first, last = lo // self.chunk_rows, -(-hi // self.chunk_rows)
        start = first * self.chunk_rows
        block = self._read_checked(first, last)
        return block[lo - start : hi - start][:, cols]

    # -- reading and checking ---------------------------------------------------------
    def _chunk_range(self, index: int) -> tuple[int, int]:
        lo = index * self.chunk_rows
        return lo, min(lo + self.chunk_rows, self.rows_written)

    def _read_checked(self, first: int, last: int) -> np.ndarray:
        """Chunks ``first:last`` decoded, each checked against its CRC-32."""
        if last > len(self.crcs):
            bad = max(first, len(self.crcs))
            raise CorruptDataError(
                f"{self.label}: chunk {bad} (rows {bad * self.chunk_rows}..) has no recorded "
                f"checksum ({self.rows_written} rows written); {VERIFY_HINT}."
            )
        lo, hi = first * self.chunk_rows, self._chunk_range(last - 1)[1]
        try:
            block = np.ascontiguousarray(self.array[lo:hi])
        except CorruptDataError:
            raise
        except Exception:  # codecs raise many types on damaged bytes: find the chunk
            for index in range(first, last):
                self._decode_one(index)
            raise
        for index in range(first, last):
            c_lo, c_hi = self._chunk_range(index)
            if zlib.crc32(block[c_lo - lo : c_hi - lo].data) != self.crcs[index]:
                raise self._mismatch(index)
        return block

    def _decode_one(self, index: int) -> np.ndarray:
        lo, hi = self._chunk_range(index)
        try:
            return np.asarray(self.array[lo:hi])
        except Exception as err:
            raise CorruptDataError(
                f"{self.label}: chunk {index} (rows {lo}..{hi}) cannot be decoded "
                f"({type(err).__name__}: {_first_line(err)}); the file is damaged or "
                f"truncated; {VERIFY_HINT}."
            ) from None

    def _mismatch(self, index: int) -> CorruptDataError:
        lo, hi = self._chunk_range(index)
        where = f"{self.label}: chunk {index} (rows {lo}..{hi})"
        if self._changed_since_planned():
            return CorruptDataError(
                f"{self.label} was rewritten (--overwrite) while the comparison read it; "
                "run the comparison again."
            )
        if not self._chunk_exists(index):
            return CorruptDataError(
                f"{where} is missing from the store although {self.rows_written} rows were "
                f"written; {VERIFY_HINT}."
            )
        return CorruptDataError(
            f"{where} does not match its recorded checksum (corrupted or swapped on disk); "
            f"{VERIFY_HINT}."
        )

    def _changed_since_planned(self) -> bool:
        try:
            fresh = zarr.open_array(self.location, path=self.path, mode="r")
            recorded: Any = fresh.attrs.get("chunk_crc32", [])
            return tuple(int(c) for c in recorded) != self.crcs
        except Exception:
            return True

    def _chunk_exists(self, index: int) -> bool:
        from reprstore.store.zarr_internals import default_buffer_prototype, sync

        arr = self.array
        key = arr.metadata.encode_chunk_key((index, 0))
        path = f"{arr.path}/{key}" if arr.path else key
        found = sync(arr.store_path.store.get(path, prototype=default_buffer_prototype()))
        return found is not None


def _split_index(index: Any) -> tuple[slice, Any]:
    if not isinstance(index, tuple):
        index = (index,)
    rows = index[0] if index else slice(None)
    cols = index[1] if len(index) > 1 else slice(None)
    if not isinstance(rows, slice):
        raise IndexError("CheckedRows reads row slices only")
    return rows, cols


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
