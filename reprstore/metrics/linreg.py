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

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.metrics.base import (
    RANK_RTOL,
    Cross,
    Measure,
    Option,
    Side,
    Whitening,
    clip_unit,
    whitening_parts,
)


@dataclass(frozen=True)
class Predictor:
    side: Side
    w: Whitening  # Cxx^-½ over A's rank (ridge-regularised)


class LinReg(Measure):
    name = "linreg"
    summary = "R² of B predicted from A by (ridge) least squares; asymmetric"
    options = (
        Option("ridge", float, 0.0, "λ: Cxx + λ·tr(Cxx)/p·I"),
        Option(
            "folds",
            int,
            None,
            "k: the k-fold cross-validated R² (consecutive row blocks)",
            positive=True,
        ),
        Option("fold_by", str, None, "metadata column whose values are the folds (not with k)"),
    )
    symmetric = False
    scalars = ("linreg",)
    titles = (("linreg", "linear regression R²"),)
    ranges = (("linreg", -float("inf"), 1.0),)  # R² ≤ 1; out of sample it can be any negative
    workspace_terms = (3.0, 1.0, 2.0)  # Cholesky/solve of Cxx with Cxy as right-hand sides
    kept_terms = (4.0, 4.0)  # the side (moments, Cxx), its factors, the (ridge) inverse
    biased_plugin = ("linreg",)
    ci_max_ratio = 0.01

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {} if opts["ridge"] else {"linreg": 1.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return None if self.special(opts) else "factors"

    def special(self, opts: Mapping[str, Any]) -> str | None:
        return "folds" if opts["folds"] is not None or opts["fold_by"] is not None else None

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        if opts["ridge"] or n - 1 >= p:
            return None
        return (
            f"linreg by least squares on {p} features of {n} rows fits any target exactly "
            f"(R² = 1: at most {n - 1} centred directions): use linreg:ridge=0.1, or compare "
            "more rows."
        )

    def kept_parts(self, opts: Mapping[str, Any], p: int) -> dict[Hashable, int]:
        return whitening_parts(self, opts, p)

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Predictor:
        side.check()
        return Predictor(side, side.whitener(opts["ridge"]))

    def finalize(
        self, a: Predictor, b: Predictor, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        if a is b:  # a representation predicting itself: from its spectrum alone
            return {"linreg": clip_unit(self_r2(a, opts["ridge"]), "The R² of linreg", cross.names)}
        t = cross.whitened(a.side, b.side, a.w)
        explained = float(np.linalg.norm(t)) ** 2  # tr(Cyx M⁻¹ Cxy), t in any order
        if opts["ridge"]:
            delta = opts["ridge"] * float(np.trace(a.side.cov)) / a.side.width
            explained += delta * float(np.linalg.norm(a.w.apply(t))) ** 2
        value = explained / float(np.trace(b.side.cov))
        return {"linreg": clip_unit(value, "The R² of linreg", cross.names)}


def self_r2(a: Predictor, ridge: float) -> float:
    """R² of a representation from itself by the (ridge) fit, from its eigenvalues λ (once
    per representation): with Cxy = Cxx, ‖T‖² + δ‖UT‖² = Σλ²/(λ + δ) + δΣλ²/(λ + δ)²;
    without a ridge the least-squares fit explains the rank's variance, Σ_{j<r} λⱼ."""
    side = a.side
    if not ridge:
        if a.w.rank == side.p:  # a full-rank (Cholesky) whitening: every direction
            return 1.0
        return float(side.eigenvalues[: a.w.rank].sum() / np.trace(side.cov))
    lam = side.eigenvalues
    delta = side.ridge_delta(ridge)
    f = lam / (lam + delta)
    return float((lam * f).sum() + delta * (f * f).sum()) / float(np.trace(side.cov))


# ------------------------------------------------------------- cross-validated R²


def fold_ids(n: int, k: int) -> np.ndarray:
    """The fold of each of n rows: k consecutive blocks, the first n mod k one row longer
    (scikit-learn's ``KFold(k)`` without shuffling)."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k), sizes)


@dataclass(frozen=True)
class Sums:
    """Sums over some rows of the offset rows x (p) and y (q): n, Σx, Σy, XᵀX, XᵀY, YᵀY."""

    n: float
    sx: np.ndarray
    sy: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray

    def __sub__(self, other: Sums) -> Sums:
        return Sums(self.n - other.n, self.sx - other.sx, self.sy - other.sy,
                    self.xx - other.xx, self.xy - other.xy, self.yy - other.yy)  # fmt: skip


def fold_fit(train: Sums, ridge: float, alpha_total: float, p: int) -> np.ndarray:
    """W (p × q) of the least-squares (or ridge) fit of centred y on centred x from the
    training sums. The ridge is scikit-learn's ``Ridge(alpha)`` with alpha = λ·tr(X̄ᵀX̄)/p
    of all rows (``alpha_total``), the same for every fold: M = Cxx + alpha/n_train·I."""
    n = train.n
    mx, my = train.sx / n, train.sy / n
    cxx = train.xx / n - np.outer(mx, mx)
    cxy = train.xy / n - np.outer(mx, my)
    if ridge:
        return np.linalg.solve(cxx + alpha_total / n * np.eye(p), cxy)
    w, v = np.linalg.eigh((cxx + cxx.T) / 2.0)
    keep = w > RANK_RTOL * w[-1]  # least squares over the training rank (minimum norm)
    fit: np.ndarray = (v[:, keep] / w[keep]) @ (v[:, keep].T @ cxy)
    return fit


def fold_sse(test: Sums, train: Sums, w: np.ndarray) -> float:
    """Σ over the test rows of ‖y − ŷ‖², ŷ = ȳ_train + Wᵀ(x − x̄_train), from the sums."""
    mx, my = train.sx / train.n, train.sy / train.n
    syy = float(np.trace(test.yy)) - 2.0 * float(my @ test.sy) + test.n * float(my @ my)
    mxy = test.xy - np.outer(mx, test.sy) - np.outer(test.sx, my) + test.n * np.outer(mx, my)
    mxx = test.xx - np.outer(mx, test.sx) - np.outer(test.sx, mx) + test.n * np.outer(mx, mx)
    return syy - 2.0 * float(np.vdot(w, mxy)) + float(np.vdot(w, mxx @ w))


def cross_validated_r2(folds: Sequence[Sums], ridge: float) -> float:
    """1 − Σ_f SSE_f / Σ‖yᵢ − ȳ‖²: the k-fold cross-validated R² (= scikit-learn's
    ``cross_val_predict`` and a variance-weighted ``r2_score``)."""
    total = folds[0]
    for f in folds[1:]:
        total = Sums(total.n + f.n, total.sx + f.sx, total.sy + f.sy, total.xx + f.xx,
                     total.xy + f.xy, total.yy + f.yy)  # fmt: skip
    p = total.sx.shape[0]
    xbar = total.sx / total.n
    alpha = ridge * float(np.trace(total.xx) - total.n * xbar @ xbar) / p
    sse = 0.0
    for f in folds:
        train = total - f
        sse += fold_sse(f, train, fold_fit(train, ridge, alpha, p))
    sst = float(np.trace(total.yy)) - float(total.sy @ total.sy) / total.n
    return 1.0 - sse / sst
