"""How figures name and colour what they draw: the user's figure options, measure titles,
colour scales that follow the data, and annotation precision.

Shared by every figure (``plot``, ``cka --plot``, ``compare --plot``, ``timeline --plot``)
so that one result looks the same whichever command drew it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprstore.errors import InputError

#: The most panels across when ``--cols`` is not given.
DEFAULT_COLS = 3


@dataclass(frozen=True)
class Style:
    """Figure options a user sets (``plot``, ``--plot``); the defaults follow the data.

    Attributes
    ----------
    vmin, vmax : float, optional
        The colour range of heatmaps (default: the data's range).
    logx : bool
        A log step axis for timelines (symmetric-log when a step is 0).
    cols : int, optional
        Panels across (default up to 3).
    labels : mapping
        Text shown for a value or key name (``layer_0`` → ``embedding``).
    title : str, optional
        The figure's title (default: what is drawn, estimator, datasets, n, k).
    average : str, optional
        Columns averaged over on purpose (``--average kernel``).
    ticks : str, optional
        A run attribute whose values label the layers (``--ticks depth``):
        :func:`with_ticks` turns it into ``labels`` once the rows are read.
    """

    vmin: float | None = None
    vmax: float | None = None
    logx: bool = False
    cols: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None
    average: str | None = None
    ticks: str | None = None

    def __post_init__(self) -> None:
        if self.cols is not None and self.cols < 1:
            raise InputError(f"--cols must be at least 1. Got {self.cols} instead.")
        for name, v in (("--vmin", self.vmin), ("--vmax", self.vmax)):
            if v is not None and not math.isfinite(v):
                raise InputError(f"{name} must be a finite number. Got {v} instead.")
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            raise InputError(f"--vmin ({self.vmin:g}) must be below --vmax ({self.vmax:g}).")

    def text(self, value: object) -> str:
        """How ``value`` (a tick, a legend entry, a key name) is written."""
        return self.labels.get(str(value), str(value))

    def across(self, panels: int) -> int:
        """Panels per row of a figure with ``panels`` panels."""
        return max(1, min(panels, self.cols or DEFAULT_COLS))


def with_ticks(style: Style, df: Any) -> Style:
    """``style`` with its ``ticks`` attribute turned into labels: every layer shown by that
    run attribute's value (``a_<attr>``/``b_<attr>`` of the rows), and the key ``layer`` by
    the attribute's name. Labels given by hand (``--label``) win."""
    from dataclasses import replace

    attr = style.ticks
    if attr is None:
        return style
    found: dict[str, set[str]] = {}
    for side in ("a_", "b_", ""):
        layer, value = f"{side}layer", f"{side}{attr}"
        if layer in df.columns and value in df.columns:
            for lay, val in zip(df[layer].astype(str), df[value], strict=True):
                found.setdefault(lay, set()).add(str(val))
    if not found:
        have = sorted({c[2:] for c in df.columns if c.startswith(("a_", "b_"))}
                      - {"model", "seed", "checkpoint", "layer", "dataset"})  # fmt: skip
        raise InputError(
            f"--ticks {attr}: the rows have no run attribute {attr!r} "
            f"(a_{attr}/b_{attr}); they have: {', '.join(have) or 'none'}."
        )
    clash = {lay: vals for lay, vals in found.items() if len(vals) > 1}
    if clash:
        lay, vals = next(iter(clash.items()))
        raise InputError(f"--ticks {attr}: layer {lay} has several values of {attr} "
                         f"({', '.join(sorted(vals))}); filter the rows with --where.")  # fmt: skip
    labels = {lay: next(iter(vals)) for lay, vals in found.items()}
    labels["layer"] = attr
    return replace(style, labels={**labels, **style.labels})


def parse_labels(items: Sequence[str] | None) -> dict[str, str]:
    """``["layer_0=embedding", "b_model=fine-tuned"]`` → a mapping; each item ``FROM=TO``."""
    out: dict[str, str] = {}
    for item in items or ():
        for part in item.split(";"):
            if not part.strip():
                continue
            src, sep, dst = part.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise InputError(
                    f"--label expects FROM=TO, e.g. 'layer_0=embedding'. Got {part!r} instead."
                )
            out[src.strip()] = dst.strip()
    return out


def measure_title(column: str) -> str:
    """``CKA`` for ``cka``, ``CKA [kernel=rbf]`` for a suffixed column, else the name."""
    from reprstore.metrics.registry import column_title

    base, bracket, rest = column.partition("[")
    title = column_title(base) or base
    return f"{title} [{rest}" if bracket else title


def signed(column: str, values: np.ndarray) -> bool:
    """A diverging colour map fits: the data takes both signs and the measure can."""
    from reprstore.metrics.registry import column_range

    finite = values[np.isfinite(values)]
    if not finite.size or not (finite.min() < 0 < finite.max()):
        return False
    bounds = column_range(column.removeprefix("1-"))
    return bounds is None or bounds[0] < 0


def colour_scale(column: str, values: np.ndarray, style: Style) -> tuple[float, float, str]:
    """``(vmin, vmax, cmap)``: the data's range (or the user's), viridis; a range centred on
    0 with a diverging map when the values take both signs."""
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    cmap = "viridis"
    if signed(column, values):
        edge = max(abs(low), abs(high))
        low, high, cmap = -edge, edge, "RdBu_r"
    low = style.vmin if style.vmin is not None else low
    high = style.vmax if style.vmax is not None else high
    if high <= low:
        pad = max(abs(low) * 1e-3, 1e-9)
        low, high = low - pad, high + pad
    return low, high, cmap


def decimals(values: np.ndarray, most: int = 4) -> int:
    """Decimals that tell the distinct values apart (2 … ``most``): from the smallest gap
    between distinct values, so 0.993 and 0.999 do not both read 1.00."""
    finite = np.unique(np.round(values[np.isfinite(values)], 12))
    if finite.size < 2:
        return 2
    gap = float(np.min(np.diff(finite)))
    return int(min(most, max(2, math.ceil(-math.log10(gap)))))


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only; nothing opens a window)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
