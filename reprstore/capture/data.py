"""Data sources: what the model is run on, in a fixed order, in windows of batches.

Every source knows its sample count and a *fingerprint* of its samples (sha256 of the
input data in order: array bytes with dtype and shape, or the lines of a text file), so
a later extraction into the same dataset can check that it sees the same samples in the
same order. Sources hand out :class:`Window` objects: a run of consecutive rows split
into batches. For text a window holds ``WINDOW_BATCHES`` batches whose samples are
grouped by token length (less padding, ~1.8× faster on MiniLM); the runner puts the
rows back in their original order before they are written. Windows start at multiples
of the window size, so a resumed run forms exactly the batches an uninterrupted run
forms and stores identical values.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reprstore.capture.models import import_callable
from reprstore.errors import DatasetMismatchError, InputError

WINDOW_BATCHES = 16
HASH_BLOCK_BYTES = 2**24
TEXT_SUFFIXES = (".txt", ".text", ".lines")


class RowArray(Protocol):
    """A row-addressable array: ``reprstore.sources.files.TensorFile`` or a zarr array adapter."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> str: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass
class Batch:
    """One forward pass: inputs plus where its rows go inside the window."""

    positions: np.ndarray  # (batch,) int64 row offsets within the window
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    mask: torch.Tensor | None = None  # (batch, tokens) attention mask, 1 = real token

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class Window:
    """Rows ``start:stop`` of the dataset, as batches."""

    start: int
    stop: int
    batches: list[Batch]


