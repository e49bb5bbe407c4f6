"""A store a failed command created is not left behind.

``import`` and ``extract`` create their store before planning (planning reads it). When
planning then refuses the input, a store that this very command created and that still
holds nothing but its root marker is removed again: no half-made store is left.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zarr.storage import LocalStore

from reprstore.store.handle import Store
from reprstore.store.zarr_internals import sync


def _only_marker(store: Store) -> bool:
    async def collect() -> list[str]:
        return [k async for k in store.root.store.list()]

    keys = sync(collect())
    return keys == ["zarr.json"] or not keys


@contextmanager
def undo_new_store(store: Store) -> Iterator[Store]:
    """Remove ``store`` again if the body fails, it was created by this process and is empty."""
    try:
        yield store
    except BaseException:
        if store.created and _only_marker(store):
            zstore = store.root.store
            if isinstance(zstore, LocalStore):
                shutil.rmtree(Path(zstore.root), ignore_errors=True)
            else:
                sync(zstore.delete("zarr.json"))
        raise
