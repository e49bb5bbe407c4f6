"""Result files: one row per compared pair as CSV, JSON or Parquet, with their provenance.

``.json`` is ``{"provenance": {...}, "rows": [...]}``, ``.parquet`` carries the record in
its file metadata (key ``reprstore``), ``.csv`` in a sidecar ``FILE.csv.json`` (see
:mod:`reprstore.resultfiles.provenance`). :func:`read_results` reads any of them back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprstore.errors import InputError
from reprstore.resultfiles.provenance import (
    PROVENANCE_KEY,
    make_provenance,
    read_provenance,
    sidecar_path,
    write_sidecar,
)
from reprstore.store.atomic import replacing, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

FORMATS = (".csv", ".json", ".parquet")


def _format_of(path: str | os.PathLike[str], verb: str = "write results to") -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"Cannot {verb} {os.fspath(path)}: expected a file name ending in "
            f"{', '.join(FORMATS)}. Got {suffix or 'no suffix'!r} instead."
        )
    return suffix


def check_output(path: str | os.PathLike[str] | None) -> None:
    """Raise now (before any computation) if results could not be written to ``path``."""
    if path is None:
        return
    _format_of(path)
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputError(f"Cannot write {os.fspath(path)}: folder {parent} does not exist.")
    if Path(path).suffix.lower() == ".parquet":
        _require_pyarrow()


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise InputError(
            "Writing .parquet needs pyarrow: pip install 'reprstore[parquet]', "
            "or write .csv/.json instead."
        ) from err


def _clean(value: Any) -> Any:
    """JSON-friendly scalars: numpy types to Python, NaN/None to null."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_lists(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with list-valued cells (curves, canonical correlations) as JSON text, for CSV."""
    lists = [c for c in df.columns if df[c].map(lambda v: isinstance(v, list)).any()]
    if not lists:
        return df
    out = df.copy()
    for c in lists:
        out[c] = df[c].map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    return out


def spreadsheet_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell that a spreadsheet would run as a formula (``=1+2``,
    ``@SUM(A1)``, ``-x``) prefixed with ``'`` (:func:`reprstore.store.csvtext.spreadsheet_safe`).

    Only CSV is escaped: JSON and Parquet keep every value as it is stored.
    """
    from reprstore.store.csvtext import spreadsheet_safe

    text = [c for c in df.columns if df[c].map(lambda v: isinstance(v, str)).any()]
    if not text:
        return df
    out = df.copy()
    for c in text:
        out[c] = df[c].map(spreadsheet_safe)
    return out


def _write_csv(df: pd.DataFrame, out: Path) -> None:
    """``df`` as CSV; with CRLF line ends (RFC 4180) when a cell holds a carriage return,
    which python's csv (before 3.13) quotes only when it is part of the line end."""
    has_cr = any(isinstance(v, str) and "\r" in v for c in df.columns for v in df[c])
    df.to_csv(out, index=False, lineterminator="\r\n" if has_cr else "\n")


