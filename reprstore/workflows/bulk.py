"""Bulk import: every file a path template fits, in one process, validated first.

``import_tree(store, 'runs/{model}_seed{seed}/step_{checkpoint}/layer_{layer}.pt')``
walks ``runs/``, takes each file's key from its path (fields the template lacks come from
the options: ``--seed 0``, ``--checkpoint final``, ``--dataset default``, ``--name``,
``--layer``), and checks everything (names, one file per key, row counts per dataset,
what is already stored) before the first write. ``metadata.json`` files in the folders
walked (their values apply to the runs below them) and ``metadata.csv`` files (one row
per model or run, as ``reprstore tag --from``) become run attributes; ``attr_ignore`` and
``attr_rename`` leave out or rename names there that cannot be attributes (``seed``,
``step``). Hidden files and folders are skipped; links to files are followed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np

from reprstore.errors import DatasetMismatchError, InputError, ReprstoreError
from reprstore.keys import ReprKey, key_order, nfc, validate_attribute_name, validate_name
from reprstore.sources.files import open_tensor_files
from reprstore.sources.templates import PathTemplate
from reprstore.store import (
    DEFAULT_DTYPE,
    Encoding,
    Store,
    check_dataset,
    sha256_file,
    write_dataset,
)
from reprstore.store.runattrs import target_of
from reprstore.workflows.ingest import (
    ImportItem,
    RowCounter,
    copy_item,
    import_settings,
    parse_column_types,
    read_ids,
    read_meta,
    without_id,
)

METADATA_FILES = ("metadata.json", "metadata.csv")
RunKey = tuple[str, str, str]  # (model, seed, checkpoint)
Target = tuple[str, str]  # (level, id) of run attributes: ("runs", "bert/0")


@dataclass(frozen=True)
class BulkOptions:
    """What the template does not say, and how to store it (validated once)."""

    name: str | None = None
    layer: str | None = None
    seed: str = "0"
    checkpoint: str = "final"
    dataset: str = "default"
    dtype: str = DEFAULT_DTYPE
    keep_bits: int | None = None
    key: str | None = None
    reduce: str = "none"
    overwrite: bool = False
    attr_ignore: tuple[str, ...] | str | None = ()
    attr_rename: tuple[tuple[str, str], ...] | Mapping[str, str] | str | None = ()

    def __post_init__(self) -> None:
        Encoding(self.dtype, self.keep_bits)
        ignore = parse_attr_ignore(self.attr_ignore)
        object.__setattr__(self, "attr_ignore", ignore)
        object.__setattr__(self, "attr_rename", parse_attr_rename(self.attr_rename, ignore))
        if self.layer is not None and "{" in self.layer:
            raise InputError(
                f"--layer {self.layer!r}: with a path template, name layers with {{layer}} in "
                "the template instead."
            )
        for what in ("name", "layer", "seed", "checkpoint", "dataset"):
            value = getattr(self, what)
            if value is not None:
                validate_name(value, "model" if what == "name" else what)

    @property
    def ignored(self) -> tuple[str, ...]:
        """The attribute names --attr-ignore leaves out (parsed)."""
        return cast(tuple[str, ...], self.attr_ignore)

    @property
    def renamed(self) -> dict[str, str]:
        """Old → new attribute names from --attr-rename (parsed)."""
        return dict(cast(tuple[tuple[str, str], ...], self.attr_rename))


def parse_attr_ignore(value: tuple[str, ...] | str | None) -> tuple[str, ...]:
    """``--attr-ignore 'seed,step'`` → ``("seed", "step")``: names left out of the run
    attributes that ``metadata.json``/``metadata.csv`` files give."""
    if not value:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names]
    if not all(names):
        raise InputError(f"--attr-ignore {value!r} has an empty name; write e.g. 'seed,step'.")
    return tuple(dict.fromkeys(names))


def parse_attr_rename(
    value: tuple[tuple[str, str], ...] | Mapping[str, str] | str | None, ignore: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """``--attr-rename 'seed=orig_seed'`` → ``(("seed", "orig_seed"),)``, each new name a
    valid attribute name, no name renamed twice or both renamed and ignored."""
    if not value:
        return ()
    if isinstance(value, str):
        pairs = [part.partition("=") for part in value.split(",")]
        if not all(eq and old.strip() for old, eq, _ in pairs):
            raise InputError(
                f"--attr-rename {value!r}: write OLD=NEW pairs, e.g. 'seed=orig_seed'."
            )
        items = [(old.strip(), new.strip()) for old, _, new in pairs]
    else:
        items = list(value.items() if isinstance(value, Mapping) else value)
    out: dict[str, str] = {}
    for old, new in items:
        if old in out or old in ignore:
            raise InputError(f"--attr-rename names {old!r} twice (or also in --attr-ignore).")
        if new in out.values():
            raise InputError(f"--attr-rename gives two names the one name {new!r}.")
        try:
            out[old] = _check_attribute_name(new)
        except ReprstoreError as err:
            raise InputError(f"--attr-rename {old}={new}: {err}") from None
    return tuple(out.items())


@dataclass(frozen=True)
class BulkEntry:
    """One file of the walk: its key, its dataset and what the import will do with it."""

    item: ImportItem
    dataset: str
    action: str  # "import" or "skip" (already stored, complete, from the same file)


@dataclass(frozen=True)
class BulkPlan:
    """Everything an import will write, checked; ``entries`` in path order."""

    template: PathTemplate
    entries: list[BulkEntry]
    rows: dict[str, int]
    attributes: dict[Target, dict[str, str]] = field(default_factory=dict)
    hidden: list[Path] = field(default_factory=list)  # hidden files and folders skipped

    @property
    def to_write(self) -> list[BulkEntry]:
        return [e for e in self.entries if e.action == "import"]


def _key_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ReprKey))


def _values(template: PathTemplate, found: dict[str, str], opts: BulkOptions) -> dict[str, str]:
    defaults = {"model": opts.name, "layer": opts.layer, "seed": opts.seed,
                "checkpoint": opts.checkpoint, "dataset": opts.dataset}  # fmt: skip
    return {k: found.get(k) or defaults[k] for k in defaults}  # type: ignore[misc]


def check_coverage(template: PathTemplate, opts: BulkOptions) -> None:
    """Raise unless the template (or an option) gives every key field a value."""
    for field_name, option in (("model", "name"), ("layer", "layer")):
        if field_name in template.fields and getattr(opts, option) is not None:
            raise InputError(
                f"The import template {template.text!r} takes the {field_name} from the path "
                f"({{{field_name}}}); leave out --{option}."
            )
        if field_name not in template.fields and getattr(opts, option) is None:
            raise InputError(
                f"The import template {template.text!r} does not say the {field_name}: add "
                f"{{{field_name}}} to it (or pass --{option} for one {field_name} for all files)."
            )


def _entry_key(path: Path, values: dict[str, str]) -> ReprKey:
    try:
        return ReprKey(**{k: values[k] for k in _key_fields()})
    except ReprstoreError as err:
        raise InputError(f"{path}: {err}") from None


def plan_tree(
    store: Store | None,
    template: str,
    opts: BulkOptions,
    *,
    ids: np.ndarray | None = None,
    meta: Mapping[str, np.ndarray] | None = None,
) -> BulkPlan:
    """Walk, open and validate every file the template fits; raise before any write.

    ``store`` may be None (a dry run for a store that does not exist yet).
    """
    tpl = PathTemplate.parse(template)
    check_coverage(tpl, opts)
    hidden: list[Path] = []
    found = [(p, f) for p, f in tpl.walk(hidden) if p.name not in METADATA_FILES]
    if not found:
        raise InputError(f"No file under {tpl.root} fits the import template {template!r}.")
    entries: list[BulkEntry] = []
    owners: dict[ReprKey, Path] = {}
    rows: dict[str, int] = {}
    for path, fields_found in found:
        entry = _entry(path, _values(tpl, fields_found, opts), opts)
        key, n = entry.item.key, entry.item.tensor.n_rows
        if key in owners:
            raise InputError(
                f"{owners[key]} and {path} both map to {key.label()}; add the field that "
                "tells them apart to the template."
            )
        owners[key] = path
        if rows.setdefault(key.dataset, n) != n:
            raise DatasetMismatchError(
                f"{path} has {n} rows; other files of dataset {key.dataset!r} have "
                f"{rows[key.dataset]}. Every file of one dataset must cover the same samples."
            )
        entries.append(entry)
    if (ids is not None or meta) and len(rows) > 1:
        raise InputError(
            f"--ids/--meta describe one dataset; this import writes {len(rows)} "
            f"({', '.join(sorted(rows))}). Import them one dataset at a time."
        )
    if ids is not None and len(ids) != next(iter(rows.values())):
        raise DatasetMismatchError(
            f"--ids has {len(ids)} entries; the files have {next(iter(rows.values()))} rows."
        )
    entries.sort(key=lambda e: key_order(e.item.key))
    if store is not None:
        entries = _against_store(store, entries, rows, ids, meta, opts.overwrite)
    runs = {(e.item.key.model, e.item.key.seed, e.item.key.checkpoint) for e in entries}
    return BulkPlan(tpl, entries, rows, read_run_attributes(tpl, found, runs, opts), hidden)


def _entry(path: Path, values: dict[str, str], opts: BulkOptions) -> BulkEntry:
    """One file's key, tensor and settings (its content fingerprint included)."""
    key = _entry_key(path, values)
    tensor = _one_tensor(path, opts.key)
    digest = f"sha256:{sha256_file(path)}:{tensor.name}"
    settings = import_settings(tensor, key.dataset, opts.reduce, opts.dtype, opts.keep_bits, digest)
    return BulkEntry(ImportItem(tensor, key, settings), key.dataset, "import")


