"""Line figures: the timeline (a measure against the training step) and the profile (a
measure per layer), one line per what varies, bands or error bars over replicates.

Every row that differs in a key or option gets its own line (or the figure is refused,
:func:`reprstore.report.facets.check_unpooled`); a point averages only the replicates
(``over``) and the columns named in ``Style.average``, and the title says so. Legends sit
outside the axes, so they never cover data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprstore.analysis.results import (
    Value,
    natural_groups,
    natural_sorted,
    replicate_columns,
    replicates,
    resolve_key,
    resolve_keys,
    same_partition,
)
from reprstore.analysis.steps import step_axis
from reprstore.analysis.summary import t_interval
from reprstore.errors import InputError, NotFoundError
from reprstore.report.facets import (
    averaged_text,
    check_unpooled,
    identity_columns,
    resolve_averaged,
)
from reprstore.report.matrices import describe_rows
from reprstore.report.style import Style, measure_title, pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_LINES = 24
ALL_TENSORS = "(all)"


def replicate_cols(df: pd.DataFrame, over: str) -> list[str]:
    """The replicate columns ``over`` names, or none when the table has no such column."""
    try:
        return replicate_columns(df, over)
    except NotFoundError:
        return []  # no seeds in this table: one value per point, no band


def auto_lines(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Key and option columns that vary, minus ``exclude``, one per distinct grouping
    (b_ first): every row that differs in one of them is on another line."""
    chosen: list[str] = []
    candidates = sorted(identity_columns(df), key=lambda c: not c.startswith("b_"))
    for col in candidates:
        if col in exclude or df[col].nunique(dropna=False) < 2:
            continue
        if any(same_partition(df, col, e) for e in exclude if e in df.columns):
            continue
        if not any(same_partition(df, col, c) for c in chosen):
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


def _bare(col: str) -> str:
    return col.removeprefix("a_").removeprefix("b_")


def line_label(lines: list[str], group: tuple[str, ...], style: Style = Style()) -> str:
    """A legend entry: the value alone for one line column, else ``key=value, …``."""
    if len(lines) == 1:
        return style.text(group[0])
    return ", ".join(
        f"{style.text(_bare(c))}={style.text(v)}" for c, v in zip(lines, group, strict=True)
    )


def colors(count: int) -> list[Any]:
    """tab10 for up to 10 lines, else evenly spaced viridis (ordered lines read as a ramp)."""
    plt = pyplot()
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    return [plt.get_cmap("viridis")(i / max(1, count - 1)) for i in range(count)]


def band_text(band: str, level: float, n: int, over: str) -> str:
    if band == "none" or n < 2:
        return ""
    what = {"ci": f"{level:.0%} t-interval", "sd": "± sd", "sem": "± sem"}[band]
    return f"mean, {what} over {n} {over}s"


