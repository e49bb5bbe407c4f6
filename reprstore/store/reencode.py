"""``reprstore upgrade --reencode``: rewrite arrays stored with an older codec, crash-safe.

A store keeps working with whatever codec its arrays were written with (each array's
``zarr.json`` names its own codec chain); re-encoding only makes old arrays decode as
fast as new ones. Each array whose chain differs from :func:`~reprstore.store.encoding.compressors`
is rewritten in four steps:

1. its chunks are decoded and written with the current codec into ``__reencode__/<i>``
   (same shape, chunks, dtype, attributes; a chunk file exists in the copy exactly when it
   exists in the original), and every copied chunk is compared with the original's decoded
   bytes and with its recorded CRC-32;
2. the original folder is renamed to ``__reencode__/<i>.old``;
3. the copy is renamed to the original's path;
4. the old folder is deleted.

The values, and so the recorded ``chunk_crc32`` and the result cache's fingerprints (made
of those checksums), stay what they were. The run follows the upgrade journal (phase
``reencode``): while it exists the store refuses to open, and ``reprstore upgrade`` run
again finishes the job from whatever step a killed run reached.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from reprstore.errors import CorruptDataError, StoreFormatError
from reprstore.store.encoding import compressors

STAGING = "__reencode__"


def codec_config(arr: zarr.Array[Any]) -> list[dict[str, Any]]:
    """The bytes-to-bytes codecs of an array as JSON (what its ``zarr.json`` says)."""
    return [c.to_dict() for c in arr.metadata.codecs[1:]]  # type: ignore[union-attr]


def target_config(dtype: np.dtype) -> list[dict[str, Any]]:
    """The codec chain the store writes ``dtype`` with now, as JSON."""
    return [c.to_dict() for c in compressors(dtype)]


def needs_reencode(arr: zarr.Array[Any]) -> bool:
    """Whether ``arr`` was written with a codec chain other than the current default."""
    return codec_config(arr) != target_config(arr.dtype)


def plan(root: zarr.Group, paths: list[str]) -> list[str]:
    """The array paths among ``paths`` whose codec is not the current default."""
    return [p for p in paths if needs_reencode(root[p])]  # type: ignore[arg-type]


def _chunk_exists(folder: Path, index: int) -> bool:
    return (folder / "c" / str(index) / "0").exists()


def _copy(src: zarr.Array[Any], dst: zarr.Array[Any], folder: Path, label: str,
          step: Callable[[], None]) -> None:  # fmt: skip
    """Copy every stored chunk of ``src`` into ``dst``; check each against the original
    decoded bytes and its recorded CRC-32."""
    rows = int(src.chunks[0])
    recorded: Any = src.attrs.get("chunk_crc32", [])
    crcs = [int(c) for c in recorded]
    for index in range(-(-int(src.shape[0]) // rows) if rows else 0):
        if not _chunk_exists(folder, index):
            continue
        lo, hi = index * rows, min((index + 1) * rows, int(src.shape[0]))
        block = np.asarray(src[lo:hi])
        if index < len(crcs) and zlib.crc32(block.tobytes()) != crcs[index]:
            raise CorruptDataError(
                f"{label}: chunk {index} does not match its recorded checksum, so it is not "
                "re-encoded; run 'reprstore verify STORE' first."
            )
        dst[lo:hi] = block
        if np.asarray(dst[lo:hi]).tobytes() != block.tobytes():
            raise CorruptDataError(f"{label}: chunk {index} reads back changed after re-encoding.")
        step()


def _rebuild(root: zarr.Group, base: Path, rel: str, stage: str, step: Callable[[], None]) -> None:
    """Step 1: the re-encoded copy of ``rel`` at ``stage``, checked chunk by chunk."""
    src: Any = root[rel]
    dst = zarr.create_array(
        root.store, name=stage, shape=src.shape, chunks=src.chunks, dtype=src.dtype,
        compressors=compressors(src.dtype), fill_value=src.fill_value,
        attributes=src.attrs.asdict(), dimension_names=src.metadata.dimension_names,
        config={"write_empty_chunks": True}, overwrite=True,
    )  # fmt: skip
    _copy(src, dst, base / rel, rel, step)


def reencode_one(root: zarr.Group, base: Path, rel: str, index: int,
                 step: Callable[[], None]) -> bool:  # fmt: skip
    """Bring the array at ``rel`` to the current codec, resuming any step a killed run
    reached; True when it was rewritten now."""
    new, old, dst = base / STAGING / str(index), base / STAGING / f"{index}.old", base / rel
    if old.exists():  # killed after step 2
        if not dst.exists():
            os.rename(new, dst)
        shutil.rmtree(old)
        return True
    if new.exists():  # killed during step 1: start the copy again
        shutil.rmtree(new)
    if not dst.exists():
        raise StoreFormatError(
            f"The re-encoding journal lists {rel}, which is missing: the store was changed "
            "during the upgrade."
        )
    if not needs_reencode(zarr.open_array(root.store, path=rel, mode="r")):
        return False  # done by the killed run
    _rebuild(root, base, rel, f"{STAGING}/{index}", step)
    os.rename(dst, old)
    os.rename(new, dst)
    shutil.rmtree(old)
    return True
