"""Centred kernel alignment from finished statistics: pure functions, no I/O.

Estimators (see SPEC.md): ``biased`` (Kornblith et al. 2019, HSIC₀), ``debiased``
(the unbiased HSIC₁ of Song et al. 2012; the default) and ``minibatch`` (Nguyen, Raghu &
Kornblith 2021, mean of per-batch HSIC₁). A comparison never returns a silent NaN or a
value above 1: too few rows, a constant representation or NaN/Inf in the input raise
:class:`~reprstore.errors.ComparisonError` with a one-line reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Cross, Measure, Option, Side, clip_unit
from reprstore.stats.hsic import MIN_ROWS_UNBIASED, HsicTerms, hsic1
from reprstore.stats.kernels import KERNELS, Bandwidth
from reprstore.stats.linear import PairMoments, ReprMoments, self_pair
from reprstore.stats.minibatch import MinibatchSums

ESTIMATORS = ("biased", "debiased", "minibatch")
#: A representation whose centred spread is below this fraction of its magnitude is constant.
CONSTANT_RTOL = 1e-20
#: A self-HSIC below this fraction of its scale (see :func:`ratio`) is rounding noise of a
#: zero: the representation has too few distinct rows (e.g. all but one identical).
HSIC_RTOL = 1e-9


@dataclass(frozen=True)
class CKAResult:
    """One CKA value and how it was obtained.

    Attributes
    ----------
    cka : float
        The value, in [-1, 1] (unbiased estimators can be negative).
    estimator, kernel : str
    n_samples : int
        Rows compared (after any row filter).
    hsic_ab, hsic_aa, hsic_bb : float
        The HSIC values of the ratio (for minibatch: means over batches).
    n_batches, batch_size : int or None
        Minibatch only.
    sigma : float or None
        The RBF ``sigma`` multiplier.
    sigma2_a, sigma2_b : float or None
        The RBF σ² used for each side.
    sigma_method : str or None
        How the median distance behind σ² was obtained (exact or estimated).
    route : str
        How the value was computed: ``features`` (p × q statistics), ``samples`` (tiles of
        the n × n kernels) or ``minibatch`` (SPEC: Routes).
    """

    cka: float
    estimator: str
    kernel: str
    n_samples: int
    hsic_ab: float
    hsic_aa: float
    hsic_bb: float
    n_batches: int | None = None
    batch_size: int | None = None
    sigma: float | None = None
    sigma2_a: float | None = None
    sigma2_b: float | None = None
    sigma_method: str | None = None
    route: str = "features"

    def __float__(self) -> float:
        return self.cka

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_options(estimator: str, kernel: str) -> None:
    """Raise :class:`InputError` for an unknown estimator or kernel."""
    if estimator not in ESTIMATORS:
        raise InputError(
            f"Unknown estimator {estimator!r}. Expected one of {', '.join(ESTIMATORS)}."
        )
    if kernel not in KERNELS:
        raise InputError(f"Unknown kernel {kernel!r}. Expected one of {', '.join(KERNELS)}.")


def check_rows(n: int, estimator: str) -> None:
    """Raise when ``n`` rows are too few for ``estimator``."""
    need = 2 if estimator == "biased" else MIN_ROWS_UNBIASED
    if n < need:
        raise ComparisonError(
            f"Too few samples for the {estimator} estimator: expected at least {need} rows. "
            f"Got {n} instead."
        )


def check_finite(name: str, bad: int, n: int) -> None:
    """Raise when representation ``name`` had ``bad`` NaN/Inf rows among ``n``."""
    if bad:
        raise ComparisonError(
            f"Representation {name} has NaN or Inf values in {bad} of {n} rows; "
            "fix or filter them (--where) before comparing."
        )


def constant_error(name: str, n: int) -> ComparisonError:
    return ComparisonError(
        f"Representation {name} is constant over the {n} rows compared (zero variance); "
        "CKA is undefined."
    )


def ratio(
    hab: float,
    haa: float,
    hbb: float,
    names: tuple[str, str],
    n: int,
    scales: tuple[float, float] | None = None,
) -> float:
    """CKA = hab / √(haa·hbb), refusing a zero or negative denominator and a value > 1.

    ``scales`` are the sizes the self-HSICs are judged against (for HSIC₁, tr(K̃K̃)/(n(n−3));
    for HSIC₀, the uncentred ‖XᵀX‖²): a self-HSIC below ``HSIC_RTOL`` of it is taken for
    rounding noise of zero. The ratio is taken as (hab/√haa)/√hbb, so it never overflows.
    """
    for k, (name, h) in enumerate(zip(names, (haa, hbb), strict=True)):
        if not math.isfinite(h):
            raise ComparisonError(f"HSIC of representation {name} with itself is not finite.")
        scale = scales[k] if scales is not None else 0.0
        floor = HSIC_RTOL * scale
        if h <= 0.0 or h <= floor:
            raise ComparisonError(
                f"HSIC of representation {name} with itself is {h:.3g} (not positive"
                + (f", below {HSIC_RTOL:g} of its scale {scale:.3g}" if floor > 0 else "")
                + f") over {n} rows: it is constant or has too few distinct rows; "
                "CKA is undefined."
            )
    if hab == haa == hbb:  # a representation with itself: exactly 1 (SPEC: exactness)
        return 1.0
    # √haa·√hbb: symmetric in A and B (bitwise), and no overflow of haa·hbb
    return clip_unit(hab / (math.sqrt(haa) * math.sqrt(hbb)), "CKA", names)


def _centred_spread(m: ReprMoments) -> float:
    """Σ‖xᵢ − x̄‖² from the moments."""
    return m.sqnorm - float(m.total @ m.total) / m.n


def _check_moments(m: ReprMoments, name: str) -> None:
    check_finite(name, m.nonfinite, m.n)
    spread = _centred_spread(m)
    s = m.shift / m.scale
    scale = m.sqnorm + m.n * float(s @ s)
    if spread <= CONSTANT_RTOL * scale or spread <= 0.0:
        raise constant_error(name, m.n)


def check_bandwidth(bw: Bandwidth, name: str, n: int) -> None:
    """Raise when the RBF bandwidth of representation ``name`` is zero (constant data)."""
    if not math.isfinite(bw.median):
        raise ComparisonError(f"Representation {name} has NaN or Inf values; fix or filter them.")
    if bw.median <= CONSTANT_RTOL * bw.scale or bw.median <= 0.0:
        raise ComparisonError(
            f"Representation {name} is constant or has mostly duplicate rows over the {n} rows "
            "compared: the median pairwise distance is 0, so the RBF bandwidth is undefined."
        )
    if bw.sigma <= 0 or not math.isfinite(bw.sigma):
        raise InputError(f"sigma must be a positive number. Got {bw.sigma} instead.")


def _terms(
    n: int, sx: np.ndarray, sqx: float, sy: np.ndarray, sqy: float, ab: PairMoments
) -> HsicTerms:
    return HsicTerms(
        n=n,
        tr_kl=float(np.vdot(ab.cross, ab.cross)) - ab.ab,
        sum_k=float(sx @ sx) - sqx,
        sum_l=float(sy @ sy) - sqy,
        sum_kl=float(sx @ ab.cross @ sy) - float(ab.a_y @ sy) - float(ab.b_x @ sx) + ab.ab,
    )


def linear_terms(a: ReprMoments, b: ReprMoments, ab: PairMoments) -> HsicTerms:
    """The unbiased-HSIC terms of two linear kernels from streamed moments.

    tr(K̃L̃) = ‖XᵀY‖²_F − Σaᵢbᵢ; 1ᵀK̃1 = ‖Σxᵢ‖² − Σaᵢ;
    1ᵀK̃L̃1 = s_xᵀ(XᵀY)s_y − (Σaᵢyᵢ)ᵀs_y − (Σbᵢxᵢ)ᵀs_x + Σaᵢbᵢ.
    """
    return _terms(a.n, a.total, a.sqnorm, b.total, b.sqnorm, ab)


def linear_hsic(a: ReprMoments, b: ReprMoments, ab: PairMoments, estimator: str) -> float:
    """HSIC of the linear kernels of two representations from their moments.

    ``biased``: ‖X_cᵀY_c‖²_F with X_c, Y_c column-centred (= tr(KHLH)); ``debiased``: HSIC₁.
    """
    if estimator == "biased":
        centred = ab.cross - np.outer(a.total, b.total) / a.n
        return float(np.vdot(centred, centred))
    return hsic1(linear_terms(a, b, ab))


@dataclass(frozen=True)
class LinearSide:
    """What a linear-kernel comparison keeps of one representation once its pass is done.

    The p × p Gram matrix is reduced to the self-HSIC, so grids hold p numbers per
    representation, not p².
    """

    name: str
    n: int
    total: np.ndarray  # (p,) Σxᵢ of the offset rows
    sqnorm: float  # Σ‖xᵢ‖²
    hsic: float  # HSIC(K, K) for the estimator
    hsic_scale: float = 0.0  # what ``hsic`` is judged against (see :func:`ratio`)


def linear_side(m: ReprMoments, estimator: str, name: str = "A") -> LinearSide:
    """Check a representation's moments (NaN/Inf, constant) and take its self-HSIC."""
    check_options(estimator, "linear")
    if estimator == "minibatch":
        raise InputError("linear moments serve the exact estimators; use cka_minibatch.")
    check_rows(m.n, estimator)
    _check_moments(m, name)
    hsic = linear_hsic(m, m, self_pair(m), estimator)
    gram2 = float(np.vdot(m.gram, m.gram))
    scale = gram2 if estimator == "biased" else (gram2 - m.sqnorm2) / (m.n * (m.n - 3))
    return LinearSide(name=name, n=m.n, total=m.total, sqnorm=m.sqnorm, hsic=hsic, hsic_scale=scale)