class DataSource(ABC):
    """A fixed, ordered list of samples."""

    n_samples: int
    description: str

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 of the samples, in order."""

    @abstractmethod
    def windows(self, batch_size: int, start: int = 0) -> Iterator[Window]:
        """Windows covering rows from the window holding ``start`` to the end."""

    def settings(self) -> dict[str, Any]:
        """Preprocessing choices that change the model input (recorded, checked on resume)."""
        return {}

    def verify(self) -> None:  # noqa: B027 - optional hook, most sources need nothing
        """Called after a full pass: raise if the samples changed while running."""


# -- tensors -------------------------------------------------------------------------
class ArraySource(DataSource):
    """Rows of one or more arrays with the same row count.

    One array is the model's positional input; several are passed as keyword arguments
    by name (``input_ids``, ``attention_mask`` …).
    """

    def __init__(self, arrays: Mapping[str, RowArray], description: str) -> None:
        if not arrays:
            raise InputError(f"{description} holds no array.")
        counts = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(counts.values())) != 1:
            raise InputError(f"{description}: arrays have different row counts {counts}.")
        self.arrays = dict(arrays)
        self.n_samples = next(iter(counts.values()))
        self.description = description

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"arrays")
        for name in sorted(self.arrays):
            arr = self.arrays[name]
            if len(self.arrays) > 1:
                digest.update(name.encode())
            digest.update(f"|{arr.dtype}|{tuple(arr.shape[1:])}|".encode())
            row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * 8)
            step = max(1, HASH_BLOCK_BYTES // row_bytes)
            for lo in range(0, self.n_samples, step):
                block = np.ascontiguousarray(arr.read(lo, min(lo + step, self.n_samples)))
                digest.update(block.reshape(-1).view(np.uint8).data)  # in place, no copy
        return digest.hexdigest()

    def windows(self, batch_size: int, start: int = 0) -> Iterator[Window]:
        first = (start // batch_size) * batch_size
        for lo in range(first, self.n_samples, batch_size):
            hi = min(lo + batch_size, self.n_samples)
            tensors = {n: _as_tensor(a.read(lo, hi)) for n, a in self.arrays.items()}
            batch = Batch(np.arange(hi - lo))
            if len(tensors) == 1:
                batch.args = (next(iter(tensors.values())),)
            else:
                batch.kwargs = tensors
                batch.mask = tensors.get("attention_mask")
            yield Window(lo, hi, [batch])


def _as_tensor(block: Any) -> torch.Tensor:
    if isinstance(block, torch.Tensor):
        return block
    array = np.asarray(block)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array)  # memory-mapped rows are read-only; torch wants writable
    return torch.from_numpy(array)


# -- text ----------------------------------------------------------------------------
class TextSource(DataSource):
    """One sample per line, tokenized with the model's tokenizer.

    Parameters
    ----------
    lines
        The samples, in order.
    tokenizer
        A transformers tokenizer.
    max_length
        Truncate to this many tokens (default: the tokenizer's limit, at most 512).
    fixed_length
        Pad every sample to ``max_length`` and keep the original order (needed by the
        ``flatten`` reduction); otherwise batches are grouped by length.
    """

    def __init__(
        self,
        lines: Sequence[str],
        tokenizer: Any,
        *,
        max_length: int | None = None,
        fixed_length: bool = False,
        description: str = "text",
    ) -> None:
        self.lines = list(lines)
        self.tokenizer = tokenizer
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        self.max_length = int(max_length or min(int(limit), 512))
        if self.max_length < 1:
            raise InputError(f"--max-length must be at least 1. Got {self.max_length} instead.")
        self.fixed_length = fixed_length
        self.n_samples = len(self.lines)
        self.description = description

    @classmethod
    def from_file(cls, path: Path, tokenizer: Any, **kwargs: Any) -> TextSource:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path.name} is not UTF-8 text: {err}") from err
        return cls(text.splitlines(), tokenizer, description=str(path), **kwargs)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"text")
        for line in self.lines:
            digest.update(line.encode("utf-8") + b"\n")
        return digest.hexdigest()

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "padding": self._padding()}

    def _padding(self) -> str:
        return "max_length" if self.fixed_length else "longest"

    def longest(self) -> int:
        """Tokens of the longest sample after truncation: the one token count attention
        maps of the whole dataset are padded to (``max_length`` when padding to it)."""
        if self.fixed_length:
            return self.max_length
        most = 1
        for lo in range(0, self.n_samples, 1024):
            ids = self.tokenizer(
                self.lines[lo : lo + 1024], truncation=True, max_length=self.max_length
            )["input_ids"]
            most = max([most, *(len(t) for t in ids)])
        return most

    def windows(self, batch_size: int, start: int = 0) -> Iterator[Window]:
        size = batch_size if self.fixed_length else batch_size * WINDOW_BATCHES
        for lo in range((start // size) * size, self.n_samples, size):
            hi = min(lo + size, self.n_samples)
            yield Window(lo, hi, self._batches(self.lines[lo:hi], batch_size))

    def _batches(self, texts: list[str], batch_size: int) -> list[Batch]:
        if self.fixed_length:
            order = np.arange(len(texts))
        else:
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
            order = np.argsort([len(t) for t in ids], kind="stable")
        out = []
        for lo in range(0, len(texts), batch_size):
            positions = order[lo : lo + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in positions],
                padding=self._padding(),
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            kwargs = dict(encoded)
            out.append(Batch(positions, kwargs=kwargs, mask=kwargs.get("attention_mask")))
        return out


# -- callables -----------------------------------------------------------------------
class CallableSource(DataSource):
    """``package.module:callable`` returning an iterable of batches.

    A batch is a tensor/array (the model input), a mapping (keyword arguments, e.g.
    ``input_ids`` and ``attention_mask``) or a tuple/list whose first element is one of
    these (``(x, y)`` from a DataLoader). The callable is called once to count and
    fingerprint the samples and once per extraction pass; it must yield the same
    samples in the same order each time (checked: a changed pass is not completed).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.factory = import_callable(spec, "data")
        self.description = spec
        digest, count = hashlib.sha256(b"batches"), 0
        for batch in self._iterate():
            _hash_batch(digest, batch)
            count += len(batch)
        if count == 0:
            raise InputError(f"Data spec {spec} yielded no samples.")
        self.n_samples = count
        self._fingerprint = digest.hexdigest()
        self._running: Any = None

    def _iterate(self) -> Iterator[Batch]:
        try:
            iterable = self.factory()
            for item in iterable:
                yield _to_batch(item, self.spec)
        except InputError:
            raise
        except TypeError as err:
            raise InputError(f"Data spec {self.spec} did not give an iterable: {err}") from err

    def fingerprint(self) -> str:
        return self._fingerprint

    def windows(self, batch_size: int, start: int = 0) -> Iterator[Window]:
        self._running = hashlib.sha256(b"batches")
        lo = 0
        for batch in self._iterate():
            _hash_batch(self._running, batch)
            hi = lo + len(batch)
            if hi > start:
                yield Window(lo, hi, [batch])
            lo = hi
        self._rows_seen = lo

    def verify(self) -> None:
        if self._running is not None and (
            self._running.hexdigest() != self._fingerprint or self._rows_seen != self.n_samples
        ):
            raise DatasetMismatchError(
                f"Data spec {self.spec} yielded other samples on the second pass (shuffled or "
                "random?). Make it deterministic; the stored rows were left incomplete."
            )


def _to_batch(item: Any, spec: str) -> Batch:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, Mapping):
        kwargs = {k: _as_tensor(v) for k, v in item.items()}
        first = next((v for v in kwargs.values() if v.ndim > 0), None)
        if first is None:
            raise InputError(f"Data spec {spec} yielded a batch with no array.")
        return Batch(np.arange(first.shape[0]), kwargs=kwargs, mask=kwargs.get("attention_mask"))
    if isinstance(item, (torch.Tensor, np.ndarray)):
        tensor = _as_tensor(item)
        if tensor.ndim == 0:
            raise InputError(f"Data spec {spec} yielded a scalar; batches need a row axis.")
        return Batch(np.arange(tensor.shape[0]), args=(tensor,))
    raise InputError(
        f"Data spec {spec} yielded a {type(item).__name__}; expected a tensor, an array, "
        "a dict of them, or a tuple whose first element is one."
    )


def _hash_batch(digest: Any, batch: Batch) -> None:
    items = list(enumerate(batch.args)) + sorted(batch.kwargs.items())
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # the tensor's own bytes, hashed in place (no copy)
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)


def is_text_file(path: Path) -> bool:
    """Whether a data path is a text file of one sample per line."""
    return path.suffix.lower() in TEXT_SUFFIXES
