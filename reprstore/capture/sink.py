"""The small interface extraction writes to; the store side implements it elsewhere.

``extract`` never imports the store. The runner asks a :class:`SinkFactory` for one
:class:`LayerSink` per layer once it knows the layer's reduced output shape, then feeds
each sink row blocks in dataset order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: The reduction of attention maps kept per head, and the order of their per-sample axes
#: (``layout`` attribute): rows are (heads·T·T) in (head, query, key) order.
ATTENTION = "attention"
ATTENTION_LAYOUT = "heads,query,key"


@dataclass(frozen=True)
class LayerOutput:
    """What one layer hands back, per sample, and how it is stored.

    Attributes
    ----------
    layer
        Module path (``encoder.layer.3``) or output name (``hidden_states.3``).
    original_shape
        Per-sample output shape before reduction; ``None`` marks an axis whose length
        varies between batches (the token axis of padded text).
    reduction
        ``none`` for 2-D outputs, else the reduction applied (``mean``, ``flatten`` …).
    n_features
        Columns of the stored ``(n_samples, n_features)`` array.
    source_dtype
        dtype of the tensor the layer produced (``float32``, ``bfloat16`` …).
    """

    layer: str
    original_shape: tuple[int | None, ...]
    reduction: str
    n_features: int
    source_dtype: str


class LayerSink(Protocol):
    """Receives the rows of one layer in dataset order."""

    @property
    def resumed_from(self) -> int:
        """Rows already stored by an earlier, interrupted run (0 for a fresh one)."""
        ...

    def write_at(self, start: int, block: np.ndarray) -> None:
        """Rows ``start:start+len(block)`` of shape ``(n_rows, n_features)``."""
        ...

    def close(self) -> None:
        """All rows are written: mark the result complete."""
        ...

    def abort(self) -> None:
        """Stop without completing (what was written stays resumable)."""
        ...


SinkFactory = Callable[[list[LayerOutput]], dict[str, LayerSink]]
"""Opens one sink per layer, given every layer's :class:`LayerOutput`."""

ProgressCallback = Callable[[int, int, int], None]
"""``progress(rows_done, n_samples, bytes_written)``, called after every batch window."""
