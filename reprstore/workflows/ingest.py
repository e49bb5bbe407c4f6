"""``reprstore import``: bring existing representation files into the store, streamed.

Every input is validated before the first byte is written (row counts, dataset, names,
existing complete arrays), so a refused import leaves the store as it was. Each file is
then copied a chunk at a time; an interrupted import resumes when run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprstore.errors import DatasetMismatchError, InputError
from reprstore.keys import ReprKey, expand_layer_template, nfc, validate_name
from reprstore.sources.files import TensorFile, open_tensor_files
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

IMPORT_REDUCTIONS = ("none", "mean", "first", "last", "max", "flatten")


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


def read_ids(path: str | os.PathLike[str], types: Mapping[str, str] | None = None) -> np.ndarray:
    """Sample ids from ``.npy`` or a text/CSV file with one id per line.

    Text ids stay strings (``01234`` keeps its leading zero) unless ``types`` declares
    ``id=int`` (or ``float``); a ``.npy`` keeps its dtype.
    """
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
        kind = (types or {}).get("id")
        if kind is not None:
            ids = cast_column(ids, kind, f"--ids {path.name}")
    if ids.ndim != 1:
        raise InputError(f"--ids {path.name} must hold one id per sample (1-D).")
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"--ids {path.name} has duplicate ids; ids must be unique.")
    return ids


def read_meta(
    path: str | os.PathLike[str], types: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Metadata columns from a CSV with a header row; one row per sample, in order.

    Every column is read as text and stays a string column unless it is declared
    numeric, by ``types`` (``{"age": "int"}``, from ``--meta-types``) or by a typed
    header (``age:int``): no guessing, so ``01234`` and ``NA`` survive as written.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--meta file not found: {path}.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"--meta {path.name} is not a readable CSV: {err}") from err
    declared = dict(types or {})
    out = {}
    for column in frame.columns:
        name, _, typed = str(column).partition(":")
        name = validate_name(name.strip(), "metadata column")
        kind = typed.strip() or declared.pop(name, "str")
        declared.pop(name, None)
        values = frame[column].to_numpy().astype(str)
        out[name] = cast_column(values, kind, f"--meta {path.name} column {name!r}")
    if declared:
        unknown = ", ".join(sorted(declared))
        raise InputError(
            f"--meta-types names {unknown}, which {path.name} does not have. "
            f"Columns: {', '.join(out)}."
        )
    return out


COLUMN_TYPES = ("str", "int", "float")


def parse_column_types(text: str | None) -> dict[str, str]:
    """``--meta-types 'age=int,score=float'`` as ``{"age": "int", "score": "float"}``."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, kind = (s.strip() for s in part.partition("="))
        if not eq or not name or kind not in COLUMN_TYPES:
            raise InputError(
                f"--meta-types part {part.strip()!r} is not COLUMN=TYPE with TYPE one of "
                f"{', '.join(COLUMN_TYPES)}; e.g. --meta-types 'age=int,score=float'."
            )
        out[name] = kind
    return out


def cast_column(values: np.ndarray, kind: str, what: str) -> np.ndarray:
    """Text values ``(n,)`` as ``kind`` (str, int or float); one-line error naming a bad cell."""
    if kind not in COLUMN_TYPES:
        raise InputError(
            f"{what}: unknown type {kind!r}. Expected one of {', '.join(COLUMN_TYPES)}."
        )
    if kind == "str":
        return values.astype(str)
    target = np.int64 if kind == "int" else np.float64
    out = np.empty(len(values), dtype=target)
    for i, cell in enumerate(str(v) for v in values):
        try:
            out[i] = int(cell) if kind == "int" else float(cell if cell.strip() else "nan")
        except (ValueError, OverflowError):
            raise InputError(
                f"{what} is declared {kind}, but row {i + 1} holds {cell!r}; fix the value "
                "or declare the column str."
            ) from None
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


def reduced_shape(shape: tuple[int, ...], reduce: str, what: str) -> tuple[str, int]:
    """The reduction recorded and the stored width for a tensor of ``shape`` (rows first).

    ``(N, F)`` is stored as is; ``(N, T, D)`` (tokens, features last) reduces over T to
    D columns; ``(N, C, *spatial)`` over the spatial positions to C columns, as
    extraction does; ``flatten`` keeps every value.
    """
    if reduce not in IMPORT_REDUCTIONS:
        raise InputError(
            f"Unknown --reduce {reduce!r} for import. "
            f"Expected one of {', '.join(IMPORT_REDUCTIONS)}."
        )
    if len(shape) == 1 or (len(shape) > 2 and reduce == "none"):
        raise InputError(
            f"{what} has shape {shape}; a representation is (n_samples, n_features). "
            "Pass --reduce mean|first|last|max (over tokens or positions) or --reduce flatten."
        )
    if len(shape) == 2:
        return "none", int(shape[1])
    if reduce == "flatten":
        return "flatten", int(np.prod(shape[1:], dtype=np.int64))
    return reduce, int(shape[-1] if len(shape) == 3 else shape[1])


