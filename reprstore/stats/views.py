"""Row views: what the linear statistics of a representation are taken of.

A measure may need the streamed sums of a transformed representation: the cosine RDM is
a function of the Gram matrix of the unit-norm rows, the correlation RDM of the rows
centred across features, then normalised. A view is a per-row transform applied to each
block as it is read (so the stored chunks are still read once); its statistics are the
ordinary :class:`~reprstore.stats.linear.ReprMoments` / ``PairMoments`` of the
transformed rows (offset like any representation: nearly parallel unit rows differ by
little, and their shift keeps those digits).
"""

from __future__ import annotations

import numpy as np

RAW = "raw"
UNIT = "unit"  # xᵢ / ‖xᵢ‖
UNIT_CENTRED = "unitc"  # (xᵢ − mean(xᵢ)) / ‖xᵢ − mean(xᵢ)‖ (across features)
VIEWS = (RAW, UNIT, UNIT_CENTRED)


def apply_view(block: np.ndarray, view: str) -> np.ndarray:
    """The rows of ``block`` (r, p) seen through ``view``.

    Rows whose norm is zero (or not finite) come out as NaN, so that the statistics
    count them as unusable rows and the measure reports them.
    """
    if view == RAW:
        return block
    x = np.asarray(block, dtype=np.float64)
    if view == UNIT_CENTRED:
        x = x - x.mean(axis=1, keepdims=True)
    elif view != UNIT:
        raise ValueError(f"unknown view {view!r}")
    top = np.max(np.abs(x), axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = x / top  # no overflow or underflow in the squares below
        norm = top * np.sqrt(np.einsum("ij,ij->i", y, y))[:, None]
        out: np.ndarray = x / norm
    out[~(norm[:, 0] > 0.0)] = np.nan
    return out
