"""PNG plots of result tables: a heatmap per scalar measure of a grid (A representations
down, B across) and the cumulative-variance curves of ``pca``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reprstore.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

KEY_FIELDS = ("model", "seed", "checkpoint", "layer")
#: Values are written in the cells up to this many cells.
ANNOTATE_MAX_CELLS = 400


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


def plot_heatmap(df: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write a heatmap of ``df`` (the result of :func:`reprstore.comparison.compare`) as PNG.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per pair with ``a_*``, ``b_*`` key columns and ``cka``.
    path : str or PathLike
        A ``.png`` file.
    title : str, optional
        Default: estimator, kernel, dataset and number of samples.
    """
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot expects a .png file name. Got {os.fspath(path)!r} instead.")
    import matplotlib

    from reprstore.report.figures import save

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows, cols, values = grid(df)
    width = min(2.5 + 0.55 * len(cols), 40)
    height = min(1.8 + 0.45 * len(rows), 40)
    fig, ax = plt.subplots(figsize=(max(width, 4.5), max(height, 3.5)), layout="constrained")
    low = min(0.0, float(np.nanmin(values))) if np.isfinite(values).any() else 0.0
    image = ax.imshow(values, vmin=low, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("B")
    ax.set_ylabel("A")
    if values.size <= ANNOTATE_MAX_CELLS:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                color = "black" if v > low + 0.6 * (1.0 - low) else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="CKA")
    if title is None:
        first = df.iloc[0]
        title = (
            f"CKA ({first['estimator']}, {first['kernel']}) on {first['dataset']}, "
            f"n = {first['n_samples']}"
        )
    ax.set_title(title)
    return save(fig, out, dpi=120)


#: Columns of a result table that describe how a value was computed, not a measure.
INFO_COLUMNS = ("n_samples", "b_n_samples", "n_batches", "batch_size", "sigma", "hsic_ab",
                "hsic_aa", "hsic_bb", "pca_k")  # fmt: skip
#: The pca curves drawn (name in the table, line label).
CURVES = (
    ("cev_b_in_a_curve", "B in A's PCs"),
    ("cev_b_self_curve", "B in its own PCs"),
    ("cev_a_in_b_curve", "A in B's PCs"),
    ("cev_a_self_curve", "A in its own PCs"),
)
MAX_CURVE_PAIRS = 6


def scalar_columns(df: pd.DataFrame) -> list[str]:
    """The numeric measure columns of a result table (not keys, not how-it-was-made)."""
    out = []
    for col in df.columns:
        if col in INFO_COLUMNS or col.startswith(("a_", "b_")):
            continue
        values = df[col].dropna()
        if len(values) and all(isinstance(v, (int, float)) for v in values):
            out.append(str(col))
    return out


def _heatmap(fig: object, ax: object, df: pd.DataFrame, column: str) -> None:
    rows, cols, values = grid(df, column)
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    image = ax.imshow(values, vmin=low, vmax=high if high > low else low + 1,  # type: ignore[attr-defined]
                      cmap="viridis", aspect="auto")  # fmt: skip
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", rotation_mode="anchor")  # type: ignore[attr-defined]
    ax.set_yticks(range(len(rows)), rows)  # type: ignore[attr-defined]
    ax.set_xlabel("B")  # type: ignore[attr-defined]
    ax.set_ylabel("A")  # type: ignore[attr-defined]
    if values.size <= ANNOTATE_MAX_CELLS:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                color = "black" if v > low + 0.6 * (high - low) else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)  # type: ignore[attr-defined]
    fig.colorbar(image, ax=ax)  # type: ignore[attr-defined]
    ax.set_title(column)  # type: ignore[attr-defined]


def _curves(ax: object, df: pd.DataFrame) -> None:
    a, b = side_labels(df, "a"), side_labels(df, "b")
    for k, (_, row) in enumerate(df.head(MAX_CURVE_PAIRS).iterrows()):
        for (col, label), style in zip(CURVES, ("-", "--", "-.", ":"), strict=True):
            y = np.asarray(row[col], dtype=float)
            tag = f"{a[k]} → {b[k]}: " if len(df) > 1 else ""
            ax.plot(np.arange(1, y.size + 1), y, style, color=f"C{k}", label=tag + label)  # type: ignore[attr-defined]
    ax.set_xlabel("principal components")  # type: ignore[attr-defined]
    ax.set_ylabel("cumulative variance explained")  # type: ignore[attr-defined]
    ax.set_ylim(0, 1.02)  # type: ignore[attr-defined]
    ax.legend(fontsize=6)  # type: ignore[attr-defined]
    ax.set_title("pca")  # type: ignore[attr-defined]


def plot_measures(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """One PNG: a heatmap per scalar measure of ``df`` and, with ``pca``, its
    cumulative-variance curves (both directions and each side in its own basis).

    Parameters
    ----------
    df : pandas.DataFrame
        A result of :func:`reprstore.comparison.compare`.
    path : str or PathLike
        A ``.png`` file.
    """
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot expects a .png file name. Got {os.fspath(path)!r} instead.")
    import matplotlib

    from reprstore.report.figures import save

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scalars = scalar_columns(df)
    curves = all(c in df.columns for c, _ in CURVES)
    panels = len(scalars) + int(curves)
    across = min(panels, 3)
    down = -(-panels // across)
    n_rows, n_cols = len(set(side_labels(df, "a"))), len(set(side_labels(df, "b")))
    size = (min(3.0 + 0.5 * n_cols, 12) * across, min(2.5 + 0.4 * n_rows, 12) * down)
    fig, axes = plt.subplots(down, across, figsize=size, layout="constrained", squeeze=False)
    flat = list(axes.ravel())
    for ax, column in zip(flat, scalars, strict=False):
        _heatmap(fig, ax, df, column)
    if curves:
        _curves(flat[len(scalars)], df)
    for ax in flat[panels:]:
        ax.axis("off")
    first = df.iloc[0]
    fig.suptitle(f"{len(df)} pair(s) on {first['dataset']}, n = {first['n_samples']}")
    return save(fig, out, dpi=110)
