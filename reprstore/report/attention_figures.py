"""Figures of attention maps (``reprstore plot-attention``).

* ``pattern``: one head's map for one sample, query × key over the sample's real tokens;
* ``heads``: every head of one sample, one row per selected checkpoint (before/after a
  moment of training), on one shared colour scale;
* ``entropy``: per-head ``attention_entropy`` of a ``describe`` result against the training
  step, one panel per (model, seed, dataset, layer), each head a line (colour = head,
  keyed by a colour bar, so no legend covers data) and the mean over heads in black.

Maps are read one sample at a time (one stored row, H·T·T values), never a whole array.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.capture.sink import ATTENTION, ATTENTION_LAYOUT
from reprstore.errors import InputError
from reprstore.report.output import check_figure_path, save
from reprstore.report.style import pyplot as _pyplot

if TYPE_CHECKING:
    import pandas as pd

    from reprstore.store import ReprInfo, Store

KINDS = ("pattern", "heads", "entropy")
KEYS = ("model", "seed", "dataset", "layer")


def check_attention_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"Unknown --kind {kind!r}. Expected one of {', '.join(KINDS)}.")
    return kind


# ------------------------------------------------------------------------ stored maps
def attention_infos(store: Store, selector: str | None) -> list[ReprInfo]:
    """The selected representations, each checked to be attention maps."""
    from reprstore.keys import key_order

    infos = sorted(store.select(selector, must_match="SELECTOR"), key=lambda i: key_order(i.key))
    for info in infos:
        if info.attrs.get("reduction") != ATTENTION or info.attrs.get("layout") != ATTENTION_LAYOUT:
            raise InputError(
                f"{info.key.label()} is not attention maps (extract --attentions); "
                "plot-attention draws those only."
            )
    return infos


def sample_map(store: Store, info: ReprInfo, sample: int) -> np.ndarray:
    """Sample ``sample``'s maps (H, t, t), cut to its real tokens (float64)."""
    n = int(info.shape[0])
    if not 0 <= sample < n:
        raise InputError(f"--sample {sample} is out of range: {info.key.label()} has {n} samples.")
    h, t, _ = (int(v) for v in info.attrs["original_shape"])
    maps = store.read_rows(info.key, sample, sample + 1).astype(np.float64).reshape(h, t, t)
    real = np.flatnonzero((maps != 0).any(axis=(0, 2)))
    if real.size == 0:
        raise InputError(f"Sample {sample} of {info.key.label()} has no real token.")
    keep = int(real[-1]) + 1
    return maps[:, :keep, :keep]


def _sample_id(store: Store, info: ReprInfo, sample: int) -> str:
    ids = store.dataset(info.dataset).ids()
    return str(ids[sample]) if sample < len(ids) else str(sample)


