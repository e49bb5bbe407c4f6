"""The one door to zarr's private API (``zarr.core``): everything else in reprstore uses
zarr's public modules only, so a zarr release that moves these names breaks this file and
nothing else (tests/test_architecture.py keeps it so).

* :func:`sync` runs zarr's async store calls from synchronous code (byte reads, listings,
  deletes of raw keys that the public ``Array``/``Group`` API has no call for);
* :func:`default_buffer_prototype`, :class:`Buffer` are what those raw reads take and give;
* :class:`ArraySpec` is the codec interface's description of a chunk (safeblosc).
"""

from __future__ import annotations

from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync

__all__ = ["ArraySpec", "Buffer", "default_buffer_prototype", "sync"]
