"""One name, one spelling: refuse a new name that a stored one equals only after NFC.

Names are normalised to Unicode NFC where a user or a file gives them
(:func:`reprstore.keys.nfc`), so ``café`` typed precomposed or decomposed is one model.
A store written before that may hold a decomposed (NFD) spelling; writing the NFC one
beside it would make two folders that print identically. :class:`Spellings` lists each
folder once (names only, no metadata read) and refuses such a name, naming both.
"""

from __future__ import annotations

import contextlib
from typing import Any

from reprstore.errors import InputError
from reprstore.keys import DATASETS, REPRS, ReprKey, nfc
from reprstore.store.zarr_internals import sync


class Spellings:
    """The stored spellings of the names in each folder of one store, listed once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._folders: dict[str, dict[str, str]] = {}

    def _names(self, folder: str) -> dict[str, str]:
        """NFC form → stored spelling, of the names listed in ``folder``."""
        if folder not in self._folders:
            self._folders[folder] = {nfc(n): n for n in sync(_list_dir(self.store, folder))}
        return self._folders[folder]

    def check(self, folder: str, name: str, what: str) -> None:
        """Raise if ``folder`` holds ``name`` spelled differently (equal in NFC only)."""
        stored = self._names(folder).get(nfc(name))
        if stored is not None and stored != name:
            raise InputError(
                f"{what} {name!r} ({name!a}) and the stored {what} {stored!r} "
                f"({stored!a}) are one name spelled two ways (Unicode NFC and NFD) and "
                f"print alike; names are compared in NFC, so rename the stored folder "
                f"{folder}/{ascii(stored)[1:-1]} to NFC or choose another {what}."
            )

    def check_key(self, key: ReprKey) -> None:
        """Check each name of ``key`` against its folder, and its dataset's group."""
        folder = REPRS
        for what in ("model", "seed", "checkpoint", "dataset", "layer"):
            name = getattr(key, what)
            self.check(folder, name, what)
            folder = f"{folder}/{name}"
        self.check(DATASETS, key.dataset, "dataset")


async def _list_dir(store: Any, prefix: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return [name async for name in store.list_dir(prefix)]
    return []
