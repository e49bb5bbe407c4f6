"""Attributes of a representation array: a frozen, versioned record plus provenance.

Everything is kept as plain JSON in the array's ``zarr.json`` so any zarr reader sees it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ReprSettings:
    """What fixes the content of a representation; a resumed write must match it."""

    dataset: str
    n_features: int
    n_samples: int | None
    original_shape: tuple[int | None, ...]
    reduction: str
    stored_dtype: str
    source_dtype: str
    keep_bits: int | None = None
    source_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["original_shape"] = list(self.original_shape)
        out["schema"] = SCHEMA_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReprSettings:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["original_shape"] = tuple(kwargs.get("original_shape", ()))
        return cls(**kwargs)

    def differences(self, other: ReprSettings) -> list[str]:
        """Names of the settings that differ between two writes of the same array."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k != "extra" and mine[k] != theirs.get(k)]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike[str], block: int = 2**22) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(**sources: Any) -> dict[str, Any]:
    """Versions, host, command line and time, plus the caller's sources (model, data …)."""
    import numpy
    import zarr

    from reprstore import __version__

    torch = sys.modules.get("torch")
    record: dict[str, Any] = {
        "reprstore": __version__,
        "zarr": zarr.__version__,
        "numpy": numpy.__version__,
        "torch": getattr(torch, "__version__", None),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
        "cwd": os.getcwd(),
        "time": utc_now(),
    }
    record.update({k: v for k, v in sources.items() if v is not None})
    return record
