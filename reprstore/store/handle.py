"""The store: a zarr v3 group laid out as SPEC.md fixes it, on a path or fsspec URL.

```
STORE/
  datasets/<dataset>/ids, datasets/<dataset>/meta/<column>
  reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>   (n_samples, n_features), by rows
```
The root group's ``reprstore`` attribute records the store format: 2 is the layout above;
1 (the first release) had no ``<dataset>`` level and kept the dataset in each array's
attributes. Format-1 stores open for reading as they are; writing needs
``reprstore upgrade``. Any other format is refused. This is the only module family that
imports zarr. Everything written here stays readable by plain ``zarr.open_group``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.errors import ContainsGroupError, GroupNotFoundError

from reprstore.errors import (
    AlreadyExistsError,
    IncompleteError,
    InputError,
    NotFoundError,
    SelectorError,
    StoreFormatError,
    StoreNotFoundError,
    StoreWriteError,
)
from reprstore.keys import (
    REPRS,
    SELECTOR_KEYS,
    ReprKey,
    Selector,
    checkpoint_step,
    natural_key,
)
from reprstore.store import listing, replace
from reprstore.store.attrs import ReprSettings, provenance, utc_now
from reprstore.store.datasets import Dataset, open_dataset
from reprstore.store.encoding import Encoding, chunk_rows_for, compressors
from reprstore.store.lock import Lease
from reprstore.store.runattrs import Changes, RunAttributes, read_attributes, write_attributes
from reprstore.store.spelling import Spellings
from reprstore.store.writer import ReprWriter
from reprstore.store.zarr_internals import sync

STORE_MARKER = "reprstore"
STORE_FORMAT = 2
KNOWN_FORMATS = (1, 2)
UPGRADE_JOURNAL = "upgrade-journal.json"


def _is_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    return None if _is_url(url) else Path(url)


def _open_root(url: str, create: bool) -> zarr.Group:
    """Open the root group; when creating, tolerate another process creating it first."""
    if not create:
        return zarr.open_group(url, mode="r")
    for _ in range(20):
        try:
            return zarr.open_group(url, mode="a")
        except ContainsGroupError:  # created by a concurrent writer between check and write
            time.sleep(0.05)
    return zarr.open_group(url, mode="r+")


def _open_existing(url: str) -> zarr.Group:
    """An existing group, opened to write (never created)."""
    return zarr.open_group(url, mode="r+")


def _wait_for_marker(root: zarr.Group, seconds: float = 2.0) -> Any:
    """A concurrent creator writes the marker right after the group; give it a moment."""
    if not any(True for _ in root):
        return None  # an empty group: ours to mark
    deadline = time.time() + seconds
    while time.time() < deadline:
        marker = zarr.open_group(root.store, mode="r+").attrs.get(STORE_MARKER)
        if marker is not None:
            return marker
        time.sleep(0.05)
    return None


def store_format(marker: Any, url: str) -> int:
    """The format number in a store's marker; :class:`StoreFormatError` if unknown."""
    fmt = marker.get("format") if isinstance(marker, dict) else None
    if fmt not in KNOWN_FORMATS:
        known = " and ".join(map(str, KNOWN_FORMATS))
        raise StoreFormatError(
            f"{url} is a reprstore store of format {fmt!r}, which this reprstore knows not "
            f"(it reads formats {known}). Use the reprstore version that wrote it."
        )
    return int(fmt)


def journal_exists(root: zarr.Group) -> bool:
    """Whether an upgrade journal lies in the store (an upgrade is under way or was killed)."""
    return bool(sync(root.store.exists(UPGRADE_JOURNAL)))


def upgrade_running(root: zarr.Group) -> bool:
    """Whether a live ``reprstore upgrade`` holds the store (its lease on ``reprs/``)."""
    return Lease(root.store, REPRS).is_live()


def _unfinished_upgrade(root: zarr.Group, url: str) -> StoreFormatError:
    """The one line for a store with an upgrade journal: running now, or interrupted."""
    if upgrade_running(root):
        return StoreFormatError(
            f"The store at {url} is being upgraded (reprstore upgrade is running); retry "
            "when it finishes."
        )
    return StoreFormatError(
        f"The upgrade of {url} was interrupted: run 'reprstore upgrade {url}' to finish it "
        "before using the store."
    )


def _refuse_unfinished_upgrade(root: zarr.Group, url: str) -> None:
    if journal_exists(root):
        raise _unfinished_upgrade(root, url)


