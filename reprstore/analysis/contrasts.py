"""Group contrasts over seeds: difference, ratio ("reduction") and a permutation p-value.

``contrast(results, "model=lora:full", by="layer", value="1-cka")`` compares, per group, the
replicate values (one per seed) of X = ``lora`` with those of Y = ``full``:

- difference x̄ − ȳ with a Welch t-interval;
- ratio x̄ / ȳ with Fieller's interval (normal means, Welch degrees of freedom at the
  estimate); ``reduction`` = 1 − ratio (a 20 % drift reduction is a ratio of 0.8). When ȳ is
  not clearly away from 0 the interval is unbounded and the result says so;
- a permutation p-value of H₀ "X and r₀·Y are exchangeable" (r₀ = ``null_ratio``, 1 by
  default: no difference) for the statistic x̄ − r₀ȳ: every one of the C(n_x+n_y, n_x)
  arrangements when there are at most ``max_exact`` of them, otherwise ``permutations``
  seeded random ones (p = (1 + #{T* ≥ T})/(R + 1)). The smallest p the design can reach is
  reported, with a plain statement when it exceeds ``alpha`` (3 vs 3 seeds: 0.1 two-sided).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from reprstore.analysis.results import (
    closest,
    natural_groups,
    natural_sorted,
    read_results,
    replicate_columns,
    replicates,
    resolve_keys,
    value_of,
)
from reprstore.analysis.summary import check_level, t_quantile
from reprstore.errors import InputError, NotFoundError

ALTERNATIVES = ("two-sided", "less", "greater")
MAX_EXACT = 100_000
CONTRAST_COLUMNS = [
    "value", "key", "x", "y", "n_x", "n_y", "mean_x", "mean_y", "sd_x", "sd_y",
    "diff", "diff_lo", "diff_hi", "ratio", "ratio_lo", "ratio_hi", "reduction",
    "p", "p_holm", "p_min", "test", "alternative", "null_ratio", "level",
]  # fmt: skip


@dataclass(frozen=True)
class ContrastSpec:
    """``KEY=X:Y``: compare the rows whose KEY is X with those whose KEY is Y."""

    key: str
    x: str
    y: str

    @classmethod
    def parse(cls, text: str) -> ContrastSpec:
        key, sep, rest = (text or "").partition("=")
        parts = rest.split(":")
        if not sep or len(parts) != 2 or not key.strip() or not all(p.strip() for p in parts):
            raise InputError(
                f"Cannot read the contrast {text!r}: expected KEY=X:Y, e.g. 'model=lora:full'."
            )
        x, y = (p.strip() for p in parts)
        if x == y:
            raise InputError(f"The contrast {text!r} compares {x!r} with itself.")
        return cls(key.strip(), x, y)


@dataclass(frozen=True)
class PermutationResult:
    """A permutation test's p-value and what the design allows.

    Attributes
    ----------
    p : float
    p_min : float
        The smallest p-value this design (sizes, ties, alternative) can give.
    arrangements : int
        C(n_x + n_y, n_x).
    exact : bool
        Whether all arrangements were enumerated.
    resamples : int
        Arrangements evaluated.
    """

    p: float
    p_min: float
    arrangements: int
    exact: bool
    resamples: int

    def describe(self, seed: int) -> str:
        if self.exact:
            return f"exact: all {self.arrangements:,} arrangements"
        return f"sampled: {self.resamples:,} of {self.arrangements:,} arrangements, seed {seed}"


def _statistics(
    pooled: npt.NDArray[np.float64], firsts: npt.NDArray[np.intp], n_x: int
) -> npt.NDArray[np.float64]:
    """x̄ − ȳ for each row of ``firsts`` (indices of the X part of ``pooled``)."""
    # numpy's stubs type a sum as Any
    total: np.float64 = pooled.sum()
    sums: npt.NDArray[np.float64] = pooled[firsts].sum(axis=1)
    n_y = pooled.size - n_x
    return sums / n_x - (total - sums) / n_y


def _extreme(
    stats: npt.NDArray[np.float64], observed: float, alternative: str, tol: float
) -> npt.NDArray[np.bool_]:
    if alternative == "greater":
        return stats >= observed - tol
    if alternative == "less":
        return stats <= observed + tol
    return np.abs(stats) >= abs(observed) - tol


def permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    alternative: str = "two-sided",
    null_ratio: float = 1.0,
    max_exact: int = MAX_EXACT,
    permutations: int = 9999,
    seed: int = 0,
) -> PermutationResult:
    """Two-sample permutation test of x̄ − r₀ȳ (r₀ = ``null_ratio``).

    Parameters
    ----------
    x, y : ndarray, shape (n_x,), (n_y,)
        Replicate values of the two groups.
    alternative : {"two-sided", "less", "greater"}
        ``less``: H₁ x̄ < r₀ȳ.
    null_ratio : float
        r₀; Y's values are scaled by it before pooling.
    max_exact : int
        Enumerate every arrangement up to this many.
    permutations, seed : int
        Random arrangements (seeded) beyond ``max_exact``.
    """
    pooled = np.concatenate([x, null_ratio * y]).astype(np.float64)
    n_x, n = x.size, x.size + y.size
    observed = float(x.mean() - null_ratio * y.mean())
    tol = 1e-10 * max(1.0, float(np.abs(pooled).max()))
    count = math.comb(n, n_x)
    if count <= max_exact:
        firsts = np.array(list(itertools.combinations(range(n), n_x)), dtype=np.intp)
        stats = _statistics(pooled, firsts, n_x)
        hits = int(_extreme(stats, observed, alternative, tol).sum())
        target = {"greater": stats.max(), "less": stats.min()}.get(alternative, np.abs(stats).max())
        best = int(_extreme(stats, float(target), alternative, tol).sum())
        return PermutationResult(hits / count, best / count, count, True, count)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, permutations, 4096):
        size = min(4096, permutations - start)
        firsts = np.argsort(rng.random((size, n)), axis=1)[:, :n_x]
        hits += int(_extreme(_statistics(pooled, firsts, n_x), observed, alternative, tol).sum())
    return PermutationResult(
        (hits + 1) / (permutations + 1), 1 / (permutations + 1), count, False, permutations
    )


def welch_interval(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float, float]:
    """x̄ − ȳ and its Welch t-interval (Welch–Satterthwaite degrees of freedom)."""
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return diff, diff, diff
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return diff, diff - half, diff + half


def fieller_interval(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float, float]:
    """x̄ / ȳ and Fieller's interval for independent means.

    The set of ρ with (x̄ − ρȳ)² ≤ t²(v_x + ρ²v_y), v = s²/n, t at the Welch degrees of
    freedom of x̄ − ρ̂ȳ. Unbounded (−inf, inf) when ȳ² ≤ t²v_y: ȳ is not clearly away
    from 0.
    """
    mx, my = float(x.mean()), float(y.mean())
    if my == 0.0:
        return math.nan, -math.inf, math.inf
    ratio = mx / my
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    spread = vx**2 / (x.size - 1) + ratio**4 * vy**2 / (y.size - 1)
    if spread == 0.0:
        return ratio, ratio, ratio
    df = (vx + ratio**2 * vy) ** 2 / spread
    t2 = t_quantile(0.5 + level / 2.0, df) ** 2
    a, b, c = my**2 - t2 * vy, mx * my, mx**2 - t2 * vx
    if a <= 0.0:
        return ratio, -math.inf, math.inf
    root = math.sqrt(max(b * b - a * c, 0.0))
    return ratio, (b - root) / a, (b + root) / a


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error over the groups)."""
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def seeds_needed(alpha: float, alternative: str) -> int | None:
    """Fewest seeds per side (equal sides, no ties) whose smallest p reaches ``alpha``."""
    extremes = 1 if alternative != "two-sided" else 2
    for n in range(2, 40):
        if extremes / math.comb(2 * n, n) <= alpha:
            return n
    return None


