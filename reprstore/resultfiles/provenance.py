"""How a result was made: the record every result file carries, and reading it back.

A comparison's record names the store, the selectors, the pair filter or pairs file,
the row filter and the rows it kept, the estimator/measure options, the versions of
reprstore, zarr, numpy, dask and pandas, the command line and the time. It travels with
the result table as ``DataFrame.attrs["reprstore"]`` and is written by
:func:`reprstore.report.write_results`:

* ``.json``: ``{"provenance": {...}, "rows": [...]}`` (the rows as a list of objects);
* ``.parquet``: the file's key/value metadata under the key ``reprstore`` (JSON text);
* ``.csv``: a sidecar ``FILE.csv.json`` holding the record and the CSV's sha256, so the
  CSV itself stays a plain table every tool reads.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from reprstore.errors import InputError
from reprstore.store.atomic import write_text_atomic

PROVENANCE_KEY = "reprstore"
PROVENANCE_FORMAT = 1
VERSIONED = ("reprstore", "zarr", "numpy", "dask", "pandas", "numcodecs")


def versions() -> dict[str, str | None]:
    """Installed versions of reprstore and the libraries a result depends on."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def make_provenance(**fields: Any) -> dict[str, Any]:
    """The record of one result: the caller's fields plus versions, command line and time.

    Parameters
    ----------
    fields
        What made the result, e.g. ``store``, ``a``, ``b``, ``match``, ``differ``,
        ``pair_where``, ``pairs_file``, ``where``, ``rows``, ``options``.
    """
    record: dict[str, Any] = {"format": PROVENANCE_FORMAT}
    record.update({k: _plain(v) for k, v in fields.items()})
    record["versions"] = versions()
    record["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None
    record["cwd"] = os.getcwd()
    record["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def _plain(value: Any) -> Any:
    """JSON-friendly copies: tuples to lists, numpy scalars to Python, paths to text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where a CSV's record goes: ``results.csv`` → ``results.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(
    path: Path, record: Mapping[str, Any], *, into: Path | None = None, name: str | None = None
) -> Path:
    """Write the CSV sidecar (record plus the CSV's name and sha256), atomically.

    ``into``/``name``: where to write it and the CSV's final name, when the CSV at ``path``
    is still under its temporary name (:func:`reprstore.report.write_results`); by default
    the sidecar beside ``path`` is replaced.
    """
    body = {"file": name or path.name, "sha256": file_sha256(path), "provenance": dict(record)}
    text = json.dumps(body, indent=1, default=str) + "\n"
    if into is not None:
        into.write_text(text)
        return into
    return write_text_atomic(sidecar_path(path), text)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record a result file (``.csv``, ``.json`` or ``.parquet``) carries.

    Raises
    ------
    InputError
        The file (or a CSV's sidecar) is missing or holds no record, or the CSV changed
        since its sidecar was written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"No result file {path}.")
    if suffix == ".json":
        data = _load_json(path)
        if not isinstance(data, dict) or "provenance" not in data:
            raise InputError(f"{path} holds no provenance (not written by reprstore 0.2+).")
        return dict(data["provenance"])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(PROVENANCE_KEY.encode())
        if raw is None:
            raise InputError(f"{path} has no '{PROVENANCE_KEY}' file metadata.")
        return dict(json.loads(raw))
    if suffix == ".csv":
        side = sidecar_path(path)
        if not side.is_file():
            raise InputError(f"{path} has no provenance sidecar {side.name} beside it.")
        body = _load_json(side)
        if body.get("sha256") != file_sha256(path):
            raise InputError(
                f"{path} changed after {side.name} was written: the record describes "
                "another version of the file."
            )
        return dict(body["provenance"])
    raise InputError(f"{path}: expected a .csv, .json or .parquet result file.")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not readable JSON: {err}") from None