def _unescape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`spreadsheet_safe_frame` on a result CSV read back: on the categories of
    a dictionary-encoded column, and on the cells that start with ``'`` of a text column
    (found vectorised: a million rows cost no Python call per cell)."""
    import pandas as pd

    from reprstore.store.csvtext import unescape_cell

    for c in df.columns:
        col = df[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = list(col.cat.categories)
            plain = [unescape_cell(v) for v in cats]
            if plain != cats:
                df[c] = col.cat.rename_categories(plain)
        elif not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            starts = col.astype(str).str.startswith("'")
            if bool(starts.any()):
                df.loc[starts, c] = col[starts].map(unescape_cell)
    return df


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as plain dicts (what the JSON file holds)."""
    return [{str(k): _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def write_results(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``df`` and how it was made to ``path``; the format follows the suffix.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per pair (see :data:`reprstore.workflows.comparison.RESULT_COLUMNS`).
    path : str or PathLike
    provenance : mapping, optional
        The record to store; by default ``df.attrs["reprstore"]`` (what
        :func:`reprstore.workflows.comparison.compare` sets), else a record of versions and
        time only.

    Returns
    -------
    Path
        The file written (a ``.csv`` also gets its sidecar ``FILE.csv.json``).

    Every file is written under a temporary name and renamed when complete
    (:mod:`reprstore.store.atomic`): a failed write leaves the old file, or none, never a part.
    """
    fmt = _format_of(path)
    out = Path(path)
    record = dict(provenance or df.attrs.get(PROVENANCE_KEY) or make_provenance())
    if fmt == ".csv":
        # both files complete under temporary names before either is renamed: a failure
        # leaves the old pair, which still match
        with replacing(sidecar_path(out)) as side, replacing(out) as table:
            _write_csv(spreadsheet_safe_frame(json_lists(df)), table)
            write_sidecar(table, record, into=side, name=out.name)
    elif fmt == ".json":
        body = {"provenance": record, "rows": records(df)}
        write_text_atomic(out, json.dumps(body, indent=1, default=str) + "\n")
    else:
        _require_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {**(table.schema.metadata or {}), PROVENANCE_KEY.encode(): _json(record)}
        with replacing(out) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)
    return out


def _json(record: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(record), default=str).encode()


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A result file as a DataFrame, with its provenance, when it has one, in
    ``attrs["reprstore"]``.

    The columns naming what was compared (:data:`TEXT_COLUMNS`) stay text (seed ``01`` is
    not ``1``); an empty numeric cell of a CSV is NaN.

    Raises
    ------
    InputError
        The file is missing, of another format, unreadable or not a result table.
    """
    fmt = _format_of(path, "read results from")
    if not Path(path).is_file():
        raise InputError(f"Cannot read results from {os.fspath(path)}: no such file.")
    try:
        df = _read(Path(path), fmt)
    except InputError:
        raise
    except (ValueError, KeyError, OSError, ImportError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise InputError(f"Cannot read results from {os.fspath(path)}: {first}.") from err
    with contextlib.suppress(InputError):  # a file from before provenance, or no sidecar
        df.attrs[PROVENANCE_KEY] = read_provenance(path)
    df.attrs["source"] = os.fspath(path)
    df.attrs[SOURCE_FORMAT] = fmt
    return df


#: ``attrs`` key of a table read from a file: the file's format (errors name CSV lines).
SOURCE_FORMAT = "source_format"


def _read(path: Path, fmt: str) -> pd.DataFrame:
    import pandas as pd

    if fmt == ".csv":
        return _unescape_frame(_read_csv(path))
    if fmt == ".json":
        rows = json.loads(path.read_text())
        if isinstance(rows, dict) and "rows" in rows:  # {"provenance": …, "rows": […]}
            rows = rows["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(f"{path} is not a list of result rows (objects).")
        return pd.DataFrame(rows)
    _require_pyarrow()
    return pd.read_parquet(path)


#: Rows of a result CSV parsed at a time (:func:`_read_csv`).
CSV_CHUNK_ROWS = 200_000


def _read_csv(path: Path) -> pd.DataFrame:
    """A result CSV with its key columns as text (seed ``01`` stays ``01``), dictionary-
    encoded: read :data:`CSV_CHUNK_ROWS` rows at a time, each piece's key columns made
    categorical and the pieces' categories united, so a million rows of a few dozen
    layers and seeds take a byte or two a key cell, never a string each."""
    import pandas as pd
    from pandas.api.types import union_categoricals

    text = {c: str for c in pd.read_csv(path, nrows=0).columns if _is_key_column(c)}
    pieces = []
    for piece in pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""],
                             chunksize=CSV_CHUNK_ROWS):  # fmt: skip
        for c in text:
            piece[c] = piece[c].astype("category")
        pieces.append(piece)
    if not pieces:
        return pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])
    if len(pieces) == 1:
        return pieces[0]
    keys = {c: union_categoricals([p[c] for p in pieces]) for c in text}
    for p in pieces:
        for c in text:
            p[c] = pd.Categorical(p[c], categories=keys[c].categories)
    return pd.concat(pieces, ignore_index=True)


#: Columns that name what was compared (or described, in ``describe`` tables: bare keys),
#: read as text (run attributes keep their types).
TEXT_COLUMNS = frozenset(
    {f"{side}_{k}" for side in "ab" for k in ("model", "seed", "checkpoint", "dataset", "layer")}
    | {"model", "seed", "checkpoint", "layer", "dataset", "estimator", "kernel"}
)


def _is_key_column(name: str) -> bool:
    return name in TEXT_COLUMNS