def _resolve_contrast(df: pd.DataFrame, spec: ContrastSpec) -> str:
    """The column in which both X and Y occur (``model`` → ``b_model`` in a base-vs-B table)."""
    names = [spec.key] if spec.key in df.columns else [f"a_{spec.key}", f"b_{spec.key}"]
    present = [c for c in names if c in df.columns]
    if not present:
        resolve_keys(df, spec.key, "--contrast")  # raises with the closest column names
    holding = [c for c in present if {spec.x, spec.y} <= set(df[c].astype(str))]
    if len(holding) == 2 and not (df[holding[0]].astype(str) == df[holding[1]].astype(str)).all():
        raise InputError(
            f"--contrast {spec.key!r} is ambiguous: both a_{spec.key} and b_{spec.key} hold "
            f"{spec.x!r} and {spec.y!r}. Name one, e.g. 'b_{spec.key}={spec.x}:{spec.y}'."
        )
    if holding:
        return holding[-1]
    values = natural_sorted([str(v) for c in present for v in df[c].astype(str)])
    missing = next(v for v in (spec.x, spec.y) if v not in values)
    raise NotFoundError(
        f"--contrast: no rows with {spec.key}={missing!r}{closest(missing, values)}; "
        f"values of {'/'.join(present)}: {', '.join(values)}."
    )


