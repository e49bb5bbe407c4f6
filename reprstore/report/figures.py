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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprstore.analysis.results import (
    Value,
    design_columns,
    natural_groups,
    natural_sorted,
    read_results,
    replicate_columns,
    replicates,
    resolve_key,
    resolve_keys,
    value_of,
)
from reprstore.analysis.steps import step_axis
from reprstore.analysis.summary import check_level, t_interval
from reprstore.atomic import replacing
from reprstore.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KINDS = ("heatmap", "timeline", "profile", "seeds")
BANDS = ("ci", "sd", "sem", "none")


def check_band(band: str) -> str:
    """``band`` if it is one of :data:`BANDS`; checked before a command reads anything."""
    if band not in BANDS:
        raise InputError(f"Unknown band {band!r}. Expected one of {', '.join(BANDS)}.")
    return band


FIGURE_FORMATS = (".png", ".svg", ".pdf")
MAX_LINES = 24
#: Tensor-level drift tables (``reprstore drift``) have these columns.
DRIFT_KEYS = ("checkpoint", "parameter")
ALL_TENSORS = "(all)"


@dataclass(frozen=True)
class Rendered:
    """A written figure and the plain statements about what it shows."""

    path: Path
    notes: list[str] = field(default_factory=list)


def check_figure_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it ends in .png/.svg/.pdf and its folder exists, else raise."""
    out = Path(path)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise InputError(
            f"Cannot write a figure to {os.fspath(path)}: expected a file name ending in "
            f"{', '.join(FIGURE_FORMATS)}. Got {out.suffix or 'no suffix'!r} instead."
        )
    if not out.parent.is_dir():
        raise InputError(f"Cannot write {os.fspath(path)}: folder {out.parent} does not exist.")
    return out


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"Unknown plot kind {kind!r}. Expected one of {', '.join(KINDS)}.")
    return kind


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Write ``fig`` (PNG at ``dpi``, or vector SVG/PDF) and close it.

    The figure is drawn into a temporary file beside ``path`` and renamed when complete
    (:mod:`reprstore.atomic`): a failed write leaves the old figure, or none.
    """
    plt = _pyplot()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return path


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
    moments: pd.DataFrame | None = None,
) -> Rendered:
    """Draw a result table as ``kind`` into ``path`` (.png, .svg or .pdf).

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
    moments : DataFrame, optional
        Moments to mark on a timeline (:func:`reprstore.analysis.moments.find_moments`).
    """
    check_kind(kind)
    out = check_figure_path(path)
    level = check_level(level)
    check_band(band)
    df = read_results(results).reset_index(drop=True)
    is_drift = all(c in df.columns for c in DRIFT_KEYS)
    what = value_of(measure or ("rel_change" if is_drift else "cka"), value, drift)
    notes: list[str] = []
    if is_drift and what.column in df.columns:
        undefined = ~np.isfinite(pd.to_numeric(df[what.column], errors="coerce"))
        if undefined.any():
            left = natural_sorted(df.loc[undefined, "parameter"].astype(str).tolist())
            notes.append(f"left out {', '.join(left)}: {what.column} undefined (zero tensor)")
            df = df[~undefined].reset_index(drop=True)
    what.of(df)  # a missing or non-numeric measure fails before anything is drawn
    _pyplot()
    if kind in ("heatmap", "seeds"):
        if is_drift:
            raise InputError(f"--kind {kind} needs a pair result table; a drift table plots as "
                             "--kind timeline.")  # fmt: skip
        from reprstore.report.matrices import draw_matrices

        fig, more = draw_matrices(df, what, over=over if kind == "seeds" else None, title=title)
    elif kind == "timeline":
        fig, more = draw_timeline(df, what, by=by, over=over, x=x, band=band, level=level,
                                   final_step=final_step, title=title, moments=moments)  # fmt: skip
    else:
        fig, more = draw_profile(df, what, by=by, over=over, x=x, band=band, level=level,
                                 title=title)  # fmt: skip
    return Rendered(save(fig, out), notes + more)


# -- shared: lines of means with bands over replicates --------------------------------
def _replicate_cols(df: pd.DataFrame, over: str) -> list[str]:
    try:
        return replicate_columns(df, over)
    except NotFoundError:
        return []  # no seeds in this table: one value per point, no band


def _same_partition(df: pd.DataFrame, a: str, b: str) -> bool:
    return bool(
        df.groupby(a, observed=True)[b].nunique().max() == 1
        and df.groupby(b, observed=True)[a].nunique().max() == 1
    )


