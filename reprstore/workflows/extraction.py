"""Glue between extraction and the store: the ``extract`` and ``recorder`` entry points.

:mod:`reprstore.capture` runs models and writes row blocks to a small sink interface; this
module opens the store, checks the dataset, and hands the extractor store writers as
sinks. It is the one place both sides meet, used by the Python API and the CLI. torch
and zarr are imported inside the functions, so ``import reprstore`` stays light.

Decisions
---------
* ``reduce="mean"`` by default: masked token mean for sequences (sentence-transformers'
  pooling), global average pooling for images; the width stays the hidden size.
* ``threads``: torch gets the cores available unless told otherwise; the one background
  writer thread runs the codec single-threaded, so at most one more core is busy.
* ``queue_size=4`` windows between the forward passes and the writer.
* Fingerprints: the dataset records sha256 of the input samples (array bytes with dtype
  and shape, or the text lines) and refuses rows computed from other samples. Each
  representation records a ``source_fingerprint`` over the data fingerprint, the
  preprocessing (``max_length``, padding), the weights (checkpoint file sha256, or the
  parameters' bytes) and ``autocast``; a resume must match it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.errors import InputError
from reprstore.keys import ReprKey, substitute_fields, validate_name
from reprstore.workflows.extract_options import ExtractOptions

if TYPE_CHECKING:
    from reprstore.capture.data import DataSource
    from reprstore.capture.models import LoadedModel
    from reprstore.capture.runner import LayerListing
    from reprstore.capture.sink import LayerOutput, LayerSink
    from reprstore.store import ReprSettings, ReprWriter, Store

ExtractProgress = Callable[[int, int, int], None]
"""``progress(rows_done, n_samples, bytes_written)``; rows restart at 0 per checkpoint."""


@dataclass
class ExtractResult:
    """What one :func:`extract` call did."""

    written: list[ReprKey] = field(default_factory=list)
    skipped: list[ReprKey] = field(default_factory=list)  # already complete, same settings
    resumed_from: dict[str, int] = field(default_factory=dict)  # checkpoint → first row run
    n_samples: int = 0


class _WriterSink:
    """A :class:`ReprWriter` as an extraction sink, counting the bytes it stores."""

    def __init__(self, writer: ReprWriter) -> None:
        self.writer = writer
        self.row_bytes = writer.settings.n_features * writer.encoding.zarr_dtype.itemsize
        self.bytes_written = 0

    @property
    def resumed_from(self) -> int:
        return int(self.writer.resumed_from)

    def write_at(self, start: int, block: np.ndarray) -> None:
        before = self.writer.rows_accepted
        self.writer.write_at(start, block)
        self.bytes_written += (self.writer.rows_accepted - before) * self.row_bytes

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


# -- inputs ------------------------------------------------------------------------------
def open_data(
    spec: str | DataSource,
    model: LoadedModel,
    *,
    reduce: str = "mean",
    max_length: int | None = None,
    data_key: str | None = None,
) -> DataSource:
    """The data source a SPEC names (tensor file, zarr array, text file or callable)."""
    from reprstore.capture.data import ArraySource, CallableSource, DataSource, TextSource
    from reprstore.capture.models import load_tokenizer
    from reprstore.sources.files import open_tensor_files

    if isinstance(spec, DataSource):
        return spec
    path = Path(spec)
    if ":" in spec and not path.exists() and "://" not in spec:
        return CallableSource(spec)
    if path.suffix.lower() in (".txt", ".text", ".lines") and path.is_file():
        if max_length is not None and max_length < 1:
            raise InputError(f"--max-length must be at least 1. Got {max_length} instead.")
        return TextSource.from_file(
            path,
            load_tokenizer(model),
            max_length=max_length,
            fixed_length=reduce == "flatten",
        )
    if "://" in spec or path.is_dir() or spec.endswith(".zarr"):
        from reprstore.store.rows import open_zarr_rows

        return ArraySource({"input": open_zarr_rows(spec)}, spec)
    if not path.is_file():
        raise InputError(
            f"--data {spec}: no such file. Expected a .npy/.npz/.pt/.safetensors file, a zarr "
            "array, a .txt file (one sample a line) or package.module:callable."
        )
    tensors = open_tensor_files(path, data_key)
    return ArraySource({t.name: t for t in tensors}, str(path))


def _hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


# -- extract -------------------------------------------------------------------------------
def extract(
    store: str | os.PathLike[str] | Store,
    *,
    model: str | None = None,
    data: str | DataSource | None = None,
    layers: str | Sequence[str] | None = None,
    name: str | None = None,
    seed: str = "0",
    checkpoint: str | Sequence[str] | None = None,
    checkpoint_label: str | None = None,
    dataset: str = "default",
    reduce: str = "mean",
    dtype: str = "float16",
    keep_bits: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    threads: int | None = None,
    max_length: int | None = None,
    data_key: str | None = None,
    ids: np.ndarray | str | os.PathLike[str] | None = None,
    meta: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
    autocast: str | None = None,
    on_nonfinite: str = "warn",
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    queue_size: int = 4,
    progress: ExtractProgress | None = None,
    on_checkpoint: Callable[[str], None] | None = None,
    layer_name: str | None = None,
    attentions: bool = False,
    options: ExtractOptions | None = None,
) -> ExtractResult:
    """Run a model on a dataset and stream the chosen layers' outputs into a store.

    Every input is checked before anything is written (model, checkpoints, data, layers,
    dataset, existing arrays); the options themselves before any model is loaded
    (:class:`~reprstore.workflows.extract_options.ExtractOptions`). An interrupted run
    resumes when called again with the same arguments; complete arrays with the same
    settings are skipped.

    Parameters
    ----------
    store
        Store path/URL (created if missing) or an open :class:`~reprstore.store.Store`.
    model
        ``package.module:callable``, a TorchScript file, or ``hf:DIR``.
    data
        ``.npy/.npz/.pt/.safetensors`` (rows are samples), a zarr array, a ``.txt`` file
        (one sample a line; needs an ``hf:`` model), or ``package.module:callable``.
    layers
        Module paths or globs, comma-separated or a list (``encoder.layer.*``), or output
        names (``output``, ``hidden_states.3``).
    name, seed, checkpoint, checkpoint_label, dataset
        Where the rows go: ``reprs/<name>/<seed>/<checkpoint label>/<dataset>/<layer>``.
        ``checkpoint`` is one or more state_dict files or globs, each extracted in turn
        and labelled by its file name (``step1000.pt`` → ``step1000``).
    reduce
        ``mean`` (default), ``first``, ``last``, ``max`` or ``flatten`` for outputs with
        more than 2 dimensions; stored arrays are ``(n_samples, n_features)``.
    dtype, keep_bits
        Storage dtype (``float16`` default, ``float32``, ``bfloat16``) and optional
        mantissa rounding.
    batch_size, device, threads, autocast
        Forward-pass settings; ``autocast="bf16"`` runs the forward in bfloat16.
    max_length
        Token limit for text data.
    ids, meta
        Sample ids (array or file) and metadata columns (mapping or CSV), as for import.
    progress
        ``progress(rows_done, n_samples, bytes_written)`` after every window.
    on_checkpoint
        Called with each checkpoint label before it is extracted.
    layer_name
        Template of the stored layer names, with the fields ``{layer}`` (the module path)
        and ``{reduce}``: ``'{layer}.cls'`` with ``reduce="first"`` stores beside a
        ``mean`` extraction of the same layers. Default: the module path.
    attentions
        Keep attention maps: an ``hf:`` model runs with eager attention and
        ``output_attentions=True`` (its maps are the layers ``attentions.<i>``), and every
        selected layer that gives (batch, heads, T, T) — ``attentions.*`` or a module's
        weights element ``MODULE:N`` — is stored per head, ``(n_samples, heads·T·T)``,
        padded to the dataset's longest sample with zeros (reduction ``attention``,
        attribute ``layout="heads,query,key"``; see :mod:`reprstore.capture.reduce`).
    options
        Instead of the keywords from ``model`` to ``attentions``: an
        :class:`~reprstore.workflows.extract_options.ExtractOptions` already made (and
        checked); giving both is a ``TypeError``.

    Returns
    -------
    ExtractResult
        The keys written and skipped.
    """
    settings = dict(
        model=model, data=data, layers=layers, name=name, seed=seed, checkpoint=checkpoint,
        checkpoint_label=checkpoint_label, dataset=dataset, reduce=reduce, dtype=dtype,
        keep_bits=keep_bits, batch_size=batch_size, device=device, threads=threads,
        max_length=max_length, data_key=data_key, ids=ids, meta=meta, autocast=autocast,
        on_nonfinite=on_nonfinite, overwrite=overwrite, trust_checkpoint=trust_checkpoint,
        queue_size=queue_size, layer_name=layer_name, attentions=attentions,
    )  # fmt: skip
    if options is None:
        missing = [k for k in ("model", "data", "layers", "name") if settings[k] is None]
        if missing:
            raise TypeError(
                f"extract() missing required keyword argument(s) {', '.join(missing)} "
                "(or pass options=ExtractOptions(...))."
            )
        options = ExtractOptions(**settings)  # type: ignore[arg-type]
    else:
        defaults = inspect.signature(extract).parameters
        given = [k for k, v in settings.items() if _differs(v, defaults[k].default)]
        if given:
            raise TypeError(
                f"extract() takes either options= or the extraction keywords, not both "
                f"(also given: {', '.join(given)})."
            )
    return run_extraction(store, options, progress=progress, on_checkpoint=on_checkpoint)


def _differs(value: Any, default: Any) -> bool:
    """A keyword given a value other than its default (the defaults are plain scalars)."""
    return value is not default and not (type(value) is type(default) and value == default)


def run_extraction(
    store: str | os.PathLike[str] | Store,
    options: ExtractOptions,
    *,
    progress: ExtractProgress | None = None,
    on_checkpoint: Callable[[str], None] | None = None,
) -> ExtractResult:
    """:func:`extract` of options already checked (:class:`ExtractOptions`): what the
    command line calls after it has built them from its flags."""
    from reprstore.capture.models import load_checkpoint, load_model, validate_checkpoint
    from reprstore.capture.runner import plan_layers, run, torch_threads
    from reprstore.store import ReprSettings, Store, check_dataset, write_dataset
    from reprstore.store.fresh import undo_new_store
    from reprstore.workflows.ingest import read_ids, read_meta

    o = options
    torch_device, encoding, checkpoints = o.torch_device, o.encoding, list(o.checkpoints)
    ids, meta = o.ids, o.meta
    id_values = read_ids(ids) if isinstance(ids, (str, os.PathLike)) else ids
    meta_values = read_meta(meta) if isinstance(meta, (str, os.PathLike)) else meta

    with torch_threads(o.threads):
        loaded = load_model(o.model, eager_attention=o.attentions)
        for ckpt in checkpoints:
            validate_checkpoint(loaded.module, ckpt, trust=o.trust_checkpoint)
        loaded.module.to(torch_device)
        source = open_data(
            o.data, loaded, reduce=o.reduce, max_length=o.max_length, data_key=o.data_key
        )
        extra_kwargs = _forward_kwargs(loaded, o.layers, o.attentions)
        plan = plan_layers(
            loaded.module,
            source,
            o.layers,
            o.reduce,
            torch_device,
            autocast=o.autocast,
            variable_tokens=_variable_tokens(source),
            extra_kwargs=extra_kwargs,
            attention_tokens=_attention_tokens(source) if o.attentions else None,
        )
        n = source.n_samples
        names = stored_layer_names([lay.layer for lay in plan.layers], o.layer_name, o.reduce)
        # Hash the input data on a helper thread (hashlib and file reads release the GIL)
        # while this one hashes the weights and imports/opens the store; the data is not
        # read anywhere else meanwhile. Each weights id (a checkpoint's sha256) is computed
        # once and reused for the settings and the provenance.
        with ThreadPoolExecutor(1, thread_name_prefix="reprstore-fingerprint") as pool:
            pending = pool.submit(source.fingerprint)
            weights = {ckpt.label: _weights_id(loaded, ckpt) for ckpt in checkpoints}
            st = store if isinstance(store, Store) else Store.open(store, create=True)
            fingerprint = pending.result()
        with undo_new_store(st):  # a refused plan leaves no half-made store
            check_dataset(st.root, o.dataset, n, id_values, meta_values, fingerprint)
            todo = _plan_writes(
                st,
                loaded,
                checkpoints,
                plan.layers,
                weights=weights,
                name=o.name,
                seed=o.seed,
                dataset=o.dataset,
                n=n,
                encoding=encoding,
                fingerprint=fingerprint,
                preprocessing=source.settings(),
                autocast=o.autocast,
                overwrite=o.overwrite,
                settings_cls=ReprSettings,
                stored_names=names,
            )
        write_dataset(
            st.root, o.dataset, n, id_values, meta_values, fingerprint, source=source.description
        )

        result = ExtractResult(n_samples=n)
        for ckpt in checkpoints:
            settings, skipped = todo[ckpt.label]
            result.skipped += skipped
            if not settings:
                continue
            if on_checkpoint is not None:
                on_checkpoint(ckpt.label)
            load_checkpoint(loaded.module, ckpt, trust=o.trust_checkpoint)
            loaded.module.to(torch_device)
            sources = _provenance(
                loaded, ckpt, weights[ckpt.label], source, fingerprint, o.batch_size, o.device,
                o.threads,
            )  # fmt: skip
            sinks = _open_sinks(
                st, settings, encoding, sources, o.overwrite, o.on_nonfinite, _hooks_of(names)
            )
            result.resumed_from[ckpt.label] = run(
                loaded.module,
                source,
                plan,
                o.reduce,
                sinks,
                batch_size=o.batch_size,
                device=torch_device,
                autocast=o.autocast,
                queue_size=o.queue_size,
                progress=progress,
                extra_kwargs=extra_kwargs,
            )
            result.written += list(settings)
    return result


def stored_layer_names(layers: Sequence[str], template: str | None, reduce: str) -> dict[str, str]:
    """Hooked layer → stored name, from a ``--layer-name`` template (``'{layer}.cls'``).

    Only the fields ``{layer}`` and ``{reduce}`` exist; two layers may not get one name.
    """
    if template is None:
        return {layer: layer for layer in layers}
    names: dict[str, str] = {}
    for layer in layers:
        stored = substitute_fields(template, {"layer": layer, "reduce": reduce}, "--layer-name")
        names[layer] = validate_name(stored, "layer name from --layer-name")
    seen: dict[str, str] = {}
    for layer, stored in names.items():
        if stored in seen:
            raise InputError(
                f"--layer-name {template!r} gives layers {seen[stored]!r} and {layer!r} the "
                "same name; put {layer} in the template."
            )
        seen[stored] = layer
    return names


def _hooks_of(names: Mapping[str, str]) -> dict[str, str]:
    return {stored: layer for layer, stored in names.items()}


def _variable_tokens(source: DataSource) -> bool:
    from reprstore.capture.data import TextSource

    return isinstance(source, TextSource) and not source.fixed_length


def _attention_tokens(source: DataSource) -> int:
    """The token count attention maps are padded to: the longest text sample, or (0) the
    inputs' own length for tensors of one fixed length."""
    from reprstore.capture.data import TextSource

    return source.longest() if isinstance(source, TextSource) else 0