def contrast(
    results: pd.DataFrame | str | os.PathLike[str],
    spec: str | ContrastSpec,
    by: str | Sequence[str] | None = None,
    *,
    over: str | Sequence[str] = "seed",
    measure: str = "cka",
    value: str | None = None,
    drift: bool = False,
    level: float = 0.95,
    alternative: str = "two-sided",
    null_ratio: float = 1.0,
    alpha: float = 0.05,
    permutations: int = 9999,
    max_exact: int = MAX_EXACT,
    seed: int = 0,
) -> pd.DataFrame:
    """Contrast two groups of comparisons (``KEY=X:Y``) across seeds, per ``by`` group.

    Parameters
    ----------
    results : DataFrame or path
        A result table.
    spec : str or ContrastSpec
        ``"model=lora:full"``: X = rows whose model is ``lora``, Y = ``full`` (``model``
        resolves to the ``a_``/``b_`` column that holds both).
    by, over, measure, value, drift, level
        As in :func:`reprstore.analysis.summary.summarize`.
    alternative : {"two-sided", "less", "greater"}
        ``less``: H₁ x̄ < r₀ȳ (X drifts less).
    null_ratio : float
        r₀ of H₀ "X and r₀·Y are exchangeable" (0.8 tests a 20 % reduction target).
    alpha : float
        The significance level whose reachability is stated.
    permutations, max_exact, seed : int
        Sampled arrangements when there are more than ``max_exact``.

    Returns
    -------
    DataFrame
        One row per group: the ``by`` columns, then :data:`CONTRAST_COLUMNS`;
        ``attrs["notes"]`` holds the plain statements (design too small for ``alpha``,
        unbounded ratio intervals, averaged rows).
    """
    level, alpha = check_level(level), _check_alpha(alpha)
    if alternative not in ALTERNATIVES:
        raise InputError(f"--alternative must be one of {', '.join(ALTERNATIVES)}. "
                         f"Got {alternative!r} instead.")  # fmt: skip
    if not (math.isfinite(null_ratio) and null_ratio > 0):
        raise InputError(f"--null-ratio must be a positive number. Got {null_ratio!r} instead.")
    if permutations < 1:
        raise InputError(f"--permutations must be at least 1. Got {permutations} instead.")
    df = read_results(results)
    spec = ContrastSpec.parse(spec) if isinstance(spec, str) else spec
    what = value_of(measure, value, drift)
    column = _resolve_contrast(df, spec)
    keys = resolve_keys(df, by, "--by")
    if column in keys:
        raise InputError(f"{column!r} is both the contrast key and a --by key.")
    df = df[df[column].astype(str).isin([spec.x, spec.y])]
    reps, notes = replicates(df, [*keys, column], replicate_columns(df, over), what)
    rows = []
    for group, part in natural_groups(reps, keys):
        xs = part.loc[part[column] == spec.x, "value"].to_numpy(dtype=np.float64)
        ys = part.loc[part[column] == spec.y, "value"].to_numpy(dtype=np.float64)
        _check_sizes(keys, group, spec, xs.size, ys.size)
        test = permutation_test(
            xs, ys, alternative=alternative, null_ratio=null_ratio, max_exact=max_exact,
            permutations=permutations, seed=seed,
        )  # fmt: skip
        diff, dlo, dhi = welch_interval(xs, ys, level)
        ratio, rlo, rhi = fieller_interval(xs, ys, level)
        rows.append([
            *group, what.label, column, spec.x, spec.y, xs.size, ys.size, xs.mean(), ys.mean(),
            xs.std(ddof=1), ys.std(ddof=1), diff, dlo, dhi, ratio, rlo, rhi, 1.0 - ratio,
            test.p, test.p, test.p_min, test.describe(seed), alternative, null_ratio, level,
        ])  # fmt: skip
    out = pd.DataFrame(rows, columns=[*keys, *CONTRAST_COLUMNS])
    out["p_holm"] = holm(out["p"].to_numpy(dtype=np.float64))
    out.attrs["notes"] = notes + _statements(out, alpha, alternative)
    return out


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise InputError(f"--alpha must lie strictly between 0 and 1. Got {alpha!r} instead.")
    return float(alpha)


def _check_sizes(
    keys: list[str], group: tuple[str, ...], spec: ContrastSpec, nx: int, ny: int
) -> None:
    if nx >= 2 and ny >= 2:
        return
    where = ", ".join(f"{k}={v}" for k, v in zip(keys, group, strict=True))
    raise InputError(
        f"Too few seeds for the contrast {spec.x} vs {spec.y}"
        + (f" at {where}" if where else "")
        + f": {spec.x} has {nx}, {spec.y} has {ny} replicate(s); each side needs at least 2 "
        "(3 or more to reach p < 0.1)."
    )


def _statements(out: pd.DataFrame, alpha: float, alternative: str) -> list[str]:
    notes = []
    for (nx, ny, p_min, test), part in out.groupby(
        ["n_x", "n_y", "p_min", "test"], sort=False, observed=True
    ):
        if float(p_min) <= alpha:  # type: ignore[arg-type]
            continue
        need = seeds_needed(alpha, alternative)
        more = f"; {need} vs {need} seeds can" if need else ""
        notes.append(
            f"with {nx} vs {ny} seeds the smallest attainable {alternative} p is {p_min:.3g} "
            f"({test}): this design cannot reach p ≤ {alpha:g} in {len(part)} group(s){more}"
        )
    if np.isinf(out["ratio_hi"]).any():
        notes.append(
            "the ratio's interval is unbounded where the Y mean is not clearly away from 0 "
            f"({int(np.isinf(out['ratio_hi']).sum())} group(s))"
        )
    return notes