def legend(ax: Axes, count: int, title: str) -> None:
    """The legend outside the axes, right of them: it never covers a line."""
    if count > 1:
        ax.legend(title=title, fontsize=7.5, title_fontsize=8, ncol=1 if count <= 14 else 2,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip


def check_lines(count: int, names: list[str]) -> None:
    if count > MAX_LINES:
        raise InputError(
            f"{count} lines ({', '.join(names) or 'rows'}) are too many for one plot "
            f"(at most {MAX_LINES}); choose the lines with --by, keep fewer rows with "
            "--where, or average a column with --average."
        )


def title_lines(head: str, df: pd.DataFrame, skip: set[str], *notes: str) -> str:
    """``head: estimator · keys · dataset, n``, then the notes (averaging, bands)."""
    rest = describe_rows(df, skip)
    return "\n".join([f"{head}: {rest}" if rest else head, *(n for n in notes if n)])


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
    style: Style = Style(),
    moments: pd.DataFrame | None = None,
) -> tuple[Figure, list[str]]:
    """The measure against the training step, one line per layer (or ``by``) and per
    anything else that varies; ``style.logx`` puts the steps on a log axis; ``moments``
    are marked (:func:`reprstore.report.moments.mark_moments`)."""
    plt = pyplot()
    xcol = resolve_key(df, x or "checkpoint", "--x")
    axis = step_axis(df[xcol].astype(str).tolist(), final_step)
    notes = list(axis.notes)
    df = df[df[xcol].astype(str).isin(axis.positions)]
    rep = replicate_cols(df, over)
    averaged = [*rep, *resolve_averaged(df, style.average)]
    others = {"a_checkpoint", "b_checkpoint", "checkpoint", xcol, *averaged}
    if by is not None:
        lines = resolve_keys(df, by, "--by")
    elif "parameter" in df.columns:
        lines = ["parameter"]
    else:
        lines = auto_lines(df, others)
    check_unpooled(df, [*lines, xcol], averaged, choose="--by")
    pts = points(df, what, lines, xcol, rep, band, level)
    pts["x"] = pts[xcol].map(axis.positions)
    groups = natural_groups(pts, lines)
    check_lines(len(groups), lines)
    fig, ax = plt.subplots(figsize=(8.0 if len(groups) > 1 else 7.0, 4.6), layout="constrained")
    for color, (group, part) in zip(colors(len(groups)), groups, strict=True):
        part = part.sort_values("x")
        label = line_label(lines, group, style) if lines else what.label
        if label == ALL_TENSORS:
            color = "black"
        ax.plot(part["x"], part["mean"], marker="o", ms=3.5, color=color, label=label,
                lw=2.6 if label == ALL_TENSORS else 1.6)  # fmt: skip
        if np.isfinite(part["lo"]).any():
            ax.fill_between(part["x"], part["lo"], part["hi"], color=color, alpha=0.18, lw=0)
    if moments is not None and not moments.empty:
        from reprstore.report.moments import mark_moments

        mark_moments(ax, moments)
    if style.logx:
        _log_steps(ax, axis)
    else:
        _step_ticks(ax, axis)
    ax.set_xlabel("training step (from the checkpoint label)" if axis.numeric else "checkpoint")
    ax.set_ylabel(value_title(what))
    ax.grid(alpha=0.3)
    legend(ax, len(groups), ", ".join(style.text(_bare(c)) for c in lines))
    sub = band_text(band, level, int(pts["n"].max()), over)
    head = _timeline_head(df, what, xcol)
    mean_over = averaged_text(df, [c for c in averaged if c not in rep])
    ax.set_title(title or style.title or title_lines(head, df, {xcol}, mean_over, sub),
                 fontsize=9.5)  # fmt: skip
    return fig, notes


def value_title(what: Value) -> str:
    """The y label: the measure's name (``CKA``), or drift's ``drift (1 − cka)``."""
    if what.complement or what.column in ("rel_change", "cosine", "change"):
        return what.title
    return measure_title(what.column)


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


