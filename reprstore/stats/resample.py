"""Sample-level resampling for any measure written on sums over rows: pure numpy.

Every exact estimator reprstore computes is a function of sums over rows (n, Σx, XᵀX,
XᵀY, row-norm sums …). Rows are therefore hashed into G *groups* by (seed, sample id);
one pass accumulates one state of sums per group, and a replicate is a weighted
combination of the group states. With 0/1 weights a replicate is exactly the estimator
on a subset of the rows, for any measure, without a second pass.

Everything here is a pure function of its arguments, so a replicate is identical for any
chunking, any number of workers and any rerun:

* :func:`group_ids`: the group of each row from (seed, sample id) alone;
* :func:`half_sample_weights` / :func:`poisson_weights`: weights keyed by
  (seed, replicate, group), from a counter-based hash (no random stream whose state
  depends on the order in which things are drawn);
* :func:`stack_states`, :func:`combine`, :func:`replicate_values`: combine group states
  (mappings of numpy arrays that add) for many replicates at once;
* :func:`percentile_interval`, :func:`t_interval`, :func:`half_sample_se`,
  :func:`jackknife_se`, :func:`permutation_p`: the interval and p-value math.

Why half-samples (see docs/uncertainty.md): a bootstrap sample repeats rows, and the
unbiased (debiased) HSIC counts a row paired with its own copy as two distinct samples,
which biases every replicate upwards by about p/n; a half-sample (each group kept with
probability ½) repeats nothing, so each replicate is the unbiased estimator on real rows,
and its spread equals the full sample's to first order (the halved size is offset by
the finite-population factor 1 − ½).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

#: Domain tags keep the hashes of groups, weights and permutations independent.
_TAG_GROUP = 0x67726F7570  # "group"
_TAG_HALF = 0x68616C66  # "half"
_TAG_POISSON = 0x706F6973  # "pois"
_TAG_PERMUTE = 0x7065726D  # "perm"

State = Mapping[Hashable, Any]


# ---------------------------------------------------------------- counter-based hashing


def splitmix64(x: Any) -> np.ndarray:
    """The splitmix64 finalizer (Steele et al. 2014), element-wise on uint64."""
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def _key(*parts: int) -> np.uint64:
    """One uint64 from a few integers (seed, tag, replicate …), order-sensitive."""
    h = 0
    for p in parts:
        h = int(splitmix64(np.uint64(h ^ (int(p) & 0xFFFFFFFFFFFFFFFF))))
    return np.uint64(h)


def id_hashes(ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """A uint64 hash of each sample id (integers as themselves, others by their text).

    Parameters
    ----------
    ids : array-like, shape (n,)
        Sample ids: integers, or strings (any other value is hashed by ``str``).

    Returns
    -------
    ndarray of uint64, shape (n,)
    """
    arr = np.asarray(ids)
    if arr.dtype.kind in "iub":
        return splitmix64(arr.astype(np.int64).view(np.uint64))
    out = np.empty(arr.shape[0], dtype=np.uint64)
    for k, v in enumerate(arr.tolist()):
        digest = hashlib.blake2b(str(v).encode(), digest_size=8).digest()
        out[k] = np.frombuffer(digest, dtype="<u8")[0]
    return out


def group_ids(ids: Sequence[Any] | np.ndarray, seed: int, groups: int) -> np.ndarray:
    """The group (0 … groups − 1) of each row, a function of (seed, sample id) only.

    Parameters
    ----------
    ids : array-like, shape (n,)
        The rows' sample ids.
    seed : int
    groups : int
        G ≥ 2.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    if groups < 2:
        raise ValueError(f"groups must be at least 2, got {groups}")
    h = splitmix64(id_hashes(ids) ^ _key(seed, _TAG_GROUP))
    return (h % np.uint64(groups)).astype(np.int64)


def _grid_hash(tag: int, seed: int, replicates: int, groups: int) -> np.ndarray:
    """uint64 hash of every (replicate, group), shape (replicates, groups)."""
    r = np.arange(replicates, dtype=np.uint64)[:, None]
    g = np.arange(groups, dtype=np.uint64)[None, :]
    row = splitmix64(r ^ _key(seed, tag))
    return splitmix64(row ^ splitmix64(g))


