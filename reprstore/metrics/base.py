"""What every measure is made of: declared needs, a per-representation and a per-pair step.

A measure (one module of :mod:`reprstore.metrics`, one line of
:mod:`reprstore.metrics.registry`) declares

* ``own_views(opts)`` / ``cross_views(opts)``: the streamed statistics it needs per
  representation and per pair, named by row view (:mod:`reprstore.stats.views`):
  ``raw`` gives the representation's :class:`~reprstore.stats.linear.ReprMoments`
  (n, Σx, XᵀX and the row-norm sums) and the pair's ``PairMoments`` (XᵀY …);
* ``partial(side, opts)``: the work done once per representation (netrep's
  ``partial_fit``: an eigendecomposition, a whitening) on a :class:`Side`;
* ``finalize(a, b, cross, opts)``: the work done once per pair (``finalize_fit``), on the
  two partial results and the pair's cross statistics (``None`` for feature-paired
  measures, which need none), returning the result columns;
* ``symmetric``, ``pairing`` (``rows``: same dataset, row for row; ``features``: same
  width, any datasets; ``single``: one representation, ``reprstore describe``) and
  ``invariances(opts)`` (``orthogonal``, ``scale``, ``translation``, ``linear``).

The engine takes the union of the needs of every requested measure and streams them in
one pass; measures never see data, only finished statistics, and nothing of size n.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError, InputError
from reprstore.stats.linear import PairMoments, ReprMoments

#: A direction whose eigenvalue is below this fraction of the largest is outside the rank.
RANK_RTOL = 1e-10
#: A centred spread below this fraction of the raw magnitude is a constant representation.
CONSTANT_RTOL = 1e-20
#: A correlation or cosine above 1 by at most this much is rounding and is clipped.
CLIP_TOLERANCE = 1e-6
INVARIANCES = ("orthogonal", "scale", "translation", "linear")
#: The part of what measures keep that is the representation's shared :class:`Side`.
SIDE_PART = "side"
PAIRINGS = ("rows", "features", "single")


@dataclass(frozen=True)
class Option:
    """One option of a measure (``name:option=value``)."""

    name: str
    kind: type  # float, int or str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    positive: bool = False
    #: The largest value allowed (inclusive), checked when the option is parsed.
    upper: float | None = None

    def parse(self, measure: str, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise InputError(
                f"Option {measure}:{self.name} expects {self.kind.__name__}. Got {text!r} instead."
            ) from None
        self.check(measure, value)
        return value

    def check(self, measure: str, value: Any) -> None:
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise InputError(
                f"Option {measure}:{self.name} must be one of {', '.join(self.choices)}. "
                f"Got {value!r} instead."
            )
        if self.kind in (int, float) and (not math.isfinite(value) or value < 0):
            raise InputError(
                f"Option {measure}:{self.name} must be a non-negative number. Got {value!r}."
            )
        if self.positive and not value > 0:
            raise InputError(f"Option {measure}:{self.name} must be positive. Got {value!r}.")
        if self.upper is not None and value > self.upper:
            raise InputError(
                f"Option {measure}:{self.name} must be at most {self.upper:g}. Got {value!r}."
            )


class Measure:
    """Base of every measure; subclasses set the class attributes and the two steps."""

    name: str = ""
    summary: str = ""
    options: tuple[Option, ...] = ()
    symmetric: bool = True
    pairing: str = "rows"
    #: Whether both sides must have the same number of features.
    equal_width: bool = False
    #: Scalar columns and array-valued (list) columns of the result.
    scalars: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    #: The closed interval each bounded scalar column lies in, by the measure's definition:
    #: a result file read back with a value outside it was edited or is not a result
    #: (:func:`reprstore.metrics.registry.column_range`).
    ranges: tuple[tuple[str, float, float], ...] = ()
    #: Axis titles of scalar columns in figures (column, title); a column not listed is
    #: titled by its name (:func:`reprstore.metrics.registry.column_title`).
    titles: tuple[tuple[str, str], ...] = ()
    #: Scalar columns where a smaller value means more alike (distances, not
    #: similarities): a permutation test's statistic is their negative
    #: (:func:`reprstore.metrics.registry.is_distance`).
    distances: tuple[str, ...] = ()
    #: Temporaries of the per-representation and per-pair steps (eigen/SVD workspaces,
    #: whitening, products), as float64 counts (a, b, c) of p², q² and p·q
    #: (:meth:`workspace`); the planner reserves them for every thread that runs the steps.
    workspace_terms: tuple[float, float, float] = (2.0, 2.0, 2.0)
    #: What the per-representation step keeps from a representation's pass until every
    #: pair is finished, as float64 counts (a, b) of p² and p (:meth:`kept`): by default
    #: its moments and their cached eigenvectors.
    kept_terms: tuple[float, float] = (2.0, 4.0)
    #: Informational columns (how a value was computed), after the measures' columns.
    info: tuple[str, ...] = ()
    #: Scalar columns whose plug-in estimate is biased by O(p/n) (in-sample fits): their
    #: jackknife interval is centred on the bias-corrected estimate.
    biased_plugin: tuple[str, ...] = ()
    #: The largest max(p, q)/n at which the suite's simulation found its ``--ci`` interval
    #: at the nominal level (docs/uncertainty.md); beyond it ``--ci`` is refused.
    ci_max_ratio: float | None = None

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        """Column → value (or name of another column) of a representation with itself."""
        return {}

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"raw"})

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"raw"}) if self.pairing == "rows" else frozenset()

    def special(self, opts: Mapping[str, Any]) -> str | None:
        """A pass of its own this measure needs (``minibatch``, ``rbf``), if any."""
        return None

    def ci_limit(self, opts: Mapping[str, Any]) -> float | None:
        """The largest max(p, q)/n at which ``--ci`` is offered (``None``: any; 0: never)."""
        return self.ci_max_ratio

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        """How the sample route computes it exactly, if it does: ``tiles`` (sums over tiles
        of the n × n kernels, any n) or ``factors`` (an orthogonally invariant measure, on
        factors F of the centred Gram matrices, FFᵀ = X̄X̄ᵀ; n × n in memory)."""
        return None

    def shape_refusal(self, opts: Mapping[str, Any], n: int, p: int, q: int) -> str | None:
        """Why a pair of n rows and p, q features cannot have this measure (checked before
        any data is read), or ``None``."""
        return None

    def columns(self, opts: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(scalar columns, array columns) for these options."""
        return self.scalars, self.arrays

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Any:
        return side

    def kept(self, opts: Mapping[str, Any], p: int) -> int:
        """Bytes this measure's per-representation step keeps for a representation p wide
        until the comparison ends (the planner counts it in every later pass)."""
        a, b = self.kept_terms
        return int(8 * (a * p * p + b * p))

    def kept_parts(self, opts: Mapping[str, Any], p: int) -> dict[Hashable, int]:
        """:meth:`kept` by what it holds. Parts of the same name kept by several measures of
        one representation are the same objects, counted once (the planner takes the
        largest): ``side`` is the shared :class:`Side` (its moments and Cxx, 2p² + 4p
        floats); anything else a measure keeps is its own unless it names it alike."""
        total = self.kept(opts, p)
        if self.kept_terms == Measure.kept_terms:  # the side itself
            return {SIDE_PART: total}
        return {(self.name, *sorted(opts.items())): total}

    def workspace(self, opts: Mapping[str, Any], p: int, q: int) -> int:
        """Bytes of temporaries one thread holds while finishing this measure for a pair of
        widths p and q (q = p for a single representation)."""
        a, b, c = self.workspace_terms
        return int(8 * (a * p * p + b * q * q + c * p * q))

    def mirrored(self, columns: dict[str, Any]) -> dict[str, Any]:
        """A symmetric measure's columns for (B, A) from those of (A, B): the same, unless
        some column belongs to a side (CKA's HSIC terms and bandwidths)."""
        return columns

    def finalize(
        self, a: Any, b: Any, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, a: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Spec:
    """A measure with its options, as asked for (``svcca:keep=0.99``)."""

    measure: Measure
    items: tuple[tuple[str, Any], ...] = ()
    suffix: str = ""  # appended to column names when a measure is asked for twice

    @property
    def name(self) -> str:
        return self.measure.name

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.items)

    @property
    def key(self) -> str:
        return self.name + "".join(f":{k}={v}" for k, v in self.items if v is not None)

    def column(self, name: str) -> str:
        return name + self.suffix


