"""A × B matrices of a measure: the heatmap, and the seed-robustness matrix over seeds.

Rows are the A representations and columns the B ones, labelled by the keys that vary on
each side, in natural order (``layer_2`` before ``layer_10``). A grid that spans several
checkpoints gets one panel per checkpoint (pair). ``seeds`` averages each cell over the
replicates (seed pairs) and writes mean ± sd in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprstore.analysis.results import Value, natural_key, replicate_columns
from reprstore.analysis.steps import step_axis

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KEYS = ("model", "seed", "checkpoint", "layer", "dataset")
#: Values are written in the cells up to this many cells per panel.
ANNOTATE_MAX_CELLS = 144
MAX_PANELS = 12


def _varying(df: pd.DataFrame, side: str, skip: set[str]) -> list[str]:
    """Key columns of ``side`` that vary in ``df`` (layer always kept), minus ``skip``."""
    out = []
    for key in KEYS:
        col = f"{side}_{key}"
        if col in df.columns and col not in skip and (df[col].nunique() > 1 or key == "layer"):
            out.append(col)
    return out


def side_title(df: pd.DataFrame, side: str, shown: list[str], skip: set[str]) -> str:
    """``A: layer (model toy, seed 0)``: what the ticks name, then what is fixed."""
    names = [c[2:] for c in shown]
    fixed = [
        f"{k} {df[f'{side}_{k}'].iloc[0]}"
        for k in KEYS
        if f"{side}_{k}" in df.columns
        and f"{side}_{k}" not in shown
        and f"{side}_{k}" not in skip
        and df[f"{side}_{k}"].nunique() == 1
    ]
    head = f"{side.upper()}: {' · '.join(names)}"
    return f"{head} ({', '.join(fixed)})" if fixed else head


def _labels(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """``seed=0 · layer_3``: the layer bare, other keys named."""
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index)
    parts = [
        df[c].astype(str) if c.endswith("_layer") else f"{c[2:]}=" + df[c].astype(str) for c in cols
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


def panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One (title, rows) per checkpoint pair; a single untitled panel when there is one."""
    cols = [c for c in ("a_checkpoint", "b_checkpoint") if c in df.columns]
    if len(cols) < 2 or df.groupby(cols, observed=True).ngroups == 1:
        return [("", df)]
    same = (df["a_checkpoint"].astype(str) == df["b_checkpoint"].astype(str)).all()
    out = []
    for (ca, cb), part in df.groupby(cols, sort=False, observed=True):
        out.append((f"checkpoint {ca}" if same else f"A {ca} · B {cb}", part, (ca, cb)))
    where = step_axis([*df["a_checkpoint"].astype(str), *df["b_checkpoint"].astype(str)])
    last = len(where.positions) + 1.0
    out.sort(key=lambda t: tuple((where.positions.get(str(c), last), natural_key(c)) for c in t[2]))
    return [(title, part) for title, part, _ in out]


def cell_table(
    df: pd.DataFrame, values: np.ndarray, skip: set[str], replicate: list[str]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Row labels, column labels, and per cell the mean, sd and number of replicates."""
    a_cols, b_cols = _varying(df, "a", skip), _varying(df, "b", skip)
    a, b = _labels(df, a_cols), _labels(df, b_cols)
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
    df: pd.DataFrame, value: Value, *, over: str | None, title: str | None
) -> tuple[Figure, list[str]]:
    """The heatmap (``over`` None) or the seed-robustness matrix averaged ``over`` seeds."""
    import matplotlib.pyplot as plt

    notes: list[str] = []
    replicate = replicate_columns(df, over) if over else []
    skip = set(replicate) | {"a_checkpoint", "b_checkpoint"}
    parts = panels(df)
    if len(parts) > MAX_PANELS:
        raise_too_many(len(parts))
    if len(parts) == 1:
        skip -= {"a_checkpoint", "b_checkpoint"}
    values = value.of(df)
    tables = [(t, p, cell_table(p, values[df.index.get_indexer(p.index)], skip, replicate))
              for t, p in parts]  # fmt: skip
    if not over and any(int(tb[4].max()) > 1 for _, _, tb in tables):
        notes.append("several rows fall in one cell (e.g. seeds): cells show their mean")
    low = min(0.0, float(np.nanmin(values)))
    high = max(1.0, float(np.nanmax(values))) if not value.complement else float(np.nanmax(values))
    high = high if high > low else low + 1.0
    ncols = min(3, len(tables))
    nrows = -(-len(tables) // ncols)
    n_rows_cells = max(len(tb[0]) for _, _, tb in tables)
    n_cols_cells = max(len(tb[1]) for _, _, tb in tables)
    width = ncols * min(2.4 + 0.62 * n_cols_cells, 16) + 1.2
    height = nrows * min(1.9 + 0.5 * n_rows_cells, 16) + 0.8
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(width, 5.5), max(height, 4.0)),
                             layout="constrained", squeeze=False)  # fmt: skip
    image: Any = None
    for ax, (panel, part, (rows, cols, mean, sd, _)) in zip(axes.flat, tables, strict=False):
        ax.set_facecolor("#e8e8e8")  # pairs not compared
        image = ax.imshow(mean, vmin=low, vmax=high, cmap="viridis", aspect="auto")
        slanted = max(map(len, cols)) > 4
        ax.set_xticks(
            range(len(cols)),
            cols,
            rotation=45 if slanted else 0,
            ha="right" if slanted else "center",
            rotation_mode="anchor",
        )
        ax.set_yticks(range(len(rows)), rows)
        a_shown, b_shown = _varying(part, "a", skip), _varying(part, "b", skip)
        ax.set_xlabel(side_title(part, "b", b_shown, skip))
        ax.set_ylabel(side_title(part, "a", a_shown, skip))
        if panel:
            ax.set_title(panel, fontsize=10)
        if mean.size <= ANNOTATE_MAX_CELLS:
            _annotate(ax, mean, sd if over else None, low, high)
    for ax in list(axes.flat)[len(tables) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label=value.title, shrink=0.9)
    fig.suptitle(title or _title(df, value, over, tables), fontsize=11)
    return fig, notes


def _annotate(ax: Any, mean: np.ndarray, sd: np.ndarray | None, low: float, high: float) -> None:
    for (i, j), v in np.ndenumerate(mean):
        if not np.isfinite(v):
            continue
        text = f"{v:.2f}"
        if sd is not None and np.isfinite(sd[i, j]):
            text += f"\n±{sd[i, j]:.2f}"
        color = "black" if v > low + 0.6 * (high - low) else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color=color)


def _title(df: pd.DataFrame, value: Value, over: str | None, tables: list[Any]) -> str:
    first = df.iloc[0]
    how = ", ".join(
        str(first[c]) for c in ("estimator", "kernel") if c in df.columns and pd.notna(first[c])
    )
    on = f" on {first['dataset']}" if "dataset" in df.columns else ""
    n = f", n = {first['n_samples']}" if "n_samples" in df.columns else ""
    head = f"{value.title}{f' ({how})' if how else ''}{on}{n}"
    if over:
        reps = max(int(tb[4].max()) for _, _, tb in tables)
        return f"{head}: mean ± sd over {reps} {over} pair(s) per cell"
    return head


def raise_too_many(count: int) -> None:
    from reprstore.errors import InputError

    raise InputError(
        f"The grid spans {count} checkpoint pairs; at most {MAX_PANELS} panels are drawn. "
        "Select fewer checkpoints in the comparison, or plot --kind timeline."
    )
