"""Atomic ``--overwrite``: write the new representation beside the old, swap when complete.

An overwrite of an existing array at ``P`` writes the new array under
``.staging/<token>/array`` (a folder zarr readers never walk: it is not a zarr node).
When the new array is complete, the writer *commits*:

1. ``.staging/<token>/swap.json`` is written (one atomic write): the commit point.
2. ``P`` is moved to ``.staging/<token>/old`` and ``.staging/<token>/array`` to ``P``
   (two renames on a local disk; on object stores a copy of every key, metadata last).
3. ``.staging/<token>`` is deleted.

A SIGKILL before (1) leaves the old array untouched at ``P`` (the half-written stage is
garbage, removed by the next write); after (1) the new array is complete in the stage, and
:func:`finish_pending` (run by every later open of the store, and by the next overwrite)
repeats steps 2-3 from wherever they stopped. Each step is idempotent.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.store import Store as ZarrStore
from zarr.storage import LocalStore

from reprstore.store.zarr_internals import Buffer, default_buffer_prototype, sync

STAGING = ".staging"
JOURNAL = "swap.json"
TARGET = "target.json"
DONE = ".done"


def _bytes(data: bytes) -> Buffer:
    return default_buffer_prototype().buffer.from_bytes(data)


def _get(store: ZarrStore, key: str) -> bytes | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _keys(store: ZarrStore, prefix: str) -> list[str]:
    async def collect() -> list[str]:
        return [k async for k in store.list_prefix(prefix.rstrip("/") + "/")]

    return sync(collect())


def _delete_tree(store: ZarrStore, prefix: str) -> None:
    if isinstance(store, LocalStore):
        shutil.rmtree(Path(store.root) / prefix, ignore_errors=True)
        return
    for key in _keys(store, prefix):
        sync(store.delete(key))


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)  # one atomic rename (a separate name: tests crash it on purpose)


def _local(store: ZarrStore, key: str) -> Path | None:
    return Path(store.root) / key if isinstance(store, LocalStore) else None


@dataclass(frozen=True)
class Replacement:
    """One pending overwrite of the array at ``target`` by the one at ``stage_path``."""

    store: ZarrStore
    target: str
    token: str

    @property
    def folder(self) -> str:
        return f"{STAGING}/{self.token}"

    @property
    def stage_path(self) -> str:
        return f"{self.folder}/array"

    @classmethod
    def begin(cls, store: ZarrStore, target: str) -> Replacement:
        """Start an overwrite of ``target`` (the caller holds its write lease).

        Stages of earlier overwrites of the same target that never committed are removed.
        """
        from reprstore.store.lock import Lease

        finish_pending(store)
        for token, record in _stages(store):
            other = record.get("target")
            if _has_journal(store, token) or not isinstance(other, str):
                continue
            if other == target or not Lease(store, other).is_live():
                _delete_tree(store, f"{STAGING}/{token}")  # abandoned by a killed writer
        _tidy(store)
        rep = cls(store, target, uuid.uuid4().hex)
        sync(store.set(f"{rep.folder}/{TARGET}", _bytes(json.dumps({"target": target}).encode())))
        return rep

    def commit(self) -> None:
        """Swap the complete staged array in (after this returns or a crash, it is in)."""
        record = {"target": self.target, "stage": self.stage_path}
        sync(self.store.set(f"{self.folder}/{JOURNAL}", _bytes(json.dumps(record).encode())))
        _finish(self.store, self.token, self.target)

    def discard(self) -> None:
        """Drop the staged array (a failed or aborted overwrite); the old one stays."""
        if not _has_journal(self.store, self.token):
            _delete_tree(self.store, self.folder)
            _tidy(self.store)


def begin_if_needed(
    store: ZarrStore, target: str, exists: bool, overwrite: bool
) -> Replacement | None:
    """A staged overwrite when ``overwrite`` replaces an existing array, else None."""
    return Replacement.begin(store, target) if overwrite and exists else None


def _stages(store: ZarrStore) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key in _keys(store, STAGING):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == TARGET and not parts[1].endswith(DONE):
            raw = _get(store, key)
            try:
                record = json.loads(raw) if raw else {}
            except ValueError:
                record = {}
            out.append((parts[1], record if isinstance(record, dict) else {}))
    return out


def _has_journal(store: ZarrStore, token: str) -> bool:
    return _get(store, f"{STAGING}/{token}/{JOURNAL}") is not None


def has_staging(store: ZarrStore) -> bool:
    """Cheap test whether any overwrite left work behind (one stat on a local disk)."""
    local = _local(store, STAGING)
    if local is not None:
        return local.exists()
    return bool(_keys(store, STAGING))


def finish_pending(store: ZarrStore) -> int:
    """Complete every committed swap; return how many there were."""
    if not has_staging(store) or (store.read_only and _local(store, STAGING) is None):
        return 0  # a read-only object store: readers still see the old array meanwhile
    local = _local(store, STAGING)
    if local is not None:
        for garbage in local.glob(f"*{DONE}"):
            _delete_tree(store, f"{STAGING}/{garbage.name}")
    done = 0
    for token, record in _stages(store):
        target = record.get("target")
        if isinstance(target, str) and _has_journal(store, token):
            _finish(store, token, target)
            done += 1
    _tidy(store)
    return done


def _finish(store: ZarrStore, token: str, target: str) -> None:
    folder = f"{STAGING}/{token}"
    stage, old = f"{folder}/array", f"{folder}/old"
    local_stage, local_target = _local(store, stage), _local(store, target)
    if local_stage is not None and local_target is not None:
        old_path = _local(store, old)
        assert old_path is not None
        if local_stage.exists():
            if local_target.exists():
                _move(local_target, old_path)
            _move(local_stage, local_target)
    else:
        _copy_over(store, stage, target)
    local_folder = _local(store, folder)
    if local_folder is not None:
        # done: the whole stage becomes garbage in one rename, swept by any later open
        done = local_folder.with_name(local_folder.name + DONE)
        if local_folder.exists():
            _move(local_folder, done)
        _delete_tree(store, f"{STAGING}/{done.name}")
    else:
        sync(store.delete(f"{folder}/{JOURNAL}"))  # done: what is left is garbage
        _delete_tree(store, folder)
    _tidy(store)


def _tidy(store: ZarrStore) -> None:
    """Remove ``.staging`` itself (a group zarr made for the stages) once it holds no stage."""
    meta = f"{STAGING}/zarr.json"
    local = _local(store, STAGING)
    if local is not None:
        try:
            if [p.name for p in local.iterdir()] == ["zarr.json"]:
                (local / "zarr.json").unlink()
            local.rmdir()
        except OSError:
            pass  # another overwrite is staged, or it went already
    elif _keys(store, STAGING) == [meta]:
        sync(store.delete(meta))


def _copy_over(store: ZarrStore, stage: str, target: str) -> None:
    """Object stores: replace every key under ``target`` by the staged ones, metadata last.

    Readers meanwhile see no array (its ``zarr.json`` goes first) or chunks whose
    checksums do not match what they planned to read (an error, never a mix).
    """
    staged = _keys(store, stage)
    if not staged:
        return  # copied already, the stage deleted next
    meta = f"{target}/zarr.json"
    sync(store.delete(meta))
    for key in _keys(store, target):
        sync(store.delete(key))
    staged_meta = f"{stage}/zarr.json"
    for key in sorted(staged, key=lambda k: k == staged_meta):
        data = _get(store, key)
        if data is not None:
            sync(store.set(target + key[len(stage) :], _bytes(data)))