def auto_lines(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Design columns that vary, minus ``exclude``, one per distinct grouping (b_ first)."""
    chosen: list[str] = []
    candidates = sorted(design_columns(df), key=lambda c: not c.startswith("b_"))
    for col in candidates:
        if col in exclude or df[col].nunique() < 2:
            continue
        if any(_same_partition(df, col, e) for e in exclude if e in df.columns):
            continue
        if not any(_same_partition(df, col, c) for c in chosen):
            chosen.append(col)
    return chosen


def points(
    df: pd.DataFrame,
    what: Value,
    lines: list[str],
    x: str,
    rep: list[str],
    band: str,
    level: float,
) -> pd.DataFrame:
    """Per line × x: mean, the band's lo/hi and the number of replicates."""
    if rep:
        table, _ = replicates(df, [*lines, x], rep, what)
    else:
        table = df[[*lines, x]].astype(str).assign(value=what.of(df))
    rows = []
    for group, part in natural_groups(table, [*lines, x]):
        values = part["value"].to_numpy(dtype=np.float64)
        mean, sd, sem, lo, hi = t_interval(values, level, what.bounds)
        half = {"sd": sd, "sem": sem}.get(band)
        if band in ("sd", "sem"):
            lo, hi = mean - half, mean + half  # type: ignore[operator]
        elif band == "none":
            lo = hi = np.nan
        rows.append([*group, mean, lo, hi, values.size])
    return pd.DataFrame(rows, columns=[*lines, x, "mean", "lo", "hi", "n"])


def _line_label(lines: list[str], group: tuple[str, ...]) -> str:
    if len(lines) == 1:
        return str(group[0])
    return ", ".join(
        f"{c.removeprefix('a_').removeprefix('b_')}={v}" for c, v in zip(lines, group, strict=True)
    )


def _colors(count: int) -> list[Any]:
    plt = _pyplot()
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    return [plt.get_cmap("viridis")(i / max(1, count - 1)) for i in range(count)]


def _band_text(band: str, level: float, n: int, over: str) -> str:
    if band == "none" or n < 2:
        return ""
    what = {"ci": f"{level:.0%} t-interval", "sd": "± sd", "sem": "± sem"}[band]
    return f"mean, {what} over {n} {over}s"


def _legend(ax: Axes, count: int, title: str) -> None:
    if count > 1:
        ax.legend(title=title, fontsize=8, title_fontsize=8, ncol=1 if count <= 12 else 2,
                  loc="best", frameon=False)  # fmt: skip


def _check_lines(count: int, names: list[str]) -> None:
    if count > MAX_LINES:
        raise InputError(
            f"{count} lines ({', '.join(names) or 'rows'}) are too many for one plot "
            f"(at most {MAX_LINES}); choose the lines with --by or filter the table."
        )


# -- timeline ---------------------------------------------------------------------------
def draw_timeline(
    df: pd.DataFrame,
    what: Value,
    *,
    by: str | Sequence[str] | None,
    over: str,
    x: str | None,
    band: str,
    level: float,
    final_step: float | None,
    title: str | None,
    moments: pd.DataFrame | None = None,
) -> tuple[Figure, list[str]]:
    """The measure against the training step, one line per layer (or ``by``), with
    ``moments`` marked (:func:`reprstore.report.moments.mark_moments`)."""
    plt = _pyplot()
    xcol = resolve_key(df, x or "checkpoint", "--x")
    axis = step_axis(df[xcol].astype(str).tolist(), final_step)
    notes = list(axis.notes)
    df = df[df[xcol].astype(str).isin(axis.positions)]
    rep = _replicate_cols(df, over)
    others = {"a_checkpoint", "b_checkpoint", xcol, *rep}
    if by is not None:
        lines = resolve_keys(df, by, "--by")
    elif "parameter" in df.columns:
        lines = ["parameter"]
    else:
        lines = auto_lines(df, others)
    pts = points(df, what, lines, xcol, rep, band, level)
    pts["x"] = pts[xcol].map(axis.positions)
    groups = natural_groups(pts, lines)
    _check_lines(len(groups), lines)
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for color, (group, part) in zip(_colors(len(groups)), groups, strict=True):
        part = part.sort_values("x")
        label = _line_label(lines, group) if lines else what.label
        if label == ALL_TENSORS:
            color = "black"
        ax.plot(part["x"], part["mean"], marker="o", ms=3.5, color=color, label=label,
                lw=2.6 if label == ALL_TENSORS else 1.6)  # fmt: skip
        if np.isfinite(part["lo"]).any():
            ax.fill_between(part["x"], part["lo"], part["hi"], color=color, alpha=0.18, lw=0)
    if moments is not None and not moments.empty:
        from reprstore.report.moments import mark_moments

        mark_moments(ax, moments)
    _step_ticks(ax, axis)
    ax.set_xlabel("training step (from the checkpoint label)" if axis.numeric else "checkpoint")
    ax.set_ylabel(what.title)
    ax.grid(alpha=0.3)
    _legend(ax, len(groups), ", ".join(c.removeprefix("b_").removeprefix("a_") for c in lines))
    n = int(pts["n"].max())
    sub = _band_text(band, level, n, over)
    ax.set_title(title or _timeline_title(df, what, xcol, sub), fontsize=10)
    return fig, notes


def _step_ticks(ax: Axes, axis: Any) -> None:
    if not axis.ticks:
        return
    if not axis.numeric:
        ax.set_xticks([p for p, _ in axis.ticks], [t for _, t in axis.ticks])
        return
    named = {p for p, _ in axis.ticks}
    low, high = min(axis.positions.values()), max(p for p in axis.positions.values())
    ax.set_xlim(low - 0.04 * (high - low or 1), high + 0.04 * (high - low or 1))
    regular = [t for t in ax.get_xticks() if low <= t <= high and t not in named]
    last_regular = max((p for p in axis.positions.values() if p not in named), default=low)
    regular = [t for t in regular if t <= last_regular]
    ticks = [*regular, *(p for p, _ in axis.ticks)]
    labels = [f"{t:g}" for t in regular] + [t for _, t in axis.ticks]
    ax.set_xticks(ticks, labels)


def _timeline_title(df: pd.DataFrame, what: Value, xcol: str, sub: str) -> str:
    head = f"{what.title} over training"
    other = {"a_checkpoint": "b_checkpoint", "b_checkpoint": "a_checkpoint"}.get(xcol)
    if other and other in df.columns and df[other].nunique() == 1:
        head += f", against checkpoint {df[other].iloc[0]}"
    if "reference" in df.columns and df["reference"].nunique() == 1:
        head += f", against {df['reference'].iloc[0]}"
    return f"{head}\n{sub}" if sub else head


def _against(df: pd.DataFrame) -> str:
    """`` against base`` when every A is one model (and B is another)."""
    if "a_model" in df.columns and df["a_model"].nunique() == 1:
        a = str(df["a_model"].iloc[0])
        if "b_model" in df.columns and set(df["b_model"].astype(str)) != {a}:
            return f", against {a}"
    return ""


# -- profile ----------------------------------------------------------------------------
def draw_profile(
    df: pd.DataFrame,
    what: Value,
    *,
    by: str | Sequence[str] | None,
    over: str,
    band: str,
    level: float,
    title: str | None,
    x: str | None = None,
) -> tuple[Figure, list[str]]:
    """The measure per layer (or per ``x``, e.g. ``tasks``) in natural order, one line per
    method/model, seed error bars."""
    plt = _pyplot()
    name = x or "layer"
    layer = resolve_key(df, name, "--x" if x else "the layer axis")
    rep = _replicate_cols(df, over)
    both = {c for c in (f"a_{name}", f"b_{name}") if c in df.columns}
    lines = resolve_keys(df, by, "--by") if by is not None else auto_lines(
        df, {layer, *both, *rep}
    )  # fmt: skip
    pts = points(df, what, lines, layer, rep, band, level)
    order = natural_sorted(pts[layer].tolist())
    pos = {name: i for i, name in enumerate(order)}
    groups = natural_groups(pts, lines)
    _check_lines(len(groups), lines)
    width = min(max(6.0, 1.6 + 0.55 * len(order)), 18.0)
    fig, ax = plt.subplots(figsize=(width, 4.6), layout="constrained")
    dodge = 0.12 if len(groups) > 1 else 0.0
    for k, (color, (group, part)) in enumerate(zip(_colors(len(groups)), groups, strict=True)):
        shift = (k - (len(groups) - 1) / 2) * dodge / max(1, len(groups) - 1) * 2
        xs = part[layer].map(pos).to_numpy(dtype=float) + shift
        idx = np.argsort(xs)
        mean, lo, hi = (part[c].to_numpy(dtype=float)[idx] for c in ("mean", "lo", "hi"))
        err = None if not np.isfinite(lo).any() else np.vstack([mean - lo, hi - mean])
        label = _line_label(lines, group) if lines else what.label
        ax.errorbar(xs[idx], mean, yerr=err, marker="o", ms=4, lw=1.6, capsize=3,
                    color=color, label=label)  # fmt: skip
    ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 6 else 0,
                  ha="right" if len(order) > 6 else "center")  # fmt: skip
    ax.set_xlabel(f"{name} ({layer})" if name != layer else name)
    ax.set_ylabel(what.title)
    ax.grid(alpha=0.3, axis="y")
    _legend(ax, len(groups), ", ".join(c.removeprefix("b_").removeprefix("a_") for c in lines))
    sub = _band_text(band, level, int(pts["n"].max()), over)
    head = f"{what.title} per {name}{_against(df)}"
    ax.set_title(title or (f"{head}\n{sub}" if sub else head), fontsize=10)
    return fig, []


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
