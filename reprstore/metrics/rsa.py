"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008), exact.

The Pearson correlation of the n(n−1)/2 upper-triangle entries of two RDMs, from streamed
sums (no n × n matrix). With aᵢ = ‖xᵢ‖², s = Σxᵢ (offset rows; distances do not change):

* ``sqeuclidean``: Dᵢⱼ = aᵢ + aⱼ − 2xᵢ·xⱼ; Σ_{i<j} Dᵢⱼ = nΣa − ‖s‖² and
  Σ_{i<j} DᵢⱼEᵢⱼ = nΣaᵢbᵢ + ΣaΣb − 2(Σaᵢyᵢ)·s_y − 2(Σbᵢxᵢ)·s_x + 2‖XᵀY‖²_F;
* ``cosine`` / ``correlation``: D = 1 − UUᵀ with U the unit rows (centred across
  features first for ``correlation``); the correlation of D and E is that of the Gram
  matrices G = UUᵀ, with Σ_{i<j} Gᵢⱼ = (‖Σuᵢ‖² − Σ‖uᵢ‖²)/2 and
  Σ_{i<j} GᵢⱼHᵢⱼ = (‖UᵀV‖²_F − Σ‖uᵢ‖²‖vᵢ‖²)/2: the streamed moments of the row view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import Cross, Measure, Option, Side, clip_unit
from reprstore.stats.linear import PairMoments, ReprMoments, self_pair
from reprstore.stats.views import RAW, UNIT, UNIT_CENTRED

VIEW = {"sqeuclidean": RAW, "cosine": UNIT, "correlation": UNIT_CENTRED}


def entry_sums(
    a: ReprMoments, b: ReprMoments, ab: PairMoments, rdm: str
) -> tuple[float, float, float]:
    """(Σ_{i<j} Dᵢⱼ, Σ_{i<j} Eᵢⱼ, Σ_{i<j} DᵢⱼEᵢⱼ) of the RDMs (or Gram matrices) of a, b."""
    n = a.n
    if rdm == "sqeuclidean":
        sd = n * a.sqnorm - float(a.total @ a.total)
        se = n * b.sqnorm - float(b.total @ b.total)
        q = (
            n * ab.ab
            + a.sqnorm * b.sqnorm
            - 2.0 * float(ab.a_y @ b.total)
            - 2.0 * float(ab.b_x @ a.total)
            + 2.0 * float(np.vdot(ab.cross, ab.cross))
        )
        return sd, se, q
    sd = (float(a.total @ a.total) - a.sqnorm) / 2.0
    se = (float(b.total @ b.total) - b.sqnorm) / 2.0
    return sd, se, (float(np.vdot(ab.cross, ab.cross)) - ab.ab) / 2.0


@dataclass(frozen=True)
class RDMSide:
    side: Side
    m: ReprMoments
    sum: float  # Σ_{i<j} Dᵢⱼ
    var: float  # Σ_{i<j} (Dᵢⱼ − mean)²


class RSA(Measure):
    name = "rsa"
    summary = "Pearson correlation of RDM upper triangles (Kriegeskorte 2008), exact"
    options = (
        Option("rdm", str, "sqeuclidean", "sqeuclidean, cosine or correlation", tuple(VIEW)),
    )
    scalars = ("rsa",)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(
            {
                "sqeuclidean": {"orthogonal", "scale", "translation"},
                "cosine": {"orthogonal", "scale"},
                "correlation": {"scale"},
            }[opts["rdm"]]
        )

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"rsa": 1.0}

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({RAW, VIEW[opts["rdm"]]})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({VIEW[opts["rdm"]]})

    def partial(self, side: Side, opts: Mapping[str, Any]) -> RDMSide:
        side.check()
        view = VIEW[opts["rdm"]]
        if view != RAW:
            side.check(view)
        m = side.moments[view]
        n = m.n
        pairs = n * (n - 1) / 2.0
        if pairs < 2:
            raise ComparisonError(f"RSA needs at least 3 rows. Got {n} instead.")
        s, _, q = entry_sums(m, m, self_pair(m), opts["rdm"])
        var = q - s * s / pairs
        if not var > 1e-12 * q:
            raise ComparisonError(
                f"The {opts['rdm']} RDM of {side.name} is constant over its {n} rows: RSA is "
                "undefined."
            )
        return RDMSide(side, m, s, var)

    def finalize(
        self, a: RDMSide, b: RDMSide, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        view = VIEW[opts["rdm"]]
        ab = self_pair(a.m) if a is b else cross.views[view]
        _, _, q = entry_sums(a.m, b.m, ab, opts["rdm"])
        pairs = a.m.n * (a.m.n - 1) / 2.0
        cov = q - a.sum * b.sum / pairs
        value = cov / np.sqrt(a.var) / np.sqrt(b.var)
        return {"rsa": clip_unit(float(value), "RSA", cross.names)}