def _one_tensor(path: Path, key: str | None) -> Any:
    if path.is_symlink() and not path.exists():
        raise InputError(
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; "
            "fix the link or remove it."
        )
    tensors = open_tensor_files(path, key)
    if len(tensors) > 1:
        names = ", ".join(t.name for t in tensors)
        raise InputError(
            f"{path} holds several tensors ({names}); pass --key NAME to import one of them."
        )
    return tensors[0]


def _against_store(
    store: Store,
    entries: list[BulkEntry],
    rows: dict[str, int],
    ids: np.ndarray | None,
    meta: Mapping[str, np.ndarray] | None,
    overwrite: bool,
) -> list[BulkEntry]:
    for dataset, n in rows.items():
        check_dataset(store.root, dataset, n, ids, meta)
    out = []
    for entry in entries:
        item = entry.item
        if not overwrite and store.is_complete_with(item.key, item.settings):
            out.append(BulkEntry(item, entry.dataset, "skip"))
            continue
        store.check_writable(item.key, item.settings, overwrite)
        out.append(entry)
    return out


def read_run_attributes(
    template: PathTemplate,
    found: list[tuple[Path, dict[str, str]]],
    runs: set[RunKey],
    opts: BulkOptions,
) -> dict[Target, dict[str, str]]:
    """Run attributes from ``metadata.json``/``metadata.csv`` in the folders walked.

    A ``metadata.json`` (an object of names to strings, numbers or lists; lists become
    comma-separated sets) applies to every run (model × seed) with a file below its
    folder; a ``metadata.csv`` has a ``model`` column, optionally ``seed`` and
    ``checkpoint``, and one column per attribute, as ``reprstore tag --from``. Returns
    ``{(level, id): {name: value}}`` as :meth:`Store.set_attributes` takes it; two sources
    giving one target's attribute different values is an error.
    """
    out: dict[Target, dict[str, str]] = {}
    sources: dict[tuple[Target, str], Path] = {}

    def put(target: Target, values: Mapping[str, str], source: Path) -> None:
        have = out.setdefault(target, {})
        for name, value in values.items():
            if name in have and have[name] != value:
                raise InputError(
                    f"Run attribute {name!r} of {target[1]} is {have[name]!r} in "
                    f"{sources[(target, name)]} but {value!r} in {source}; make them agree."
                )
            have[name] = value
            sources[(target, name)] = source

    folders: dict[Path, set[tuple[str, str]]] = {}
    for path, fields_found in found:
        values = _values(template, fields_found, opts)
        folder = path.parent
        while True:
            folders.setdefault(folder, set()).add((values["model"], values["seed"]))
            if folder == template.root or folder == folder.parent:
                break
            folder = folder.parent
    for folder in sorted(folders, key=lambda f: len(f.parts)):
        meta_json = folder / "metadata.json"
        if meta_json.is_file():
            values = _json_attributes(meta_json, opts)
            for model, seed in sorted(folders[folder]):
                put(target_of(model, seed), values, meta_json)
        meta_csv = folder / "metadata.csv"
        if meta_csv.is_file():
            for target, values in _csv_attributes(meta_csv, runs, opts).items():
                put(target, values, meta_csv)
    return out


