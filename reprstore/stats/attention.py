"""Streamed attention entropy: per head, the sum over samples of each sample's mean
entropy over its real queries.

Rows are attention maps stored per head, ``(n, H·T·T)`` in the order (head, query, key)
(reduction ``attention`` of :mod:`reprstore.capture.reduce`). Padded tokens are zeros:
query ``q`` of a sample is real iff its rows (over the heads) are not all zero, and key
``k`` is real iff query ``k`` is. For each sample and head,

    e = mean over real q of ( −Σ over real k of p log p ),   0 · log 0 = 0 (natural log),

and the state keeps Σ e over samples, per head (float64), so that every sample counts once
whatever its length. init / update / merge like :mod:`reprstore.stats.counts`.

A block is worked through in slabs of at most :data:`SLAB_BYTES` of float64 values
(about 2.3 slabs of temporaries at once), never as one (n, H, T, T) float64 array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: float64 bytes of the rows one step works on (its temporaries are about 2.3 times this).
SLAB_BYTES = 8 * 1024**2


@dataclass
class EntropySums:
    """What the rows seen so far give, for maps of ``heads`` heads.

    Attributes
    ----------
    heads_sum : ndarray (H,)
        Σ over samples of the sample's mean entropy over its real queries, per head.
    samples : int
        Samples with at least one real query (each counted once).
    empty : int
        Samples whose map is all zero (no real query).
    negative : int
        Entries below zero (not probabilities).
    nonfinite : int
        Samples holding NaN/±Inf.
    """

    heads_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    samples: int = 0
    empty: int = 0
    negative: int = 0
    nonfinite: int = 0


def map_shape(width: int, heads: int) -> tuple[int, int]:
    """``(heads, T)`` of rows ``width = heads·T·T`` wide; ``ValueError`` if none fits."""
    if heads < 1 or width % heads:
        raise ValueError(f"{width} columns do not split into {heads} heads")
    t = math.isqrt(width // heads)
    if t * t * heads != width:
        raise ValueError(f"{width} columns are not {heads} square maps")
    return heads, t


def slab_rows(width: int) -> int:
    """Rows per slab: at most :data:`SLAB_BYTES` of float64 values (at least one row)."""
    return max(1, SLAB_BYTES // (8 * max(width, 1)))


def block_entropy(block: np.ndarray, heads: int) -> EntropySums:
    """What rows ``block`` ``(r, H·T·T)`` contribute (see the module docstring)."""
    x = np.asarray(block)
    h, t = map_shape(x.shape[1], heads)
    out = EntropySums(heads_sum=np.zeros(h))
    step = slab_rows(x.shape[1])
    for lo in range(0, x.shape[0], step):
        _add_slab(out, x[lo : lo + step], h, t)
    return out


def _add_slab(out: EntropySums, rows: np.ndarray, h: int, t: int) -> None:
    p = np.asarray(rows, dtype=np.float64).reshape(-1, h, t, t)
    finite = np.isfinite(p).reshape(p.shape[0], -1).all(axis=1)
    if not finite.all():
        out.nonfinite += int((~finite).sum())
        p = p[finite]
    out.negative += int((p < 0).sum())
    real = (p != 0).any(axis=(1, 3))  # (s, T): a query row that is not all zero
    plogp = np.zeros_like(p)
    np.log(p, out=plogp, where=p > 0)
    plogp *= p  # p log p; 0 where p == 0
    plogp *= real[:, None, None, :]  # real keys only
    entropy = -plogp.sum(axis=3)  # (s, H, T)
    del plogp
    queries = real.sum(axis=1)  # (s,)
    has = queries > 0
    out.empty += int((~has).sum())
    per_sample = (entropy * real[:, None, :]).sum(axis=2)[has] / queries[has, None]  # (s', H)
    out.heads_sum = out.heads_sum + per_sample.sum(axis=0)
    out.samples += int(has.sum())


def merge_entropy(a: EntropySums, b: EntropySums) -> EntropySums:
    return EntropySums(
        heads_sum=b.heads_sum
        if not a.heads_sum.size
        else a.heads_sum
        if not b.heads_sum.size
        else a.heads_sum + b.heads_sum,
        samples=a.samples + b.samples,
        empty=a.empty + b.empty,
        negative=a.negative + b.negative,
        nonfinite=a.nonfinite + b.nonfinite,
    )
