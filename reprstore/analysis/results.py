"""Result tables as analyses see them: read a file, name a column, name a value.

A result table has one row per compared pair (``a_model … b_layer, dataset, estimator,
kernel, n_samples, cka`` and more). Analyses name its columns loosely: ``layer`` means
``a_layer`` or ``b_layer`` when only one of them varies (or both agree on every row), and a
*value* is a measure column or its complement, ``1-cka`` (drift). Nothing a user types here
is evaluated as code: a value is parsed by one regular expression.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from reprstore import keys
from reprstore.errors import InputError, NotFoundError

#: Numeric columns that describe how a value was computed, not a value to analyse.
NOT_MEASURES = frozenset({"n_samples", "n_batches", "batch_size", "sigma", "n", "rows"})
#: Axis titles of the weight-drift columns.
TITLES = {
    "rel_change": "relative change ‖W − W_ref‖ / ‖W_ref‖",
    "cosine": "cosine of W to W_ref",
    "change": "change ‖W − W_ref‖",
}
#: The ranges of the weight-drift columns (``reprstore drift``), by their definitions.
DRIFT_RANGES = {"rel_change": (0.0, np.inf), "change": (0.0, np.inf), "cosine": (-1.0, 1.0)}
_VALUE = re.compile(r"^\s*(?:(1)\s*-\s*)?([A-Za-z_][A-Za-z0-9_.]*)\s*$")


def natural_key(value: object) -> tuple[Any, ...]:
    """:func:`reprstore.keys.natural_key` of ``str(value)`` (table cells may be numbers)."""
    return keys.natural_key(str(value))


def natural_sorted(values: Sequence[Any]) -> list[Any]:
    """Distinct ``values`` in natural order."""
    return sorted(dict.fromkeys(values), key=natural_key)


def natural_groups(df: pd.DataFrame, keys: list[str]) -> list[tuple[tuple[str, ...], pd.DataFrame]]:
    """``(group values, rows)`` of ``df`` grouped by ``keys``, in natural order of the values."""
    if not keys:
        return [((), df)]
    parts: list[tuple[tuple[str, ...], pd.DataFrame]] = [
        (tuple(str(v) for v in g) if isinstance(g, tuple) else (str(g),), p)
        for g, p in df.groupby(keys, sort=False, observed=True)
    ]
    return sorted(parts, key=lambda gp: tuple(natural_key(v) for v in gp[0]))


def closest(name: str, candidates: Sequence[str]) -> str:
    """`` (closest: x, y)`` for an error message, or an empty string."""
    near = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=3, cutoff=0.5)
    return f" (closest: {', '.join(near)})" if near else ""


def read_results(source: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """A result table from a DataFrame (returned as is) or a ``.csv/.json/.parquet`` file.

    Key columns (models, seeds, checkpoints, layers …) are read as text, so seed ``007``
    stays ``007``.

    Raises
    ------
    InputError
        The file is missing, of another format, unreadable or empty.
    """
    if isinstance(source, pd.DataFrame):
        df = source
    else:
        from reprstore.resultfiles.tables import read_results as read_file

        df = read_file(source)
    if df.empty:
        raise InputError(f"The result table {_name(source)} has no rows.")
    check_repeats(df)
    return df


def row_name(df: pd.DataFrame, i: int) -> str:
    """How an error names row ``i`` (0-based) of ``df``: the line of a CSV file read by
    :func:`read_results` (its header is line 1), else the row counted from 1."""
    if df.attrs.get(tables_source_format()) == ".csv":
        return f"line {i + 2} of {df.attrs.get('source')}"
    where = f" of {df.attrs['source']}" if df.attrs.get("source") else ""
    return f"row {i + 1}{where}"


def tables_source_format() -> str:
    """The ``attrs`` key under which :func:`reprstore.resultfiles.tables.read_results` keeps the
    format of the file a table was read from."""
    from reprstore.resultfiles.tables import SOURCE_FORMAT

    return SOURCE_FORMAT


def check_repeats(df: pd.DataFrame) -> None:
    """Refuse a table that holds one comparison twice: rows equal in every column but the
    measures' values (two result files concatenated, a run appended twice). Averaging them
    would weigh that comparison double without a word."""
    identity = [c for c in df.columns if c not in set(measure_columns(df)) and not listed(df[c])]
    if not identity or len(df) < 2:
        return
    twice = df.duplicated(subset=identity, keep=False).to_numpy()
    if not twice.any():
        return
    first = int(np.flatnonzero(twice)[0])
    hashes = pd.util.hash_pandas_object(df[identity], index=False).to_numpy()
    other = int(np.flatnonzero(hashes == hashes[first])[1])
    raise InputError(
        f"The results hold one comparison twice: {row_name(df, first)} and "
        f"{row_name(df, other).split(' of ')[0]} are equal in every key and option column "
        f"({int(twice.sum())} rows repeat another). Remove the repeats (e.g. a file appended "
        "twice; pandas: df.drop_duplicates(subset=keys)) or tell them apart in a column."
    )


def listed(column: pd.Series) -> bool:
    """A list-valued column (curves, angles; JSON text in a CSV): a value, not a key."""
    cells = column.dropna()
    cell = cells.iloc[0] if len(cells) else None
    return isinstance(cell, (list, tuple, np.ndarray)) or (
        isinstance(cell, str) and cell.lstrip().startswith("[")
    )


def _name(source: pd.DataFrame | str | os.PathLike[str]) -> str:
    return "(DataFrame)" if isinstance(source, pd.DataFrame) else os.fspath(source)


@dataclass(frozen=True)
class Value:
    """What is analysed: a measure column, or its complement ``1 - column``.

    Attributes
    ----------
    column : str
        A numeric column of the result table, e.g. ``cka``.
    complement : bool
        Analyse ``1 - column`` (drift = 1 − CKA).
    """

    column: str
    complement: bool = False

    @classmethod
    def parse(cls, text: str) -> Value:
        """``cka`` or ``1-cka``; anything else is refused (nothing is evaluated)."""
        found = _VALUE.match(text or "")
        if not found:
            raise InputError(
                f"Cannot read the value {text!r}: expected a measure column such as 'cka', "
                "or its complement '1-cka' (drift)."
            )
        return cls(found.group(2), bool(found.group(1)))

    @property
    def label(self) -> str:
        """``cka`` or ``1-cka``: how tables and axes name it."""
        return f"1-{self.column}" if self.complement else self.column

    @property
    def title(self) -> str:
        """A longer axis title: ``drift (1 − cka)``."""
        if self.complement:
            return f"drift (1 − {self.column})"
        return TITLES.get(self.column, self.column)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The range the value lies in by its measure's definition (the complement's is
        [1 − hi, 1 − lo]), or None for an unbounded or unknown column."""
        from reprstore.metrics.registry import column_range

        found = column_range(self.column) or DRIFT_RANGES.get(self.column)
        if found is None:
            return None
        lo, hi = found
        return (1.0 - hi, 1.0 - lo) if self.complement else (lo, hi)

    def of(self, df: pd.DataFrame) -> np.ndarray:
        """The value on every row of ``df`` (float64).

        Raises
        ------
        NotFoundError
            ``column`` is not a numeric column of ``df`` (names the closest ones).
        InputError
            The column holds missing or non-finite values.
        """
        numeric = measure_columns(df)
        if self.column not in df.columns or (
            self.column not in numeric and not _is_text(df[self.column])
        ):
            raise NotFoundError(
                f"No measure column {self.column!r} in the results; measure columns: "
                f"{', '.join(numeric) or 'none'}{closest(self.column, numeric)}."
            )
        values = pd.to_numeric(df[self.column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            cell = df[self.column].iloc[int(bad[0])]
            what = "is empty" if _missing(cell) else f"holds {str(cell)[:40]!r}"
            raise InputError(
                f"Column {self.column!r} {what} on {row_name(df, int(bad[0]))}, not a finite "
                f"number ({bad.size} such row(s)); remove or fix those rows first."
            )
        _check_range(df, self.column, values)
        return 1.0 - values if self.complement else values


def _is_text(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _missing(cell: object) -> bool:
    return cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell == ""


def _check_range(df: pd.DataFrame, column: str, values: np.ndarray) -> None:
    """Refuse a value its measure cannot take (a CKA of 7.5): the file was edited or is
    not a result of this measure. A relative 1e-9 is allowed for rounding."""
    from reprstore.metrics.registry import column_range

    bounds = column_range(column)
    if bounds is None:
        return
    lo, hi = bounds
    slack = 1e-9 * max(
        1.0, abs(lo) if np.isfinite(lo) else 1.0, abs(hi) if np.isfinite(hi) else 1.0
    )
    out = np.flatnonzero((values < lo - slack) | (values > hi + slack))
    if out.size:
        i = int(out[0])
        raise InputError(
            f"Column {column!r} holds {values[i]:g} on {row_name(df, i)}, outside [{lo:g}, "
            f"{hi:g}] where {column.split('[', 1)[0]} lies by definition ({out.size} such "
            "row(s)): the file was edited or is not a result of this measure."
        )


def value_of(measure: str = "cka", value: str | None = None, drift: bool = False) -> Value:
    """The :class:`Value` the options name: ``value`` wins; ``drift`` is ``1-measure``."""
    if value is not None:
        if drift:
            raise InputError("Give either --value or --drift, not both.")
        return Value.parse(value)
    parsed = Value.parse(measure)
    if parsed.complement:
        raise InputError(f"--measure names a column, e.g. 'cka'. Got {measure!r}; use --value.")
    return Value(parsed.column, drift)


def measure_columns(df: pd.DataFrame) -> list[str]:
    """Numeric columns that hold a measure (not counts, not ``a_*``/``b_*`` keys)."""
    return [
        str(c)
        for c in df.columns
        if pd.api.types.is_numeric_dtype(df[c])
        and not pd.api.types.is_bool_dtype(df[c])
        and str(c) not in NOT_MEASURES
        and not str(c).startswith(("a_", "b_"))
    ]


def design_columns(df: pd.DataFrame) -> list[str]:
    """Columns that say which comparison a row is: ``a_*``, ``b_*``, dataset, estimator …"""
    named = {"dataset", "estimator", "kernel"}
    return [str(c) for c in df.columns if str(c).startswith(("a_", "b_")) or str(c) in named]


def resolve_key(df: pd.DataFrame, name: str, option: str) -> str:
    """The column a key names: itself, or ``a_name``/``b_name`` when that is unambiguous.

    ``layer`` is ``b_layer`` when only B's layer varies, or when ``a_layer`` and ``b_layer``
    agree on every row (``--match layer``).

    Raises
    ------
    NotFoundError
        No such column (names the closest ones).
    InputError
        Both sides vary differently: the user must say which.
    """
    name = name.strip()
    if name in df.columns:
        return name
    sides = [c for c in (f"a_{name}", f"b_{name}") if c in df.columns]
    if not sides:
        columns = [str(c) for c in df.columns]
        bare = {c[2:] for c in columns if c.startswith(("a_", "b_"))}
        raise NotFoundError(
            f"No column {name!r} for {option} in the results"
            f"{closest(name, [*sorted(bare), *columns])}; "
            f"columns: {', '.join(columns)}."
        )
    if len(sides) == 1:
        return sides[0]
    a, b = (df[c].astype(str) for c in sides)
    if (a == b).all() or a.nunique() == 1:
        return sides[1]
    if b.nunique() == 1:
        return sides[0]
    raise InputError(
        f"{option} {name!r} is ambiguous: a_{name} and b_{name} both vary. "
        f"Give a_{name} or b_{name}."
    )


def resolve_keys(df: pd.DataFrame, names: str | Sequence[str] | None, option: str) -> list[str]:
    """:func:`resolve_key` for each of ``names`` (a comma-separated string or a list)."""
    if names is None:
        return []
    items = names.split(",") if isinstance(names, str) else list(names)
    keys = [resolve_key(df, n, option) for n in items if n.strip()]
    twice = [k for k in keys if keys.count(k) > 1]
    if twice:
        raise InputError(f"{option} names {twice[0]!r} twice.")
    return keys


def replicate_columns(df: pd.DataFrame, over: str | Sequence[str]) -> list[str]:
    """The columns whose values tell replicates apart: ``seed`` → ``a_seed, b_seed``.

    A replicate is one combination of these columns' values (one seed, or one seed pair).
    """
    items = over.split(",") if isinstance(over, str) else list(over)
    columns: list[str] = []
    for name in (n.strip() for n in items if n.strip()):
        if name in df.columns:
            columns.append(name)
            continue
        sides = [c for c in (f"a_{name}", f"b_{name}") if c in df.columns]
        if not sides:
            listed = [str(c) for c in df.columns]
            raise NotFoundError(
                f"No column {name!r} for --over in the results{closest(name, listed)}."
            )
        columns.extend(sides)
    if not columns:
        raise InputError("--over names no column; e.g. --over seed.")
    return columns


def replicates(
    df: pd.DataFrame, by: list[str], over: list[str], value: Value
) -> tuple[pd.DataFrame, list[str]]:
    """One value per group × replicate: rows sharing both are averaged first.

    Parameters
    ----------
    df : DataFrame
        Result rows.
    by, over : list of str
        Group columns and replicate columns (resolved).
    value : Value

    Returns
    -------
    table : DataFrame
        Columns ``by + ["replicate", "value", "rows"]``, one row per group × replicate.
    notes : list of str
        Which design columns were averaged inside a replicate.
    """
    clash = sorted(set(by) & set(over))
    if clash:
        raise InputError(f"{clash[0]!r} is both a --by key and an --over key.")
    work = df[by + over].astype(str).copy()
    work["value"] = value.of(df)
    work["replicate"] = replicate_labels(work, over)
    grouped = work.groupby([*by, "replicate"], sort=False, dropna=False, observed=True)
    table = grouped["value"].agg(["mean", "size"]).reset_index()
    table = table.rename(columns={"mean": "value", "size": "rows"})
    notes = _averaged_notes(df, by, over)
    return table, notes


def replicate_labels(df: pd.DataFrame, over: list[str]) -> npt.NDArray[np.object_]:
    """``seed0 · seed1``: the replicate of each row, one shared label per distinct
    combination of the ``over`` columns (vectorised: a million rows in well under a second,
    where joining each row's cells took minutes and gigabytes)."""
    codes, combos = pd.MultiIndex.from_frame(df[over].astype(str)).factorize()
    labels = np.array([" · ".join(map(str, c)) for c in combos], dtype=object)
    replicates: npt.NDArray[np.object_] = labels[codes]  # indexing by codes is typed Any
    return replicates


def self_pairs(df: pd.DataFrame) -> pd.Series | None:
    """Rows whose two sides are one representation (None: the table has no pair keys)."""
    fields = [k for k in keys.SELECTOR_KEYS if f"a_{k}" in df.columns and f"b_{k}" in df.columns]
    if not fields:
        return None
    same = pd.Series(True, index=df.index)
    for k in fields:
        same &= df[f"a_{k}"].astype(str) == df[f"b_{k}"].astype(str)
    if "b_dataset" in df.columns and "dataset" in df.columns:
        same &= df["b_dataset"].astype(str) == df["dataset"].astype(str)
    return same


def same_partition(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether columns ``a`` and ``b`` split the rows alike (``a_layer``/``b_layer`` under
    ``--match layer``, a model and its run attributes)."""
    return bool(
        df.groupby(a, observed=True, dropna=False)[b].nunique(dropna=False).max() == 1
        and df.groupby(b, observed=True, dropna=False)[a].nunique(dropna=False).max() == 1
    )


def _averaged_notes(df: pd.DataFrame, by: list[str], over: list[str]) -> list[str]:
    """One note naming the design columns averaged inside a replicate, or none.

    Columns that split the rows alike (``a_layer`` and ``b_layer`` of a ``--match layer``
    table, a model and its run attributes) are one fact and named together.
    """
    keep = set(by) | set(over)
    if not by + over:
        return []
    cells = df.groupby(by + over, sort=False, dropna=False, observed=True)
    spread = {c: int(cells[c].nunique(dropna=False).max()) for c in design_columns(df)
              if c not in keep}  # fmt: skip
    varying = sorted((c for c, n in spread.items() if n > 1), key=lambda c: not c.startswith("b_"))
    groups: list[list[str]] = []
    for column in varying:
        home = next((g for g in groups if same_partition(df, g[0], column)), None)
        if home is None:
            groups.append([column])
        else:
            home.append(column)
    if not groups:
        return []
    parts = [
        f"{g[0]} ({spread[g[0]]} values{'; with ' + ', '.join(g[1:]) if g[1:] else ''})"
        for g in groups
    ]
    return [
        f"rows averaged within each replicate over {', '.join(parts)}: add "
        f"{'it' if len(groups) == 1 else 'them'} to --by to keep them apart"
    ]
