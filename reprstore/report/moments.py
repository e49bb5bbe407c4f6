"""Moments of training drawn on a timeline: a shaded span from the checkpoint before each
jump to the one where it has happened, and a dashed line there.

Kept apart from :mod:`reprstore.report.figures` so that any timeline axes can take the
marks (:func:`mark_moments`), whatever draws the lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes


def mark_moments(ax: Axes, moments: pd.DataFrame) -> int:
    """Mark every distinct jump of ``moments`` (a :func:`reprstore.analysis.moments.find_moments`
    table, whose ``step_before``/``step_during`` are positions on the same step axis).

    Returns the number of jumps marked. The first mark carries the legend label.
    """
    pairs = zip(moments["step_before"].astype(float), moments["step_during"].astype(float),
                strict=True)  # fmt: skip
    spans = sorted(set(pairs))
    for k, (before, during) in enumerate(spans):
        ax.axvspan(before, during, color="0.55", alpha=0.15, lw=0, zorder=0)
        ax.axvline(during, color="0.3", ls="--", lw=0.9, zorder=1,
                   label="moment (jump)" if k == 0 else None)  # fmt: skip
    return len(spans)