def _forward_kwargs(
    loaded: LoadedModel, layers: str | Sequence[str] | None, attentions: bool = False
) -> dict[str, Any]:
    """``output_hidden_states`` for hf models asked for ``hidden_states.N`` (or listing);
    ``output_attentions`` with ``attentions``."""
    if loaded.kind != "hf":
        return {}
    names = layers.split(",") if isinstance(layers, str) else list(layers or ["hidden_states"])
    wants = any(str(p).strip().startswith(("hidden_states", "*")) for p in names)
    out = {"output_hidden_states": True} if wants else {}
    return {**out, "output_attentions": True} if attentions else out


def _weights_id(loaded: LoadedModel, ckpt: Any) -> str:
    from reprstore.capture.models import weights_fingerprint
    from reprstore.store import sha256_file

    if ckpt.path is not None:
        return sha256_file(ckpt.path)
    return weights_fingerprint(loaded.module)


def _plan_writes(
    st: Store,
    loaded: LoadedModel,
    checkpoints: list[Any],
    layers: list[LayerOutput],
    *,
    weights: Mapping[str, str],
    name: str,
    seed: str,
    dataset: str,
    n: int,
    encoding: Any,
    fingerprint: str,
    preprocessing: dict[str, Any],
    autocast: str | None,
    overwrite: bool,
    settings_cls: type[ReprSettings],
    stored_names: Mapping[str, str] | None = None,
) -> dict[str, tuple[dict[ReprKey, ReprSettings], list[ReprKey]]]:
    """Settings for every key to write, per checkpoint; complete identical ones skipped.

    Raises before anything is written when an existing array is in the way.
    """
    todo: dict[str, tuple[dict[ReprKey, ReprSettings], list[ReprKey]]] = {}
    for ckpt in checkpoints:
        source_fp = _hash(
            {
                "data": fingerprint,
                "preprocessing": preprocessing,
                "weights": weights[ckpt.label],
                "autocast": autocast,
            }
        )
        to_write: dict[ReprKey, ReprSettings] = {}
        skipped: list[ReprKey] = []
        for out in layers:
            stored = (stored_names or {}).get(out.layer, out.layer)
            key = ReprKey(name, seed, ckpt.label, dataset, stored)
            settings = settings_cls(
                dataset=dataset,
                n_features=out.n_features,
                n_samples=n,
                original_shape=out.original_shape,
                reduction=out.reduction,
                stored_dtype=encoding.name,
                source_dtype=out.source_dtype,
                keep_bits=encoding.keep_bits,
                source_fingerprint=source_fp,
                extra={"autocast": autocast, **preprocessing, **_layout(out)},
            )
            if not overwrite and st.is_complete_with(key, settings):
                skipped.append(key)
                continue
            st.check_writable(key, settings, overwrite)
            to_write[key] = settings
        todo[ckpt.label] = (to_write, skipped)
    return todo


