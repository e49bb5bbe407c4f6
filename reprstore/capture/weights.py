"""Checkpoint files read one slice of one tensor at a time, for weight drift.

``.pt``/``.pth``/``.bin``/``.ckpt`` state dicts load with ``weights_only=True`` and
``mmap=True``; the pages of each slice are handed back to the kernel once the slice is
converted (``madvise(MADV_DONTNEED)``), so the pages a read touches do not pile up as
resident memory. ``.safetensors`` files are read with positioned reads of one slice from
the offsets in their header (no memory map at all). Values leave this module as float64
numpy slices of at most ``CHUNK`` elements, so the drift math stays in numpy and the
memory drift needs does not grow with the size of a tensor. Legacy (non-zip) ``torch.save``
files cannot be memory-mapped: they are read whole.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import math
import mmap
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprstore.capture.models import read_state_dict
from reprstore.errors import InputError

#: Elements per float64 slice handed to the math (8 MiB).
CHUNK = 1 << 20

#: safetensors dtype → (torch dtype or None where drift cannot read it, bytes per element)
_SAFE_DTYPES: dict[str, tuple[torch.dtype | None, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1), "U16": (None, 2), "U32": (None, 4), "U64": (None, 8),
}  # fmt: skip
#: The safetensors format's own bound on its JSON header.
_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class SafeEntry:
    """Where one tensor of a ``.safetensors`` file lies: dtype, shape, byte range."""

    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the first byte
    end: int


class WeightFile:
    """One checkpoint's tensors, by name, read lazily.

    Parameters
    ----------
    path : Path
        A state-dict checkpoint or a ``.safetensors`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tensors: dict[str, Any] | None = None
        self._safe: dict[str, SafeEntry] | None = None
        self._mapped = False  # tensors live in a private file mapping (pages can be dropped)
        if path.suffix == ".safetensors":
            self._safe = read_safetensors_header(path)
        else:
            self._tensors, self._mapped = _load_state_dict(path)

    def __enter__(self) -> WeightFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tensors = None

    def dtypes(self) -> dict[str, str]:
        """Name → dtype (``float32``, ``int64`` …) of every tensor, in file order."""
        if self._safe is not None:
            return {n: _safe_dtype_name(e.dtype) for n, e in self._safe.items()}
        assert self._tensors is not None
        return {n: str(t.dtype).removeprefix("torch.") for n, t in self._tensors.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every floating-point tensor (see :meth:`skipped` for the rest)."""
        if self._safe is not None:
            return {n: e.shape for n, e in self._safe.items() if _safe_is_float(e.dtype)}
        assert self._tensors is not None
        return {n: tuple(t.shape) for n, t in self._tensors.items() if t.is_floating_point()}

    def skipped(self) -> dict[str, str]:
        """Name → dtype of the tensors that are not floating point (step counters,
        ``position_ids``, ``num_batches_tracked``): drift leaves them out."""
        floating = self.shapes()
        return {n: d for n, d in self.dtypes().items() if n not in floating}

    def chunks(self, name: str, size: int | None = None) -> Iterator[np.ndarray]:
        """The tensor ``name`` flattened, as float64 slices of at most ``size`` elements."""
        size = size or CHUNK
        if self._safe is not None:
            yield from _safe_chunks(self.path, self._safe[name], size)
            return
        assert self._tensors is not None
        tensor = self._tensors[name].detach()
        flat = tensor.reshape(-1)
        release = self._mapped and flat.data_ptr() == tensor.data_ptr()
        for start in range(0, flat.numel(), size):
            piece = flat[start : start + size]
            yield piece.to(torch.float64).numpy()
            if release:
                drop_pages(piece.data_ptr(), piece.numel() * piece.element_size())


def _load_state_dict(path: Path) -> tuple[dict[str, Any], bool]:
    """The state dict and whether it is memory-mapped (zip checkpoints) or read whole."""
    try:
        state = read_state_dict(path)
    except InputError as err:
        if "weights_only" not in str(err):
            raise
        raise InputError(
            f"Checkpoint {path.name} holds pickled Python objects, and drift loads "
            "checkpoints with weights_only=True only: save model.state_dict() instead."
        ) from None
    return state, _is_zip(path)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def drop_pages(address: int, nbytes: int) -> None:
    """Hand the pages of ``[address, address + nbytes)`` back to the kernel.

    Only for read-only private file mappings (``torch.load(mmap=True)``): their pages
    are re-read from the file if touched again, so nothing is lost, and they no longer
    count as this process's resident memory. A no-op where ``madvise`` is missing.
    """
    advise = _madvise()
    if advise is None or nbytes <= 0:
        return
    page = mmap.PAGESIZE
    start = address - address % page
    stop = -(-(address + nbytes) // page) * page
    advise(start, stop - start, mmap.MADV_DONTNEED)


@functools.cache
def _madvise() -> Any:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    advise = getattr(ctypes.CDLL(None, use_errno=True), "madvise", None)
    if advise is not None:
        advise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return advise


def read_safetensors_header(path: Path) -> dict[str, SafeEntry]:
    """Every tensor's dtype, shape and byte range, from the file's JSON header (checked
    against the file's size: a damaged file is refused before any tensor is read)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 2 <= length <= min(_MAX_HEADER, size - 8):
            raise _not_safetensors(path, "its header length does not fit the file")
        text = fh.read(length)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise _not_safetensors(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    header.pop("__metadata__", None)
    return {str(n): _safe_entry(path, n, v, 8 + length, size) for n, v in header.items()}


def _safe_entry(path: Path, name: str, value: Any, data: int, size: int) -> SafeEntry:
    try:
        dtype, shape, (begin, end) = value["dtype"], value["shape"], value["data_offsets"]
        shape = tuple(int(d) for d in shape)
        begin, end = int(begin), int(end)
    except (TypeError, KeyError, ValueError):
        raise _not_safetensors(path, f"tensor {name!r} has no dtype, shape and offsets") from None
    width = _SAFE_DTYPES.get(str(dtype), (None, 0))[1]
    fits = 0 <= begin <= end <= size - data and min(shape, default=0) >= 0
    if not fits or (width and end - begin != math.prod(shape) * width):
        raise _not_safetensors(path, f"tensor {name!r} does not fit the file")
    return SafeEntry(str(dtype), shape, data + begin, data + end)


def _not_safetensors(path: Path, why: str) -> InputError:
    return InputError(f"Cannot open {path.name}: it is not a readable .safetensors file ({why}).")


def _safe_dtype_name(dtype: str) -> str:
    torch_dtype = _SAFE_DTYPES.get(dtype, (None, 0))[0]
    return str(torch_dtype).removeprefix("torch.") if torch_dtype is not None else dtype


def _safe_is_float(dtype: str) -> bool:
    torch_dtype = _SAFE_DTYPES.get(dtype, (None, 0))[0]
    return torch_dtype is not None and torch_dtype.is_floating_point


def _safe_chunks(path: Path, entry: SafeEntry, size: int) -> Iterator[np.ndarray]:
    """Positioned reads of ``size`` elements at a time, converted to float64."""
    torch_dtype, width = _SAFE_DTYPES[entry.dtype]
    assert torch_dtype is not None
    with open(path, "rb") as fh:
        fh.seek(entry.begin)
        for offset in range(entry.begin, entry.end, size * width):
            raw = bytearray(min(size * width, entry.end - offset))
            if fh.readinto(raw) != len(raw):
                raise InputError(f"{path.name} is cut short inside tensor data; copy it again.")
            yield torch.frombuffer(raw, dtype=torch_dtype).to(torch.float64).numpy()


def check_given(values: list[str]) -> None:
    """Refuse no value, a glob that matches nothing or a path that is not a file."""
    if not values:
        raise InputError("Give checkpoint files (paths or a glob such as 'ckpts/step*.pt').")
    for value in values:
        if set(value) & set("*?["):
            if not glob.glob(value):
                raise InputError(f"No checkpoint file matches {value!r}.")
        elif not Path(value).is_file():
            raise InputError(f"Checkpoint {value}: no such file.")


def open_weights(path: Path) -> WeightFile:
    """A :class:`WeightFile` (raises :class:`InputError` if the file cannot be read)."""
    if not path.is_file():
        raise InputError(f"Checkpoint {path}: no such file.")
    return WeightFile(path)
