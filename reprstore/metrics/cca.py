"""Canonical correlation analysis from streamed moments (Raghu et al. 2017; Kornblith et
al. 2019's R²_CCA).

ρ₁ ≥ … ≥ ρ_k are the singular values of Cxx^-½ Cxy Cyy^-½, computed from each side's
eigendecomposition (once per representation) and the pair's Cxy (p × q, once per pair).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import (
    CLIP_TOLERANCE,
    Cross,
    Measure,
    Option,
    Side,
    Whitening,
    singular_values,
    whitening_parts,
)


@dataclass(frozen=True)
class Whitened:
    """One side prepared for CCA: Cxx^-½ restricted to its rank (or ridge-regularised).

    Attributes
    ----------
    side : Side
    w : Whitening
        Cxx^-½ (Cxx + δI with a ridge), or V Λ^-½ over kept directions (svcca).
    """

    side: Side
    w: Whitening


def rank_bound_refusal(measure: str, n: int, p: int, q: int) -> str | None:
    """The refusal of an unregularised CCA whose widths exceed the rank n − 1 of n centred
    rows: known from the shapes, so it comes before any data is read."""
    if n - 1 >= max(p, q):
        return None
    return (
        f"{measure} needs full-rank sides, but {n} rows give at most {n - 1} centred "
        f"directions and the sides have {p} and {q} features. Add a ridge "
        f"({measure}:ridge=1e-3), keep fewer directions (svcca:k={max(1, min(n - 1, 20))}), "
        "or compare more rows."
    )


def whiten(side: Side, ridge: float, measure: str = "cca") -> Whitened:
    """Cxx^-½ of ``side``; without ``ridge`` a rank-deficient side is refused."""
    side.check()
    if ridge > 0:
        return Whitened(side, side.whitener(ridge))
    if side.rank < side.p:
        raise ComparisonError(
            f"Representation {side.name} is rank-deficient ({side.rank} of {side.p} centred "
            f"directions above 1e-10 × the largest variance over {side.n} rows): CCA is "
            f"ill-posed. Add a ridge ({measure}:ridge=1e-3) or reduce it first (svcca)."
        )
    return Whitened(side, side.whitener(0.0))


def canonical(
    a: Whitened, b: Whitened, cross: Cross, with_vectors: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Canonical correlations (descending, k = min(r_a, r_b)) and, if asked, A's
    canonical directions (p, k) in the offset units of A."""
    t = b.w.right(cross.whitened(a.side, b.side, a.w))
    # a ridge whitens all p directions, but only min(rank X̄, rank Ȳ) correlations exist
    # (SPEC: cca): with n ≤ p the others are zeros that would drag the mean down
    k = min(a.side.rank, b.side.rank, *t.shape)
    if with_vectors:
        u, rho, _ = np.linalg.svd(t, full_matrices=False)
        return check_rho(rho[:k], cross.names), a.w.apply(u[:, :k])
    return check_rho(singular_values(t)[:k], cross.names), None


def self_correlations(a: Whitened, ridge: float, names: tuple[str, str]) -> np.ndarray:
    """The canonical correlations of a representation with itself, from its spectrum
    (once per representation, no per-pair products): with Cxy = Cxx and the whitening
    (Cxx + δI)^-½, T = (Cxx + δI)^-½ Cxx (Cxx + δI)^-½ has singular values λ/(λ + δ) over
    the rank (all 1 without a ridge)."""
    side = a.side
    if not ridge:
        return np.ones(side.rank)
    lam = side.eigenvalues[: side.rank]
    return check_rho(lam / (lam + side.ridge_delta(ridge)), names)


def check_rho(rho: np.ndarray, names: tuple[str, str]) -> np.ndarray:
    """Canonical correlations within rounding of [0, 1], clipped; an error beyond."""
    if not np.isfinite(rho).all():
        raise ComparisonError(f"CCA of {names[0]} and {names[1]} is not finite.")
    if rho.size and rho.max() > 1.0 + CLIP_TOLERANCE:
        raise ComparisonError(
            f"CCA of {names[0]} and {names[1]}: a canonical correlation came out as "
            f"{rho.max():.9g} > 1: the sides are too ill-conditioned; add a ridge "
            "(cca:ridge=1e-3)."
        )
    clipped: np.ndarray = np.clip(rho, 0.0, 1.0)
    return clipped


RIDGE = Option("ridge", float, 0.0, "ε: Cxx + ε·tr(Cxx)/p·I (and Cyy alike)")


class CCA(Measure):
    name = "cca"
    summary = "mean canonical correlation ρ (Raghu 2017) and mean ρ² (cca_r2)"
    options = (RIDGE,)
    scalars = ("cca", "cca_r2")
    titles = (("cca", "CCA (mean ρ)"), ("cca_r2", "CCA (mean ρ²)"))
    ranges = (("cca", 0.0, 1.0), ("cca_r2", 0.0, 1.0))
    workspace_terms = (4.0, 4.0, 3.0)  # whitening eigh of Cxx, Cyy; products with Cxy; SVD
    kept_terms = (4.0, 4.0)  # the side (moments, Cxx), its factors and Cxx^-½ (as measured)
    arrays = ("cca_rho",)
    biased_plugin = ("cca", "cca_r2")
    #: mean ρ undercovers beyond (0.90 at p/n = 0.1, bias-corrected; cca_r2 holds to 0.2)
    ci_max_ratio = 0.01

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        base = {"orthogonal", "scale", "translation"}
        return frozenset(base if opts["ridge"] else base | {"linear"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {} if opts["ridge"] else {"cca": 1.0, "cca_r2": 1.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "factors"

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        return None if opts["ridge"] else rank_bound_refusal(self.name, n, p, q)

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Whitened:
        return whiten(side, opts["ridge"])

    def kept_parts(self, opts: Mapping[str, Any], p: int) -> dict[Hashable, int]:
        return whitening_parts(self, opts, p)

    def finalize(
        self, a: Whitened, b: Whitened, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        if a is b:  # a representation with itself: from its spectrum alone
            rho = self_correlations(a, opts["ridge"], cross.names)
        else:
            rho, _ = canonical(a, b, cross)
        return {"cca": float(rho.mean()), "cca_r2": float((rho**2).mean()), "cca_rho": rho}