_READING_FORMAT_1: weakref.WeakSet[Store] = weakref.WeakSet()
"""Format-1 stores this process opened to read: an upgrade may move their arrays while they
are read (see :meth:`Store.raise_if_upgraded`)."""


def upgrade_interference() -> str | None:
    """The one line saying that an upgrade moved a store this process was reading, if one
    did (for the CLI, to say that instead of the error the moved arrays caused)."""
    for st in list(_READING_FORMAT_1):
        try:
            st.raise_if_upgraded()
        except StoreFormatError as err:
            return str(err)
        except Exception:  # the check is best effort; the original error is then shown
            continue
    return None


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _read_consistently(method: _Method) -> _Method:
    """Check a read of the store against an upgrade that began meanwhile.

    When an upgrade began while ``method`` read (see :meth:`Store.raise_if_upgraded`), its
    one line is raised instead of the read's result or error: a listing may lack the arrays
    it renamed meanwhile, and a lookup may fail with ``KeyError`` or "No representation".
    """

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except Exception:
            self.raise_if_upgraded()
            raise
        self.raise_if_upgraded()
        return result

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class ReprInfo:
    """What ``ls`` and ``info`` show about one representation."""

    key: ReprKey
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    zarr_dtype: str
    attrs: dict[str, Any]
    nbytes_stored: int

    @property
    def dataset(self) -> str:
        return self.key.dataset

    @property
    def step(self) -> int | None:
        """The checkpoint's training step (recorded at write time, or read off its label)."""
        step = self.attrs.get("step")
        return int(step) if step is not None else checkpoint_step(self.key.checkpoint)

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def rows_written(self) -> int:
        return int(self.attrs.get("rows_written", 0))

    @property
    def stored_dtype(self) -> str:
        return str(self.attrs.get("stored_dtype", self.zarr_dtype))

    @property
    def raw_float32_nbytes(self) -> int:
        """Bytes the rows written would take as raw float32."""
        return self.rows_written * int(self.shape[1]) * 4

    @property
    def ratio(self) -> float | None:
        """Compression ratio against raw float32 (what a ``.npy`` dump would take)."""
        return self.raw_float32_nbytes / self.nbytes_stored if self.nbytes_stored else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.key.as_dict(),
            "step": self.step,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "stored_dtype": self.stored_dtype,
            "complete": self.complete,
            "rows_written": self.rows_written,
            "nbytes_stored": self.nbytes_stored,
            "ratio_vs_float32": self.ratio,
            "nonfinite": self.attrs.get("nonfinite", {"nan": 0, "inf": 0}),
            "attrs": self.attrs,
        }


#: How long a writer waits for another process that is creating the same store.
CREATION_WAIT_S = 10.0


def _made_meanwhile(path: Path) -> bool:
    """Whether another process, creating the store at ``path`` right now (its folder is
    new, its ``zarr.json`` not there yet), finishes it within :data:`CREATION_WAIT_S`. An
    older folder is not waited for."""
    deadline = time.monotonic() + CREATION_WAIT_S
    if time.time() - path.stat().st_mtime > CREATION_WAIT_S:
        return False
    while time.monotonic() < deadline:
        if (path / "zarr.json").exists():
            return True
        time.sleep(0.05)
    return False


def _create_local_root(path: Path) -> None:
    """Make the root group of a new local store, marker included, in one exclusive step.

    Writing the group first and its marker after (as ``zarr.open_group(mode="a")`` then
    ``update_attributes`` do) lets two processes creating one store both write
    ``zarr.json``, the second erasing the first's marker: the store then reads as "not a
    reprstore store". Here the full ``zarr.json`` is written to a private file and linked
    into place, which fails if one is there already (``os.link`` is atomic and exclusive
    on local file systems); whoever loses opens the winner's store.
    """
    import json
    import uuid

    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {STORE_MARKER: {"format": STORE_FORMAT, "created": utc_now()}},
    }
    tmp = path / f".zarr.json.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(meta))
    try:
        os.link(tmp, path / "zarr.json")
    except FileExistsError:
        pass  # another process made the store first: open it
    finally:
        tmp.unlink()