def cka_linear_sides(
    a: LinearSide, b: LinearSide, ab: PairMoments | None, estimator: str
) -> CKAResult:
    """Exact linear CKA of two checked sides and their cross moments (None: a is b)."""
    if a.n != b.n:
        raise ComparisonError(f"Row counts differ: {a.name} has {a.n}, {b.name} has {b.n}.")
    if ab is None:
        hab = a.hsic
    elif estimator == "biased":
        centred = ab.cross - np.outer(a.total, b.total) / a.n
        hab = float(np.vdot(centred, centred))
    else:
        hab = hsic1(_terms(a.n, a.total, a.sqnorm, b.total, b.sqnorm, ab))
    return CKAResult(
        cka=ratio(hab, a.hsic, b.hsic, (a.name, b.name), a.n, (a.hsic_scale, b.hsic_scale)),
        estimator=estimator,
        kernel="linear",
        n_samples=a.n,
        hsic_ab=hab,
        hsic_aa=a.hsic,
        hsic_bb=b.hsic,
    )


def cka_linear(
    a: ReprMoments,
    b: ReprMoments,
    ab: PairMoments | None,
    estimator: str = "debiased",
    names: tuple[str, str] = ("A", "B"),
) -> CKAResult:
    """Exact linear CKA from streamed statistics (``ab=None``: ``b`` is ``a``)."""
    side_a = linear_side(a, estimator, names[0])
    side_b = side_a if ab is None else linear_side(b, estimator, names[1])
    return cka_linear_sides(side_a, side_b, ab, estimator)


