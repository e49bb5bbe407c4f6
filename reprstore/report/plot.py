"""The ``--plot`` of ``cka`` and ``compare``: the same figures as ``reprstore plot``.

- A grid of pairs (every A against every B) draws as heatmaps: with one measure exactly
  ``plot --kind heatmap``; with several, one heatmap panel per measure, each on its own
  colour scale.
- A matched result (``--match layer``: each A against the B with the same layer) draws as
  one line panel per measure against the matched key, in layer order, sharing x; seeds
  (or seed pairs) become a band, anything else that varies becomes lines.
- ``pca`` adds its cumulative-variance curves on a log k axis with k and the covariance's
  rank marked, and the principal angles; many pairs are coloured by their place in layer
  order, with a colour bar instead of a legend.

The image stays readable for any number of pairs: panels are capped in size, legends sit
outside the axes.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprstore.analysis.results import Value, natural_key, natural_sorted, resolve_key
from reprstore.errors import InputError
from reprstore.report.facets import resolve_averaged
from reprstore.report.lines import points, profile_lines, profile_on, replicate_cols, value_title
from reprstore.report.matrices import (
    CHECKPOINTS,
    MAX_PANELS,
    cell_table,
    describe_rows,
    draw_matrices,
    facet_columns,
    heatmap_panel,
    panels,
)
from reprstore.report.output import Rendered, check_figure_path, save
from reprstore.report.style import Style, colour_scale, measure_title, pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


#: The pca curves drawn: (column, line style, legend text).
CURVES = (("cev_b_in_a_curve", "-", "B in A's PCs"), ("cev_b_self_curve", "--", "B in its own PCs"))
#: At most this many pairs' curves are drawn (a note says how many were left out).
MAX_CURVE_PAIRS = 64
#: Above this many pairs the curves are coloured by a colour bar, not named in a legend.
LEGEND_PAIRS = 8
PANEL_SIZE = (4.4, 3.2)


def scalar_columns(df: pd.DataFrame) -> list[str]:
    """The registered measures' scalar columns present in ``df`` (``cka[kernel=rbf]`` too),
    in table order: not keys, not counts, intervals or statistics of how it was made."""
    from reprstore.metrics.registry import REGISTRY, get

    known = {c for name in REGISTRY for c in get(name).scalars}
    return [str(c) for c in df.columns if str(c).split("[", 1)[0] in known]


def matched_key(df: pd.DataFrame) -> str | None:
    """The key each A shares with its B (``layer`` under ``--match layer``) when the rows
    are such pairs rather than a grid, else None."""
    for key in ("layer", "checkpoint", "model", "seed"):
        a, b = f"a_{key}", f"b_{key}"
        if a not in df.columns or b not in df.columns or df[a].nunique() < 2:
            continue
        if (df[a].astype(str) == df[b].astype(str)).all():
            return key
    return None


def plot_comparison(
    df: pd.DataFrame, path: str | os.PathLike[str], style: Style = Style()
) -> Rendered:
    """Draw the result of :func:`reprstore.workflows.comparison.compare` into ``path``
    (.png, .svg or .pdf): heatmaps for a grid, line panels for matched pairs, and the
    curves and angles of ``pca``."""
    out = check_figure_path(path)
    fig, notes = draw_comparison(df, style)
    return Rendered(save(fig, out, dpi=120), notes)


def draw_comparison(df: pd.DataFrame, style: Style = Style()) -> tuple[Figure, list[str]]:
    """The figure :func:`plot_comparison` writes, and its notes."""
    scalars = scalar_columns(df)
    has_pca = all(c in df.columns for c, _, _ in CURVES)
    if not scalars:
        raise InputError("The results hold no measure column to draw.")
    key = matched_key(df)
    notes: list[str] = []
    if key is None and len(scalars) == 1 and not has_pca:
        fig, notes = draw_matrices(df, Value(scalars[0]), over=None, style=style)
    elif key is None:
        fig = _heatmap_panels(df, scalars, has_pca, style, notes)
    else:
        fig = _line_panels(df, scalars, key, has_pca, style, notes)
    return fig, notes


def _grid(count: int, style: Style) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels, ``style.cols`` across, each of readable size."""
    plt = pyplot()
    across = style.across(count)
    down = -(-count // across)
    size = (min(PANEL_SIZE[0] * across + 1.8, 16.0), min(PANEL_SIZE[1] * down + 0.8, 24.0))
    fig, axes = plt.subplots(down, across, figsize=size, layout="constrained", squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _heatmap_panels(
    df: pd.DataFrame, scalars: list[str], has_pca: bool, style: Style, notes: list[str]
) -> Figure:
    """One heatmap per measure (× checkpoint pair / option facet), each its own colour bar."""
    skip: set[str] = set(resolve_averaged(df, style.average))
    facets = facet_columns(df, skip | set(CHECKPOINTS))
    parts = panels(df, facets, style)
    if len(parts) * len(scalars) > MAX_PANELS:
        raise InputError(
            f"{len(scalars)} measures × {len(parts)} panels are too many for one figure (at "
            f"most {MAX_PANELS}); keep fewer rows or measures, or plot each measure with "
            "reprstore plot --kind heatmap --measure NAME."
        )
    if len(parts) > 1:
        skip |= set(CHECKPOINTS)
    extra = 2 if has_pca else 0
    fig, axes = _grid(len(scalars) * len(parts) + extra, style)
    for ax, (column, (title, part)) in zip(
        axes, [(c, p) for c in scalars for p in parts], strict=False
    ):
        values = Value(column).of(part)
        table = cell_table(part, values, skip, [], style)
        scale = colour_scale(column, values, style)
        image = heatmap_panel(ax, part, table, scale, skip, None, style)
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set_title(" · ".join(w for w in (measure_title(column), title) if w), fontsize=9)
    if has_pca:
        _pca_panels(df, axes[-2], axes[-1], None, notes, style)
    fig.suptitle(_suptitle(df, skip, style), fontsize=10)
    return fig


def _line_panels(
    df: pd.DataFrame,
    scalars: list[str],
    key: str,
    has_pca: bool,
    style: Style,
    notes: list[str],
) -> Figure:
    """One line panel per measure against the matched key, sharing x (layer order)."""
    xcol = resolve_key(df, key, "the matched key")
    rep = replicate_cols(df, "seed") if key != "seed" else []
    averaged = [*rep, *resolve_averaged(df, style.average)]
    lines = profile_lines(df, None, key, xcol, averaged)
    order = natural_sorted(df[xcol].astype(str).tolist())
    groups = measure_groups(scalars) if not lines else [(measure_title(c), [c]) for c in scalars]
    extra = 2 if has_pca else 0
    fig, axes = _grid(len(groups) + extra, style)
    reps = 1
    for ax, (title, columns) in zip(axes, groups, strict=False):
        named = {c: SHORT.get(c, c) if len(columns) > 1 else c for c in columns}
        parts = [points(df, Value(c), lines, xcol, rep, "ci", 0.95).assign(measure=named[c])
                 for c in columns]  # fmt: skip
        pts = pd.concat(parts, ignore_index=True)
        reps = max(reps, int(pts["n"].max()))
        shown = lines if len(columns) == 1 else ["measure"]
        profile_on(ax, pts, Value(columns[0]), shown, xcol, order, style)
        ax.set_xlabel(style.text(key))
        ax.set_title(title, fontsize=9.5)
        ax.set_ylabel(value_title(Value(columns[0])) if len(columns) == 1 else "", fontsize=8)
        if len(columns) > 1:
            _legend_below(ax)
    handles, labels = axes[0].get_legend_handles_labels() if not groups[0][1][1:] else ([], [])
    if len(labels) > 1:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7.5, frameon=False,
                   title=", ".join(style.text(c[2:] if c[:2] in ("a_", "b_") else c)
                                   for c in lines))  # fmt: skip
    if has_pca:
        _pca_panels(df, axes[-2], axes[-1], xcol, notes, style)
    band = f"\nmean, 95% t-interval over {reps} seed (pair)s" if reps > 1 else ""
    fig.suptitle(_suptitle(df, {xcol}, style) + band, fontsize=10)
    return fig


#: Scalars of one measure drawn in one panel (when nothing else varies): title, columns.
SHARED_PANELS = (
    ("pca: variance in the top-k PCs", ("cev_b_in_a", "cev_a_in_b", "cev_a_self", "cev_b_self")),
    ("pca: participation ratios", ("pr_a", "pr_b", "pr_b_in_a")),
    ("CCA", ("cca", "cca_r2")),
    ("cosine", ("cosine", "cosine_rows")),
)


#: Legend entries in a shared panel.
SHORT = {"cev_b_in_a": "B in A's PCs", "cev_a_in_b": "A in B's PCs", "cev_a_self": "A, own",
         "cev_b_self": "B, own", "pr_a": "A", "pr_b": "B", "pr_b_in_a": "B in A's top-k",
         "cca": "ρ", "cca_r2": "ρ²", "cosine": "whole", "cosine_rows": "rows"}  # fmt: skip


def _legend_below(ax: Axes) -> None:
    """A legend under the axes (below the x label): beside the data, never over it."""
    slanted = any(t.get_rotation() for t in ax.get_xticklabels())
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.42 if slanted else -0.2),
              ncol=2, frameon=False)  # fmt: skip