def plot_pattern(
    store: Store, selector: str | None, out: str | os.PathLike[str], *, sample: int, head: int
) -> Path:
    """One head's map of one sample (the selector must match one representation)."""
    path = check_figure_path(out)
    infos = attention_infos(store, selector)
    if len(infos) != 1:
        raise InputError(
            f"--kind pattern draws one representation; {selector!r} matches {len(infos)}. "
            "Name the model, seed, checkpoint and layer."
        )
    info = infos[0]
    maps = sample_map(store, info, sample)
    if not 0 <= head < maps.shape[0]:
        raise InputError(f"--head {head} is out of range: the maps have {maps.shape[0]} heads.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), constrained_layout=True)
    image = ax.imshow(maps[head], cmap="viridis", vmin=0.0, vmax=float(maps[head].max()))
    fig.colorbar(image, ax=ax, label="attention probability")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("key (token position)")
    ax.set_ylabel("query (token position)")
    ax.set_title(
        f"{info.key.label()}\nsample {_sample_id(store, info, sample)}, head {head}", fontsize=9
    )
    return save(fig, path)


def plot_heads(
    store: Store, selector: str | None, out: str | os.PathLike[str], *, sample: int
) -> Path:
    """Every head of one sample, a row per checkpoint of one layer of one run."""
    from reprstore.analysis.steps import step_order

    path = check_figure_path(out)
    infos = attention_infos(store, selector)
    runs = {tuple(getattr(i.key, k) for k in KEYS) for i in infos}
    if len(runs) != 1:
        raise InputError(
            f"--kind heads draws one layer of one run over checkpoints; {selector!r} matches "
            f"{len(runs)} (model, seed, dataset, layer) combinations. Narrow the selector."
        )
    if len(infos) > 6:
        raise InputError(
            f"--kind heads draws up to 6 checkpoints; {selector!r} matches {len(infos)}. "
            "Pick them, e.g. checkpoint='step100|step900'."
        )
    infos = sorted(infos, key=lambda i: step_order(i.key.checkpoint))
    maps = [sample_map(store, i, sample) for i in infos]
    heads = maps[0].shape[0]
    top = max(float(m.max()) for m in maps)
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(maps), heads, figsize=(1.25 * heads + 1.2, 1.45 * len(maps) + 0.9),
        squeeze=False, constrained_layout=True,
    )  # fmt: skip
    image = None
    for r, (info, m) in enumerate(zip(infos, maps, strict=True)):
        for h in range(heads):
            ax = axes[r][h]
            image = ax.imshow(m[h], cmap="viridis", vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"head {h}", fontsize=8)
        axes[r][0].set_ylabel(info.key.checkpoint, fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention probability")
    key = infos[0].key
    fig.suptitle(
        f"{key.model} seed {key.seed}, {key.layer} ({key.dataset}), sample "
        f"{_sample_id(store, infos[0], sample)}: rows = checkpoints, query ↓ × key →",
        fontsize=9,
    )
    return save(fig, path)


# ------------------------------------------------------------------ entropy over training
def head_entropies(values: Any) -> np.ndarray:
    """A per-head cell of a result table (a list, or its JSON text in a CSV) as floats."""
    if isinstance(values, str):
        values = json.loads(values)
    return np.asarray(values, dtype=np.float64)


def plot_entropy(
    results: pd.DataFrame | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layers: Sequence[str] | None = None,
    final_step: float | None = None,
) -> tuple[Path, list[str]]:
    """Per-head attention entropy against the training step, from ``describe`` results.

    Returns the figure's path and notes (checkpoints placed by convention or left out).
    """
    from reprstore.analysis.results import read_results
    from reprstore.analysis.steps import step_axis

    path = check_figure_path(out)
    df = read_results(results)
    needed = [*KEYS, "checkpoint", "attention_entropy_heads"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(
            f"--kind entropy needs describe results with --measure attention_entropy; the "
            f"table has no {', '.join(missing)} column."
        )
    df = df.astype({k: str for k in [*KEYS, "checkpoint"]})
    if layers:
        df = df[df["layer"].isin(layers)]
        if df.empty:
            raise InputError(f"No row of the results has layer {', '.join(layers)}.")
    facets = list(df.groupby(list(KEYS), sort=False, observed=True))
    if len(facets) > 12:
        raise InputError(
            f"The results hold {len(facets)} (model, seed, dataset, layer) combinations; "
            "choose up to 12 with --layer (one panel each)."
        )
    axis = step_axis(list(df["checkpoint"].unique()), final_step)
    plt = _pyplot()
    cols = min(3, len(facets))
    rows = -(-len(facets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.0, 3.0 * rows + 0.4),
                             squeeze=False, sharex=True, sharey=True,
                             constrained_layout=True)  # fmt: skip
    heads = 0
    for ax, (key, part) in zip(axes.ravel(), facets, strict=False):
        heads = max(heads, _entropy_panel(ax, part, axis, tuple(str(k) for k in key)))
    for ax in axes.ravel()[len(facets) :]:
        ax.set_visible(False)
    _head_colorbar(plt, fig, axes, heads)
    for ax in axes[-1]:
        ax.set_xlabel("training step" if axis.numeric else "checkpoint")
    for ax in axes[:, 0]:
        ax.set_ylabel("attention entropy (nats)")
    fig.suptitle("per-head attention entropy over training (black: mean over heads)", fontsize=10)
    return save(fig, path), list(axis.notes)


def _entropy_panel(ax: Any, part: pd.DataFrame, axis: Any, key: tuple[str, ...]) -> int:
    """One facet's lines; a checkpoint given twice is refused (nothing is averaged)."""
    placed = part[part["checkpoint"].isin(list(axis.positions))]
    if placed["checkpoint"].duplicated().any():
        raise InputError(
            f"{'/'.join(key)} has several rows for one checkpoint; select one "
            "measure option set per describe run."
        )
    placed = placed.assign(x=placed["checkpoint"].map(axis.positions)).sort_values("x")
    values = np.stack([head_entropies(v) for v in placed["attention_entropy_heads"]])
    cmap = _head_cmap(values.shape[1])
    for h in range(values.shape[1]):
        ax.plot(placed["x"], values[:, h], color=cmap(h), lw=1.0, marker=".", ms=3)
    ax.plot(placed["x"], values.mean(axis=1), color="black", lw=2.0)
    ax.set_title(f"{key[0]} seed {key[1]}, {key[3]} ({key[2]})", fontsize=9)
    if not axis.numeric:  # checkpoints in order, named
        ax.set_xticks([p for p, _ in axis.ticks], [label for _, label in axis.ticks])
    return int(values.shape[1])


def _head_cmap(heads: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"].resampled(max(heads, 2))


def _head_colorbar(plt: Any, fig: Any, axes: Any, heads: int) -> None:
    import matplotlib

    norm = matplotlib.colors.BoundaryNorm(np.arange(heads + 1) - 0.5, heads)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=_head_cmap(heads))
    bar = fig.colorbar(mappable, ax=axes, shrink=0.9, label="head")
    bar.set_ticks(list(range(heads)) if heads <= 16 else list(range(0, heads, 4)))