def bandwidth_fields(
    sigma: float | None, bw: tuple[Bandwidth, Bandwidth] | None
) -> dict[str, object]:
    if bw is None:
        return {}
    methods = {b.method for b in bw}
    return {
        "sigma": sigma,
        "sigma2_a": bw[0].sigma2,
        "sigma2_b": bw[1].sigma2,
        "sigma_method": "; ".join(sorted(methods)),
    }


def cka_minibatch(
    sums: MinibatchSums,
    a: int,
    b: int,
    *,
    kernel: str = "linear",
    batch_size: int | None = None,
    bandwidths: tuple[Bandwidth, Bandwidth] | None = None,
    names: tuple[str, str] = ("A", "B"),
) -> CKAResult:
    """Minibatch CKA of representations ``a`` and ``b`` (indices into ``sums``)."""
    if sums.n_batches == 0:
        raise ComparisonError(
            f"No minibatch of at least {MIN_ROWS_UNBIASED} rows: expected at least "
            f"{MIN_ROWS_UNBIASED} rows. Got {sums.n_rows} instead."
        )
    for name, i in zip(names, (a, b), strict=True):
        check_finite(name, sums.nonfinite.get(i, 0), sums.n_rows)
        if sums.spread[i] <= CONSTANT_RTOL * sums.scale[i] or sums.spread[i] <= 0.0:
            raise constant_error(name, sums.n_rows)
    k = sums.n_batches
    hab = (sums.own[a] if a == b else sums.pairs[(a, b)]) / k
    haa, hbb = sums.own[a] / k, sums.own[b] / k
    scales = (sums.own_scale.get(a, 0.0) / k, sums.own_scale.get(b, 0.0) / k)
    return CKAResult(
        cka=ratio(hab, haa, hbb, names, sums.n_rows, scales),
        estimator="minibatch",
        kernel=kernel,
        n_samples=sums.n_rows,
        hsic_ab=hab,
        hsic_aa=haa,
        hsic_bb=hbb,
        n_batches=k,
        batch_size=batch_size,
        route="minibatch",
        **bandwidth_fields(bandwidths[0].sigma if bandwidths else None, bandwidths),  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------- the cka measure


class CKA(Measure):
    """Centred kernel alignment (SPEC: Estimators); one column ``cka`` plus how it was made."""

    name = "cka"
    summary = "centred kernel alignment (debiased, biased or minibatch; linear or rbf)"
    options = (
        Option("estimator", str, "debiased", "debiased, biased or minibatch", ESTIMATORS),
        Option("kernel", str, "linear", "linear or rbf", KERNELS),
        Option("sigma", float, 0.5, "rbf width: σ² = sigma² × median sq. distance", (), True),
        Option("batch_size", int, 256, "rows per minibatch"),
        Option("shuffle", int, None, "seed of random minibatch membership"),
    )
    scalars = ("cka",)
    titles = (("cka", "CKA"),)
    #: |CKA| ≤ 1 for every estimator: each HSIC estimate is an inner product of centred
    #: (or U-centred, debiased) kernels, and Cauchy–Schwarz bounds their ratio.
    ranges = (("cka", -1.0, 1.0),)
    workspace_terms = (1.0, 1.0, 1.0)  # one temporary of each product
    kept_terms = (0.0, 2.0)  # its self-HSIC and column sums only
    info = ("estimator", "kernel", "route", "n_batches", "batch_size", "sigma", "bandwidth_a",
            "bandwidth_b", "sigma_method", "hsic_ab", "hsic_aa", "hsic_bb")  # fmt: skip

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"cka": 1.0}

    def special(self, opts: Mapping[str, Any]) -> str | None:
        if opts["estimator"] == "minibatch":
            return "minibatch"
        return "rbf" if opts["kernel"] == "rbf" else None

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return None if opts["estimator"] == "minibatch" else "tiles"

    def ci_limit(self, opts: Mapping[str, Any]) -> float | None:
        # the biased HSIC drifts upwards by O(p/n): 0.74 coverage at p/n = 0.1, and 0.85 at
        # 0.01 with isotropic data (docs/uncertainty.md); the debiased one holds
        return 0.0 if opts["estimator"] == "biased" else None

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset() if self.special(opts) else frozenset({"raw"})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return self.own_views(opts)

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Any:
        if self.special(opts) or "raw" not in side.moments:  # its own pass, or the sample route
            return None
        return linear_side(side.raw, opts["estimator"], side.name)

    def finalize(
        self, a: Any, b: Any, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        if "cka" in cross.extra:  # its own pass (minibatch) or the sample route
            result = cross.extra["cka"]
        else:
            ab = cross.views.get("raw")
            result = cka_linear_sides(a, b, None if a is b else ab, opts["estimator"])
        return result_columns(result)

    def mirrored(self, columns: dict[str, Any]) -> dict[str, Any]:
        return result_columns(swapped(columns["_result"]))


def swapped(r: CKAResult) -> CKAResult:
    """The result of (B, A) from that of (A, B): the same value, the sides' terms swapped."""
    return replace(
        r, hsic_aa=r.hsic_bb, hsic_bb=r.hsic_aa, sigma2_a=r.sigma2_b, sigma2_b=r.sigma2_a
    )


def result_columns(r: CKAResult) -> dict[str, Any]:
    """The result columns of one :class:`CKAResult` (``cka`` and how it was computed)."""
    return {
        "cka": r.cka, "estimator": r.estimator, "kernel": r.kernel, "n_batches": r.n_batches,
        "batch_size": r.batch_size, "sigma": r.sigma, "sigma_method": r.sigma_method,
        "route": r.route, "bandwidth_a": r.sigma2_a, "bandwidth_b": r.sigma2_b,
        "hsic_ab": r.hsic_ab, "hsic_aa": r.hsic_aa, "hsic_bb": r.hsic_bb, "_result": r,
    }  # fmt: skip
