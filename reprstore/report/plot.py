"""A heatmap PNG of a CKA grid: A representations down, B representations across."""

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


def grid(df: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """The CKA values as an (A, B) matrix (NaN where a pair was not compared)."""
    a, b = side_labels(df, "a"), side_labels(df, "b")
    rows, cols = _natural_order(df, "a", a), _natural_order(df, "b", b)
    values = np.full((len(rows), len(cols)), np.nan)
    for la, lb, v in zip(a, b, df["cka"], strict=True):
        values[rows.index(la), cols.index(lb)] = v
    return rows, cols, values


def plot_heatmap(df: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write a heatmap of ``df`` (the result of :func:`reprstore.compare.compare`) as PNG.

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
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