def measure_groups(scalars: list[str]) -> list[tuple[str, list[str]]]:
    """Panels of a matched result: one per measure; a measure's scalars that share a scale
    (pca's four cumulative variances, its participation ratios) share a panel."""
    out: list[tuple[str, list[str]]] = []
    placed: set[str] = set()
    for column in scalars:
        if column in placed:
            continue
        for title, members in SHARED_PANELS:
            if column in members:
                cols = [c for c in scalars if c in members]
                out.append((title if len(cols) > 1 else measure_title(column), cols))
                placed.update(cols)
                break
        else:
            out.append((measure_title(column), [column]))
            placed.add(column)
    return out


def _suptitle(df: pd.DataFrame, skip: set[str], style: Style) -> str:
    if style.title:
        return style.title
    rest = describe_rows(df, skip, style)
    return f"{len(df)} pair(s){': ' + rest if rest else ''}"


def _curve(cell: Any) -> np.ndarray:
    """A list column's cell: a list (JSON/Parquet, or from compare) or JSON text (CSV)."""
    if isinstance(cell, str):
        cell = json.loads(cell)
    return np.asarray(cell, dtype=np.float64)


def covariance_rank(self_curve: np.ndarray) -> int:
    """The rank of a side's covariance from its own cumulative-variance curve: the number
    of eigenvalues above 1e-10 × the largest (the rule :mod:`reprstore.metrics.pca` uses)."""
    steps = np.diff(np.concatenate([[0.0], self_curve]))
    return int(np.sum(steps > 1e-10 * steps[0])) if steps.size and steps[0] > 0 else 0


