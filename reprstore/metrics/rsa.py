"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008), exact.

The Pearson correlation of the n(n−1)/2 upper-triangle entries of two RDMs, from streamed
sums (no n × n matrix). With aᵢ = ‖xᵢ‖², s = Σxᵢ (offset rows; distances do not change):

* ``sqeuclidean``: Dᵢⱼ = aᵢ + aⱼ − 2xᵢ·xⱼ;
* ``cosine`` / ``correlation``: D = 1 − UUᵀ with U the unit rows (centred across
  features first for ``correlation``); the correlation of D and E is that of the Gram
  matrices G = UUᵀ. The unit rows are streamed offset (uᵢ = s·xᵢ + shift), so that rows
  that are nearly parallel (a large common mean) lose no digits: G ∝ xᵢ·xⱼ + fᵢ + fⱼ + κ
  with fᵢ = (shift/s)·xᵢ.

Both are of the form Eᵢⱼ = α·xᵢ·xⱼ + fᵢ + fⱼ with fᵢ = γ‖xᵢ‖² + c·xᵢ, whose sums over i ≠ j
expand into n, Σx, XᵀY, Σaᵢyᵢ, Σbᵢxᵢ and Σaᵢbᵢ (:func:`pair_sums`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import Cross, Measure, Option, Side, clip_unit
from reprstore.stats.linear import PairMoments, ReprMoments, self_pair
from reprstore.stats.views import RAW, UNIT, UNIT_CENTRED

VIEW = {"sqeuclidean": RAW, "cosine": UNIT, "correlation": UNIT_CENTRED}


@dataclass(frozen=True)
class Entries:
    """The RDM (or Gram) of one side as Eᵢⱼ = α·xᵢ·xⱼ + fᵢ + fⱼ (+ a constant) over its
    offset rows xᵢ, with fᵢ = γ‖xᵢ‖² + c·xᵢ; the Pearson correlation ignores the constant."""

    m: ReprMoments
    alpha: float
    gamma: float
    c: np.ndarray  # (p,)


def entries(m: ReprMoments, rdm: str) -> Entries:
    """``sqeuclidean``: Dᵢⱼ = aᵢ + aⱼ − 2xᵢ·xⱼ. ``cosine``/``correlation``: Gᵢⱼ = uᵢ·uⱼ of the
    unit rows uᵢ = s·xᵢ + shift, i.e. ∝ xᵢ·xⱼ + (shift/s)·xᵢ + (shift/s)·xⱼ + const."""
    if rdm == "sqeuclidean":
        return Entries(m, -2.0, 1.0, np.zeros(m.n_features))
    return Entries(m, 1.0, 0.0, m.shift / m.scale)


def pair_sums(a: Entries, b: Entries, ab: PairMoments) -> tuple[float, float, float]:
    """(Σ_{i≠j} Eᵢⱼ, Σ_{i≠j} Fᵢⱼ, Σ_{i≠j} EᵢⱼFᵢⱼ) from the streamed moments (no n × n)."""
    x, y, n = a.m, b.m, a.m.n
    sx, sy = x.total, y.total
    sum_f = a.gamma * x.sqnorm + float(a.c @ sx)
    sum_h = b.gamma * y.sqnorm + float(b.c @ sy)
    se = a.alpha * (float(sx @ sx) - x.sqnorm) + 2 * (n - 1) * sum_f
    sf = b.alpha * (float(sy @ sy) - y.sqnorm) + 2 * (n - 1) * sum_h
    c_cross = a.c @ ab.cross  # (q,)
    # Σᵢ hᵢ(xᵢ·s_x) − Σᵢ hᵢaᵢ, with hᵢ = δbᵢ + d·yᵢ
    h_k = b.gamma * float(ab.b_x @ sx) + float(b.c @ (ab.cross.T @ sx))
    h_k -= b.gamma * ab.ab + float(b.c @ ab.a_y)
    # Σᵢ fᵢ(yᵢ·s_y) − Σᵢ fᵢbᵢ, with fᵢ = γaᵢ + c·xᵢ
    f_l = a.gamma * float(ab.a_y @ sy) + float(c_cross @ sy)
    f_l -= a.gamma * ab.ab + float(a.c @ ab.b_x)
    fh = a.gamma * b.gamma * ab.ab + a.gamma * float(b.c @ ab.a_y)
    fh += b.gamma * float(a.c @ ab.b_x) + float(c_cross @ b.c)
    q = a.alpha * b.alpha * (float(np.vdot(ab.cross, ab.cross)) - ab.ab)
    q += 2 * a.alpha * h_k + 2 * b.alpha * f_l + 2 * (n - 2) * fh + 2 * sum_f * sum_h
    return se, sf, q


@dataclass(frozen=True)
class RDMSide:
    side: Side
    e: Entries
    sum: float  # Σ_{i≠j} Dᵢⱼ
    var: float  # Σ_{i≠j} (Dᵢⱼ − mean)²


class RSA(Measure):
    name = "rsa"
    summary = "Pearson correlation of RDM upper triangles (Kriegeskorte 2008), exact"
    options = (
        Option("rdm", str, "sqeuclidean", "sqeuclidean, cosine or correlation", tuple(VIEW)),
    )
    scalars = ("rsa",)
    titles = (("rsa", "RSA (RDM correlation)"),)
    ranges = (("rsa", -1.0, 1.0),)
    workspace_terms = (2.0, 2.0, 2.0)  # products of the centred moments

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

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "tiles"

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({RAW, VIEW[opts["rdm"]]})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({VIEW[opts["rdm"]]})

    def kept_parts(self, opts: Mapping[str, Any], p: int) -> dict[Hashable, int]:
        """The shared side, and the moments of the unit rows where the RDM needs them."""
        parts = super().kept_parts(opts, p)
        view = VIEW[opts["rdm"]]
        if view != RAW:
            parts[("view", view)] = int(8 * (p * p + 4 * p))
        return parts

    def partial(self, side: Side, opts: Mapping[str, Any]) -> RDMSide:
        side.check()
        view = VIEW[opts["rdm"]]
        if view != RAW:
            side.check(view)
        m = side.moments[view]
        n = m.n
        if n < 3:
            raise ComparisonError(f"RSA needs at least 3 rows. Got {n} instead.")
        e = entries(m, opts["rdm"])
        s, _, q = pair_sums(e, e, self_pair(m))
        var = q - s * s / (n * (n - 1))
        if not var > 1e-12 * abs(q):
            raise ComparisonError(
                f"The {opts['rdm']} RDM of {side.name} is constant over its {n} rows: RSA is "
                "undefined."
            )
        return RDMSide(side, e, s, var)

    def finalize(
        self, a: RDMSide, b: RDMSide, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        view = VIEW[opts["rdm"]]
        ab = self_pair(a.e.m) if a is b else cross.views[view]
        _, _, q = pair_sums(a.e, b.e, ab)
        cov = q - a.sum * b.sum / (a.e.m.n * (a.e.m.n - 1))
        value = cov / np.sqrt(a.var) / np.sqrt(b.var)
        return {"rsa": clip_unit(float(value), "RSA", cross.names)}