@dataclass
class Cross:
    """Cross statistics of one ordered pair (A, B), by row view, oriented A → B."""

    n: int
    views: dict[str, PairMoments] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # results of special passes
    names: tuple[str, str] = ("A", "B")
    #: Products several measures of this pair share (Cxy, W_xᵀCxy), made once.
    cache: dict[Any, np.ndarray] = field(default_factory=dict)

    def cxy(self, a: Side, b: Side) -> np.ndarray:
        """Cxy (p, q) of this pair (made once for all its measures)."""
        if "cxy" not in self.cache:
            self.cache["cxy"] = a.cross_cov(b, self.views["raw"])
        return self.cache["cxy"]

    def whitened(self, a: Side, b: Side, w: Whitening) -> np.ndarray:
        """WᵀCxy for a whitening W of A (shared by cca, svcca and linreg)."""
        key = ("w", id(w))
        if key not in self.cache:
            self.cache[key] = w.left(self.cxy(a, b))
        return self.cache[key]


class Side:
    """The finished statistics of one representation, with decompositions made on demand.

    Every cached decomposition is shared by all the measures that use it; all are in the
    units of the offset rows ((raw − shift) / scale, see :mod:`reprstore.stats.linear`).
    """

    def __init__(self, name: str, moments: Mapping[str, ReprMoments]) -> None:
        self.name = name
        self.moments = dict(moments)
        first = self.moments.get("raw") or next(iter(self.moments.values()), None)
        self.n = first.n if first is not None else 0
        self.p = first.n_features if first is not None else 0
        #: Features of the representation itself: ``p``, or more for a factor of its Gram
        #: matrix (the sample route), whose ridge must scale as the representation's.
        self.width = self.p
        #: Results of a measure's own pass (``special``), by the measure's key.
        self.extra: dict[str, Any] = {}

    @property
    def raw(self) -> ReprMoments:
        return self.moments["raw"]

    @property
    def scale(self) -> float:
        return self.raw.scale

    def check(self, view: str = "raw", constant: bool = True) -> None:
        """Raise for NaN/Inf rows (zero-norm rows in a normalised view) or constant data."""
        m = self.moments[view]
        if m.nonfinite:
            what = "NaN or Inf values" if view == "raw" else "NaN/Inf values or a zero norm"
            raise ComparisonError(
                f"Representation {self.name} has {what} in {m.nonfinite} of {m.n} rows; "
                "fix or filter them (--where) before comparing."
            )
        if constant and view == "raw" and self.spread <= CONSTANT_RTOL * self.magnitude:
            raise ComparisonError(
                f"Representation {self.name} is constant over the {m.n} rows compared "
                "(zero variance); the measure is undefined."
            )

    @functools.cached_property
    def spread(self) -> float:
        """Σ‖xᵢ − x̄‖² (offset units)."""
        m = self.raw
        return max(m.sqnorm - float(m.total @ m.total) / m.n, 0.0) if m.n else 0.0

    @functools.cached_property
    def magnitude(self) -> float:
        m = self.raw
        s = m.shift / m.scale
        return m.sqnorm + m.n * float(s @ s)

    @functools.cached_property
    def mean(self) -> np.ndarray:
        """Column mean of the offset rows, (p,)."""
        return self.raw.total / self.n

    @functools.cached_property
    def cov(self) -> np.ndarray:
        """Cxx = X̄ᵀX̄ / n of the offset rows, (p, p)."""
        m = self.raw
        c = (m.gram - np.outer(m.total, self.mean)) / m.n
        return (c + c.T) / 2.0

    @functools.cached_property
    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending, negatives from rounding set to 0) and eigenvectors of Cxx."""
        w, v = np.linalg.eigh(self.cov)
        w, v = w[::-1], v[:, ::-1]
        return np.maximum(w, 0.0), v

    @functools.cached_property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of Cxx as :attr:`eig` has them; without the eigenvectors (a third of
        the cost) unless these were made already."""
        if "eig" in self.__dict__:
            return self.eig[0]
        return np.maximum(np.linalg.eigvalsh(self.cov)[::-1], 0.0)

    @functools.cached_property
    def rank(self) -> int:
        """Directions above RANK_RTOL × the largest variance: p without an eigenproblem where
        the Cholesky factor proves it (:attr:`full_rank_factor`), else from the eigenvalues."""
        known = "eig" in self.__dict__ or "eigenvalues" in self.__dict__
        if not known and self.full_rank_factor is not None:
            return self.p
        w = self.eigenvalues
        return int((w > RANK_RTOL * w[0]).sum()) if w.size and w[0] > 0 else 0

    @functools.cached_property
    def cholesky_whitening(self) -> Whitening | None:
        """Cxx^-½ as an inverse Cholesky factor (None if Cxx is not numerically positive
        definite): made at most once, for the rank certificate and the whitening alike."""
        try:
            return Whitening.cholesky(self.cov)
        except np.linalg.LinAlgError:
            return None

    @functools.cached_property
    def full_rank_factor(self) -> Whitening | None:
        """:attr:`cholesky_whitening` where it proves Cxx has full rank, else None.

        With Cxx = LLᵀ, λ_min = 1/‖L⁻¹‖₂² ≥ 1/‖L⁻¹‖_F² and λ_max ≤ tr Cxx, so
        1/(‖L⁻¹‖_F² tr Cxx) > RANK_RTOL (with a factor 2 for the rounding of L⁻¹) puts every
        eigenvalue above RANK_RTOL × the largest: a certificate from the factor the
        whitening needs anyway, which saves an eigenproblem per representation.
        """
        w = self.cholesky_whitening
        if w is None:
            return None
        inv = w.w.T  # C order: vdot reads it without a copy
        bound = 1.0 / (float(np.vdot(inv, inv)) * float(np.trace(self.cov)))
        return w if bound > 2.0 * RANK_RTOL else None

    def whitener(self, ridge: float = 0.0) -> Whitening:
        """Cxx^-½ over the rank, or of Cxx + ridge·tr(Cxx)/p·I: made once per representation
        and ridge, shared by the measures that whiten."""
        cache: dict[float, Whitening] = self.__dict__.setdefault("_whiteners", {})
        if ridge not in cache:
            cache[ridge] = self._whitening(ridge)
        return cache[ridge]

    def _whitening(self, ridge: float) -> Whitening:
        """A Cholesky factor where the matrix has full rank (no eigenvectors needed), the
        eigenvectors over the rank otherwise (or if the factorisation fails)."""
        if ridge > 0:
            cov = self.cov + ridge * float(np.trace(self.cov)) / self.width * np.eye(self.p)
            try:
                return Whitening.cholesky(cov)
            except np.linalg.LinAlgError:
                pass
        elif self.rank == self.p and self.cholesky_whitening is not None:
            return self.cholesky_whitening
        lam, vec = self.eig
        if ridge > 0:
            return Whitening(vec / np.sqrt(lam + ridge * float(lam.sum()) / self.width))
        return Whitening(vec[:, : self.rank] / np.sqrt(lam[: self.rank]))

    def ridge_delta(self, ridge: float) -> float:
        """δ = ridge·tr(Cxx)/width, the ridge the whitening adds to Cxx."""
        return ridge * float(np.trace(self.cov)) / self.width

    def cross_cov(self, other: Side, ab: PairMoments) -> np.ndarray:
        """Cxy (p, q) from the pair's XᵀY of the offset rows."""
        return (ab.cross - np.outer(self.raw.total, other.mean)) / self.n