def _layout(out: LayerOutput) -> dict[str, str]:
    """The ``layout`` attribute of attention maps (their per-head axes)."""
    from reprstore.capture.reduce import ATTENTION, ATTENTION_LAYOUT

    return {"layout": ATTENTION_LAYOUT} if out.reduction == ATTENTION else {}


def _provenance(
    loaded: LoadedModel,
    ckpt: Any,
    weights_id: str,
    source: DataSource,
    fingerprint: str,
    batch_size: int,
    device: str,
    threads: int | None,
) -> dict[str, Any]:
    """``weights_id``: :func:`_weights_id` of ``ckpt`` (the file's sha256 when it has one)."""
    return {
        "model_source": loaded.spec,
        "model_kind": loaded.kind,
        "checkpoint_path": str(ckpt.path.resolve()) if ckpt.path is not None else None,
        "checkpoint_sha256": weights_id if ckpt.path is not None else None,
        "data_source": source.description,
        "data_fingerprint": fingerprint,
        "batch_size": batch_size,
        "device": device,
        "threads": threads,
    }


def _open_sinks(
    st: Store,
    settings: Mapping[ReprKey, ReprSettings],
    encoding: Any,
    sources: dict[str, Any],
    overwrite: bool,
    on_nonfinite: str,
    hooks: Mapping[str, str] | None = None,
) -> dict[str, LayerSink]:
    """One writer per key, keyed by the hooked layer (``hooks``: stored name → layer)."""
    sinks: dict[str, LayerSink] = {}
    try:
        for key, s in settings.items():
            layer = (hooks or {}).get(key.layer, key.layer)
            writer = st.writer(
                key,
                s,
                encoding=encoding,
                sources={**sources, "layer": layer},
                overwrite=overwrite and not _resumable(st, key, s),
                on_nonfinite=on_nonfinite,
            )
            sinks[layer] = _WriterSink(writer)
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    return sinks