def attribute_value(value: Any, where: str) -> str:
    """An attribute value as text: lists become comma-separated sets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    raise InputError(f"{where} must be a string, a number or a list of them.")


#: How deep a ``metadata.json`` may nest: run attributes are names → strings, numbers or
#: lists of them (depth 2); a deeper file is refused before it is parsed.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _check_attribute_name(name: str) -> str:
    """A run attribute name conditions can read: not a key field, not the derived
    ``step`` (:func:`reprstore.keys.validate_attribute_name`)."""
    return validate_attribute_name(name)


def _attribute_names(names: list[str], where: Path, opts: BulkOptions) -> dict[str, str]:
    """Original name → attribute name, after --attr-ignore and --attr-rename."""
    rename = opts.renamed
    out: dict[str, str] = {}
    for name in names:
        if name in opts.ignored:
            continue
        new = rename.get(name, name)
        if new in out.values():
            raise InputError(f"{where}: two names become attribute {new!r}; see --attr-rename.")
        out[name] = _attribute_name(new, where) if new == name else new
    return out


def _attribute_name(name: str, where: Path) -> str:
    try:
        return _check_attribute_name(name)
    except ReprstoreError as err:
        quoted = shlex.quote(name)
        raise InputError(
            f"{where}: {err} Leave it out with --attr-ignore {quoted}, or keep it under another "
            f"name with --attr-rename {quoted}=NEW."
        ) from None


def _json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (checked before parsing:
    the parser recurses once per level)."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def _json_attributes(path: Path, opts: BulkOptions) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; it must hold one JSON object.") from None
    except OSError as err:
        raise InputError(f"{path} cannot be read: {err.strerror or err}.") from None
    if _json_too_deep(text):
        raise InputError(
            f"{path} nests deeper than {MAX_JSON_DEPTH} levels; a metadata.json holds run "
            "attributes: names to strings, numbers or lists of them."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InputError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold one JSON object of run attributes.")
    names = _attribute_names([str(k) for k in data], path, opts)
    return {
        new: attribute_value(data[old], f"{path}: attribute {old!r}") for old, new in names.items()
    }


RUN_COLUMNS = ("model", "seed", "checkpoint")


def _csv_attributes(
    path: Path, runs: set[RunKey], opts: BulkOptions
) -> dict[Target, dict[str, str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path} is not a readable CSV: {err}") from None
    if "model" not in frame.columns:
        raise InputError(f"{path} needs a 'model' column (optionally seed, checkpoint).")
    names = _attribute_names([str(c) for c in frame.columns if c not in RUN_COLUMNS], path, opts)
    out: dict[Target, dict[str, str]] = {}
    for line, row in enumerate(frame.to_dict(orient="records"), start=2):
        model, seed, ckpt = (nfc(str(row.get(c, "")).strip()) or None for c in RUN_COLUMNS)
        where = f"{path} line {line}"
        if model is None or not any(r[0] == model for r in runs):
            models = ", ".join(sorted({r[0] for r in runs}))
            raise InputError(
                f"{where} names model {model!r}, which this import does not have "
                f"(models: {models}); nothing was written."
            )
        if seed is not None and not any(r[:2] == (model, seed) for r in runs):
            raise InputError(f"{where}: this import has no run {model}/{seed}.")
        if ckpt is not None and (seed is None or (model, seed, ckpt) not in runs):
            raise InputError(f"{where}: this import has no checkpoint {model}/{seed}/{ckpt}.")
        values = {new: str(row[old]) for old, new in names.items() if str(row[old]) != ""}
        out.setdefault(target_of(model, seed, ckpt), {}).update(values)
    return out


def import_tree(
    store: str | os.PathLike[str] | Store,
    template: str,
    *,
    ids: str | os.PathLike[str] | None = None,
    meta: str | os.PathLike[str] | None = None,
    meta_types: Mapping[str, str] | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> BulkPlan:
    """Import every file ``template`` fits; return the plan carried out.

    Parameters
    ----------
    template
        A path with fields ``{model}``, ``{seed}``, ``{checkpoint}``, ``{dataset}``,
        ``{layer}`` (and ``*`` for parts outside the key).
    options
        :class:`BulkOptions` fields (``name``, ``layer``, ``seed`` … ``reduce``,
        ``overwrite``, ``attr_ignore`` (``"seed,step"`` or a list), ``attr_rename``
        (``"seed=orig_seed"`` or a dict)).
    progress
        Called as ``progress(rows_done, rows_total)`` over all files.
    """
    opts = BulkOptions(**options)
    types = parse_column_types(meta_types) if isinstance(meta_types, str) else meta_types
    id_values = read_ids(ids, types) if ids is not None else None
    meta_values = read_meta(meta, without_id(types)) if meta is not None else None
    existing = store if isinstance(store, Store) else _existing(store, writable=True)
    plan = plan_tree(existing, template, opts, ids=id_values, meta=meta_values)
    st = existing if existing is not None else Store.open(store, create=True)  # type: ignore[arg-type]
    for dataset, n in plan.rows.items():
        write_dataset(st.root, dataset, n, id_values, meta_values, source="import")
    _write_attributes(st, plan.attributes)
    work = plan.to_write
    counter = RowCounter(sum(e.item.settings.n_samples or 0 for e in work), progress)
    encoding = Encoding(opts.dtype, opts.keep_bits)
    for entry in work:
        copy_item(st, entry.item, encoding, opts.overwrite, counter)
    return plan


def dry_run(
    store: str | os.PathLike[str],
    template: str,
    *,
    ids: str | os.PathLike[str] | None = None,
    meta: str | os.PathLike[str] | None = None,
    meta_types: Mapping[str, str] | str | None = None,
    **options: Any,
) -> BulkPlan:
    """What :func:`import_tree` would do, checked the same way; writes nothing."""
    opts = BulkOptions(**options)
    st = _existing(store, writable=False)
    types = parse_column_types(meta_types) if isinstance(meta_types, str) else meta_types
    id_values = read_ids(ids, types) if ids is not None else None
    meta_values = read_meta(meta, without_id(types)) if meta is not None else None
    return plan_tree(st, template, opts, ids=id_values, meta=meta_values)


def _existing(store: str | os.PathLike[str], writable: bool) -> Store | None:
    """The store if it exists (a refused import must not leave a new, empty one)."""
    url = os.fspath(store)
    if "://" not in url and not Path(url).exists():
        return None
    return Store.open(url, create=writable)


def _write_attributes(store: Store, attributes: Mapping[Target, Mapping[str, str]]) -> None:
    """Set the run attributes found that are not set already, in one atomic write."""
    have = store.run_attributes()
    changes = {
        (level, target): {
            k: v for k, v in values.items() if have.level(level).get(target, {}).get(k) != v
        }
        for (level, target), values in attributes.items()
    }
    changes = {t: v for t, v in changes.items() if v}
    if changes:
        store.set_attributes(dict(changes))
