"""One error family for everything a user can get wrong.

Every error reprstore raises on bad input derives from :class:`ReprstoreError` and
carries a one-line message that names what is wrong and how to fix it. The CLI prints
that line and exits with status 1; library users can catch the family or the matching
built-in (``KeyError``, ``ValueError`` …) that each subclass also inherits.
"""

from __future__ import annotations


class ReprstoreError(Exception):
    """Base of every user-facing reprstore error."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class StoreNotFoundError(ReprstoreError, FileNotFoundError):
    """The store path or URL does not hold a reprstore store."""


class InvalidNameError(ReprstoreError, ValueError):
    """A model, seed, checkpoint, layer or dataset name is not allowed."""


class SelectorError(ReprstoreError, ValueError):
    """A selector string cannot be parsed."""


class NotFoundError(ReprstoreError, KeyError):
    """A representation, dataset, layer or column does not exist."""


class AlreadyExistsError(ReprstoreError, FileExistsError):
    """Refusing to overwrite something complete without ``overwrite``."""


class DatasetMismatchError(ReprstoreError, ValueError):
    """Rows do not agree with the dataset they are written to or compared on."""


class IncompleteError(ReprstoreError):
    """A representation is not completely written."""


class InputError(ReprstoreError, ValueError):
    """An input file, model, checkpoint or option value cannot be used."""


class LockedError(ReprstoreError):
    """Another live process is writing the same representation."""


class ComparisonError(ReprstoreError, ValueError):
    """A comparison cannot give a meaningful value (too few rows, constant data, NaN)."""


class StoreWriteError(ReprstoreError, OSError):
    """Writing to the store failed (disk full, read-only, permission)."""


class ExpressionError(ReprstoreError, ValueError):
    """A ``--where`` or ``--pair-where`` condition is not of the allowed kind."""


class StoreFormatError(ReprstoreError, ValueError):
    """The store's format version is unknown, or needs ``reprstore upgrade`` first."""


class CorruptDataError(ReprstoreError, ValueError):
    """Stored data is damaged: a chunk missing, undecodable or not matching its checksum."""


class ReprstoreWarning(UserWarning):
    """Something the user should know about a result or a store, said in one line."""


class ClusterError(ReprstoreError, RuntimeError):
    """The dask cluster went away (scheduler lost, no workers left) during a comparison."""


class FileWriteError(ReprstoreError, OSError):
    """Writing a file (a result table, a figure, a cache entry) failed: disk full,
    permission. The file of that name is left as it was (see :mod:`reprstore.store.atomic`)."""