def half_sample_weights(seed: int, replicates: int, groups: int) -> np.ndarray:
    """0/1 weights: each replicate keeps each group with probability ½.

    Weight (r, g) depends on (seed, r, g) only. Returns float64 (replicates, groups).
    """
    h = _grid_hash(_TAG_HALF, seed, replicates, groups)
    return (h >> np.uint64(63)).astype(np.float64)


#: Poisson(1) cumulative probabilities, P(W ≤ k) for k = 0 … 19 (the rest is < 1e-18).
_POISSON1_CDF = np.cumsum(
    [np.exp(-1.0) / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(20)]
)


def poisson_weights(seed: int, replicates: int, groups: int) -> np.ndarray:
    """Poisson(1) weights of the Poisson bootstrap, weight (r, g) from (seed, r, g) only.

    Returns float64 (replicates, groups). Right for measures whose estimator on repeated
    rows is the estimator wanted (means over batches; V-statistics), not for U-statistics.
    """
    h = _grid_hash(_TAG_POISSON, seed, replicates, groups)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64)


def permutations(seed: int, replicates: int, stream: int, n: int, start: int = 0) -> np.ndarray:
    """Permutations ``start`` … ``start + replicates − 1`` of n items for ``stream``.

    Permutation r is the order of n counter-based hashes of (seed, stream, r, position):
    a function of those numbers only (``stream`` tells batches apart). int64 (replicates, n).
    """
    base = _key(seed, _TAG_PERMUTE, stream)
    keys = splitmix64(np.arange(start, start + replicates, dtype=np.uint64) ^ base)
    h = splitmix64(np.arange(n, dtype=np.uint64)[None, :] ^ keys[:, None])
    return np.argsort(h, axis=1, kind="stable").astype(np.int64)


#: Bytes that drawing a step of permutations may hold (:func:`permutation_step`).
DRAW_BYTES = 2**25
#: Arrays of the step's size alive at once while :func:`permutations` draws it (the
#: hashes and their temporaries, the sort's order, the int64 result).
DRAW_COPIES = 6


