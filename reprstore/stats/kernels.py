"""Kernel matrices of small row blocks and the RBF bandwidth.

Only for blocks small enough to hold an n × n matrix: minibatches, and the exact RBF
estimators on small datasets. The linear exact estimators never build a kernel matrix
(see :mod:`reprstore.stats.linear`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KERNELS = ("linear", "rbf")


def sq_distances(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``x``.

    Parameters
    ----------
    x : ndarray, shape (n, p)
        Rows, float64. Shift them close to their mean first for accuracy.

    Returns
    -------
    ndarray, shape (n, n)
        ``d[i, j] = ‖xᵢ − xⱼ‖²``, clipped at zero, with an exact zero diagonal.
    """
    return sq_distances_from_gram(x @ x.T)


def sq_distances_from_gram(g: np.ndarray) -> np.ndarray:
    """Squared distances ``‖xᵢ‖² + ‖xⱼ‖² − 2gᵢⱼ`` from the Gram matrix ``g`` (n, n) of
    the rows, in place: clipped at zero, with an exact zero diagonal."""
    norms = np.diagonal(g).copy()
    g *= -2.0
    g += norms[:, None]
    g += norms[None, :]
    np.maximum(g, 0.0, out=g)
    np.fill_diagonal(g, 0.0)
    return g


def median_sq_distance(x: np.ndarray) -> tuple[float, float]:
    """Median of all n² squared pairwise distances of the rows of ``x`` (diagonal included).

    Parameters
    ----------
    x : ndarray, shape (n, p)

    Returns
    -------
    (median, scale)
        ``scale`` is the mean squared norm of the raw rows, to judge a zero median.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = float(np.vdot(x, x)) / max(x.shape[0], 1)
    c = x - x.mean(axis=0)
    del x
    return median_of_upper(upper_distances(c), c.shape[0]), scale


#: Bytes of the Gram rows :func:`upper_distances` makes at once.
GRAM_BLOCK_BYTES = 8 * 1024**2


def upper_distances(c: np.ndarray) -> np.ndarray:
    """The n(n−1)/2 squared distances above the diagonal between the rows of ``c`` (n, p,
    float64, shifted near their mean), row by row: ‖cᵢ‖² + ‖cⱼ‖² − 2cᵢ·cⱼ clipped at zero,
    from blocks of Gram rows of :data:`GRAM_BLOCK_BYTES` (never the n × n matrix: the
    distances' 4n² bytes and one block are all it holds)."""
    n = c.shape[0]
    out = np.empty(n * (n - 1) // 2)
    norms = np.einsum("ij,ij->i", c, c)
    step = max(1, GRAM_BLOCK_BYTES // (8 * max(n, 1)))
    at = 0
    for lo in range(0, n - 1, step):
        hi = min(n - 1, lo + step)
        g = c[lo:hi] @ c[lo:].T  # rows lo..hi against rows lo..n
        for r in range(lo, hi):
            row = out[at : at + n - 1 - r]
            np.multiply(g[r - lo, r - lo + 1 :], -2.0, out=row)
            row += norms[r]
            row += norms[r + 1 :]
            np.maximum(row, 0.0, out=row)
            at += n - 1 - r
        del g  # before the next block is made
    return out


def upper_triangle(d: np.ndarray) -> np.ndarray:
    """The n(n−1)/2 entries of ``d`` (n, n) above the diagonal, row by row (a copy)."""
    n = d.shape[0]
    if n < 2:
        return np.zeros(0)
    return np.concatenate([d[i, i + 1 :] for i in range(n - 1)])


def symmetric_median(d: np.ndarray) -> float:
    """The median of all n² entries of a symmetric ``d`` (n, n) with a zero diagonal and no
    negative entry, from its n(n−1)/2 entries above the diagonal (where rounding left
    ``d`` not exactly symmetric, the upper half counts for both).

    Sorted, the n² entries are the n zeros of the diagonal, then every entry above the
    diagonal twice: the order statistics of the whole come from those of one half.
    """
    return median_of_upper(upper_triangle(d), d.shape[0])


def median_of_upper(upper: np.ndarray, n: int) -> float:
    """:func:`symmetric_median` from the entries above the diagonal (``upper``, reordered
    in place by the selection)."""
    if n < 2:
        return 0.0
    total = n * n
    middle = [(total - 1) // 2, total // 2]  # equal for odd n²
    at = [(t - n) // 2 for t in middle if t >= n]
    if at:
        upper.partition(at)
    values = [0.0 if t < n else float(upper[(t - n) // 2]) for t in middle]
    return (values[0] + values[1]) / 2.0


def bandwidth(x: np.ndarray, sigma: float, method: str) -> Bandwidth:
    """The :class:`Bandwidth` of rows ``x`` (m, p): exact if ``x`` is every row compared."""
    median, scale = median_sq_distance(x)
    return Bandwidth(sigma=sigma, median=median, method=method, scale=scale)


def rbf_from_sq_distances(d: np.ndarray, sigma2: float) -> np.ndarray:
    """Gaussian kernel exp(−d / (2σ²)) from squared distances ``d`` (n, n), in place."""
    d *= -1.0 / (2.0 * sigma2)
    np.exp(d, out=d)
    return d


def rbf_minus_one(d: np.ndarray, sigma2: float) -> np.ndarray:
    """K − 1 = expm1(−d / (2σ²)) from squared distances ``d`` (n, n), in place.

    For a wide bandwidth K is nearly all ones; K − 1 keeps every digit of what differs
    (HSIC is unchanged by the constant: see :func:`reprstore.stats.hsic.double_centre`).
    """
    d *= -1.0 / (2.0 * sigma2)
    np.expm1(d, out=d)
    return d


@dataclass(frozen=True)
class Bandwidth:
    """The RBF bandwidth used for one representation.

    Attributes
    ----------
    sigma : float
        The user's multiplier (``--sigma``).
    median : float
        Median squared pairwise distance (exact or estimated).
    method : str
        How ``median`` was obtained, for the result (e.g. ``"exact median of 500² ..."``).
    scale : float
        Mean squared norm of the rows the median came from (a zero median is judged
        against it).
    """

    sigma: float
    median: float
    method: str
    scale: float = 1.0

    @property
    def sigma2(self) -> float:
        """σ² = sigma² × median squared distance."""
        return self.sigma**2 * self.median
