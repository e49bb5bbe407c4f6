"""What a figure shows of its rows: the columns that tell rows apart, and no silent pooling.

A figure draws one value per point (a heatmap cell, a line's x). Rows that land on one point
and differ in a key or option column (layer, kernel, estimator, dataset, sigma …) would be
averaged without a word, which draws a number nobody computed. :func:`check_unpooled`
refuses that and names the options that choose (``--by``, ``--where``, ``--average``).
Averaging happens only over the replicates (``--over seed``) and the columns named in
``--average``; :func:`averaged_text` says so in the figure's title.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reprstore.analysis.results import listed, natural_sorted, resolve_key
from reprstore.errors import InputError

#: The key fields of a representation (bare in ``describe`` tables, a_/b_ in pair tables).
KEY_NAMES = ("model", "seed", "checkpoint", "layer", "dataset")
#: Columns that say how a value was computed: rows that differ in them are other numbers.
OPTION_COLUMNS = ("estimator", "kernel", "sigma", "sigma_method", "batch_size", "n_samples",
                  "reference", "parameter")  # fmt: skip


def identity_columns(df: pd.DataFrame) -> list[str]:
    """Columns that say which comparison (or representation) a row is and how it was
    computed: a_*/b_* keys and run attributes, bare keys, dataset and option columns."""
    out = []
    for col in map(str, df.columns):
        named = col.startswith(("a_", "b_")) or col in KEY_NAMES or col in OPTION_COLUMNS
        if named and not listed(df[col]):
            out.append(col)
    return out


def varying(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Those of ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df.columns and df[c].nunique(dropna=False) > 1]


def _values(df: pd.DataFrame, col: str, most: int = 4) -> str:
    seen = natural_sorted(df[col].astype(str).tolist())
    more = f", … ({len(seen)} values)" if len(seen) > most else ""
    return ", ".join(seen[:most]) + more


def _bare(col: str) -> str:
    return col[2:] if col.startswith(("a_", "b_")) else col


def check_unpooled(
    df: pd.DataFrame, shown: Sequence[str], averaged: Sequence[str], *, choose: str
) -> None:
    """Refuse rows that share a drawn point (the ``shown`` columns) yet differ in another
    identity column not named in ``averaged``.

    Parameters
    ----------
    df : DataFrame
        The rows a figure draws.
    shown : list of str
        Columns the figure keeps apart (lines, x, panels, heatmap axes).
    averaged : list of str
        Columns the figure averages over on purpose (replicates, ``--average``).
    choose : str
        The option that adds a column to what is kept apart, e.g. ``--by``.

    Raises
    ------
    InputError
        Naming the first such column, its values, and the options that choose.
    """
    loose = [c for c in identity_columns(df) if c not in set(shown) | set(averaged)]
    loose = varying(df, loose)
    if not loose:
        return
    keep = [c for c in shown if c in df.columns]
    spread = (
        df.groupby(keep, sort=False, observed=True, dropna=False)[loose].nunique(dropna=False).max()
        if keep
        else df[loose].nunique(dropna=False)
    )
    pooled = [c for c in loose if int(spread[c]) > 1]
    if not pooled:
        return
    col = pooled[0]
    first = natural_sorted(df[col].astype(str).tolist())[0]
    others = f" (also {', '.join(pooled[1:4])})" if len(pooled) > 1 else ""
    raise InputError(
        f"Rows drawn at one point differ in {col} ({_values(df, col)}){others}: the figure "
        f"would average them. Keep them apart with {choose} {_bare(col)}, keep one with "
        f"--where \"{col} == '{first}'\", or average them on purpose with --average {_bare(col)}."
    )


def resolve_averaged(df: pd.DataFrame, average: str | Sequence[str] | None) -> list[str]:
    """The columns ``--average`` names (``layer`` → ``a_layer, b_layer`` where both exist)."""
    if average is None:
        return []
    items = average.split(",") if isinstance(average, str) else list(average)
    out: list[str] = []
    for name in (n.strip() for n in items if n.strip()):
        sides = [c for c in (f"a_{name}", f"b_{name}") if c in df.columns]
        if name in df.columns or not sides:
            out.append(resolve_key(df, name, "--average"))  # a missing name is refused here
        else:
            out.extend(sides)
    return list(dict.fromkeys(out))


def averaged_text(df: pd.DataFrame, averaged: Sequence[str]) -> str:
    """``mean over kernel (linear, rbf)`` for the averaged columns that vary, else ''."""
    parts = [f"{_bare(c)} ({_values(df, c)})" for c in varying(df, averaged)]
    return f"mean over {', '.join(dict.fromkeys(parts))}" if parts else ""


def apply_where(df: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The rows of ``df`` where the condition holds (``kernel == 'linear'``); the grammar
    of :mod:`reprstore.expr`, so nothing typed runs as code. No rows left is an error."""
    if not where:
        return df
    from reprstore.expr import parse_row_filter

    flt = parse_row_filter(where, [str(c) for c in df.columns])
    table = {str(c): df[c].to_numpy() for c in df.columns}
    keep = np.asarray(flt.mask(table), dtype=bool)
    if not keep.any():
        raise InputError(f"--where {where!r} keeps none of the {len(df)} rows.")
    return df[keep].reset_index(drop=True)