class Whitening:
    """A whitening W (p, r) of one side, WᵀCxxW = I.

    Either W = VΛ^-½ over the rank (eigenvectors), or W = L⁻ᵀ with Cxx = LLᵀ (full rank):
    then a Cholesky factor and its inverse replace an eigendecomposition. The products are
    numpy's (not scipy's triangular BLAS wrappers, which hold the GIL and so serialise the
    threads that finalize pairs in parallel).
    """

    def __init__(self, w: np.ndarray, inverse_factor: bool = False) -> None:
        #: VΛ^-½ (p, r), or L⁻¹ (p, p, lower triangular, Fortran order)
        self.w = w
        self.triangular = inverse_factor
        self.rank = int(w.shape[0] if inverse_factor else w.shape[1])

    @classmethod
    def cholesky(cls, cov: np.ndarray) -> Whitening:
        """From Cxx = LLᵀ; raises ``LinAlgError`` if Cxx is not numerically positive definite."""
        from scipy.linalg import lapack  # imported here: 0.2 s that small comparisons skip

        inv, info = lapack.dtrtri(np.asfortranarray(np.linalg.cholesky(cov)), lower=1)
        if info != 0 or not np.isfinite(inv).all():
            raise np.linalg.LinAlgError("singular Cholesky factor")
        return cls(inv, inverse_factor=True)

    def left(self, m: np.ndarray) -> np.ndarray:
        """Wᵀm (r, q)."""
        out: np.ndarray = self.w @ m if self.triangular else self.w.T @ m
        return out

    def right(self, m: np.ndarray) -> np.ndarray:
        """mW (q, r)."""
        out: np.ndarray = m @ self.w.T if self.triangular else m @ self.w
        return out

    def apply(self, u: np.ndarray) -> np.ndarray:
        """Wu (p, k): directions in the whitened basis back in the side's units."""
        out: np.ndarray = self.w.T @ u if self.triangular else self.w @ u
        return out


