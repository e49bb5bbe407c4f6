"""A Blosc codec that checks a chunk's frame before c-blosc reads it.

c-blosc's decompressor is given no source length: it trusts the sizes in the 16-byte
frame header and follows the block offsets stored after it. A truncated chunk file (a
killed copy, a partial upload) therefore makes it read past the end of the buffer, which
returns garbage or crashes the process (SIGSEGV, seen in CI on a chunk cut to 100 bytes).
:class:`CheckedBloscCodec` decodes like zarr's ``BloscCodec`` and is registered in its
place for the ``blosc`` name, so every read of every store (and ``verify``) first checks
that the frame is complete: header present, compressed size equal to the bytes read,
decoded size equal to the chunk's. A damaged frame is a ``ValueError`` that the checked
reader turns into a one-line message naming the chunk.

Writing is unchanged: the same class encodes exactly as ``BloscCodec`` does, and the
metadata still names ``blosc``, so stores stay readable by plain zarr.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.registry import register_codec

from reprstore.store.zarr_internals import ArraySpec, Buffer

HEADER_BYTES = 16


class CheckedBloscCodec(BloscCodec):
    """zarr's BloscCodec, refusing incomplete or inconsistent frames before decoding."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        check_frame(chunk_bytes.as_numpy_array(), expected_bytes(chunk_spec))
        return super()._decode_sync(chunk_bytes, chunk_spec)


def expected_bytes(chunk_spec: ArraySpec) -> int | None:
    """Decoded bytes of one chunk of a fixed-size numeric spec; ``None`` where unknown.

    Variable-length types (strings) have no fixed size, so only the frame's own length
    is checked for them.
    """
    dtype = np.dtype(chunk_spec.dtype.to_native_dtype())
    if dtype.kind not in "biufc":
        return None
    return int(np.prod(chunk_spec.shape)) * dtype.itemsize


def check_frame(frame: np.ndarray, decoded_bytes: int | None) -> None:
    """Raise ``ValueError`` unless ``frame`` is one whole Blosc frame of ``decoded_bytes``."""
    raw = frame.view(np.uint8).reshape(-1)
    if raw.size < HEADER_BYTES:
        raise ValueError(f"Blosc frame of {raw.size} bytes is shorter than its header")
    nbytes, _blocksize, cbytes = (int(v) for v in raw[4:16].view("<u4"))
    if cbytes != raw.size:
        raise ValueError(f"Blosc frame says {cbytes} bytes but {raw.size} were read")
    if decoded_bytes is not None and nbytes != decoded_bytes:
        raise ValueError(f"Blosc frame decodes to {nbytes} bytes, the chunk holds {decoded_bytes}")


def install() -> None:
    """Make ``blosc`` in any array's metadata decode through :class:`CheckedBloscCodec`."""
    register_codec("blosc", CheckedBloscCodec)
    name = f"{CheckedBloscCodec.__module__}.{CheckedBloscCodec.__qualname__}"
    zarr.config.set({"codecs.blosc": name})
