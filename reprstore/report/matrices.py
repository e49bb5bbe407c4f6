"""A × B matrices of a measure: the heatmap, and the seed-robustness matrix over seeds.

Rows are the A representations and columns the B ones, labelled by the keys that vary on
each side, in the model's layer order (natural order: ``layer_2`` before ``layer_10``;
the store records no other order). The axes name the compared sets (``seed 0 · layer``),
built from what differs between the A and B rows; the title names the measure, estimator,
kernel, datasets, n and k. Rows that differ in anything else (checkpoint pair, kernel,
estimator, dataset) get their own panels, never a mean. ``seeds`` averages each cell over
the replicates (seed pairs) and writes mean ± sd in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprstore.analysis.results import Value, natural_key, replicate_columns, same_partition
from reprstore.analysis.steps import step_axis
from reprstore.report.facets import (
    averaged_text,
    check_unpooled,
    identity_columns,
    resolve_averaged,
    varying,
)
from reprstore.report.style import Style, colour_scale, decimals, measure_title

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KEYS = ("model", "seed", "checkpoint", "layer", "dataset")
#: Values are written in the cells up to this many cells per panel.
ANNOTATE_MAX_CELLS = 144
MAX_PANELS = 12
CHECKPOINTS = ("a_checkpoint", "b_checkpoint")


def _varying(df: pd.DataFrame, side: str, skip: set[str]) -> list[str]:
    """Key columns of ``side`` that vary in ``df`` (layer always kept), minus ``skip``."""
    out = []
    for key in KEYS:
        col = f"{side}_{key}"
        if col in df.columns and col not in skip and (df[col].nunique() > 1 or key == "layer"):
            out.append(col)
    return out


def _fixed(df: pd.DataFrame, side: str, skip: set[str]) -> dict[str, str]:
    """The keys of ``side`` that take one value in ``df``: ``{"seed": "0"}``."""
    return {
        k: str(df[f"{side}_{k}"].iloc[0])
        for k in KEYS
        if f"{side}_{k}" in df.columns
        and f"{side}_{k}" not in skip
        and df[f"{side}_{k}"].nunique() == 1
    }


def side_title(
    df: pd.DataFrame, side: str, shown: list[str], skip: set[str], style: Style = Style()
) -> str:
    """``seed 0 · layer``: what sets this side apart from the other, then what the ticks
    name; ``layer (A)`` when both sides are the same set."""
    mine, other = _fixed(df, side, skip), _fixed(df, "b" if side == "a" else "a", skip)
    apart = [f"{style.text(k)} {style.text(v)}" for k, v in mine.items() if other.get(k) != v]
    names = " · ".join(style.text(c[2:]) for c in shown)
    return " · ".join([*apart, names]) if apart else f"{names} ({side.upper()})"


def common_keys(df: pd.DataFrame, skip: set[str], style: Style = Style()) -> str:
    """``toy, checkpoint final``: the keys both sides share, for the title."""
    a, b = _fixed(df, "a", skip), _fixed(df, "b", skip)
    words = []
    for k, v in a.items():
        if b.get(k) == v and k != "dataset":
            words.append(style.text(v) if k == "model" else f"{style.text(k)} {style.text(v)}")
    return ", ".join(words)


def _labels(df: pd.DataFrame, cols: list[str], style: Style = Style()) -> pd.Series:
    """``seed=0 · layer_3``: the layer bare, other keys named."""
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index)
    parts = [
        df[c].astype(str).map(style.text)
        if c.endswith("_layer")
        else f"{style.text(c[2:])}=" + df[c].astype(str).map(style.text)
        for c in cols
    ]
    out = parts[0]
    for part in parts[1:]:
        out = out + " · " + part
    return out


def _order(df: pd.DataFrame, cols: list[str], labels: pd.Series) -> list[str]:
    keyed = {
        lab: tuple(natural_key(v) for v in row)
        for lab, row in zip(labels, df[cols].astype(str).itertuples(index=False), strict=True)
    }
    return sorted(keyed, key=keyed.__getitem__)


def facet_columns(df: pd.DataFrame, skip: set[str]) -> list[str]:
    """Columns that vary and are no side's key (kernel, estimator, dataset …): each value
    gets its own panel, never a mean. One column per distinct grouping (sigma goes with
    kernel, n_samples with dataset)."""
    chosen: list[str] = []
    for col in varying(df, identity_columns(df)):
        if col in skip or col.startswith(("a_", "b_")):
            continue
        if not any(same_partition(df, col, c) for c in chosen):
            chosen.append(col)
    return chosen


def _checkpoint_pairs(df: pd.DataFrame) -> bool:
    return all(c in df.columns for c in CHECKPOINTS) and (
        df.groupby(list(CHECKPOINTS), observed=True).ngroups > 1
    )


def panels(
    df: pd.DataFrame, facets: Sequence[str], style: Style = Style()
) -> list[tuple[str, pd.DataFrame]]:
    """One (title, rows) per checkpoint pair × facet value; one untitled panel when the
    rows make one matrix. Checkpoints in step order, facet values in natural order."""
    by_ckpt = _checkpoint_pairs(df)
    keys = [*(CHECKPOINTS if by_ckpt else ()), *facets]
    if not keys:
        return [("", df)]
    same, steps = False, None
    if by_ckpt:
        a_ckpt, b_ckpt = df["a_checkpoint"].astype(str), df["b_checkpoint"].astype(str)
        same = bool((a_ckpt == b_ckpt).all())
        steps = step_axis([*a_ckpt, *b_ckpt])
    out = []
    for group, part in df.groupby(keys, sort=False, observed=True, dropna=False):
        values = [str(v) for v in (group if isinstance(group, tuple) else (group,))]
        words, order = [], []
        if by_ckpt and steps is not None:
            ca, cb = values[:2]
            words.append(f"checkpoint {style.text(ca)}" if same else
                         f"A {style.text(ca)} · B {style.text(cb)}")  # fmt: skip
            last = len(steps.positions) + 1.0
            order = [(steps.positions.get(c, last), natural_key(c)) for c in (ca, cb)]
            values = values[2:]
        words += [f"{style.text(c)} {style.text(v)}" for c, v in zip(facets, values, strict=True)]
        out.append((" · ".join(words), part, (*order, *(natural_key(v) for v in values))))
    out.sort(key=lambda t: t[2])
    return [(title, part) for title, part, _ in out]


def cell_table(
    df: pd.DataFrame,
    values: np.ndarray,
    skip: set[str],
    replicate: list[str],
    style: Style = Style(),
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Row labels, column labels, and per cell the mean, sd and number of replicates."""
    a_cols, b_cols = _varying(df, "a", skip), _varying(df, "b", skip)
    a, b = _labels(df, a_cols, style), _labels(df, b_cols, style)
    rows, cols = _order(df, a_cols, a), _order(df, b_cols, b)
    frame = pd.DataFrame({"a": a.to_numpy(), "b": b.to_numpy(), "v": values})
    frame["r"] = _labels(df, replicate).to_numpy() if replicate else "all"
    per_rep = frame.groupby(["a", "b", "r"], sort=False, observed=True)["v"].mean().reset_index()
    cells = per_rep.groupby(["a", "b"], sort=False, observed=True)["v"].agg(["mean", "std", "size"])
    cells = cells.reset_index()
    shape = (len(rows), len(cols))
    mean, sd, n = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, dtype=int)
    i = cells["a"].map({name: k for k, name in enumerate(rows)}).to_numpy(dtype=int)
    j = cells["b"].map({name: k for k, name in enumerate(cols)}).to_numpy(dtype=int)
    mean[i, j], sd[i, j] = cells["mean"].to_numpy(), cells["std"].to_numpy()
    n[i, j] = cells["size"].to_numpy()
    return rows, cols, mean, sd, n