def whitening_parts(measure: Measure, opts: Mapping[str, Any], p: int) -> dict[Hashable, int]:
    """What cca and linreg keep, by part: the shared side, and the whitening at their ridge
    with the rank certificate (:meth:`Side.whitener`, :attr:`Side.full_rank_factor`), the
    same objects for both measures at one ridge."""
    side = int(8 * (2 * p * p + 4 * p))
    total = measure.kept(opts, p)
    return {SIDE_PART: side, ("whitening", opts["ridge"]): max(total - side, 0)}


def clip_unit(value: float, what: str, names: tuple[str, str]) -> float:
    """``value`` clipped to [−1, 1] if within rounding of it; an error beyond."""
    if not math.isfinite(value):
        raise ComparisonError(f"{what} of {names[0]} and {names[1]} is not finite.")
    if abs(value) > 1.0:
        if abs(value) - 1.0 > CLIP_TOLERANCE:
            raise ComparisonError(
                f"{what} of {names[0]} and {names[1]} came out as {value:.9g}, outside "
                "[-1, 1]: the statistics are numerically unreliable."
            )
        value = math.copysign(1.0, value)
    return float(value)


def participation_ratio(w: np.ndarray) -> float:
    """(Σλ)² / Σλ², computed without overflow."""
    top = float(np.max(w)) if w.size else 0.0
    if top <= 0.0:
        raise ComparisonError("The participation ratio is undefined for a zero spectrum.")
    u = w / top
    return float(u.sum() ** 2 / (u @ u))


def singular_values(m: np.ndarray) -> np.ndarray:
    """Singular values of ``m`` (descending) as √eig(mmᵀ) of the smaller Gram matrix: a
    symmetric eigenproblem, several times faster than an SVD of a p × q matrix. Each value
    is exact to about √ε·σ₁ (ε the float64 epsilon), ample for means and sums."""
    x = np.asarray(m, dtype=np.float64)
    if x.shape[0] > x.shape[1]:
        x = x.T
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    w = np.linalg.eigvalsh(x @ x.T)[::-1]
    out: np.ndarray = np.sqrt(np.maximum(w, 0.0))
    return out
