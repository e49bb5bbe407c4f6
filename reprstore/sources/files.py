"""Read tensor files row block by row block: ``.npy``, ``.npz``, ``.pt``, ``.safetensors``.

Used by ``reprstore import`` and by extraction's tensor-file data source. No reader holds
a whole file in memory: ``.npy`` is read with positioned reads into one block buffer,
``.npz`` members are streamed from the zip archive, ``.pt`` files are memory-mapped by
``torch.load(mmap=True)`` and ``.safetensors`` are sliced lazily. torch is imported only
for ``.pt`` and bfloat16 safetensors.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reprstore.errors import InputError

TENSOR_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")


@dataclass
class TensorFile:
    """One tensor inside a file; rows (axis 0) are samples.

    ``read(start, stop)`` returns rows as a numpy array (bfloat16 converted to float32).
    """

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: str
    read: Callable[[int, int], np.ndarray]

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def blocks(self, rows: int, start: int = 0) -> Iterator[np.ndarray]:
        """Rows ``start:`` in blocks of at most ``rows``."""
        for lo in range(start, self.n_rows, rows):
            yield self.read(lo, min(lo + rows, self.n_rows))


def open_tensor_files(path: str | os.PathLike[str], key: str | None = None) -> list[TensorFile]:
    """Every tensor in ``path`` (or just ``key``), each as a :class:`TensorFile`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No such file: {path}.")
    suffix = path.suffix.lower()
    readers = {
        ".npy": _open_npy,
        ".npz": _open_npz,
        ".pt": _open_pt,
        ".pth": _open_pt,
        ".safetensors": _open_safetensors,
    }
    if suffix not in readers:
        raise InputError(
            f"{path.name}: unsupported file type {suffix or '(none)'}. "
            f"Expected one of {', '.join(TENSOR_SUFFIXES)}."
        )
    try:
        tensors = readers[suffix](path)
    except InputError:
        raise
    except Exception as err:  # corrupt or foreign files raise anything
        text = str(err)
        if starts_like(path, suffix) and ("weights only" in text.lower() or "weights_only" in text):
            raise InputError(
                f"{path.name} holds pickled Python objects, not only tensors (refused: it is "
                "loaded with weights_only=True, as code in a pickle could run). Save plain "
                "tensors (torch.save(tensor)) or a .safetensors file."
            ) from None
        raise unreadable_file(path, suffix) from err
    if not tensors:
        raise InputError(f"{path.name} holds no numeric array.")
    if key is not None:
        chosen = [t for t in tensors if t.name == key]
        if not chosen:
            names = ", ".join(t.name for t in tensors)
            raise InputError(f"{path.name} has no tensor {key!r}. Tensors: {names}.")
        return chosen
    return tensors


#: What each suffix should hold, for the error about a file that does not.
_PRODUCERS = {
    ".npy": "the output of numpy.save", ".npz": "a numpy.savez archive",
    ".pt": "the output of torch.save", ".pth": "the output of torch.save",
    ".safetensors": "a safetensors file",
}  # fmt: skip


def unreadable_file(path: Path, suffix: str) -> InputError:
    """The error for a file that does not read as its suffix says.

    It names the file (and a link's target) and what the file is not, never the library's
    message: those quote the file's first bytes, which may be anyone's text.
    """
    where = str(path)
    if path.is_symlink():
        where += f" (a symbolic link to {os.readlink(path)})"
    if starts_like(path, suffix):
        return InputError(
            f"{where} is not a readable {suffix} file: it starts like one but cannot be read "
            "(damaged or cut short); save or copy it again."
        )
    return InputError(
        f"{where} is not a readable {suffix} file: it holds {content_kind(path)}, not "
        f"{_PRODUCERS.get(suffix, 'an array file')}."
    )


def _head(path: Path, size: int = 512) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def starts_like(path: Path, suffix: str) -> bool:
    """Whether the first bytes are the magic of the format ``suffix`` names."""
    head = _head(path, 16)
    if suffix == ".npy":
        return head.startswith(b"\x93NUMPY")
    if suffix in (".npz", ".pt", ".pth"):
        return head.startswith(b"PK\x03\x04") or (suffix != ".npz" and head[:1] == b"\x80")
    if suffix == ".safetensors":
        return len(head) > 8 and head[8:9] == b"{"
    return False


def content_kind(path: Path) -> str:
    """'nothing', 'text', 'a zip archive' or 'other binary data': never the bytes."""
    head = _head(path)
    if not head:
        return "nothing (it is empty)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive of other files"
    whole = len(head) < 512  # else a character may be cut at the end: leave 3 bytes out
    text = (head if whole else head[:-3]).decode("utf-8", errors="replace")
    if "\ufffd" not in text and all(c.isprintable() or c in "\n\r\t" for c in text):
        return "text"
    return "other binary data"


def _check_numeric(path: Path, name: str, dtype: Any, shape: tuple[int, ...]) -> None:
    kind = np.dtype(dtype).kind if not str(dtype).startswith("bfloat") else "f"
    if kind not in "fiub":
        raise InputError(f"{path.name}:{name} has dtype {dtype}; expected numbers.")
    if len(shape) < 1:
        raise InputError(f"{path.name}:{name} is a scalar, not an array of rows.")


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), fortran, dtype


