"""Record hooked layers of whatever batches pass through a model inside a ``with`` block.

For researchers who extract inside their own training or evaluation loops::

    with reprstore.recorder(store, model, "encoder.layer.*", name="bert", checkpoint="step100"):
        for batch in loader:
            model(**batch)

Each call of the model's ``forward`` inside the block appends its rows (in call order)
to one growing representation per layer; the sinks are opened on the first call, when
the output shapes are known. An ``attention_mask`` keyword argument of the call is used
by the ``mean``/``last``/``max`` reductions. Writes go through the same background
writer as ``extract``. The block's end completes the arrays; an error leaves them
incomplete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from reprstore.capture.data import Batch, Window
from reprstore.capture.hooks import LayerPatterns, hooked, module_names, select_layers
from reprstore.capture.reduce import check_reduction
from reprstore.capture.runner import (
    DEFAULT_QUEUE_SIZE,
    BackgroundWriter,
    Collector,
    Plan,
    layer_output,
)
from reprstore.capture.sink import LayerOutput, LayerSink
from reprstore.errors import InputError

OpenSinks = Callable[[list[LayerOutput]], dict[str, LayerSink]]
Finish = Callable[[int], None]


class Recorder:
    """Context manager behind :func:`reprstore.recorder` (store-agnostic).

    Parameters
    ----------
    model
        The module whose submodules are hooked; its own ``forward`` marks a batch.
    layers
        Names, globs or a predicate over the model's module paths.
    reduce
        Reduction for outputs of rank > 2 (see :mod:`reprstore.capture.reduce`).
    open_sinks
        Called once, on the first batch, with every layer's :class:`LayerOutput`.
    finish
        Called with the row count before the sinks are closed (writes the dataset).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerPatterns,
        *,
        reduce: str,
        open_sinks: OpenSinks,
        finish: Finish,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.model = model
        self.layers = select_layers(layers, module_names(model))
        self.reduce = check_reduction(reduce)
        self.open_sinks = open_sinks
        self.finish = finish
        self.queue_size = queue_size
        self.rows = 0
        self.sinks: dict[str, LayerSink] = {}
        self.writer: BackgroundWriter | None = None
        self._collector: Collector | None = None
        self._pending: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._in_forward = False
        self._stack: Any = None

    # -- hooks -----------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: Any, kwargs: Mapping[str, Any]) -> None:
        self._in_forward = True
        self._pending = {}
        mask = kwargs.get("attention_mask")
        self._mask = mask.detach() if isinstance(mask, torch.Tensor) else None
        if self._collector is not None:
            self._collector.begin_window(self._window(0))
            self._collector.begin_batch(self._batch(0), self._mask)

    def _on_output(self, name: str, tensor: torch.Tensor) -> None:
        if not self._in_forward:
            return
        if self._collector is not None:
            self._collector.on_output(name, tensor)
        else:
            self._pending[name] = tensor  # first batch only: shapes not known yet

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._in_forward:
            return
        self._in_forward = False
        with torch.no_grad():
            n = self._batch_rows()
            if self._collector is None:
                self._open(n)
                assert self._collector is not None
                self._collector.begin_window(self._window(n))
                self._collector.begin_batch(self._batch(n), self._mask)
                for name, tensor in self._pending.items():
                    self._collector.on_output(name, tensor)
                self._pending = {}
            self._collector.end_batch()
            assert self.writer is not None
            self.writer.put(self.rows, self._collector.end_window())
            self.rows += n

    def _batch_rows(self) -> int:
        if self._collector is None:
            sizes = {int(t.shape[0]) for t in self._pending.values()}
        else:
            sizes = {len(b) for b in self._collector.blocks.values()}
        if len(sizes) != 1:
            raise InputError(
                f"Recorded layers gave different batch sizes {sorted(sizes)} "
                "(or none ran); record layers that map samples to rows."
            )
        return sizes.pop()

    @staticmethod
    def _window(n: int) -> Window:
        return Window(0, n, [Batch(np.arange(n))])

    @staticmethod
    def _batch(n: int) -> Batch:
        return Batch(np.arange(n))

    def _open(self, n: int) -> None:
        missing = [name for name in self.layers if name not in self._pending]
        if missing:
            raise InputError(f"Layer {missing[0]!r} did not run in the model's forward pass.")
        outputs = [
            layer_output(name, self._pending[name], self.reduce, self._mask, True)
            for name in self.layers
        ]
        self.plan = Plan(outputs, list(self.layers), [])
        self.sinks = self.open_sinks(outputs)
        self.writer = BackgroundWriter(self.sinks, self.queue_size)
        self._collector = Collector(outputs, self.reduce)

    # -- context -----------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        import contextlib

        self._stack = contextlib.ExitStack()
        try:
            handle_pre = self.model.register_forward_pre_hook(self._pre, with_kwargs=True)
            self._stack.callback(handle_pre.remove)
            handle_post = self.model.register_forward_hook(self._post)
            self._stack.callback(handle_post.remove)
            self._stack.enter_context(hooked(self.model, self.layers, self._on_output))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self._stack.close()  # removes every hook first
        finally:
            self._complete(ok=exc_type is None)

    def _complete(self, ok: bool) -> None:
        done = False
        try:
            if ok and self.writer is None:
                raise InputError("No batch ran through the model inside the recorder block.")
            if ok and self.writer is not None:
                self.writer.finish()
            if ok:
                self.finish(self.rows)
                for sink in self.sinks.values():
                    sink.close()
                done = True
        finally:
            if not done:
                if self.writer is not None:
                    self.writer.stop()
                for sink in self.sinks.values():
                    sink.abort()