class Store:
    """A reprstore store; open it with :meth:`Store.open`."""

    def __init__(
        self, root: zarr.Group, url: str, read_only: bool, fmt: int = STORE_FORMAT
    ) -> None:
        self.root = root
        self.url = url
        self.read_only = read_only
        self.format = fmt
        self._run_attributes: RunAttributes | None = None
        self._damaged: dict[str, listing.Damaged] = {}
        self._spellings = Spellings(root.store)
        self.created = False  # this process created the store (see store.fresh)
        self._watch_upgrades = False  # a format-1 store read while 'upgrade' may run

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str],
        *,
        create: bool = False,
        writable: bool = False,
        upgrading: bool = False,
    ) -> Store:
        """Open a store; with ``create`` make it if missing, with ``writable`` open an
        existing one to change it (read-only otherwise).

        Raises :class:`StoreFormatError` for a format this version does not know, for a
        format-1 store opened to write (``reprstore upgrade`` first) and for a store whose
        upgrade was interrupted. ``upgrading`` (for :mod:`reprstore.store.migration` only)
        skips the last two checks.
        """
        url = os.fspath(url)
        path = local_path(url)
        if path is not None and not path.exists() and not create:
            raise StoreNotFoundError(
                f"No store at {url}. Create one with 'reprstore import' or 'reprstore extract'."
            )
        if path is not None and path.exists() and not path.is_dir():
            raise StoreNotFoundError(f"{url} is a file, not a store directory.")
        existed = path is None or (path / "zarr.json").exists()
        fresh = path is not None and create and path.exists() and not (path / "zarr.json").exists()
        if fresh and any(path.iterdir()) and not _made_meanwhile(path):  # type: ignore[arg-type,union-attr]
            raise StoreNotFoundError(
                f"{url} is a non-empty directory that is not a zarr store; "
                "choose a new path for the store."
            )
        if writable and not create and path is not None and not path.exists():
            raise StoreNotFoundError(f"No store at {url}.")
        if create and path is not None and not (path / "zarr.json").exists():
            try:
                _create_local_root(path)
            except OSError as err:
                raise StoreWriteError(f"Cannot create store {url}: {err}") from err
        target = str(path) if path is not None else url  # file:// opens as its local path
        try:
            root = _open_root(target, create) if not writable or create else _open_existing(target)
        except (GroupNotFoundError, FileNotFoundError) as err:
            raise StoreNotFoundError(f"No store at {url}: {err}") from err
        except (PermissionError, OSError) as err:
            raise StoreWriteError(f"Cannot open store {url}: {err}") from err
        except (ValueError, TypeError) as err:
            raise StoreNotFoundError(f"{url} is not a zarr v3 group: {err}") from err
        marker = root.attrs.get(STORE_MARKER)
        if marker is None and create:
            marker = _wait_for_marker(root)
        if marker is None:
            if not create or any(True for _ in root):
                raise StoreNotFoundError(
                    f"{url} is a zarr group but not a reprstore store (no '{STORE_MARKER}' "
                    "attribute). Choose another path."
                )
            marker = {"format": STORE_FORMAT, "created": utc_now()}
            root.update_attributes({STORE_MARKER: marker})
        fmt = store_format(marker, url)
        if not upgrading:
            _refuse_unfinished_upgrade(root, url)
            if (create or writable) and fmt < STORE_FORMAT:
                raise StoreFormatError(
                    f"{url} is a format-{fmt} store (the first release's layout): it opens for "
                    f"reading, but writing needs format {STORE_FORMAT}. Run 'reprstore upgrade "
                    f"{url}' first (in place, resumable)."
                )
            if fmt == STORE_FORMAT:
                # an overwrite killed after its commit point is finished here; a read-only
                # copy reads what is there, and its next writable open finishes it
                with contextlib.suppress(OSError):
                    replace.finish_pending(root.store)
        opened = cls(root, url, read_only=not (create or writable), fmt=fmt)
        opened.created = create and not existed
        if fmt < STORE_FORMAT and not upgrading:
            opened._watch_upgrades = True
            _READING_FORMAT_1.add(opened)
        return opened

    def raise_if_upgraded(self) -> None:
        """Raise :class:`StoreFormatError` if an upgrade began after this store was opened.

        ``reprstore upgrade`` renames a format-1 store's arrays one at a time, so a read
        that overlaps it can miss arrays or meet a ``KeyError``. The upgrade writes its
        journal before the first rename and marks format 2 before deleting the journal:
        a journal, or a marker that no longer says this store's format, tells. Only
        format-1 stores opened to read are checked (an upgrade leaves others as they are).
        """
        if not self._watch_upgrades:
            return
        if journal_exists(self.root):
            raise _unfinished_upgrade(self.root, self.url)
        marker = zarr.open_group(self.root.store, mode="r").attrs.get(STORE_MARKER)
        if not isinstance(marker, dict) or marker.get("format") != self.format:
            raise StoreFormatError(
                f"The store at {self.url} was upgraded (reprstore upgrade ran) while it was "
                "being read; run the command again."
            )

    # -- reading -------------------------------------------------------------------
    def _children(self, path: str, kind: str) -> list[str]:
        if path not in self.root:
            return []
        group = self.root[path]
        if not isinstance(group, zarr.Group):
            return []
        names, damaged = listing.children(group, kind)
        if path.startswith(REPRS):
            self._damaged.update((d.path, d) for d in damaged)
        # "__" names are zarr's (and the upgrade's staging area): never a user's name
        return sorted((n for n in names if not n.startswith("__")), key=natural_key)

    @_read_consistently
    def damaged(self, selector: Selector | str | None = None) -> list[listing.Damaged]:
        """Nodes under ``reprs/`` whose metadata cannot be read and that ``selector`` could
        mean (walking the store's listing to find them)."""
        sel = Selector.parse(selector)
        for _ in self.keys(sel):
            pass
        layout = listing.LAYOUT_KEYS_V1 if self.format == 1 else listing.LAYOUT_KEYS
        return sorted(
            (d for d in self._damaged.values() if d.matches(sel.allows, layout)),
            key=lambda d: natural_key(d.path),
        )

    def _runs(self, sel: Selector) -> Iterator[tuple[str, str, str]]:
        """(model, seed, checkpoint) groups whose names the selector allows."""
        for model in self._children(REPRS, "group"):
            if not sel.allows("model", model):
                continue
            for seed in self._children(f"{REPRS}/{model}", "group"):
                if not sel.allows("seed", seed):
                    continue
                for ckpt in self._children(f"{REPRS}/{model}/{seed}", "group"):
                    if sel.allows("checkpoint", ckpt):
                        yield model, seed, ckpt

    def _v1_dataset(self, run_path: str, layer: str) -> str:
        node = self.root[f"{run_path}/{layer}"]
        return str(node.attrs.get("dataset", "default"))

    def keys(self, selector: Selector | str | None = None) -> Iterator[ReprKey]:
        """Every representation key whose names the selector allows, in natural order.

        Run attributes in the selector are checked by :meth:`select`, not here.
        """
        sel = selector if isinstance(selector, Selector) else Selector.parse(selector)
        for model, seed, ckpt in self._runs(sel):
            run = f"{REPRS}/{model}/{seed}/{ckpt}"
            if self.format == 1:
                found = []
                for layer in self._children(run, "array"):
                    dataset = self._v1_dataset(run, layer)
                    if sel.allows("layer", layer) and sel.allows("dataset", dataset):
                        found.append(ReprKey.stored(model, seed, ckpt, dataset, layer))
                yield from sorted(found, key=lambda k: natural_key(k.dataset))
                continue
            for dataset in self._children(run, "group"):
                if not sel.allows("dataset", dataset):
                    continue
                for layer in self._children(f"{run}/{dataset}", "array"):
                    if sel.allows("layer", layer):
                        yield ReprKey.stored(model, seed, ckpt, dataset, layer)

    @_read_consistently
    def select(
        self,
        selector: Selector | str | None = None,
        *,
        sizes: bool = False,
        must_match: str | None = None,
    ) -> list[ReprInfo]:
        """Info on every representation the selector matches, in natural key order.

        Parameters
        ----------
        selector
            Globs over the key's fields and run attributes (see :class:`Selector`).
        sizes
            Also measure bytes on disk (slower on object stores).
        must_match
            Name of what the selector came from (``--a``, ``rm``): an empty selection,
            or a literal alternative (``model=full|lorra``) that names nothing in the
            store, then raises :class:`NotFoundError` naming it, with the closest
            existing names.
        """
        sel = Selector.parse(selector)
        found = self.select_keys(sel)
        if must_match is not None:
            from reprstore.store.explain import check_literals, explain_empty

            if not found:
                raise explain_empty(self, sel, must_match)
            check_literals(self, sel, must_match, found)
        return [self.info(key, sizes=sizes) for key in found]

    @_read_consistently
    def select_keys(self, selector: Selector | str | None = None) -> list[ReprKey]:
        """The keys :meth:`select` would return (run attributes checked), in order."""
        sel = Selector.parse(selector)
        keys = list(self.keys(sel))
        if not sel.attribute_keys:
            return keys
        attrs = self.run_attributes()
        unknown = [k for k in sel.attribute_keys if k not in attrs.names]
        if unknown:
            raise SelectorError(
                f"Unknown selector key {unknown[0]!r}: not a key field "
                f"({', '.join(SELECTOR_KEYS)}) nor a run attribute of {self.url} "
                f"(attributes: {', '.join(attrs.names) or 'none; set them with reprstore tag'})."
            )
        return [k for k in keys if sel.matches(k, attrs.for_key(k))]

    # -- run attributes --------------------------------------------------------------
    def run_attributes(self) -> RunAttributes:
        """Every run attribute of the store (read once per :class:`Store`)."""
        if self._run_attributes is None:
            self._run_attributes = read_attributes(self.root)
        return self._run_attributes

    def attributes(self, key: ReprKey) -> dict[str, str]:
        """The run attributes of ``key``: model < model×seed < ×checkpoint, as strings."""
        return self.run_attributes().for_key(key)

    def set_attributes(self, changes: Changes) -> RunAttributes:
        """Set (value) or remove (``None``) attributes, atomically under a lease."""
        self._require_writable()
        self._run_attributes = write_attributes(self.root, changes)
        return self._run_attributes

    def array_path(self, key: ReprKey) -> str:
        """Where ``key`` is stored in this store's format."""
        return key.v1_path if self.format == 1 else key.path

    def exists(self, key: ReprKey) -> bool:
        path = self.array_path(key)
        if path not in self.root:
            return False
        node = self.root[path]
        if not isinstance(node, zarr.Array):
            return False
        return self.format != 1 or str(node.attrs.get("dataset", "default")) == key.dataset

    @_read_consistently
    def array(self, key: ReprKey, *, allow_incomplete: bool = False) -> zarr.Array[Any]:
        """The zarr array of a representation; refuses incomplete ones unless allowed."""
        if not self.exists(key):
            raise NotFoundError(f"No representation {key.label()} in {self.url}.")
        arr = self.root[self.array_path(key)]
        assert isinstance(arr, zarr.Array)
        if not allow_incomplete and not arr.attrs.get("complete", False):
            raise IncompleteError(
                f"{key.label()} is incomplete ({arr.attrs.get('rows_written', 0)} of "
                f"{arr.shape[0]} rows): resume its extraction or pass --allow-incomplete."
            )
        return arr

    def info(self, key: ReprKey, *, sizes: bool = True) -> ReprInfo:
        """Shape, attributes and (with ``sizes``) bytes on disk of one representation."""
        arr = self.array(key, allow_incomplete=True)
        return ReprInfo(
            key=key,
            shape=tuple(arr.shape),
            chunks=tuple(arr.chunks),
            zarr_dtype=str(arr.dtype),
            attrs=dict(arr.attrs),
            nbytes_stored=int(arr.nbytes_stored()) if sizes else 0,
        )

    def read_rows(self, key: ReprKey, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a complete representation."""
        return np.asarray(self.array(key)[start:stop])

    def datasets(self) -> list[str]:
        return self._children("datasets", "group")

    def dataset(self, name: str) -> Dataset:
        return open_dataset(self.root, name)

    # -- writing -------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreWriteError(f"Store {self.url} was opened read-only.")

    def delete(self, key: ReprKey) -> None:
        """Remove one representation, its metadata first.

        Killed midway, what is left is chunk files without a ``zarr.json``: no reader sees
        them as an array, so a half-deleted array never reads as a complete one.
        """
        self._require_writable()
        path = self.array_path(key)
        sync(self.root.store.delete(f"{path}/zarr.json"))
        sync(self.root.store.delete_dir(path))

    def writer(
        self,
        key: ReprKey,
        settings: ReprSettings,
        *,
        encoding: Encoding,
        sources: dict[str, Any] | None = None,
        overwrite: bool = False,
        on_nonfinite: str = "warn",
    ) -> ReprWriter:
        """A writer for ``key``: new, resumed (same settings, interrupted) or overwritten.

        Raises :class:`AlreadyExistsError` for a complete representation unless
        ``overwrite``, and :class:`InputError` when an interrupted write with other
        settings is in the way.
        """
        self._require_writable()
        if settings.dataset != key.dataset:
            raise InputError(
                f"{key.label()}: the settings name dataset {settings.dataset!r}, the key "
                f"{key.dataset!r}."
            )
        self.check_spelling(key)
        lease = Lease(self.root.store, key.path).acquire()
        replacement = None
        try:
            replacement = replace.begin_if_needed(self.root.store, key.path, self.exists(key),
                                                  overwrite)  # fmt: skip
            path = replacement.stage_path if replacement else key.path
            arr = self._prepare_array(key, settings, encoding, sources or {}, overwrite, path)
            lease.renew()
            return ReprWriter(arr, key, settings, encoding, lease, on_nonfinite, replacement)
        except BaseException:
            if replacement is not None:
                replacement.discard()
            lease.release()
            raise

    def is_complete_with(self, key: ReprKey, settings: ReprSettings) -> bool:
        """Whether ``key`` is complete and was written with exactly these settings.

        Such a representation holds what the write would produce (same source fingerprint,
        shape and encoding), so re-running the command skips it instead of refusing: that
        is how a multi-layer import or extraction resumes after a crash.
        """
        if not self.exists(key):
            return False
        attrs: dict[str, Any] = self.root[self.array_path(key)].attrs.asdict()
        if not attrs.get("complete"):
            return False
        stored = ReprSettings.from_dict(attrs.get("settings", {}))
        return not stored.differences(settings) and settings.source_fingerprint is not None

    def check_writable(self, key: ReprKey, settings: ReprSettings, overwrite: bool) -> None:
        """Raise now if writing ``key`` would be refused (validate before any write)."""
        self.check_spelling(key)
        Lease(self.root.store, key.path).raise_if_live()
        self._check_settings(key, settings, overwrite)

    def check_spelling(self, key: ReprKey) -> None:
        """Refuse ``key`` if a name of it is stored spelled differently (equal only in
        NFC, see :mod:`reprstore.store.spelling`): two folders that print alike."""
        self._spellings.check_key(key)

    def _check_settings(self, key: ReprKey, settings: ReprSettings, overwrite: bool) -> None:
        if overwrite or not self.exists(key):
            return
        attrs: dict[str, Any] = self.root[self.array_path(key)].attrs.asdict()
        diffs = ReprSettings.from_dict(attrs.get("settings", {})).differences(settings)
        what = f" ({', '.join(diffs)})" if diffs else " (from other data)"
        if attrs.get("complete"):
            raise AlreadyExistsError(
                f"{key.label()} already exists and is complete, with other settings{what}. "
                "Pass --overwrite to replace it, or use another --name/--seed/--checkpoint."
            )
        if diffs:
            raise InputError(
                f"{key.label()} holds an interrupted write with other settings{what}; "
                "pass --overwrite to start it again."
            )

    def _prepare_array(
        self,
        key: ReprKey,
        settings: ReprSettings,
        encoding: Encoding,
        sources: dict[str, Any],
        overwrite: bool,
        path: str | None = None,
    ) -> zarr.Array[Any]:
        self._check_settings(key, settings, overwrite)
        if self.exists(key) and not overwrite:
            arr = self.root[self.array_path(key)]
            assert isinstance(arr, zarr.Array)
            return arr
        dtype = encoding.zarr_dtype
        rows = chunk_rows_for(settings.n_features, dtype.itemsize, settings.n_samples)
        attributes: dict[str, Any] = {
            "dataset": settings.dataset,
            "n_samples": settings.n_samples,
            "original_shape": list(settings.original_shape),
            "reduction": settings.reduction,
            "stored_dtype": settings.stored_dtype,
            "source_dtype": settings.source_dtype,
            "keep_bits": settings.keep_bits,
            "complete": False,
            "rows_written": 0,
            "chunk_crc32": [],
            "nonfinite": {"nan": 0, "inf": 0},
            "settings": settings.to_dict(),
            "provenance": provenance(**sources),
            "created": utc_now(),
        }
        if "layout" in settings.extra:  # the per-sample axes of attention maps
            attributes["layout"] = settings.extra["layout"]
        step = checkpoint_step(key.checkpoint)
        if step is not None:
            attributes["step"] = step  # the checkpoint's training step, for timelines
        try:
            return self.root.create_array(
                path or key.path,
                shape=(settings.n_samples or 0, settings.n_features),
                chunks=(rows, settings.n_features),
                dtype=dtype,
                compressors=compressors(dtype),
                fill_value=0,
                attributes=attributes,
                dimension_names=["sample", "feature"],
                overwrite=overwrite,
            )
        except OSError as err:
            raise StoreWriteError(f"Cannot create {key.label()} in {self.url}: {err}") from err