def _open_npy(path: Path) -> list[TensorFile]:
    """Positioned reads into a block buffer, not a memory map: the touched pages of a map
    count as resident memory (importing a 3 GB file peaked at 3 GB RSS that way)."""
    with open(path, "rb") as fh:
        shape, fortran, dtype = _read_npy_header(fh)
        offset = fh.tell()
    _check_numeric(path, path.stem, dtype, shape)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size
    if have < need:
        raise InputError(
            f"{path.name} is truncated: its header announces {shape} {dtype} ({need} bytes), "
            f"the file has {have} bytes. Save or copy it again."
        )
    if fortran and len(shape) > 1:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return [TensorFile(path, path.stem, shape, str(dtype), lambda a, b: arr[a:b])]
    row_items = int(np.prod(shape[1:], dtype=np.int64))

    def read(start: int, stop: int) -> np.ndarray:
        with open(path, "rb") as fh:
            fh.seek(offset + start * row_items * dtype.itemsize)
            rows = np.fromfile(fh, dtype=dtype, count=(stop - start) * row_items)
        return rows.reshape((stop - start, *shape[1:]))

    return [TensorFile(path, path.stem, shape, str(dtype), read)]


def _npz_member_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zf.open(member) as fh:
        shape, fortran, dtype = _read_npy_header(fh)
    return shape, dtype, fortran


def _open_npz(path: Path) -> list[TensorFile]:
    zf = zipfile.ZipFile(path)
    out = []
    for member in zf.namelist():
        if not member.endswith(".npy"):
            continue
        shape, dtype, fortran = _npz_member_header(zf, member)
        name = member[: -len(".npy")]
        _check_numeric(path, name, dtype, shape)
        if fortran and len(shape) > 1:
            raise InputError(f"{path.name}:{name} is Fortran-ordered; save it C-ordered.")
        out.append(TensorFile(path, name, shape, str(dtype), _npz_reader(path, member)))
    return out


def _npz_reader(path: Path, member: str) -> Callable[[int, int], np.ndarray]:
    """Rows from a zip member, read sequentially (zip streams cannot seek backwards cheaply)."""
    state: dict[str, Any] = {}

    def read(start: int, stop: int) -> np.ndarray:
        if state.get("next") != start:
            _reopen(start)
        fh, shape, dtype = state["fh"], state["shape"], state["dtype"]
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        raw = fh.read((stop - start) * row_items * dtype.itemsize)
        state["next"] = stop
        return np.frombuffer(raw, dtype=dtype).reshape((stop - start, *shape[1:]))

    def _reopen(start: int) -> None:
        if "fh" in state:
            state["fh"].close()
            state["zf"].close()
        zf = zipfile.ZipFile(path)
        fh = zf.open(member)
        shape, _, dtype = _read_npy_header(fh)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        remaining = start * row_bytes
        while remaining:
            remaining -= len(fh.read(min(remaining, 2**24)))
        state.update(zf=zf, fh=fh, shape=tuple(shape), dtype=dtype, next=start)

    return read


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    array: np.ndarray = tensor.detach().cpu().numpy()  # ``tensor`` is untyped (Any)
    return array


def _open_pt(path: Path) -> list[TensorFile]:
    import torch

    with warnings.catch_warnings():  # one error line (open_tensor_files'), no warning
        warnings.simplefilter("ignore")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    items = obj.items() if isinstance(obj, dict) else [(path.stem, obj)]
    out = []
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            continue
        shape = tuple(tensor.shape)
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.is_floating_point() or dtype.startswith(("int", "uint", "bool")):
            _check_numeric(path, str(name), "float32" if "bfloat" in dtype else dtype, shape)
            out.append(TensorFile(path, str(name), shape, dtype, _slicer(tensor, _torch_to_numpy)))
    if not out:
        raise InputError(f"{path.name} holds no tensor (found {type(obj).__name__}).")
    return out


def _slicer(tensor: Any, convert: Callable[[Any], np.ndarray]) -> Callable[[int, int], np.ndarray]:
    return lambda a, b: convert(tensor[a:b])


def _open_safetensors(path: Path) -> list[TensorFile]:
    from safetensors import safe_open

    out = []
    with safe_open(str(path), framework="numpy") as probe:
        names = list(probe.keys())
        meta = {n: probe.get_slice(n) for n in names}
        shapes = {n: tuple(meta[n].get_shape()) for n in names}
        dtypes = {n: str(meta[n].get_dtype()) for n in names}
    for name in names:
        dtype = _SAFETENSORS_DTYPES.get(dtypes[name], dtypes[name].lower())
        _check_numeric(path, name, "float32" if dtype == "bfloat16" else dtype, shapes[name])
        out.append(
            TensorFile(path, name, shapes[name], dtype, _safetensors_reader(path, name, dtype))
        )
    return out


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def _safetensors_reader(path: Path, name: str, dtype: str) -> Callable[[int, int], np.ndarray]:
    from safetensors import safe_open

    framework = "pt" if dtype == "bfloat16" else "numpy"

    def read(start: int, stop: int) -> np.ndarray:
        with safe_open(str(path), framework=framework) as fh:
            block = fh.get_slice(name)[start:stop]
        return _torch_to_numpy(block) if framework == "pt" else np.asarray(block)

    return read