def reduce_block(block: np.ndarray, reduction: str) -> np.ndarray:
    """Rows ``(n, features)`` of a block ``(n, …)``, reduced as :func:`reduced_shape` says.

    Means are taken in float64; no padding mask is known for imported dumps, so every
    position counts.
    """
    if reduction in ("none", "flatten"):
        return block.reshape(len(block), -1)
    # positions on axis 1, features last: (n, T, D), or (n, C, P) -> (n, P, C) for images
    x = block if block.ndim == 3 else block.reshape(len(block), block.shape[1], -1).swapaxes(1, 2)
    if reduction == "mean":
        return x.astype(np.float64).mean(axis=1)
    if reduction == "max":
        return x.max(axis=1)
    return x[:, 0] if reduction == "first" else x[:, -1]


def import_settings(
    tensor: TensorFile,
    dataset: str,
    reduce: str,
    dtype: str,
    keep_bits: int | None,
    fingerprint: str,
) -> ReprSettings:
    shape = tensor.shape
    reduction, n_features = reduced_shape(shape, reduce, f"{tensor.path.name}:{tensor.name}")
    return ReprSettings(
        dataset=dataset,
        n_features=n_features,
        n_samples=shape[0],
        original_shape=tuple(shape[1:]),
        reduction=reduction,
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
        raise InputError(
            f"Unknown --reduce {reduce!r} for import. "
            f"Expected one of {', '.join(IMPORT_REDUCTIONS)}."
        )
    Encoding(dtype, keep_bits)
    name, seed, checkpoint, dataset = _nfc_names(name, seed, checkpoint, dataset)
    ReprKey(name, seed, checkpoint, dataset, "layer")  # validates the run's names first
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
        rkey = ReprKey(name, seed, checkpoint, dataset, layer_name)
        fp = f"sha256:{digests[tensor.path]}:{tensor.name}"
        settings = import_settings(tensor, dataset, reduce, dtype, keep_bits, fp)
        if not overwrite and store.is_complete_with(rkey, settings):
            skipped.append(rkey)  # the same file was imported already: nothing to do
            continue
        store.check_writable(rkey, settings, overwrite)
        items.append(ImportItem(tensor, rkey, settings))
    return ImportPlan(n, items, skipped)


def _nfc_names(*names: str) -> tuple[str, ...]:
    """The names as stored: in NFC (:func:`reprstore.keys.nfc`), validated later."""
    return tuple(nfc(n) for n in names)


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
    meta_types: Mapping[str, str] | str | None = None,
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
    meta_types
        Which metadata columns (and ``id``) are numbers: ``{"age": "int"}`` or
        ``"age=int,score=float"``; every other column is kept as text.
    progress
        Called as ``progress(rows_done, rows_total)`` over all files.
    """
    name, seed, checkpoint, dataset = _nfc_names(name, seed, checkpoint, dataset)
    types = parse_column_types(meta_types) if isinstance(meta_types, str) else meta_types
    id_values = read_ids(ids, types) if ids is not None else None  # before a store is made
    meta_values = read_meta(meta, without_id(types)) if meta is not None else None
    st = store if isinstance(store, Store) else Store.open(store, create=True)
    with undo_new_store(st):  # a refused plan leaves no half-made store
        plan = plan_import(
            st, files, name=name, layer=layer, seed=seed, checkpoint=checkpoint,
            dataset=dataset, dtype=dtype, keep_bits=keep_bits, key=key, reduce=reduce,
            ids=id_values, meta=meta_values, overwrite=overwrite,
        )  # fmt: skip
    write_dataset(st.root, dataset, plan.n_samples, id_values, meta_values, source="import")
    counter = RowCounter(plan.n_samples * len(plan.items), progress)
    for item in plan.items:
        copy_item(st, item, Encoding(dtype, keep_bits), overwrite, counter)
    return [item.key for item in plan.items]


def without_id(types: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (types or {}).items() if k != "id"}


class RowCounter:
    """Adds rows up across files and reports ``(done, total)``."""

    def __init__(self, total: int, report: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.report = total, 0, report

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.report is not None:
            self.report(self.done, self.total)


def copy_item(
    store: Store,
    item: ImportItem,
    encoding: Encoding,
    overwrite: bool,
    progress: RowCounter,
) -> None:
    sources = {"data_source": str(item.tensor.path.resolve()), "tensor": item.tensor.name,
               "source_sha256": item.settings.source_fingerprint}  # fmt: skip
    with store.writer(item.key, item.settings, encoding=encoding, sources=sources,
                      overwrite=overwrite) as writer:  # fmt: skip
        progress(writer.resumed_from)
        for block in item.tensor.blocks(writer.chunk_rows, start=writer.resumed_from):
            writer.write(reduce_block(block, item.settings.reduction))
            progress(len(block))
