"""Projection-weighted CCA (Morcos, Raghu & Bengio 2018); asymmetric (weights from A).

With aᵢ A's canonical directions and hᵢ = X̄aᵢ, ⟨hᵢ, x̄ⱼ⟩ = n (Cxx aᵢ)ⱼ, so the weights
αᵢ ∝ Σⱼ |(Cxx aᵢ)ⱼ| come from the moments too; pwcca = Σ αᵢρᵢ with Σαᵢ = 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.metrics.base import Cross, Measure, Side
from reprstore.metrics.cca import RIDGE, Whitened, canonical, rank_bound_refusal, whiten


class PWCCA(Measure):
    name = "pwcca"
    summary = "projection-weighted mean canonical correlation (Morcos 2018), weights from A"
    options = (RIDGE,)
    symmetric = False
    scalars = ("pwcca",)
    titles = (("pwcca", "PWCCA"),)
    ranges = (("pwcca", 0.0, 1.0),)
    workspace_terms = (4.0, 4.0, 4.0)  # CCA plus the weights of the canonical directions
    kept_terms = (4.0, 4.0)  # the side (moments, Cxx), its factors and Cxx^-½ (as measured)
    ci_max_ratio = 0.01

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {} if opts["ridge"] else {"pwcca": 1.0}

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        return None if opts["ridge"] else rank_bound_refusal(self.name, n, p, q)

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Whitened:
        return whiten(side, opts["ridge"], "pwcca")

    def finalize(
        self, a: Whitened, b: Whitened, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        rho, dirs = canonical(a, b, cross, with_vectors=True)
        assert dirs is not None
        alpha = np.abs(a.side.cov @ dirs).sum(axis=0)
        alpha = alpha / alpha.sum()
        return {"pwcca": float(alpha @ rho)}
