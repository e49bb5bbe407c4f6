"""Files of the store's cache: result entries and pass checkpoints under ``STORE/cache/``.

The cache is plain keys in the store (``cache/results/…/*.json``, ``cache/passes/*.npz``)
that zarr ignores: no ``zarr.json`` names them, so readers, ``ls`` and ``verify``'s walk of
the representations never see them. Every write is atomic (a local file is written under
a temporary name and renamed; an object store replaces an object in one PUT), so a
killed writer leaves either the old file or the new one, never half of one. A store the
user may not write to (file permissions, an S3 key without write rights) gives a cache
that reads and never writes: :attr:`CacheFiles.writable` says which, and a failed write
is reported once, not raised.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from reprstore.store.atomic import is_temporary, write_atomic
from reprstore.store.zarr_internals import default_buffer_prototype, sync

ROOT = "cache"


class CacheFiles:
    """Byte and array files under ``STORE/cache`` (see the module docstring)."""

    def __init__(self, zstore: Any, local: Path | None) -> None:
        self._store = zstore
        self._local = local
        self.write_error: str | None = None

    @classmethod
    def of(cls, store: Any) -> CacheFiles:
        """The cache of a :class:`~reprstore.store.Store` (opened for reading or writing)."""
        from reprstore.store.handle import STORE_FORMAT, local_path

        local = local_path(store.url)
        zstore = store.root.store
        if zstore.read_only:
            with contextlib.suppress(Exception):
                zstore = zstore.with_read_only(False)
        files = cls(zstore, local.resolve() if local is not None else None)
        if store.format < STORE_FORMAT:  # read as it is until 'reprstore upgrade'
            files.write_error = f"a format-{store.format} store: run 'reprstore upgrade' first"
        return files

    @property
    def local(self) -> bool:
        """Files on a local disk (written in place); else an object store (one PUT each,
        from a copy in memory)."""
        return self._local is not None

    @property
    def writable(self) -> bool:
        return self.write_error is None

    # -- reading ---------------------------------------------------------------------
    def read(self, key: str) -> bytes | None:
        """The bytes of ``cache/<key>``, or None when there is no such file."""
        if self._local is not None:
            try:
                return (self._local / ROOT / key).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        buf = sync(self._store.get(f"{ROOT}/{key}", prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def read_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays of an ``.npz`` file (never unpickled), or None when it is missing.

        Raises ValueError when the file is there but is not a readable ``.npz``.
        """
        try:
            if self._local is not None:
                path = self._local / ROOT / key
                if not path.exists():
                    return None
                with np.load(path, allow_pickle=False) as npz:
                    return {name: npz[name] for name in npz.files}
            data = self.read(key)
            if data is None:
                return None
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{type(err).__name__}: {err}") from None

    def files(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, bytes) of every file under ``cache/<prefix>``, keys relative to ``cache/``."""
        if self._local is not None:
            base = self._local / ROOT
            top = base / prefix if prefix else base
            if not top.is_dir():
                return []
            out = []
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(filenames):
                    if is_temporary(name):
                        continue
                    path = Path(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        out.append((path.relative_to(base).as_posix(), path.stat().st_size))
            return out
        full = f"{ROOT}/{prefix}" if prefix else f"{ROOT}/"

        async def listed() -> list[tuple[str, int]]:
            found = []
            async for key in self._store.list_prefix(full):
                size = await self._store.getsize(key)
                found.append((key[len(ROOT) + 1 :], int(size)))
            return sorted(found)

        return sync(listed())

    # -- writing ---------------------------------------------------------------------
    def _failed(self, err: BaseException) -> None:
        reason = getattr(err, "strerror", None) or type(err).__name__
        self.write_error = self.write_error or str(reason)

    def write(self, key: str, data: bytes) -> bool:
        """Replace ``cache/<key>`` with ``data`` atomically; False when the store refuses."""
        if not self.writable:
            return False
        try:
            if self._local is not None:
                self._replace_local(key, lambda f: f.write(data))
            else:
                buf = default_buffer_prototype().buffer.from_bytes(data)
                sync(self._store.set(f"{ROOT}/{key}", buf))
        except Exception as err:  # permissions, a full disk, an S3 key without write rights
            self._failed(err)
            return False
        return True

    def write_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> bool:
        """Replace ``cache/<key>`` with an ``.npz`` of ``arrays``, atomically. Local files are
        written array by array (no copy of the arrays); an object store gets one PUT."""
        if not self.writable:
            return False
        try:
            if self._local is not None:
                self._replace_local(key, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
            else:
                buf = io.BytesIO()
                np.savez(buf, **arrays)  # type: ignore[arg-type]
                return self.write(key, buf.getvalue())
        except Exception as err:
            self._failed(err)
            return False
        return True

    def _replace_local(self, key: str, fill: Any) -> None:
        assert self._local is not None
        path = self._local / ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, fill, durable=False)  # as before: renamed, not fsync'd

    def delete(self, key: str) -> None:
        """Remove ``cache/<key>`` if it is there (and the store lets us)."""
        try:
            if self._local is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self._local / ROOT / key).unlink()
            else:
                sync(self._store.delete(f"{ROOT}/{key}"))
        except Exception as err:
            self._failed(err)

    def clear_temporaries(self) -> None:
        """Remove what killed writers left half-written (local stores)."""
        if self._local is None:
            return
        for path in (self._local / ROOT).rglob(".*"):
            if is_temporary(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
        _prune_empty_dirs(self._local / ROOT)

    def delete_all(self, keys: list[str]) -> int:
        """Remove these files; how many were removed (none once the store refuses)."""
        for key in keys:
            self.delete(key)
        if self._local is not None:
            _prune_empty_dirs(self._local / ROOT)
        return len(keys) if self.writable else 0


def _prune_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            if Path(dirpath) != top:
                os.rmdir(dirpath)  # only empty ones go