def _resumable(st: Store, key: ReprKey, settings: ReprSettings) -> bool:
    """An interrupted write with the same settings (resumed even with ``overwrite``)."""
    if not st.exists(key):
        return False
    attrs = st.info(key, sizes=False).attrs
    if attrs.get("complete"):
        return False
    return not type(settings).from_dict(attrs.get("settings", {})).differences(settings)


# -- listing ----------------------------------------------------------------------------------
def list_layers(
    *,
    model: str,
    data: str | DataSource,
    device: str = "cpu",
    max_length: int | None = None,
    data_key: str | None = None,
    autocast: str | None = None,
    threads: int | None = None,
    attentions: bool = False,
) -> list[LayerListing]:
    """Every module of a model (and every tensor it returns) with the output shape it
    gives for one batch of two samples of ``data`` (``attentions``: with the attention
    maps, as :func:`extract` with ``attentions`` sees them)."""
    from reprstore.capture.models import load_model, parse_device
    from reprstore.capture.runner import list_layers as _list
    from reprstore.capture.runner import torch_threads

    torch_device = parse_device(device)
    with torch_threads(threads):
        loaded = load_model(model, eager_attention=attentions)
        loaded.module.to(torch_device)
        source = open_data(data, loaded, max_length=max_length, data_key=data_key)
        return _list(
            loaded.module,
            source,
            torch_device,
            autocast=autocast,
            extra_kwargs=_forward_kwargs(loaded, None, attentions),
        )


