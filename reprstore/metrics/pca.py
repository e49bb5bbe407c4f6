"""PCA subspace comparison (feature-paired; A is the basis, B the target), as in
Driscoll et al. 2024's analysis of one network's hidden states on two tasks.

With Vₐ the eigenvectors of Cₐₐ by decreasing eigenvalue (each side centred on its own
mean): ``cev_b_in_a[k]`` = Σ_{i≤k} vᵢᵀC_bb vᵢ / tr C_bb; ``cev_a_in_b`` the other way;
``cev_a_self``, ``cev_b_self`` each side in its own basis; participation ratios
(Σλ)²/Σλ² of Cₐₐ, C_bb and of V_kᵀC_bbV_k; principal angles between the top-k
subspaces. Only each side's own statistics are needed, so the sides may come from
different datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import Cross, Measure, Option, Side, participation_ratio

CURVES = ("cev_b_in_a", "cev_a_in_b", "cev_a_self", "cev_b_self")


def _k(side: Side, k: int | None) -> int:
    side.check()
    _ = side.eig  # the PCs are needed anyway; the rank then comes from their eigenvalues
    if k is None:
        return min(20, side.rank)
    if k < 1 or k > side.rank:
        raise ComparisonError(
            f"pca:k={k} is larger than the rank of {side.name} ({side.rank} directions above "
            f"1e-10 × the largest variance). Use k ≤ {side.rank}."
        )
    return k


def _in_basis(basis: Side, target: Side) -> np.ndarray:
    """Diagonal of VᵀC_tV (target variance along each basis direction) / tr C_t, (p,)."""
    v = basis.eig[1]
    along = np.einsum("ij,ij->j", v, target.cov @ v)
    return np.cumsum(along) / float(np.trace(target.cov))


def principal_angles(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Principal angles (ascending) between the spans of orthonormal qa, qb (p, k):
    arccos of the singular values of qaᵀqb, or for angles below π/4 the arcsin of those of
    qb − qa(qaᵀqb) (Björck & Golub 1973), which keeps small angles accurate."""
    m = qa.T @ qb
    cos = np.clip(np.linalg.svd(m, compute_uv=False), -1.0, 1.0)  # descending
    sin = np.clip(np.sort(np.linalg.svd(qb - qa @ m, compute_uv=False)), 0.0, 1.0)
    angles: np.ndarray = np.where(cos >= np.sqrt(0.5), np.arcsin(sin[: cos.size]), np.arccos(cos))
    return angles


class PCA(Measure):
    name = "pca"
    summary = "cumulative variance of B in A's PCs and back, participation ratios, angles"
    options = (Option("k", int, None, "number of PCs (default min(20, rank))"),)
    symmetric = False
    pairing = "features"
    equal_width = True
    scalars = (*CURVES, "pr_a", "pr_b", "pr_b_in_a")
    titles = (
        ("cev_b_in_a", "variance of B in A's top-k PCs"),
        ("cev_a_in_b", "variance of A in B's top-k PCs"),
        ("cev_a_self", "variance of A in its top-k PCs"),
        ("cev_b_self", "variance of B in its top-k PCs"),
        ("pr_a", "participation ratio of A"),
        ("pr_b", "participation ratio of B"),
        ("pr_b_in_a", "participation ratio of B in A's top-k PCs"),
    )
    ranges = tuple((c, 0.0, 1.0) for c in CURVES)  # fractions of a trace
    workspace_terms = (3.0, 3.0, 2.0)  # eigh of each covariance, the subspaces' products
    #: the sides' own spectra are biased upwards by O(p/n); the cross curves are not
    #: (docs/uncertainty.md: coverage)
    biased_plugin = ("cev_a_self", "cev_b_self", "pr_a", "pr_b")
    ci_max_ratio = 0.1
    arrays = (*tuple(f"{c}_curve" for c in CURVES), "angles")
    info = ("pca_k",)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"cev_b_in_a": "cev_b_self", "cev_a_in_b": "cev_a_self", "pr_a": "pr_b"}

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"raw"})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Side:
        _k(side, opts["k"])
        return side

    def finalize(
        self, a: Side, b: Side, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        k = min(_k(a, opts["k"]), _k(b, opts["k"]))
        la, va = a.eig
        lb, vb = b.eig
        curves = {
            "cev_b_in_a": _in_basis(a, b),
            "cev_a_in_b": _in_basis(b, a),
            "cev_a_self": np.cumsum(la) / la.sum(),
            "cev_b_self": np.cumsum(lb) / lb.sum(),
        }
        vk = va[:, :k]
        m = vk.T @ b.cov @ vk
        angles = principal_angles(vk, vb[:, :k])
        out: dict[str, Any] = {c: float(v[k - 1]) for c, v in curves.items()}
        out.update(
            pr_a=participation_ratio(la),
            pr_b=participation_ratio(lb),
            pr_b_in_a=participation_ratio(np.maximum(np.linalg.eigvalsh((m + m.T) / 2.0), 0)),
            angles=angles,
        )
        out.update({f"{c}_curve": v for c, v in curves.items()})
        out["pca_k"] = k
        return out
