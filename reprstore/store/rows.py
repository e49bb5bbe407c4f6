"""Read any zarr array row block by row block (extraction's zarr-array data source)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from reprstore.errors import InputError


@dataclass(frozen=True)
class ZarrRows:
    """A zarr array seen as rows (axis 0 = samples); ``read`` returns numpy."""

    url: str
    array: zarr.Array[Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> str:
        return str(self.array.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])


def open_zarr_rows(url: str) -> ZarrRows:
    """Open the zarr array at ``url`` (a path or fsspec URL) read-only."""
    try:
        node = zarr.open(url, mode="r")
    except Exception as err:
        raise InputError(f"Cannot open zarr array {url}: {str(err).splitlines()[0]}") from err
    if not isinstance(node, zarr.Array):
        arrays = ", ".join(sorted(node.array_keys())) or "none"
        raise InputError(f"{url} is a zarr group, not an array. Arrays in it: {arrays}.")
    if node.ndim < 1 or np.dtype(node.dtype).kind not in "fiub":
        raise InputError(f"{url}: expected a numeric array of rows. Got {node.dtype} {node.shape}.")
    return ZarrRows(url, node)
