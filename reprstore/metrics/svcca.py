"""SVCCA (Raghu et al. 2017): each side reduced to its top principal directions, then CCA.

With Vₖ the top-k eigenvectors of Cxx (k from ``keep``, the fraction of variance kept,
or given), the reduced side X̄Vₖ has covariance diag(λ₁…λₖ) and cross-covariance
VₖᵀCxyV′ₖ, so the CCA of the reduced sides is exact from the streamed moments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Cross, Measure, Option, Side, Whitening
from reprstore.metrics.cca import Whitened, canonical


def top_directions(side: Side, keep: float, k: int | None, measure: str) -> int:
    """How many leading principal directions of ``side`` to keep."""
    side.check()
    lam = side.eig[0]
    if k is not None:
        if k < 1 or k > side.rank:
            raise ComparisonError(
                f"{measure}:k={k} is larger than the rank of {side.name} ({side.rank} "
                f"directions above 1e-10 × the largest variance). Use k ≤ {side.rank}."
            )
        return k
    frac = np.cumsum(lam[: side.rank]) / lam.sum()
    return min(int(np.searchsorted(frac, keep - 1e-12)) + 1, side.rank)


class SVCCA(Measure):
    name = "svcca"
    summary = "mean ρ of CCA between the top principal directions (keep of the variance, or k)"
    options = (
        Option(
            "keep", float, 0.99, "fraction of each side's variance kept", positive=True, upper=1.0
        ),
        Option("k", int, None, "number of directions kept (instead of keep)"),
    )
    scalars = ("svcca",)
    titles = (("svcca", "SVCCA"),)
    ranges = (("svcca", 0.0, 1.0),)
    workspace_terms = (4.0, 4.0, 3.0)  # SVD truncation, then CCA
    kept_terms = (4.0, 4.0)  # the side (moments, Cxx), its eigenvectors, the kept directions
    ci_max_ratio = 0.01
    arrays = ("svcca_rho",)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"svcca": 1.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "factors"

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        k = opts["k"]
        if k is None or k <= n - 1:
            return None
        return (
            f"svcca:k={k} is more than the {n - 1} centred directions of {n} rows: use k ≤ {n - 1}."
        )

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Whitened:
        if not 0 < opts["keep"] <= 1:
            raise InputError(f"svcca:keep must be in (0, 1]. Got {opts['keep']} instead.")
        k = top_directions(side, opts["keep"], opts["k"], "svcca")
        lam, vec = side.eig
        return Whitened(side, Whitening(vec[:, :k] / np.sqrt(lam[:k])))

    def finalize(
        self, a: Whitened, b: Whitened, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        rho, _ = canonical(a, b, cross)
        return {"svcca": float(rho.mean()), "svcca_rho": rho}
