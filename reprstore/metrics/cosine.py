"""Cosine similarity of two representations of the same rows and width (p = q).

``cosine`` = ⟨X, Y⟩_F / (‖X‖_F‖Y‖_F) on the stored values (from the offset moments:
X = s·X′ + 1cᵀ); ``cosine_rows`` = the mean over rows of cos(xᵢ, yᵢ) = tr(UᵀV)/n with U, V
the unit rows (the ``unit`` row view).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import Cross, Measure, Side, clip_unit
from reprstore.stats.linear import ReprMoments
from reprstore.stats.views import RAW, UNIT


def _uncentred(m: ReprMoments) -> tuple[np.ndarray, float]:
    """(c̃ = shift/scale, ‖X/scale‖²_F) of the stored rows."""
    c = m.shift / m.scale
    return c, m.sqnorm + 2.0 * float(c @ m.total) + m.n * float(c @ c)


def _dot(a: ReprMoments, b: ReprMoments, cross: np.ndarray) -> float:
    """⟨A/s_a, B/s_b⟩_F of the stored rows from the offset moments and their cross XᵀY."""
    ca, cb = a.shift / a.scale, b.shift / b.scale
    return float(np.trace(cross)) + float(a.total @ cb) + float(ca @ b.total) + a.n * float(ca @ cb)


class Cosine(Measure):
    name = "cosine"
    summary = "cosine of the stored matrices (cosine) and mean row-wise cosine (cosine_rows)"
    scalars = ("cosine", "cosine_rows")
    titles = (("cosine", "cosine"), ("cosine_rows", "mean row cosine"))
    ranges = (("cosine", -1.0, 1.0), ("cosine_rows", -1.0, 1.0))
    workspace_terms = (0.0, 0.0, 1.0)  # the cross product's trace only
    kept_terms = (1.0, 3.0)  # the side's moments
    equal_width = True

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"scale"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"cosine": 1.0, "cosine_rows": 1.0}

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({RAW, UNIT})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({RAW, UNIT})

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Side:
        side.check(constant=False)
        side.check(UNIT)
        _, norm2 = _uncentred(side.raw)
        if not norm2 > 0:
            raise ComparisonError(f"Representation {side.name} is all zeros: cosine undefined.")
        return side

    def finalize(
        self, a: Side, b: Side, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        ma, mb = a.raw, b.raw
        _, na = _uncentred(ma)
        _, nb = _uncentred(mb)
        raw = ma.gram if a is b else cross.views[RAW].cross
        ua, ub = a.moments[UNIT], b.moments[UNIT]
        unit = ua.gram if a is b else cross.views[UNIT].cross
        rows = _dot(ua, ub, unit) * ua.scale * ub.scale / a.n
        return {
            "cosine": clip_unit(
                _dot(ma, mb, raw) / np.sqrt(na) / np.sqrt(nb), "The cosine", cross.names
            ),
            "cosine_rows": clip_unit(rows, "The row cosine", cross.names),
        }
