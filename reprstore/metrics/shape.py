"""The angular shape metric of Williams, Kunz, Kornblith & Linderman (2021).

As the authors' code defines it (netrep ``LinearMetric(alpha)``, centred columns, zero
padding, angular score; ``netrep.utils.whiten``): with X̄ᵀX̄ = V diag(μ) Vᵀ (stored units,
μ = n·λ for the eigenvalues λ of Cxx), the partial whitening is Z = V diag(α + (1−α)μ^-½) Vᵀ,
rescaled to preserve the total variance (one scalar per side, which the angle ignores), and
θ = arccos(‖(X̄Zx)ᵀ(ȲZy)‖_* / (‖X̄Zx‖_F‖ȲZy‖_F)).
In the eigenbasis, X̄Zx = X̄ V diag(f), f = α + (1−α)μ^-½, so
‖ZxᵀZy‖_* = n‖diag(f_x) VxᵀCxyVy diag(f_y)‖_* and ‖X̄Zx‖²_F = n Σ λ f². α = 1: angular
Procrustes; α = 0: a CCA-like metric. Directions below 1e-10 × the largest eigenvalue
are dropped (f = 0: the project's relative rank rule), where netrep clips eigenvalues at
an absolute 1e-7 instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.errors import InputError
from reprstore.metrics.base import (
    RANK_RTOL,
    Cross,
    Measure,
    Option,
    Side,
    clip_unit,
    singular_values,
)


@dataclass(frozen=True)
class Shaped:
    side: Side
    f: np.ndarray  # (p,) the whitening weights in the eigenbasis, offset units
    norm: float  # ‖Zx‖_F / √n in offset units


def shaped(side: Side, alpha: float) -> Shaped:
    side.check()
    lam, _ = side.eig
    s2 = side.scale**2  # Cxx in stored units is s² × the offset-units one
    mu = side.n * lam * s2  # eigenvalues of X̄ᵀX̄ in stored units, as netrep whitens
    keep = lam > RANK_RTOL * lam[0]
    with np.errstate(divide="ignore"):
        f = np.where(keep, alpha + (1.0 - alpha) / np.sqrt(np.where(keep, mu, 1.0)), 0.0)
    return Shaped(side, f, float(np.sqrt((lam * f * f).sum())))


class Shape(Measure):
    name = "shape"
    summary = "angular shape metric (Williams 2021): α=1 angular Procrustes, α=0 CCA-like"
    options = (Option("alpha", float, 1.0, "α in [0, 1] (regularisation towards I)", upper=1.0),)
    scalars = ("shape",)
    titles = (("shape", "shape distance"),)
    distances = ("shape",)
    workspace_terms = (4.0, 4.0, 3.0)  # partial whitening (eigh) of each side, then an SVD
    biased_plugin = scalars
    ci_max_ratio = 0.01

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        base = {"orthogonal", "translation"}
        if opts["alpha"] in (0.0, 1.0):
            base.add("scale")
        if opts["alpha"] == 0.0:
            base.add("linear")
        return frozenset(base)

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"shape": 0.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "factors"

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Shaped:
        if not 0.0 <= opts["alpha"] <= 1.0:
            raise InputError(f"shape:alpha must be in [0, 1]. Got {opts['alpha']} instead.")
        return shaped(side, opts["alpha"])

    def finalize(
        self, a: Shaped, b: Shaped, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        cxy = cross.cxy(a.side, b.side)
        m = (a.side.eig[1].T @ cxy @ b.side.eig[1]) * a.f[:, None] * b.f[None, :]
        nuc = float(singular_values(m).sum())
        value = clip_unit(nuc / a.norm / b.norm, "The shape similarity", cross.names)
        return {"shape": math.acos(value)}
