"""In-memory numpy references of linear CKA: feature space (float64/float32) and Gram space.

Feature space uses sufficient statistics that add up over row blocks, so the same code is
the blocked float64 *oracle* the benchmarks measure every method against
(:func:`oracle`) and, applied to whole in-memory arrays, the numpy reference method.
Both estimators of SPEC.md are written in terms of them:

* biased (HSIC₀): ‖X_cᵀY_c‖²_F with X_cᵀY_c = XᵀY − s_x s_yᵀ/n.
* debiased (HSIC₁, Song et al. 2012) with K̃ = XXᵀ − diag(a), a_i = ‖x_i‖²:
  tr(K̃L̃) = ‖XᵀY‖²_F − Σ a_i b_i;  1ᵀK̃1 = ‖s_x‖² − Σ a_i;
  1ᵀK̃L̃1 = s_xᵀ(XᵀY)s_y − s_xᵀ(Σ b_i x_i) − s_yᵀ(Σ a_i y_i) + Σ a_i b_i.
  HSIC₁ is exactly invariant to translating the features, so any shift may be removed
  first (the oracle removes the first block's mean, for accuracy).

The Gram-space reference builds the n × n kernels (Kornblith et al.'s ``gram_linear``,
``center_gram`` and ``cka``, and the unbiased HSIC₁ formula on zeroed diagonals).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Stats = dict[str, Any]


def own_stats(x: np.ndarray) -> Stats:
    """Statistics of one block ``x`` (rows, p) of one representation."""
    a = np.einsum("ij,ij->i", x, x)
    return {"n": x.shape[0], "G": x.T @ x, "s": x.sum(0), "sa": a.sum(), "saa": a @ a, "ax": a @ x}


def cross_stats(x: np.ndarray, y: np.ndarray) -> Stats:
    """Cross statistics of one block of two representations (same rows)."""
    a = np.einsum("ij,ij->i", x, x)
    b = np.einsum("ij,ij->i", y, y)
    return {"G": x.T @ y, "sab": a @ b, "bx": b @ x, "ay": a @ y}


def add(acc: Stats | None, new: Stats) -> Stats:
    if acc is None:
        return {k: np.array(v, dtype=np.float64) for k, v in new.items()}
    for k, v in new.items():
        acc[k] = acc[k] + v
    return acc


def hsic(
    n: int, g: np.ndarray, sx: np.ndarray, sy: np.ndarray, sa: float, sb: float,
    sab: float, bx: np.ndarray, ay: np.ndarray, estimator: str,
) -> float:  # fmt: skip
    """HSIC of two representations from their statistics (up to a factor common to a ratio)."""
    g, sx, sy = (np.asarray(v, dtype=np.float64) for v in (g, sx, sy))
    if estimator == "biased":
        gc = g - np.outer(sx, sy) / n
        return float(np.vdot(gc, gc))
    tr = float(np.vdot(g, g)) - sab
    kx = float(sx @ sx) - sa
    ly = float(sy @ sy) - sb
    kl1 = float(sx @ g @ sy) - float(sx @ bx) - float(sy @ ay) + sab
    return (tr + kx * ly / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def self_hsic(m: Stats, estimator: str) -> float:
    return hsic(
        int(m["n"]), m["G"], m["s"], m["s"], m["sa"], m["sa"], m["saa"], m["ax"], m["ax"],
        estimator,
    )  # fmt: skip


def cka_from_stats(mx: Stats, my: Stats, mxy: Stats, estimator: str) -> float:
    """CKA of two representations from own and cross statistics."""
    n = int(mx["n"])
    hxy = hsic(
        n, mxy["G"], mx["s"], my["s"], mx["sa"], my["sa"], mxy["sab"], mxy["bx"], mxy["ay"],
        estimator,
    )  # fmt: skip
    return hxy / np.sqrt(self_hsic(mx, estimator) * self_hsic(my, estimator))


def feature_matrix(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], estimators: Sequence[str]
) -> dict[str, list[list[float]]]:
    """CKA of every (x, y) in memory, feature space, in the arrays' own dtype.

    The products run in the arrays' dtype (float32 or float64); the final formulas in
    float64. Arrays should be column-centred already (see :func:`centre`).
    """
    own_x = [own_stats(x) for x in xs]
    own_y = [own_stats(y) for y in ys]
    out: dict[str, list[list[float]]] = {e: [] for e in estimators}
    for x, mx in zip(xs, own_x, strict=True):
        rows: dict[str, list[float]] = {e: [] for e in estimators}
        for y, my in zip(ys, own_y, strict=True):
            mxy = cross_stats(x, y)
            for e in estimators:
                rows[e].append(float(cka_from_stats(mx, my, mxy, e)))
        for e in estimators:
            out[e].append(rows[e])
    return out


def centre(x: np.ndarray) -> np.ndarray:
    """Subtract the column means in place (accumulated in float64); returns ``x``."""
    x -= x.mean(axis=0, dtype=np.float64).astype(x.dtype)
    return x


def gram_cka(x: np.ndarray, y: np.ndarray, estimator: str) -> float:
    """CKA from the n × n linear kernels of column-centred float64 ``x`` and ``y``."""
    n = x.shape[0]
    k = x @ x.T
    ell = y @ y.T
    if estimator == "biased":
        for m in (k, ell):  # center_gram (already centred for centred x; kept for fidelity)
            m -= m.mean(axis=0)
            m -= m.mean(axis=1)[:, None]
        hxy, hxx, hyy = np.vdot(k, ell), np.vdot(k, k), np.vdot(ell, ell)
        return float(hxy / np.sqrt(hxx * hyy))
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(ell, 0.0)
    k1, l1 = k.sum(axis=0), ell.sum(axis=0)

    def h(kk: np.ndarray, ll: np.ndarray, a1: np.ndarray, b1: np.ndarray) -> float:
        tr = float(np.vdot(kk, ll))
        return (tr + a1.sum() * b1.sum() / ((n - 1) * (n - 2)) - 2.0 * (a1 @ b1) / (n - 2)) / (
            n * (n - 3)
        )

    return float(h(k, ell, k1, l1) / np.sqrt(h(k, k, k1, k1) * h(ell, ell, l1, l1)))


def oracle(
    xs: Sequence[Any], ys: Sequence[Any], block_rows: int = 32_768
) -> dict[str, list[list[float]]]:
    """Blocked float64 CKA (biased and debiased) of every (x, y) of row-sliceable arrays.

    Reads each array once per block; removes each array's first-block mean as a shift.
    """
    n = int(xs[0].shape[0])
    arrays = [*xs, *ys]
    shifts = [np.asarray(a[: min(n, block_rows)], dtype=np.float64).mean(axis=0) for a in arrays]
    own: list[Stats | None] = [None] * len(arrays)
    cross: dict[tuple[int, int], Stats | None] = {
        (i, len(xs) + j): None for i in range(len(xs)) for j in range(len(ys))
    }
    for start in range(0, n, block_rows):
        blocks = [
            np.asarray(a[start : start + block_rows], dtype=np.float64) - s
            for a, s in zip(arrays, shifts, strict=True)
        ]
        for i, b in enumerate(blocks):
            own[i] = add(own[i], own_stats(b))
        for i, j in cross:
            cross[(i, j)] = add(cross[(i, j)], cross_stats(blocks[i], blocks[j]))
    out: dict[str, list[list[float]]] = {}
    for e in ("biased", "debiased"):
        out[e] = [
            [
                float(cka_from_stats(own[i], own[len(xs) + j], cross[(i, len(xs) + j)], e))  # type: ignore[arg-type]
                for j in range(len(ys))
            ]
            for i in range(len(xs))
        ]
    return out
