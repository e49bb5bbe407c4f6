"""Linear predictivity: R² of B from A by least squares (asymmetric).

R² = tr(Cyx Cxx⁻¹ Cxy) / tr(Cyy) = ‖Λ^-½ VᵀCxy‖²_F / tr(Cyy) over A's rank (the
least-squares fit is the projection on A's column space).

``ridge=λ`` is the in-sample R² of the ridge predictor W = M⁻¹Cxy, M = Cxx + δI,
δ = λ·tr(Cxx)/p (sklearn ``Ridge(alpha=λ·tr(X̄ᵀX̄)/p)`` with a variance-weighted
``r2_score``): [2·tr(WᵀCxy) − tr(WᵀCxxW)] / tr(Cyy). With a whitening M^-½ = U
(UUᵀ = M⁻¹) and T = UᵀCxy, W = UT and UᵀCxxU = I − δUᵀU, so the numerator is
‖T‖² + δ‖UT‖²: from the same products as the plain R², no other pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.metrics.base import Cross, Measure, Option, Side, Whitening, clip_unit


@dataclass(frozen=True)
class Predictor:
    side: Side
    w: Whitening  # Cxx^-½ over A's rank (ridge-regularised)


class LinReg(Measure):
    name = "linreg"
    summary = "R² of B predicted from A by (ridge) least squares; asymmetric"
    options = (Option("ridge", float, 0.0, "λ: Cxx + λ·tr(Cxx)/p·I"),)
    symmetric = False
    scalars = ("linreg",)
    biased_plugin = ("linreg",)
    ci_max_ratio = 0.1

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {} if opts["ridge"] else {"linreg": 1.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "factors"

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        if opts["ridge"] or n - 1 >= p:
            return None
        return (
            f"linreg by least squares on {p} features of {n} rows fits any target exactly "
            f"(R² = 1: at most {n - 1} centred directions): use linreg:ridge=0.1, or compare "
            "more rows."
        )

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Predictor:
        side.check()
        return Predictor(side, side.whitener(opts["ridge"]))

    def finalize(
        self, a: Predictor, b: Predictor, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        t = cross.whitened(a.side, b.side, a.w)
        explained = float(np.linalg.norm(t)) ** 2  # tr(Cyx M⁻¹ Cxy), t in any order
        if opts["ridge"]:
            delta = opts["ridge"] * float(np.trace(a.side.cov)) / a.side.width
            explained += delta * float(np.linalg.norm(a.w.apply(t))) ** 2
        value = explained / float(np.trace(b.side.cov))
        return {"linreg": clip_unit(value, "The R² of linreg", cross.names)}
