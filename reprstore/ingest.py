"""``reprstore import``: bring existing representation files into the store, streamed.

Every input is validated before the first byte is written (row counts, dataset, names,
existing complete arrays), so a refused import leaves the store as it was. Each file is
then copied a chunk at a time; an interrupted import resumes when run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprstore.errors import DatasetMismatchError, InputError
from reprstore.files import TensorFile, open_tensor_files
from reprstore.keys import ReprKey, expand_layer_template, validate_name
from reprstore.store import (
    DEFAULT_DTYPE,
    Encoding,
    ReprSettings,
    Store,
    check_dataset,
    sha256_file,
    write_dataset,
)
from reprstore.store.fresh import undo_new_store

IMPORT_REDUCTIONS = ("none", "flatten")


@dataclass(frozen=True)
class ImportPlan:
    """Validated work: rows per input, what to write, and what is already complete."""

    n_samples: int
    items: list[ImportItem]
    skipped: list[ReprKey]


@dataclass(frozen=True)
class ImportItem:
    """One tensor to import and the key it goes to."""

    tensor: TensorFile
    key: ReprKey
    settings: ReprSettings


def read_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Sample ids from ``.npy`` or a text/CSV file with one id per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--ids file not found: {path}.")
    if path.suffix == ".npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(
                f"--ids {path.name} cannot be read without unpickling Python objects ({err}); "
                "save the ids as strings or integers."
            ) from None
    else:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        ids = np.array([ln for ln in lines if ln], dtype=str)
        if ids.size and all(s.lstrip("-").isdigit() for s in ids):
            ids = ids.astype(np.int64)
    if ids.ndim != 1:
        raise InputError(f"--ids {path.name} must hold one id per sample (1-D).")
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"--ids {path.name} has duplicate ids; ids must be unique.")
    return ids


def read_meta(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Metadata columns from a CSV with a header row; one row per sample, in order."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--meta file not found: {path}.")
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"--meta {path.name} is not a readable CSV: {err}") from err
    out = {}
    for column in frame.columns:
        name = validate_name(str(column), "metadata column")
        values = frame[column].to_numpy()
        out[name] = values.astype(str) if values.dtype == object else values
    return out


def _layer_names(tensors: list[TensorFile], layer: str, many: bool) -> list[str]:
    templated = "{" in layer
    if many and not templated:
        raise InputError(
            f"{len(tensors)} tensors would all be stored as layer {layer!r}; "
            "use --layer '{stem}' (one layer per file) or '{key}' (per tensor in a file)."
        )
    names = [
        expand_layer_template(layer, stem=t.path.stem, key=t.name) if templated else layer
        for t in tensors
    ]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(f"Several inputs map to layer {sorted(dupes)[0]!r}; use '{{key}}'.")
    return [validate_name(n, "layer") for n in names]


def _settings(
    tensor: TensorFile,
    dataset: str,
    reduce: str,
    dtype: str,
    keep_bits: int | None,
    fingerprint: str,
) -> ReprSettings:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) > 2 and reduce != "flatten"):
        raise InputError(
            f"{tensor.path.name}:{tensor.name} has shape {shape}; a representation is "
            "(n_samples, n_features). Pass --reduce flatten for higher-rank rows."
        )
    n_features = int(np.prod(shape[1:], dtype=np.int64))
    return ReprSettings(
        dataset=dataset,
        n_features=n_features,
        n_samples=shape[0],
        original_shape=tuple(shape[1:]),
        reduction="flatten" if len(shape) > 2 else "none",
        stored_dtype=dtype,
        source_dtype=tensor.dtype,
        keep_bits=keep_bits,
        source_fingerprint=fingerprint,
    )


def plan_import(
    store: Store,
    files: Sequence[str | os.PathLike[str]],
    *,
    name: str,
    layer: str,
    seed: str = "0",
    checkpoint: str = "final",
    dataset: str = "default",
    dtype: str = DEFAULT_DTYPE,
    keep_bits: int | None = None,
    key: str | None = None,
    reduce: str = "none",
    ids: np.ndarray | None = None,
    meta: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> ImportPlan:
    """Open and validate every input; raise before anything is written."""
    if reduce not in IMPORT_REDUCTIONS:
        raise InputError(f"--reduce {reduce!r} is not available for import; use none or flatten.")
    Encoding(dtype, keep_bits)
    ReprKey(name, seed, checkpoint, "layer")  # validates the run's names first
    validate_name(dataset, "dataset")
    if not files:
        raise InputError("No input files given.")
    tensors = [t for f in files for t in open_tensor_files(f, key)]
    layers = _layer_names(tensors, layer, many=len(tensors) > 1)
    counts = {t.n_rows for t in tensors}
    if len(counts) > 1:
        raise DatasetMismatchError(
            f"The inputs have different row counts ({', '.join(map(str, sorted(counts)))}); "
            "all layers of one import must cover the same samples."
        )
    n = counts.pop()
    for tensor in tensors:
        if tensor.n_rows == 0:
            raise InputError(f"{tensor.path.name}:{tensor.name} holds no samples (0 rows).")
        if any(d == 0 for d in tensor.shape[1:]):
            raise InputError(
                f"{tensor.path.name}:{tensor.name} has no features (shape {tensor.shape})."
            )
    check_dataset(store.root, dataset, n, ids, meta)
    if ids is not None and len(ids) != n:
        raise DatasetMismatchError(f"--ids has {len(ids)} entries; the inputs have {n} rows.")
    items, skipped = [], []
    digests = {t.path: sha256_file(t.path) for t in tensors}
    for tensor, layer_name in zip(tensors, layers, strict=True):
        rkey = ReprKey(name, seed, checkpoint, layer_name)
        fp = f"sha256:{digests[tensor.path]}:{tensor.name}"
        settings = _settings(tensor, dataset, reduce, dtype, keep_bits, fp)
        if not overwrite and store.is_complete_with(rkey, settings):
            skipped.append(rkey)  # the same file was imported already: nothing to do
            continue
        store.check_writable(rkey, settings, overwrite)
        items.append(ImportItem(tensor, rkey, settings))
    return ImportPlan(n, items, skipped)


def import_files(
    store: str | os.PathLike[str] | Store,
    files: Sequence[str | os.PathLike[str]],
    *,
    name: str,
    layer: str,
    seed: str = "0",
    checkpoint: str = "final",
    dataset: str = "default",
    dtype: str = DEFAULT_DTYPE,
    keep_bits: int | None = None,
    key: str | None = None,
    reduce: str = "none",
    ids: str | os.PathLike[str] | None = None,
    meta: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReprKey]:
    """Import representation files; return the keys written.

    Representations already complete from the same file and settings are skipped, so
    running an interrupted import again finishes it.

    Parameters
    ----------
    files
        ``.npy``/``.npz``/``.pt``/``.safetensors`` files; rows (axis 0) are samples.
    layer
        The layer name, or a template: ``{stem}`` (file name without suffix) or ``{key}``
        (tensor name inside an ``.npz``/``.safetensors``/``.pt`` dict).
    ids, meta
        Optional sample ids (``.npy`` or one per line) and metadata CSV for the dataset.
    progress
        Called as ``progress(rows_done, rows_total)`` over all files.
    """
    ReprKey(name, seed, checkpoint, "layer")  # names first: before a store is created
    validate_name(dataset, "dataset")
    id_values = read_ids(ids) if ids is not None else None
    meta_values = read_meta(meta) if meta is not None else None
    st = store if isinstance(store, Store) else Store.open(store, create=True)
    with undo_new_store(st):
        plan = plan_import(
            st, files, name=name, layer=layer, seed=seed, checkpoint=checkpoint,
            dataset=dataset, dtype=dtype, keep_bits=keep_bits, key=key, reduce=reduce,
            ids=id_values, meta=meta_values, overwrite=overwrite,
        )  # fmt: skip
    write_dataset(st.root, dataset, plan.n_samples, id_values, meta_values, source="import")
    counter = _Counter(plan.n_samples * len(plan.items), progress)
    for item in plan.items:
        _copy(st, item, Encoding(dtype, keep_bits), overwrite, counter)
    return [item.key for item in plan.items]


class _Counter:
    """Adds rows up across files and reports ``(done, total)``."""

    def __init__(self, total: int, report: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.report = total, 0, report

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.report is not None:
            self.report(self.done, self.total)


def _copy(
    store: Store,
    item: ImportItem,
    encoding: Encoding,
    overwrite: bool,
    progress: _Counter,
) -> None:
    sources = {"data_source": str(item.tensor.path.resolve()), "tensor": item.tensor.name,
               "source_sha256": item.settings.source_fingerprint}  # fmt: skip
    with store.writer(item.key, item.settings, encoding=encoding, sources=sources,
                      overwrite=overwrite) as writer:  # fmt: skip
        progress(writer.resumed_from)
        for block in item.tensor.blocks(writer.chunk_rows, start=writer.resumed_from):
            writer.write(block.reshape(len(block), -1))
            progress(len(block))