def _log_steps(ax: Axes, axis: Any) -> None:
    """A log step axis; symmetric-log (linear below the first non-zero step) when step 0 is
    drawn, ticks at the checkpoints (and ``final`` named)."""
    if not axis.numeric:
        raise InputError("--logx needs numbered checkpoints (step100, …); these have none.")
    where = sorted(set(axis.positions.values()))
    positive = [p for p in where if p > 0]
    if not positive:
        raise InputError("--logx needs a checkpoint after step 0.")
    if min(where) < 0:
        raise InputError("--logx cannot draw negative steps.")
    if min(where) == 0:
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
    else:
        ax.set_xscale("log")
    named = dict(axis.ticks) if axis.ticks else {}
    shown = where if len(where) <= 12 else where[:: -(-len(where) // 12)]
    ax.set_xticks(shown, [named.get(p, f"{p:g}") for p in shown])
    ax.minorticks_off()


def _timeline_head(df: pd.DataFrame, what: Value, xcol: str) -> str:
    head = f"{value_title(what)} over training"
    other = {"a_checkpoint": "b_checkpoint", "b_checkpoint": "a_checkpoint"}.get(xcol)
    if other and other in df.columns and df[other].nunique() == 1:
        head += f", against checkpoint {df[other].iloc[0]}"
    if "reference" in df.columns and df["reference"].nunique() == 1:
        head += f", against {df['reference'].iloc[0]}"
    return head


def against(df: pd.DataFrame) -> str:
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
    style: Style = Style(),
) -> tuple[Figure, list[str]]:
    """The measure per layer (or per ``x``, e.g. ``tasks``) in layer order, one line per
    method/model (and anything else that varies), error bars over replicates."""
    plt = pyplot()
    name = x or "layer"
    layer = resolve_key(df, name, "--x" if x else "the layer axis")
    rep = replicate_cols(df, over)
    averaged = [*rep, *resolve_averaged(df, style.average)]
    lines = profile_lines(df, by, name, layer, averaged)
    pts = points(df, what, lines, layer, rep, band, level)
    order = natural_sorted(pts[layer].tolist())
    groups = natural_groups(pts, lines)
    check_lines(len(groups), lines)
    width = min(max(6.0, 1.6 + 0.55 * len(order)), 16.0) + (1.6 if len(groups) > 1 else 0.0)
    fig, ax = plt.subplots(figsize=(width, 4.6), layout="constrained")
    profile_on(ax, pts, what, lines, layer, order, style)
    ax.set_xlabel(f"{name} ({layer})" if name != layer else name)
    legend(ax, len(groups), ", ".join(style.text(_bare(c)) for c in lines))
    sub = band_text(band, level, int(pts["n"].max()), over)
    head = f"{value_title(what)} per {name}{against(df)}"
    mean_over = averaged_text(df, [c for c in averaged if c not in rep])
    ax.set_title(title or style.title or title_lines(head, df, {layer}, mean_over, sub),
                 fontsize=9.5)  # fmt: skip
    return fig, []


def profile_lines(
    df: pd.DataFrame,
    by: str | Sequence[str] | None,
    name: str,
    layer: str,
    averaged: list[str],
) -> list[str]:
    """The line columns of a profile (``by``, or what varies), after the pooling check."""
    both = {c for c in (f"a_{name}", f"b_{name}") if c in df.columns}
    if by is not None:
        lines = resolve_keys(df, by, "--by")
    else:
        lines = auto_lines(df, {layer, *both, *averaged})
    check_unpooled(df, [*lines, layer, *both], averaged, choose="--by")
    return lines


def profile_on(
    ax: Axes,
    pts: pd.DataFrame,
    what: Value,
    lines: list[str],
    layer: str,
    order: list[str],
    style: Style = Style(),
) -> None:
    """Draw the profile points on ``ax``: one dodged line with error bars per group."""
    pos = {name: i for i, name in enumerate(order)}
    groups = natural_groups(pts, lines)
    dodge = 0.12 if len(groups) > 1 else 0.0
    for k, (color, (group, part)) in enumerate(zip(colors(len(groups)), groups, strict=True)):
        shift = (k - (len(groups) - 1) / 2) * dodge / max(1, len(groups) - 1) * 2
        xs = part[layer].map(pos).to_numpy(dtype=float) + shift
        idx = np.argsort(xs)
        mean, lo, hi = (part[c].to_numpy(dtype=float)[idx] for c in ("mean", "lo", "hi"))
        err = None if not np.isfinite(lo).any() else np.vstack([mean - lo, hi - mean])
        label = line_label(lines, group, style) if lines else what.label
        ax.errorbar(xs[idx], mean, yerr=err, marker="o", ms=4, lw=1.6, capsize=3,
                    color=color, label=label)  # fmt: skip
    slanted = len(order) > 6 or max(map(len, order), default=0) > 10
    ax.set_xticks(range(len(order)), [style.text(o) for o in order],
                  rotation=30 if slanted else 0, ha="right" if slanted else "center")  # fmt: skip
    ax.set_ylabel(value_title(what))
    ax.grid(alpha=0.3, axis="y")
