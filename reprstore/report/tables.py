"""Result files: one row per compared pair as CSV, JSON (a list of objects) or Parquet."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprstore.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = (".csv", ".json", ".parquet")


def _format_of(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"Cannot write results to {os.fspath(path)}: expected a file name ending in "
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


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as plain dicts (what the JSON file holds)."""
    return [{str(k): _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def write_results(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path``; the format follows the suffix (.csv, .json, .parquet).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per pair (see :data:`reprstore.compare.RESULT_COLUMNS`).
    path : str or PathLike

    Returns
    -------
    Path
        The file written.
    """
    fmt = _format_of(path)
    out = Path(path)
    if fmt == ".csv":
        json_lists(df).to_csv(out, index=False)
    elif fmt == ".json":
        out.write_text(json.dumps(records(df), indent=1) + "\n")
    else:
        _require_pyarrow()
        df.to_parquet(out, index=False)
    return out