# -- recorder ----------------------------------------------------------------------------------
def recorder(
    store: str | os.PathLike[str] | Store,
    model: Any,
    layers: str | Sequence[str] | Callable[[str], bool],
    *,
    name: str,
    seed: str = "0",
    checkpoint: str = "final",
    dataset: str = "default",
    reduce: str = "mean",
    dtype: str = "float16",
    keep_bits: int | None = None,
    overwrite: bool = False,
    on_nonfinite: str = "warn",
    ids: np.ndarray | None = None,
) -> Any:
    """Record the hooked layers of every batch that passes through ``model`` in a block.

    ::

        with reprstore.recorder("runs.zarr", model, "encoder.layer.*", name="bert",
                                seed="1", checkpoint="step500", dataset="val"):
            for batch in val_loader:
                model(**batch)

    Rows are appended in call order; the row count need not be known up front. At the
    end of the block the dataset ``dataset`` is created (ids: row numbers, or ``ids``)
    or checked against the rows recorded, and the arrays are marked complete. An error
    inside the block leaves them incomplete. Hooks are removed when the block ends.
    """
    from reprstore.capture.recorder import Recorder
    from reprstore.store import Encoding, ReprSettings, Store, check_dataset, write_dataset

    name, seed, checkpoint, dataset = (
        validate_name(value, what) for value, what in
        ((name, "model name"), (seed, "seed"), (checkpoint, "checkpoint"), (dataset, "dataset"))
    )  # fmt: skip
    encoding = Encoding(dtype, keep_bits)
    st = store if isinstance(store, Store) else Store.open(store, create=True)

    def open_sinks(outputs: list[LayerOutput]) -> dict[str, LayerSink]:
        settings = {}
        for out in outputs:
            key = ReprKey(name, seed, checkpoint, dataset, out.layer)
            settings[key] = ReprSettings(
                dataset=dataset,
                n_features=out.n_features,
                n_samples=None,
                original_shape=out.original_shape,
                reduction=out.reduction,
                stored_dtype=encoding.name,
                source_dtype=out.source_dtype,
                keep_bits=keep_bits,
                extra={"recorded": True},
            )
            st.check_writable(key, settings[key], overwrite)
            interrupted = st.exists(key) and not st.info(key, sizes=False).attrs.get("complete")
            if interrupted and not overwrite:
                raise InputError(
                    f"{key.label()} holds an interrupted recording; pass overwrite=True to "
                    "record it again."
                )
        sources = {"model_source": type(model).__name__, "recorded": True}
        return _open_sinks(st, settings, encoding, sources, overwrite, on_nonfinite)

    def finish(rows: int) -> None:
        check_dataset(st.root, dataset, rows, ids)
        write_dataset(st.root, dataset, rows, ids, source="recorder")

    return Recorder(model, layers, reduce=reduce, open_sinks=open_sinks, finish=finish)
