"""Checkpoint files read one tensor (and one slice of it) at a time, for weight drift.

``.pt``/``.pth``/``.bin``/``.ckpt`` state dicts load with ``weights_only=True`` and
``mmap=True`` (only the pages of the tensor being read are touched); ``.safetensors``
files open lazily and hand out one tensor at a time. Values leave this module as float64
numpy slices of at most ``CHUNK`` elements, so the drift math stays in numpy.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprstore.errors import InputError
from reprstore.extract.models import Checkpoint, expand_checkpoints, read_state_dict

#: Elements per float64 slice handed to the math (32 MiB).
CHUNK = 1 << 22


class WeightFile:
    """One checkpoint's floating-point tensors, by name, read lazily.

    Parameters
    ----------
    path : Path
        A state-dict checkpoint or a ``.safetensors`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        self._tensors: dict[str, Any] | None = None
        self._safe: Any = None
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                self._safe = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as err:
                first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                raise InputError(f"Cannot open {path.name}: {first}") from err
        else:
            try:
                self._tensors = read_state_dict(path)
            except InputError as err:
                if "weights_only" not in str(err):
                    raise
                raise InputError(
                    f"Checkpoint {path.name} holds pickled Python objects, and drift loads "
                    "checkpoints with weights_only=True only: save model.state_dict() instead."
                ) from None
            except Exception as err:  # read_state_dict's non-zip fallback load is unguarded
                first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                raise InputError(f"Cannot load checkpoint {path.name}: {first}") from err

    def __enter__(self) -> WeightFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tensors = None
        self._stack.close()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every floating-point tensor (integer buffers are left out)."""
        out: dict[str, tuple[int, ...]] = {}
        if self._safe is not None:
            for name in self._safe.keys():  # noqa: SIM118 (safe_open has no __iter__)
                piece = self._safe.get_slice(name)
                if _is_float(str(piece.get_dtype())):
                    out[name] = tuple(piece.get_shape())
            return out
        assert self._tensors is not None
        for name, tensor in self._tensors.items():
            if tensor.is_floating_point():
                out[name] = tuple(tensor.shape)
        return out

    def skipped(self) -> list[str]:
        """Names of the tensors that are not floating point (step counters, int buffers)."""
        names = self._safe.keys() if self._safe is not None else list(self._tensors or {})
        return [n for n in names if n not in self.shapes()]

    def chunks(self, name: str, size: int | None = None) -> Iterator[np.ndarray]:
        """The tensor ``name`` flattened, as float64 slices of at most ``size`` elements."""
        size = size or CHUNK
        tensor = self._safe.get_tensor(name) if self._safe is not None else self._tensors[name]  # type: ignore[index]
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), size):
            yield flat[start : start + size].to(torch.float64).numpy()


def _is_float(dtype: str) -> bool:
    return dtype.upper() in {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}


def checkpoint_files(values: list[str]) -> list[Checkpoint]:
    """Checkpoint files from paths and globs (natural order), labelled by file stem."""
    if not values:
        raise InputError("Give checkpoint files (paths or a glob such as 'ckpts/step*.pt').")
    for value in values:
        if set(value) & set("*?["):
            if not glob.glob(value):
                raise InputError(f"No checkpoint file matches {value!r}.")
        elif not Path(value).is_file():
            raise InputError(f"Checkpoint {value}: no such file.")
    return expand_checkpoints(values)


def open_weights(path: Path) -> WeightFile:
    """A :class:`WeightFile` (raises :class:`InputError` if the file cannot be read)."""
    if not path.is_file():
        raise InputError(f"Checkpoint {path}: no such file.")
    return WeightFile(path)