def draw_matrices(
    df: pd.DataFrame,
    value: Value,
    *,
    over: str | None,
    title: str | None = None,
    style: Style = Style(),
) -> tuple[Figure, list[str]]:
    """The heatmap (``over`` None) or the seed-robustness matrix averaged ``over`` seeds:
    one panel per checkpoint pair and per value of a varying option (kernel, estimator,
    dataset), one colour scale shared by all panels."""
    import matplotlib.pyplot as plt

    replicate = replicate_columns(df, over) if over else []
    averaged = [*replicate, *resolve_averaged(df, style.average)]
    skip = set(averaged) | set(CHECKPOINTS)
    facets = facet_columns(df, skip)
    parts = panels(df, facets, style)
    if len(parts) > MAX_PANELS:
        raise_too_many(len(parts), [*(["checkpoint"] if _checkpoint_pairs(df) else []), *facets])
    if len(parts) == 1 and not _checkpoint_pairs(df):
        skip -= set(CHECKPOINTS)
    axes_cols = [c for _, p in parts for s in "ab" for c in _varying(p, s, skip)]
    check_unpooled(df, [*axes_cols, *facets, *CHECKPOINTS], averaged, choose="--where or --by")
    values = value.of(df)
    tables = [(t, p, cell_table(p, values[df.index.get_indexer(p.index)], skip, replicate,
                                style)) for t, p in parts]  # fmt: skip
    drawn = np.concatenate([tb[2].ravel() for _, _, tb in tables])
    low, high, cmap = colour_scale(value.label, drawn, style)
    places = (decimals(drawn),) * 2  # the sd written as precisely as the mean
    across = style.across(len(tables))
    down = -(-len(tables) // across)
    n_rows_cells = max(len(tb[0]) for _, _, tb in tables)
    n_cols_cells = max(len(tb[1]) for _, _, tb in tables)
    width = min(across * min(2.4 + 0.62 * n_cols_cells, 9) + 1.2, 18)
    height = min(down * min(1.9 + 0.5 * n_rows_cells, 9) + 0.9, 22)
    fig, axes = plt.subplots(down, across, figsize=(max(width, 5.5), max(height, 4.0)),
                             layout="constrained", squeeze=False)  # fmt: skip
    image: Any = None
    for ax, (panel, part, table) in zip(axes.flat, tables, strict=False):
        image = heatmap_panel(ax, part, table, (low, high, cmap), skip, over, style, places)
        if panel:
            ax.set_title(panel, fontsize=10)
    for ax in list(axes.flat)[len(tables) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label=_value_title(value), shrink=0.9)
    fig.suptitle(title or style.title or _title(df, value, over, tables, skip, averaged, style),
                 fontsize=10.5)  # fmt: skip
    return fig, []


def _value_title(value: Value) -> str:
    return value.title if value.complement else measure_title(value.column)


def heatmap_panel(
    ax: Axes,
    part: pd.DataFrame,
    table: tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray],
    scale: tuple[float, float, str],
    skip: set[str],
    over: str | None,
    style: Style,
    places: tuple[int, int] | None = None,
) -> Any:
    """One matrix on ``ax``: the image, ticks in layer order, both sets named; cells
    written with ``places`` decimals (mean, sd; default from this panel's values)."""
    rows, cols, mean, sd, _ = table
    low, high, cmap = scale
    ax.set_facecolor("#e8e8e8")  # pairs not compared
    image = ax.imshow(mean, vmin=low, vmax=high, cmap=cmap, aspect="auto")
    slanted = max(map(len, cols)) > 4
    ax.set_xticks(range(len(cols)), cols, rotation=45 if slanted else 0,
                  ha="right" if slanted else "center", rotation_mode="anchor")  # fmt: skip
    ax.set_yticks(range(len(rows)), rows)
    small = 8 if max(len(rows), len(cols)) <= 12 else 6
    ax.tick_params(labelsize=small)
    a_shown, b_shown = _varying(part, "a", skip), _varying(part, "b", skip)
    ax.set_xlabel(side_title(part, "b", b_shown, skip, style))
    ax.set_ylabel(side_title(part, "a", a_shown, skip, style))
    if mean.size <= ANNOTATE_MAX_CELLS:
        _annotate(ax, mean, sd if over else None, scale, places or (decimals(mean),) * 2)
    return image


