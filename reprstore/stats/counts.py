"""Streamed counts over stored values: entries near zero and per-class sums.

For ``sparsity`` (entries with |x| ≤ tol) and ``selectivity`` (class means of every
unit); float64 sums, init / update / merge like :mod:`reprstore.stats.linear`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Counts:
    """Sums over the rows of one representation (n × p).

    Attributes
    ----------
    entries : int
        Values seen (rows × p).
    small : dict of float to int
        Per tolerance, the number of values with |x| ≤ tol.
    class_sums : ndarray (C, p) and class_counts : ndarray (C,)
        Per class code (0 … C−1), Σ of its rows and their number.
    nonfinite : int
        Rows holding NaN/±Inf.
    """

    entries: int = 0
    small: dict[float, int] = field(default_factory=dict)
    class_sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nonfinite: int = 0


def block_counts(
    block: np.ndarray, tols: Sequence[float], codes: np.ndarray | None, n_classes: int
) -> Counts:
    """What one block (r, p) contributes; ``codes`` (r,) are class codes, −1 for none."""
    x = np.asarray(block)
    finite = np.isfinite(x).all(axis=1)
    out = Counts(entries=int(x.size), nonfinite=int((~finite).sum()))
    absx = np.abs(x)
    out.small = {t: int((absx <= t).sum()) for t in tols}
    if codes is not None:
        ok = (codes >= 0) & finite
        onehot = np.zeros((n_classes, x.shape[0]))
        onehot[codes[ok], np.flatnonzero(ok)] = 1.0
        out.class_sums = onehot[:, ok] @ np.asarray(x[ok], dtype=np.float64)
        out.class_counts = onehot.sum(axis=1)
    return out


def merge_counts(a: Counts, b: Counts) -> Counts:
    if a.class_sums.size == 0:
        sums, counts = b.class_sums, b.class_counts
    elif b.class_sums.size == 0:
        sums, counts = a.class_sums, a.class_counts
    else:
        sums, counts = a.class_sums + b.class_sums, a.class_counts + b.class_counts
    return Counts(
        entries=a.entries + b.entries,
        small={t: a.small.get(t, 0) + b.small.get(t, 0) for t in a.small.keys() | b.small},
        class_sums=sums,
        class_counts=counts,
        nonfinite=a.nonfinite + b.nonfinite,
    )
