"""The extraction loop: forward passes on one thread, compression and writes on another.

The main thread runs the model under ``torch.inference_mode()``; hooks reduce each layer
output on the device and move the rows to the CPU at once. A window's rows go to a
single background writer thread through a bounded queue (``queue_size`` windows), so
compression and disk I/O overlap the next forward passes and nothing accumulates beyond
the queue. The writer thread is one thread; the codecs it calls run single-threaded
there (numcodecs' Blosc uses no extra threads off the main thread), so it takes at most
one core besides torch's ``--threads``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from reprstore.capture.data import Batch, DataSource, Window
from reprstore.capture.hooks import (
    LayerPatterns,
    hooked,
    is_glob,
    layer_glob,
    module_names,
    output_leaves,
    parse_patterns,
    select_layers,
    split_element,
)
from reprstore.capture.reduce import (
    ATTENTION,
    attention_rows,
    check_reduction,
    is_attention_map,
    reduce_output,
    reduction_name,
)
from reprstore.capture.sink import LayerOutput, LayerSink, ProgressCallback
from reprstore.errors import InputError, ReprstoreError

AUTOCAST = ("bf16",)
DEFAULT_QUEUE_SIZE = 4


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (default: the cores available)."""
    n = n or available_cores()
    if n < 1:
        raise InputError(f"--threads must be at least 1. Got {n} instead.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def autocast_context(
    device: torch.device, autocast: str | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to bfloat16 when asked for (``"bf16"``), else a no-op."""
    if autocast is None:
        return contextlib.nullcontext()
    if autocast not in AUTOCAST:
        raise InputError(f"Unknown --autocast {autocast!r}. Expected bf16.")
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise InputError(f"--autocast bf16 is not supported on {device.type}.")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def model_float_dtype(model: nn.Module) -> torch.dtype:
    """dtype of the first floating parameter (float32 for parameter-free models)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _move(value: Any, device: torch.device, float_dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        dtype = float_dtype if value.is_floating_point() else value.dtype
        return value.to(device=device, dtype=dtype, non_blocking=True)
    return value


def forward(
    model: nn.Module,
    batch: Batch,
    device: torch.device,
    extra_kwargs: Mapping[str, Any],
    float_dtype: torch.dtype | None = None,
) -> tuple[Any, torch.Tensor | None]:
    """Run one batch; return the model's output and the batch's mask on the device.

    ``float_dtype``: the model's :func:`model_float_dtype`, when the caller knows it.
    """
    float_dtype = float_dtype or model_float_dtype(model)
    args = tuple(_move(a, device, float_dtype) for a in batch.args)
    kwargs = {k: _move(v, device, float_dtype) for k, v in batch.kwargs.items()}
    mask = kwargs.get("attention_mask", _move(batch.mask, device, float_dtype))
    return model(*args, **kwargs, **extra_kwargs), mask


# -- probing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerListing:
    """One row of ``--list-layers``: a module (or returned tensor) and its output."""

    name: str
    kind: str  # module class name, or "output"
    shape: tuple[int, ...] | None  # batch output shape; None: did not run
    dtype: str | None


@dataclass(frozen=True)
class Plan:
    """The validated layers: what each produces and whether it is a module or an output."""

    layers: list[LayerOutput]
    modules: list[str]  # layers recorded by hooks
    outputs: list[str]  # layers taken from the model's return value


def _first_batch(source: DataSource) -> Batch:
    for window in source.windows(2, 0):
        for batch in window.batches:
            return batch
    raise InputError(f"{source.description} holds no samples.")


def _probe_outputs(
    model: nn.Module,
    batch: Batch,
    modules: list[str],
    device: torch.device,
    autocast: str | None,
    extra_kwargs: Mapping[str, Any],
) -> tuple[dict[str, list[torch.Tensor]], dict[str, torch.Tensor], torch.Tensor | None]:
    seen: dict[str, list[torch.Tensor]] = {}

    def on_output(name: str, tensor: torch.Tensor) -> None:
        seen.setdefault(name, []).append(tensor)

    with (
        torch.inference_mode(),
        autocast_context(device, autocast),
        hooked(model, modules, on_output),
    ):
        try:
            out, mask = forward(model, batch, device, extra_kwargs)
        except ReprstoreError:  # a hook's own message (an output element that is missing)
            raise
        except (RuntimeError, TypeError, ValueError, IndexError) as err:  # shapes, dtypes
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"The model cannot run on the data ({type(err).__name__}: {first}); check that "
                "--data fits the model's input (width, dtype, shape)."
            ) from None
    return seen, dict(output_leaves(out)), mask


def list_layers(
    model: nn.Module,
    source: DataSource,
    device: torch.device,
    *,
    autocast: str | None = None,
    extra_kwargs: Mapping[str, Any] | None = None,
) -> list[LayerListing]:
    """Every module (and returned tensor) with its output shape for one small batch."""
    names = module_names(model)
    kinds = dict(model.named_modules()) if names else {}
    seen, leaves, _ = _probe_outputs(
        model, _first_batch(source), names, device, autocast, extra_kwargs or {}
    )
    rows = []
    for name in names:
        t = seen.get(name, [None])[0]
        rows.append(
            LayerListing(
                name,
                type(kinds[name]).__name__,
                tuple(t.shape) if t is not None else None,
                str(t.dtype).removeprefix("torch.") if t is not None else None,
            )
        )
    for name, t in leaves.items():
        dtype = str(t.dtype).removeprefix("torch.")
        rows.append(LayerListing(name, "output", tuple(t.shape), dtype))
    return rows


def plan_layers(
    model: nn.Module,
    source: DataSource,
    patterns: LayerPatterns,
    reduce: str,
    device: torch.device,
    *,
    autocast: str | None = None,
    variable_tokens: bool = False,
    extra_kwargs: Mapping[str, Any] | None = None,
    attention_tokens: int | None = None,
) -> Plan:
    """Validate ``patterns`` and find each selected layer's stored shape from one batch.

    ``attention_tokens``: keep attention maps (batch, heads, T, T) as they are
    (:func:`~reprstore.capture.reduce.attention_rows`), padded to this many tokens
    (``0``: the probe batch's own T, for inputs of one fixed length); ``None``: no layer
    is taken for an attention map.

    Raises :class:`InputError` for a pattern that matches nothing (with the closest
    names), a module that does not run in ``forward`` or runs more than once per batch.
    """
    check_reduction(reduce)
    parsed = parse_patterns(patterns)
    names = module_names(model)
    static = _hook_names(parsed, names)
    batch = _first_batch(source)
    seen, leaves, mask = _probe_outputs(model, batch, static, device, autocast, extra_kwargs or {})
    chosen = select_layers(parsed, names + [n for n in leaves if n not in names])
    explicit = _explicit_names(parsed)
    layers, modules, outputs = [], [], []
    for name in chosen:
        if name in leaves and name not in names:
            tensor = leaves[name]
            outputs.append(name)
        elif split_element(name)[0] in leaves and split_element(name)[0] not in names:
            raise InputError(
                f"Layer {name!r}: ':N' picks an element of a module's output; "
                f"{split_element(name)[0]} is a tensor the model returns."
            )
        else:
            calls = seen.get(name, [])
            if not calls and not explicit(name):
                continue  # a glob also matched a module that forward does not use
            if not calls:
                raise InputError(f"Layer {name!r} did not run in the model's forward pass.")
            if len(calls) > 1:
                raise InputError(
                    f"Layer {name!r} runs {len(calls)} times per forward pass (a shared "
                    "module); choose modules that run once."
                )
            tensor = calls[0]
            modules.append(name)
        tokens = None
        if attention_tokens is not None and is_attention_map(tensor):
            tokens = max(attention_tokens, int(tensor.shape[-1]))
        layers.append(layer_output(name, tensor, reduce, mask, variable_tokens, tokens))
    if not layers:
        raise InputError(f"No selected layer ran in the model's forward pass ({patterns}).")
    if attention_tokens is not None and not any(lay.reduction == ATTENTION for lay in layers):
        raise InputError(
            "--attentions: no selected layer gives attention maps (batch, heads, tokens, "
            "tokens). Select attentions.* (hf: models) or a module's weights element, e.g. "
            "'encoder.layer.*.attention.self:1'."
        )
    return Plan(layers, modules, outputs)


def _hook_names(parsed: Any, names: list[str]) -> list[str]:
    """The module layers the patterns name, with their ``:N`` element suffixes."""
    if callable(parsed):
        return [n for n in names if parsed(n)]
    split = [split_element(p) for p in parsed]
    found = [
        n if index is None else f"{n}:{index}"
        for n in names
        for base, index in split
        if layer_glob(base).fullmatch(n)
    ]
    return list(dict.fromkeys(found))


def _explicit_names(parsed: Any) -> Callable[[str], bool]:
    """Whether a layer was named without wildcards (it must then run)."""
    if callable(parsed):
        return lambda name: False
    names = {p for p in parsed if not is_glob(p)}
    return lambda name: name in names


def layer_output(
    name: str,
    tensor: torch.Tensor,
    reduce: str,
    mask: torch.Tensor | None,
    variable_tokens: bool,
    attention_tokens: int | None = None,
) -> LayerOutput:
    """What layer ``name`` stores, from its output for the probe batch; an attention map
    (``attention_tokens`` given) keeps its heads, padded to that many tokens."""
    if attention_tokens is not None:
        heads, t = int(tensor.shape[1]), attention_tokens
        return LayerOutput(
            layer=name,
            original_shape=(heads, t, t),
            reduction=ATTENTION,
            n_features=heads * t * t,
            source_dtype=str(tensor.dtype).removeprefix("torch."),
        )
    per_sample: tuple[int | None, ...] = tuple(int(s) for s in tensor.shape[1:])
    rows = reduce_output(tensor.float(), reduce, mask)
    is_tokens = mask is not None and tensor.ndim == 3 and tensor.shape[:2] == mask.shape
    if variable_tokens and is_tokens:
        per_sample = (None, *per_sample[1:])
    return LayerOutput(
        layer=name,
        original_shape=per_sample,
        reduction=reduction_name(tuple(tensor.shape[1:]), reduce),
        n_features=int(rows.shape[1]),
        source_dtype=str(tensor.dtype).removeprefix("torch."),
    )


# -- the loop --------------------------------------------------------------------------
class Collector:
    """Turns hooked outputs into per-layer row blocks for one window."""

    def __init__(self, layers: list[LayerOutput], reduce: str) -> None:
        self.layers = {lay.layer: lay for lay in layers}
        self.reduce = reduce
        self.mask: torch.Tensor | None = None
        self.window: Window | None = None
        self.batch: Batch | None = None
        self.blocks: dict[str, np.ndarray] = {}
        self.fired: set[str] = set()

    def begin_window(self, window: Window) -> None:
        self.window, self.blocks = window, {}

    def begin_batch(self, batch: Batch, mask: torch.Tensor | None) -> None:
        self.batch, self.mask, self.fired = batch, mask, set()

    def on_output(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.fired:
            raise InputError(f"Layer {name!r} ran twice in one forward pass (a shared module).")
        self.fired.add(name)
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        layer = self.layers[name]
        if layer.reduction == ATTENTION:
            tokens = layer.original_shape[-1]
            assert tokens is not None
            rows = attention_rows(tensor, self.mask, tokens, name).to("cpu").numpy()
        else:
            rows = reduce_output(tensor, self.reduce, self.mask).to("cpu").numpy()
        assert self.window is not None and self.batch is not None
        positions = self.batch.positions
        if (
            len(self.window.batches) == 1
            and (np.diff(positions) == 1).all()
            and (len(positions) == 0 or positions[0] == 0)
        ):  # the window's rows in order (a window of one length-sorted batch is not)
            self.blocks[name] = rows
            return
        if name not in self.blocks:
            n = self.window.stop - self.window.start
            self.blocks[name] = np.empty((n, rows.shape[1]), rows.dtype)
        self.blocks[name][positions] = rows

    def end_batch(self) -> None:
        missing = set(self.layers) - self.fired
        if missing:
            raise InputError(f"Layer {sorted(missing)[0]!r} produced no output for a batch.")

    def end_window(self) -> dict[str, np.ndarray]:
        blocks, self.blocks = self.blocks, {}
        return blocks


class BackgroundWriter:
    """One thread that feeds row blocks to the sinks through a bounded queue."""

    def __init__(self, sinks: Mapping[str, LayerSink], queue_size: int) -> None:
        if queue_size < 1:
            raise InputError(f"queue_size must be at least 1. Got {queue_size} instead.")
        self.sinks = sinks
        self.queue: queue.Queue[tuple[int, dict[str, np.ndarray]] | None] = queue.Queue(queue_size)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reprstore-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            start, blocks = item
            try:
                for layer, block in blocks.items():
                    self.sinks[layer].write_at(start, block)
            except BaseException as err:  # handed to the main thread
                self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, start: int, blocks: dict[str, np.ndarray]) -> None:
        """Queue one window's blocks; re-raises a writer error on the caller's thread."""
        while True:
            self._raise()
            try:
                self.queue.put((start, blocks), timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until everything queued is written."""
        while self.thread.is_alive():
            self._raise()
            try:
                self.queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.thread.join()
        self._raise()

    def stop(self) -> None:
        """Stop after the block being written; queued blocks are dropped."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        self.thread.join()


def run(
    model: nn.Module,
    source: DataSource,
    plan: Plan,
    reduce: str,
    sinks: Mapping[str, LayerSink],
    *,
    batch_size: int,
    device: torch.device,
    autocast: str | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    progress: ProgressCallback | None = None,
    extra_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Extract every row not yet stored; close the sinks on success, abort them on error.

    Starts at the window holding the smallest ``resumed_from`` of all sinks; each sink's
    ``write_at`` skips the rows it already has. Returns the first row computed.
    """
    start = min((s.resumed_from for s in sinks.values()), default=source.n_samples)
    collector = Collector([lay for lay in plan.layers if lay.layer in sinks], reduce)
    wanted_outputs = [name for name in plan.outputs if name in sinks]
    done = False
    writer: BackgroundWriter | None = None
    try:
        if start < source.n_samples:
            writer = BackgroundWriter(sinks, queue_size)
            with (
                torch.inference_mode(),
                autocast_context(device, autocast),
                hooked(model, [m for m in plan.modules if m in sinks], collector.on_output),
            ):
                float_dtype = model_float_dtype(model)
                for window in source.windows(batch_size, start):
                    _run_window(
                        model, window, collector, wanted_outputs, device, extra_kwargs, float_dtype
                    )
                    writer.put(window.start, collector.end_window())
                    if progress is not None:
                        progress(window.stop, source.n_samples, _bytes(sinks))
            writer.finish()
            source.verify()
        for sink in sinks.values():
            sink.close()
        done = True
    finally:
        if not done:
            if writer is not None:
                writer.stop()
            for sink in sinks.values():
                sink.abort()
    return start


def _run_window(
    model: nn.Module,
    window: Window,
    collector: Collector,
    outputs: list[str],
    device: torch.device,
    extra_kwargs: Mapping[str, Any] | None,
    float_dtype: torch.dtype | None = None,
) -> None:
    collector.begin_window(window)
    for batch in window.batches:
        out, _ = forward_with(collector, model, batch, device, extra_kwargs or {}, float_dtype)
        if outputs:
            leaves = dict(output_leaves(out))
            for name in outputs:
                collector.on_output(name, leaves[name].detach())
        collector.end_batch()


def forward_with(
    collector: Collector,
    model: nn.Module,
    batch: Batch,
    device: torch.device,
    extra_kwargs: Mapping[str, Any],
    float_dtype: torch.dtype | None = None,
) -> tuple[Any, torch.Tensor | None]:
    """Set the collector's batch context (its mask), then run the batch."""
    float_dtype = float_dtype or model_float_dtype(model)
    mask = batch.kwargs.get("attention_mask", batch.mask)
    collector.begin_batch(batch, _move(mask, device, float_dtype) if mask is not None else None)
    return forward(model, batch, device, extra_kwargs, float_dtype)


def _bytes(sinks: Mapping[str, LayerSink]) -> int:
    return sum(int(getattr(s, "bytes_written", 0)) for s in sinks.values())