def permutation_step(n: int, budget: int = DRAW_BYTES) -> int:
    """Permutations of n items to draw at once: drawing them holds at most ``budget``
    bytes (:data:`DRAW_BYTES` by default; one at a time when n alone exceeds it)."""
    return max(1, min(budget, DRAW_BYTES) // (DRAW_COPIES * 8 * max(n, 1)))


def permutation(seed: int, replicate: int, stream: int, n: int) -> np.ndarray:
    """Permutation ``replicate`` of :func:`permutations`: int64 (n,)."""
    out: np.ndarray = permutations(seed, 1, stream, n, start=replicate)[0]
    return out


# ------------------------------------------------------------------ combining group sums


def stack_states(
    states: Sequence[State | None], like: State | None = None
) -> dict[Hashable, np.ndarray]:
    """Stack G group states (mappings of arrays/numbers that add) along a new axis 0.

    A ``None`` state (an empty group) counts as zeros of the shapes of the others.

    Returns
    -------
    dict of key to ndarray (G, ...)
    """
    ref = like if like is not None else next((s for s in states if s is not None), None)
    if ref is None:
        raise ValueError("every group is empty")
    out: dict[Hashable, np.ndarray] = {}
    for key, value in ref.items():
        first = np.asarray(value, dtype=np.float64)
        stacked = np.zeros((len(states), *first.shape))
        for g, s in enumerate(states):
            if s is not None:
                stacked[g] = np.asarray(s[key], dtype=np.float64)
        out[key] = stacked
    return out


def combine(
    weights: np.ndarray, stacked: Mapping[Hashable, np.ndarray]
) -> dict[Hashable, np.ndarray]:
    """Σ_g w_g · state_g for weights (G,), or one combination per row of weights (R, G)."""
    w = np.asarray(weights, dtype=np.float64)
    return {k: np.tensordot(w, v, axes=([w.ndim - 1], [0])) for k, v in stacked.items()}


def replicate_values(
    weights: np.ndarray,
    stacked: Mapping[Hashable, np.ndarray],
    statistic: Callable[[dict[Hashable, np.ndarray]], np.ndarray],
    max_bytes: int = 256 * 1024**2,
) -> np.ndarray:
    """The statistic of each replicate's combined state.

    Parameters
    ----------
    weights : ndarray (R, G)
    stacked : output of :func:`stack_states`
    statistic : callable(dict of key to ndarray) -> ndarray (m,)
        Called once per replicate with that replicate's combined sums.
    max_bytes : replicates are combined in chunks whose sums take about this much.

    Returns
    -------
    ndarray (R, m)
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    per = 8 * sum(int(np.prod(v.shape[1:])) for v in stacked.values())
    chunk = max(1, max_bytes // max(per, 1))
    rows: list[np.ndarray] = []
    for start in range(0, w.shape[0], chunk):
        part = combine(w[start : start + chunk], stacked)
        for r in range(part[next(iter(part))].shape[0]):
            rows.append(np.atleast_1d(statistic({k: v[r] for k, v in part.items()})))
    return np.asarray(rows, dtype=np.float64)


def jackknife_values(
    stacked: Mapping[Hashable, np.ndarray],
    statistic: Callable[[dict[Hashable, np.ndarray]], np.ndarray],
    groups: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """The statistic with each group left out in turn (total − state_g): (len(groups), m).

    ``groups`` defaults to every group; leave out the empty ones (they would add replicates
    equal to the full estimate and shrink the standard error).
    """
    total = {k: v.sum(axis=0) for k, v in stacked.items()}
    keep = range(next(iter(stacked.values())).shape[0]) if groups is None else groups
    rows = [
        np.atleast_1d(statistic({k: total[k] - v[g] for k, v in stacked.items()})) for g in keep
    ]
    return np.asarray(rows, dtype=np.float64)


# -------------------------------------------------------------- intervals and p-values


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"the confidence level must lie in (0, 1), got {level}")


def half_sample_se(values: np.ndarray) -> np.ndarray:
    """Standard error from half-sample replicates (R, ...): their standard deviation.

    A half-sample replicate's spread around the full estimate equals the full estimate's
    sampling spread to first order (random half-sampling, McCarthy 1969; the delete-d
    jackknife with d = G/2, Shao & Wu 1989, whose factor (G − d)/d is then 1).
    """
    se: np.ndarray = np.std(values, axis=0, ddof=1)
    return se


def jackknife_se(values: np.ndarray) -> np.ndarray:
    """Delete-one-group jackknife standard error from the G leave-one-out values (G, ...)."""
    g = values.shape[0]
    centred = values - values.mean(axis=0)
    se: np.ndarray = np.sqrt((g - 1) / g * np.sum(centred**2, axis=0))
    return se


def jackknife_corrected(estimate: float, values: np.ndarray) -> np.ndarray:
    """The delete-group jackknife's bias-corrected estimate G·θ̂ − (G − 1)·mean(θ̂₍₋g₎)
    (Quenouille 1956): it removes the O(1/n) bias of a plug-in such as an in-sample R²."""
    g = values.shape[0]
    out: np.ndarray = g * np.asarray(estimate, dtype=np.float64) - (g - 1) * values.mean(axis=0)
    return out


def t_interval(
    estimate: np.ndarray | float, se: np.ndarray | float, level: float, df: int
) -> tuple[np.ndarray, np.ndarray]:
    """estimate ± t_{df, (1 + level)/2} · se."""
    from scipy.stats import t

    _check_level(level)
    q = float(t.ppf(0.5 + level / 2.0, df))
    est, s = np.asarray(estimate, dtype=np.float64), np.asarray(se, dtype=np.float64)
    return est - q * s, est + q * s


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The (1 − level)/2 and (1 + level)/2 quantiles of replicates (R, ...) along axis 0."""
    _check_level(level)
    lo, hi = np.quantile(values, [0.5 - level / 2.0, 0.5 + level / 2.0], axis=0)
    return lo, hi


def permutation_p(observed: np.ndarray | float, null: np.ndarray) -> np.ndarray:
    """p = (1 + #{T_π ≥ T}) / (R + 1) for null values (R, ...) of the statistic T.

    The resolution (smallest attainable p) is 1 / (R + 1).
    """
    null = np.asarray(null, dtype=np.float64)
    count = np.sum(null >= np.asarray(observed, dtype=np.float64), axis=0)
    p: np.ndarray = (1.0 + count) / (null.shape[0] + 1.0)
    return p
