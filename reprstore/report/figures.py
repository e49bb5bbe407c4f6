"""Figures from result tables: heatmap, timeline, layer profile, seed-robustness matrix.

``plot_results(results, "timeline", "cka.png")`` draws what researchers look at, as PNG,
SVG or PDF (matplotlib's Agg backend; nothing opens a window):

- ``heatmap``: the A × B matrix, natural order, one panel per checkpoint (pair);
- ``seeds``: the same matrix averaged over seeds (mean ± sd in each cell);
- ``timeline``: the measure against the training step parsed from checkpoint labels
  (``step100`` → 100; ``final`` last), one line per layer, a band over seeds;
- ``profile``: the measure per layer in natural order, one line per method/model, error
  bars over seeds.

Bands and error bars are the t-interval over seeds (``band="ci"``, the ``level`` of
:func:`reprstore.analysis.summary.t_interval`; on the logit scale of a bounded value's
range, so inside it), or ± sd, ± sem, or none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reprstore.analysis.results import (
    natural_sorted,
    read_results,
    value_of,
)
from reprstore.analysis.summary import check_level
from reprstore.errors import InputError
from reprstore.report.facets import (
    apply_where,
)
from reprstore.report.lines import ALL_TENSORS, draw_profile, draw_timeline
from reprstore.report.output import Rendered, check_figure_path, save
from reprstore.report.style import Style, pyplot, with_ticks

if TYPE_CHECKING:
    pass

KINDS = ("heatmap", "timeline", "profile", "seeds", "measures")
BANDS = ("ci", "sd", "sem", "none")


def check_band(band: str) -> str:
    """``band`` if it is one of :data:`BANDS`; checked before a command reads anything."""
    if band not in BANDS:
        raise InputError(f"Unknown band {band!r}. Expected one of {', '.join(BANDS)}.")
    return band


#: Tensor-level drift tables (``reprstore drift``) have these columns.
DRIFT_KEYS = ("checkpoint", "parameter")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"Unknown plot kind {kind!r}. Expected one of {', '.join(KINDS)}.")
    return kind


def plot_results(
    results: pd.DataFrame | str | os.PathLike[str],
    kind: str,
    path: str | os.PathLike[str],
    *,
    measure: str | None = None,
    value: str | None = None,
    drift: bool = False,
    by: str | Sequence[str] | None = None,
    over: str = "seed",
    x: str | None = None,
    band: str = "ci",
    level: float = 0.95,
    final_step: float | None = None,
    title: str | None = None,
    where: str | None = None,
    style: Style | None = None,
    moments: pd.DataFrame | None = None,
) -> Rendered:
    """Draw a result table as ``kind`` into ``path`` (.png, .svg or .pdf).

    Rows that differ in a key or option (layer, kernel, estimator, dataset …) are never
    averaged silently: they get their own lines or panels, or the call is refused naming
    the option that chooses (``by``, ``where``, ``style.average``).

    Parameters
    ----------
    results : DataFrame or path
        A result table (``reprstore cka --out``), or a weight-drift table
        (``reprstore drift --out``) for ``timeline``.
    kind : {"heatmap", "timeline", "profile", "seeds"}
    path : str or PathLike
    measure, value, drift
        What is drawn (see :func:`reprstore.analysis.results.value_of`); default ``cka``,
        or ``rel_change`` for a drift table.
    by : str or list of str, optional
        Columns whose values make the lines (timeline: default the layer; profile: what
        varies besides layer and seed, e.g. ``b_model``).
    over : str
        Replicates for bands, error bars and the ``seeds`` average (default ``seed``).
    x : str, optional
        The x axis: a timeline's checkpoint column (default: the one that varies), or a
        profile's categories (default ``layer``; e.g. ``tasks``, a run attribute).
    band : {"ci", "sd", "sem", "none"}
    level : float
        Confidence level of ``band="ci"``.
    final_step : float, optional
        The step of ``final`` on a timeline (default: one spacing after the last step).
    title : str, optional
    where : str, optional
        Keep the rows where this condition holds (``kernel == 'linear'``; never run as code).
    style : Style, optional
        Figure options: colour range, log step axis, panels across, labels, ``average``.
    moments : DataFrame, optional
        Moments to mark on a timeline (:func:`reprstore.analysis.moments.find_moments`).
    """
    style = Style(title=title) if style is None else style
    if title is not None and style.title is None:
        from dataclasses import replace

        style = replace(style, title=title)
    check_kind(kind)
    out = check_figure_path(path)
    level = check_level(level)
    check_band(band)
    df = apply_where(read_results(results).reset_index(drop=True), where)
    style = with_ticks(style, df)
    is_drift = all(c in df.columns for c in DRIFT_KEYS)
    what = value_of(measure or ("rel_change" if is_drift else "cka"), value, drift)
    notes: list[str] = []
    if is_drift and what.column in df.columns:
        undefined = ~np.isfinite(pd.to_numeric(df[what.column], errors="coerce"))
        if undefined.any():
            left = natural_sorted(df.loc[undefined, "parameter"].astype(str).tolist())
            notes.append(f"left out {', '.join(left)}: {what.column} undefined (zero tensor)")
            df = df[~undefined].reset_index(drop=True)
    if kind == "measures":
        from reprstore.report.plot import plot_comparison

        return plot_comparison(df, out, style)
    what.of(df)  # a missing or non-numeric measure fails before anything is drawn
    pyplot()
    if kind in ("heatmap", "seeds"):
        if is_drift:
            raise InputError(f"--kind {kind} needs a pair result table; a drift table plots as "
                             "--kind timeline.")  # fmt: skip
        from reprstore.report.matrices import draw_matrices

        fig, more = draw_matrices(df, what, over=over if kind == "seeds" else None, style=style)
    elif kind == "timeline":
        fig, more = draw_timeline(df, what, by=by, over=over, x=x, band=band, level=level,
                                   final_step=final_step, title=None, style=style,
                                   moments=moments)  # fmt: skip
    else:
        fig, more = draw_profile(df, what, by=by, over=over, x=x, band=band, level=level,
                                 title=None, style=style)  # fmt: skip
    return Rendered(save(fig, out), notes + more)


def plot_weight_drift(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    measure: str = "rel_change",
    top: int = 8,
    final_step: float | None = None,
) -> Rendered:
    """A weight-drift timeline: ``(all)`` and the ``top`` tensors that moved most.

    The tensors shown are those with the largest relative change (or lowest cosine) at
    the checkpoint farthest from the reference; a note says how many were left out.
    """
    check_figure_path(path)
    if top < 1:
        raise InputError(f"--top must be at least 1. Got {top} instead.")
    tensors = table[table["parameter"] != ALL_TENSORS]
    names = natural_sorted(tensors["parameter"].astype(str).tolist())
    notes = []
    if len(names) > top:
        spread = tensors.groupby("parameter", observed=True)["rel_change"].max().fillna(-np.inf)
        keep = set(spread.sort_values(ascending=False).index[:top])
        table = table[table["parameter"].isin(keep | {ALL_TENSORS})]
        notes.append(f"showing (all) and the {top} of {len(names)} tensors that moved most "
                     "(--params or --top to choose)")  # fmt: skip
    drawn = plot_results(table, "timeline", path, measure=measure, final_step=final_step)
    return Rendered(drawn.path, notes + drawn.notes)
