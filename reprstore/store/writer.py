"""Streaming, resumable writes of one representation, whole chunks at a time.

Rows arrive in blocks of any size; the writer copies them into a one-chunk buffer and
writes a chunk only when it is full (or the last one of the array), so no partial chunk
is ever written and memory stays at one chunk. After every chunk the array's attributes
record ``rows_written`` and the chunk's CRC-32, atomically (zarr's local store writes
metadata by rename), so a crash at any moment leaves an array that says exactly how far
it got and is never marked complete. Starting the same write again resumes after the
last whole chunk.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import zarr

from reprstore.errors import DatasetMismatchError, InputError, ReprstoreWarning, StoreWriteError
from reprstore.keys import ReprKey
from reprstore.store.attrs import ReprSettings, utc_now
from reprstore.store.encoding import Encoding, chunk_rows_for, compressors, float16_loss
from reprstore.store.lock import Lease
from reprstore.store.replace import Replacement

NONFINITE_POLICIES = ("error", "warn", "ignore")


class ReprWriter:
    """Append row blocks to one representation array; :meth:`close` marks it complete.

    Parameters
    ----------
    array
        The preallocated (or growable, when ``n_samples`` is unknown) zarr array.
    settings, encoding
        What is stored; ``encoding`` casts and rounds each block.
    lease
        The held write lease, released on close/abort.
    on_nonfinite
        ``"error"`` stops at the first chunk with NaN/Inf; ``"warn"``/``"ignore"`` count them.
    replacement
        For an overwrite: the array is staged beside the old one and swapped in by
        :meth:`close` once complete (see :mod:`reprstore.store.replace`).
    """

    def __init__(
        self,
        array: zarr.Array[Any],
        key: ReprKey,
        settings: ReprSettings,
        encoding: Encoding,
        lease: Lease,
        on_nonfinite: str = "warn",
        replacement: Replacement | None = None,
    ) -> None:
        if on_nonfinite not in NONFINITE_POLICIES:
            raise InputError(
                f"Unknown --on-nonfinite {on_nonfinite!r}. Expected one of "
                f"{', '.join(NONFINITE_POLICIES)}."
            )
        self.array = array
        self.key = key
        self.settings = settings
        self.encoding = encoding
        self.lease = lease
        self.on_nonfinite = on_nonfinite
        self.replacement = replacement
        if encoding.name == "float16" and array.dtype != encoding.zarr_dtype:
            self.encoding = encoding = Encoding("float32", encoding.keep_bits)  # fell back
        self.chunk_rows = int(array.chunks[0])
        attrs: dict[str, Any] = array.attrs.asdict()
        whole_chunks = int(attrs.get("rows_written", 0)) // self.chunk_rows
        self.crcs: list[int] = list(attrs.get("chunk_crc32", []))[:whole_chunks]
        self.rows_written = len(self.crcs) * self.chunk_rows
        self.nonfinite: dict[str, int] = dict(attrs.get("nonfinite", {"nan": 0, "inf": 0}))
        self._buffer = np.empty((self.chunk_rows, settings.n_features), encoding.zarr_dtype)
        self._filled = 0
        self.closed = False
        self.resumed_from = self.rows_written

    @property
    def rows_accepted(self) -> int:
        """Rows written plus rows waiting in the chunk buffer."""
        return self.rows_written + self._filled

    def write(self, block: Any) -> None:
        """Append rows ``(n_rows, n_features)``; writes every chunk that fills up.

        float16 storage is checked first: on the first block, when its rounding would move
        a column by more than :data:`~reprstore.store.encoding.FLOAT16_REL_RMS_LIMIT` of
        its spread or a value exceeds float16's range, the array is stored as float32
        instead (said in a :class:`~reprstore.errors.ReprstoreWarning` and the
        ``storage_fallback`` attribute); a later block beyond the range is an error.
        """
        block = np.asarray(block)
        if self.encoding.name == "float16":
            self._guard_float16(block)
        rows = self.encoding.encode(block)
        if rows.ndim != 2 or rows.shape[1] != self.settings.n_features:
            raise DatasetMismatchError(
                f"{self.key.label()}: expected row blocks of shape (n, "
                f"{self.settings.n_features}). Got {rows.shape} instead."
            )
        limit = self.settings.n_samples
        if limit is not None and self.rows_accepted + len(rows) > limit:
            raise DatasetMismatchError(
                f"{self.key.label()}: more rows than the dataset's {limit} samples."
            )
        start = 0
        while start < len(rows):
            take = min(self.chunk_rows - self._filled, len(rows) - start)
            self._buffer[self._filled : self._filled + take] = rows[start : start + take]
            self._filled += take
            start += take
            if self._filled == self.chunk_rows:
                self._flush()

    def _guard_float16(self, block: np.ndarray) -> None:
        first = self.rows_accepted == 0
        reason = float16_loss(block, check_precision=first and self.encoding.keep_bits is None)
        if reason is None:
            return
        if not first:
            raise InputError(
                f"{self.key.label()}: {reason} in rows {self.rows_accepted}.."
                f"{self.rows_accepted + len(block)}. Write it again with --dtype float32 "
                "--overwrite."
            )
        self._fall_back(reason)

    def _fall_back(self, reason: str) -> None:
        """Recreate the (still empty) array as float32 before its first chunk."""
        from zarr.storage import StorePath

        encoding = Encoding("float32", self.encoding.keep_bits)
        dtype = encoding.zarr_dtype
        old = self.array
        attrs: dict[str, Any] = old.attrs.asdict()
        note = f"{reason}; stored as float32 instead"
        attrs.update(stored_dtype="float32", storage_fallback=note)
        rows = chunk_rows_for(self.settings.n_features, dtype.itemsize, self.settings.n_samples)
        try:
            self.array = zarr.create_array(
                StorePath(old.store_path.store, old.path), shape=old.shape,
                chunks=(rows, self.settings.n_features), dtype=dtype,
                compressors=compressors(dtype), fill_value=0, attributes=attrs,
                dimension_names=["sample", "feature"], overwrite=True,
            )  # fmt: skip
        except OSError as err:
            raise StoreWriteError(f"Cannot create {self.key.label()}: {err}") from err
        self.lease.renew()  # the folder was recreated
        self.encoding = encoding
        self.chunk_rows = rows
        self._buffer = np.empty((rows, self.settings.n_features), dtype)
        warnings.warn(ReprstoreWarning(f"{self.key.label()}: {note}."), stacklevel=3)

    def write_at(self, start: int, block: Any) -> None:
        """Write rows ``start:start+len(block)``, skipping those already accepted.

        Lets a caller that resumes several representations from the smallest common row
        feed every writer the same blocks.
        """
        skip = self.rows_accepted - start
        if skip < 0:
            raise DatasetMismatchError(
                f"{self.key.label()}: rows {self.rows_accepted}..{start} would be missing."
            )
        if skip < len(block):
            self.write(block[skip:])

    def _flush(self, final: dict[str, Any] | None = None) -> None:
        """Write the buffered rows; ``final`` attributes go into the same metadata write."""
        if self._filled == 0:
            if final:
                self.array.update_attributes(final)
            return
        chunk = self._buffer[: self._filled]
        self._count_nonfinite(chunk)
        lo, hi = self.rows_written, self.rows_written + self._filled
        try:
            if self.settings.n_samples is None and hi > self.array.shape[0]:
                self.array.resize((hi, self.settings.n_features))
            self.array[lo:hi] = chunk
            self.crcs.append(zlib.crc32(np.ascontiguousarray(chunk).tobytes()))
            self.rows_written = hi
            self._filled = 0
            self.array.update_attributes(
                {
                    "rows_written": hi,
                    "chunk_crc32": self.crcs,
                    "nonfinite": self.nonfinite,
                    **(final or {}),
                }
            )
        except OSError as err:
            raise StoreWriteError(
                f"Writing {self.key.label()} failed at row {lo}: {err.strerror or err}. "
                "Free space or fix permissions, then run the same command again to resume."
            ) from err
        self.lease.heartbeat()

    def _count_nonfinite(self, chunk: np.ndarray) -> None:
        nan = int(np.isnan(chunk).sum())
        inf = int(np.isinf(chunk).sum())
        if nan == inf == 0:
            return
        if self.on_nonfinite == "error":
            raise InputError(
                f"{self.key.label()}: {nan} NaN and {inf} Inf values in rows "
                f"{self.rows_written}..{self.rows_written + len(chunk)}. "
                "Pass --on-nonfinite warn to store them anyway."
            )
        self.nonfinite = {"nan": self.nonfinite["nan"] + nan, "inf": self.nonfinite["inf"] + inf}

    def close(self) -> None:
        """Write the last partial chunk and mark the array complete."""
        if self.closed:
            return
        n = self.settings.n_samples
        if n is not None and self.rows_accepted == n:
            # the last chunk and the completion marker in one metadata write (not two)
            self._flush({"complete": True, "n_samples": n, "completed": utc_now()})
        else:
            self._flush()
            if n is not None and self.rows_written != n:
                raise DatasetMismatchError(
                    f"{self.key.label()}: got {self.rows_written} rows, the dataset has {n}."
                )
            if n is None and self.array.shape[0] != self.rows_written:
                self.array.resize((self.rows_written, self.settings.n_features))
            self.array.update_attributes(
                {"complete": True, "n_samples": self.rows_written, "completed": utc_now()}
            )
        if self.replacement is not None:
            try:
                self.replacement.commit()
            except OSError as err:
                raise StoreWriteError(
                    f"Swapping the new {self.key.label()} in failed: {err.strerror or err}. "
                    "Run the same command again (or open the store) to finish the swap."
                ) from err
        self.closed = True
        self.lease.release()

    def abort(self) -> None:
        """Leave the array incomplete (resumable) and release the lease.

        An aborted overwrite drops its staged array: the old one was never touched.
        """
        self.closed = True
        try:
            if self.replacement is not None:
                self.replacement.discard()
        finally:
            self.lease.release()

    def __enter__(self) -> ReprWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise


ProgressCallback = Callable[[int], None]