def _pair_labels(df: pd.DataFrame, xcol: str | None) -> list[str]:
    if xcol is not None:
        return df[xcol].astype(str).tolist()
    a = df["a_layer"].astype(str) if "a_layer" in df.columns else pd.Series([""] * len(df))
    b = df["b_layer"].astype(str) if "b_layer" in df.columns else pd.Series([""] * len(df))
    return [f"{x} → {y}" for x, y in zip(a, b, strict=True)]


def _pca_panels(
    df: pd.DataFrame,
    curves_ax: Axes,
    angles_ax: Axes,
    xcol: str | None,
    notes: list[str],
    style: Style,
) -> None:
    """Cumulative variance of B in A's PCs (solid) and its own (dashed) on a log k axis,
    k and the rank marked; the principal angles (degrees) against their index."""
    plt = pyplot()
    labels = _pair_labels(df, xcol)
    order = sorted(range(len(df)), key=lambda i: natural_key(labels[i]))
    if len(order) > MAX_CURVE_PAIRS:
        notes.append(f"pca curves of the first {MAX_CURVE_PAIRS} of {len(order)} pairs drawn")
        order = order[:MAX_CURVE_PAIRS]
    many = len(order) > LEGEND_PAIRS
    cmap = plt.get_cmap("viridis")
    colour = {i: cmap(r / max(1, len(order) - 1)) if many else f"C{r}" for r, i in enumerate(order)}
    ranks = set()
    for i in order:
        row = df.iloc[i]
        for column, dash, _ in CURVES:
            y = _curve(row[column])
            name = style.text(labels[i]) if dash == "-" and not many else None
            curves_ax.plot(np.arange(1, y.size + 1), y, dash, color=colour[i], lw=1.2, label=name)
        ranks.add(covariance_rank(_curve(row["cev_a_self_curve"])))
        angles = np.degrees(_curve(row["angles"])) if "angles" in df.columns else np.array([])
        angles_ax.plot(np.arange(1, angles.size + 1), angles, "o-", ms=2.5, lw=1.0,
                       color=colour[i])  # fmt: skip
    curves_ax.set_xscale("log")
    _mark_k_and_rank(curves_ax, df, ranks)
    curves_ax.set_xlabel("k (principal components, log axis)")
    curves_ax.set_ylabel("cumulative variance", fontsize=8)
    curves_ax.set_ylim(0, 1.02)
    curves_ax.set_title("pca: B in A's PCs (—), B's own (--)", fontsize=9)
    curves_ax.grid(alpha=0.3, which="both")
    angles_ax.set_xlabel("index of the principal angle")
    angles_ax.set_ylabel("principal angle (degrees)", fontsize=8)
    angles_ax.set_ylim(0, 90)
    angles_ax.set_title("pca: principal angles between the top-k PCs", fontsize=9)
    angles_ax.grid(alpha=0.3)
    if many:
        names = [labels[i] for i in order]
        norm = plt.Normalize(0, len(order) - 1)
        bar = plt.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=[curves_ax, angles_ax],
                           shrink=0.9)  # fmt: skip
        ticks = np.unique(np.linspace(0, len(order) - 1, min(len(order), 12)).round().astype(int))
        bar.set_ticks(ticks, labels=[style.text(names[t]) for t in ticks])
        bar.ax.tick_params(labelsize=7)
    elif len(order) > 1:
        _legend_below(curves_ax)