def _annotate(
    ax: Any, mean: np.ndarray, sd: np.ndarray | None, scale: Any, places: tuple[int, int]
) -> None:
    low, high, cmap = scale
    size = 7.5 if mean.shape[1] <= 8 else 6
    for (i, j), v in np.ndenumerate(mean):
        if not np.isfinite(v):
            continue
        text = f"{v:.{places[0]}f}"
        if sd is not None and np.isfinite(sd[i, j]):
            text += f"\n±{sd[i, j]:.{places[1]}f}"
        where = (v - low) / (high - low)
        dark = 0.25 < where < 0.75 if cmap == "RdBu_r" else where > 0.6
        color = "black" if dark else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)


def _first(df: pd.DataFrame, col: str) -> str | None:
    if col not in df.columns or df[col].nunique(dropna=False) != 1 or pd.isna(df[col].iloc[0]):
        return None
    return str(df[col].iloc[0])


def describe_rows(df: pd.DataFrame, skip: set[str], style: Style = Style()) -> str:
    """``debiased, linear · toy · default, n = 2000, k = 10``: what all rows share."""
    how = ", ".join(v for c in ("estimator", "kernel") if (v := _first(df, c)))
    words = [how, common_keys(df, skip, style)]
    a_data = _first(df, "dataset") or _first(df, "a_dataset")
    b_data = _first(df, "b_dataset")
    data = f"{a_data} vs {b_data}" if a_data and b_data and b_data != a_data else a_data
    n, bn = _first(df, "n_samples"), _first(df, "b_n_samples")
    sizes = [f"on {style.text(data)}" if data else "",
             f"n = {n}" + (f" vs {bn}" if bn and bn != n else "") if n else ""]  # fmt: skip
    k = _first(df, "pca_k")
    words.append(", ".join(w for w in [*sizes, f"k = {k}" if k else ""] if w))
    return " · ".join(w for w in words if w)


def _title(
    df: pd.DataFrame,
    value: Value,
    over: str | None,
    tables: list[Any],
    skip: set[str],
    averaged: list[str],
    style: Style,
) -> str:
    head = _value_title(value)
    rest = describe_rows(df, skip, style)
    lines = [f"{head}: {rest}" if rest else head]
    if over:
        reps = max(int(tb[4].max()) for _, _, tb in tables)
        lines.append(f"mean ± sd over {reps} {over} pair(s) per cell")
    extra = averaged_text(df, [c for c in averaged if c not in replicate_columns_safe(df, over)])
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def replicate_columns_safe(df: pd.DataFrame, over: str | None) -> list[str]:
    return replicate_columns(df, over) if over else []


def raise_too_many(count: int, by: list[str]) -> None:
    from reprstore.errors import InputError

    what = " × ".join(by) or "rows"
    raise InputError(
        f"The rows make {count} panels ({what}); at most {MAX_PANELS} are drawn. Keep fewer "
        "with --where (e.g. --where \"kernel == 'linear'\"), or plot --kind timeline."
    )
