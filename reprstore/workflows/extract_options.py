"""Everything an extraction is asked, as one frozen object checked when it is made: the
model, data and layers, where the rows go (name, seed, checkpoints, dataset), how they
are reduced and stored, and how the forward pass runs. The command line and
:func:`reprstore.extract` build the same :class:`ExtractOptions`, so every option is
checked once, in one place, before any model is loaded, data read or store opened.

torch is imported inside :meth:`ExtractOptions.__post_init__` (the device and autocast
checks need it), so importing this module stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from typing import TYPE_CHECKING, Any

from reprstore.errors import InputError
from reprstore.keys import substitute_fields, validate_name

if TYPE_CHECKING:
    import numpy as np
    import torch

    from reprstore.capture.data import DataSource
    from reprstore.capture.models import Checkpoint
    from reprstore.store import Encoding

ON_NONFINITE = ("error", "warn", "ignore")
"""What to do with NaN/Inf in the outputs (``ignore`` stores them without a count)."""


@dataclass(frozen=True, eq=False)
class ExtractOptions:
    """One extraction request, checked when made, so that a bad option fails in one line
    before a model is loaded or a store touched (see :func:`reprstore.extract` for each
    option's meaning).

    ``layers`` (comma-separated, a list, or both) and ``checkpoint`` (one path or glob, or
    several) are kept as tuples of str; the names (``name``, ``seed``, ``dataset``,
    ``checkpoint_label``) in NFC. What the checks produce is kept, so nothing is parsed
    twice: :attr:`encoding` (storage dtype and rounding), :attr:`torch_device` and
    :attr:`checkpoints` (the files the paths and globs name, with their labels). Options
    compare by identity (``ids`` and ``meta`` may hold arrays).
    """

    model: str
    data: str | DataSource
    layers: tuple[str, ...]
    name: str
    seed: str = "0"
    checkpoint: tuple[str, ...] = ()
    checkpoint_label: str | None = None
    dataset: str = "default"
    reduce: str = "mean"
    dtype: str = "float16"
    keep_bits: int | None = None
    batch_size: int = 32
    device: str = "cpu"
    threads: int | None = None
    max_length: int | None = None
    data_key: str | None = None
    ids: np.ndarray | str | os.PathLike[str] | None = None
    meta: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None
    autocast: str | None = None
    on_nonfinite: str = "warn"
    overwrite: bool = False
    trust_checkpoint: bool = False
    queue_size: int = 4
    layer_name: str | None = None
    attentions: bool = False
    #: the storage encoding of ``dtype`` and ``keep_bits``
    encoding: Encoding = field(init=False, repr=False)
    #: the device ``device`` names, checked to be available here
    torch_device: torch.device = field(init=False, repr=False)
    #: the checkpoints to extract in turn (one labelled ``final`` without ``checkpoint``)
    checkpoints: tuple[Checkpoint, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from reprstore.capture.hooks import parse_patterns
        from reprstore.capture.models import expand_checkpoints, parse_device
        from reprstore.capture.reduce import check_reduction
        from reprstore.capture.runner import autocast_context
        from reprstore.store import Encoding

        def keep(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        check_reduction(self.reduce)
        if self.layer_name is not None:  # the template's fields, before any model is loaded
            fields = {"layer": "layer", "reduce": self.reduce}
            substitute_fields(self.layer_name, fields, "--layer-name")
        keep("encoding", Encoding(self.dtype, self.keep_bits))
        keep("name", validate_name(self.name, "model name"))  # NFC
        keep("seed", validate_name(self.seed, "seed"))
        keep("dataset", validate_name(self.dataset, "dataset"))
        if self.checkpoint_label is not None:
            keep("checkpoint_label", validate_name(self.checkpoint_label, "checkpoint label"))
        _at_least_one(self.batch_size, "--batch-size")
        if self.on_nonfinite not in ON_NONFINITE:
            raise InputError(
                f"Unknown --on-nonfinite {self.on_nonfinite!r}. Expected error, warn or ignore."
            )
        keep("torch_device", parse_device(self.device))
        autocast_context(self.torch_device, self.autocast)  # validates
        _at_least_one(self.threads, "--threads")
        _at_least_one(self.max_length, "--max-length")
        _at_least_one(self.queue_size, "queue_size")
        given = self.layers  # "a.*,b", a list, or both: joined, split and stripped
        patterns = parse_patterns(given if callable(given) else ",".join(_strings(given)))
        if callable(patterns):
            raise InputError(
                "layers: give module paths or globs (a comma-separated string or a list); "
                "a callable selects layers only in reprstore.recorder."
            )
        keep("layers", tuple(patterns))  # none given: refused
        if isinstance(self.data, os.PathLike):
            keep("data", os.fspath(self.data))
        keep("checkpoint", _strings(self.checkpoint))
        expanded = expand_checkpoints(list(self.checkpoint), self.checkpoint_label)
        keep("checkpoints", tuple(
            replace(ckpt, label=validate_name(ckpt.label, "checkpoint label")) for ckpt in expanded
        ))  # fmt: skip


def _at_least_one(value: int | None, option: str) -> None:
    """A count option (``None``: not given) must be an integer ≥ 1."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, Integral) or value < 1
    ):
        raise InputError(f"{option} must be at least 1. Got {value!r} instead.")


def _strings(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> tuple[str, ...]:
    """One path/pattern or several, as a tuple of str (``None``: none)."""
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    return tuple(os.fspath(v) for v in value)