def _mark_k_and_rank(ax: Axes, df: pd.DataFrame, ranks: set[int]) -> None:
    """A dotted line at k (the scalars' k) and a dashed one at the covariance's rank."""
    if "pca_k" in df.columns and df["pca_k"].nunique() == 1:
        k = int(df["pca_k"].iloc[0])
        ax.axvline(k, color="0.3", ls=":", lw=1)
        ax.annotate(f"k = {k}", (k, 0.03), xytext=(3, 0), textcoords="offset points",
                    fontsize=7, color="0.3")  # fmt: skip
    if ranks:
        low, high = min(ranks), max(ranks)
        ax.axvline(high, color="0.3", ls="--", lw=1)
        text = f"rank {high}" if low == high else f"rank {low}–{high}"
        ax.annotate(text, (high, 0.10), xytext=(-3, 0), textcoords="offset points", ha="right",
                    fontsize=7, color="0.3")  # fmt: skip


def plot_heatmap(
    df: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> os.PathLike[str]:
    """:func:`plot_comparison` of a ``cka`` result (kept for callers of 0.x); the path."""
    return plot_comparison(df, path, Style(title=title)).path


def plot_measures(df: pd.DataFrame, path: str | os.PathLike[str]) -> os.PathLike[str]:
    """:func:`plot_comparison` of a ``compare`` result (kept for callers of 0.x); the path."""
    return plot_comparison(df, path).path


# -- the grid as a matrix (tests and callers that want the numbers) ---------------------
KEY_FIELDS = ("model", "seed", "checkpoint", "layer")


def side_labels(df: pd.DataFrame, side: str) -> list[str]:
    """One label per row of ``df`` for side ``a`` or ``b``, naming only what varies.

    The layer, preceded by the run keys that vary on that side: ``seed=1 · encoder.3``.
    """
    cols = [f"{side}_{k}" for k in KEY_FIELDS]
    varying = [k for k in KEY_FIELDS[:3] if df[f"{side}_{k}"].nunique() > 1]
    labels = []
    for _, row in df[cols].iterrows():
        run = ",".join(f"{k}={row[f'{side}_{k}']}" for k in varying)
        layer = str(row[cols[3]])
        labels.append(f"{run} · {layer}" if run else layer)
    return labels


def _natural_order(df: pd.DataFrame, side: str, labels: list[str]) -> list[str]:
    """The distinct labels in natural key order (layer_2 before layer_10)."""
    from reprstore.keys import natural_key

    order: dict[str, tuple] = {}
    for label, (_, row) in zip(labels, df.iterrows(), strict=True):
        order.setdefault(label, tuple(natural_key(str(row[f"{side}_{k}"])) for k in KEY_FIELDS))
    return sorted(order, key=order.__getitem__)


def grid(df: pd.DataFrame, column: str = "cka") -> tuple[list[str], list[str], np.ndarray]:
    """The values of ``column`` as an (A, B) matrix (NaN where a pair was not compared)."""
    a, b = side_labels(df, "a"), side_labels(df, "b")
    rows, cols = _natural_order(df, "a", a), _natural_order(df, "b", b)
    values = np.full((len(rows), len(cols)), np.nan)
    for la, lb, v in zip(a, b, df[column], strict=True):
        values[rows.index(la), cols.index(lb)] = v
    return rows, cols, values
