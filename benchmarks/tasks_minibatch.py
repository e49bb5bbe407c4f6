"""The float64 oracle of minibatch CKA on the same batches, as a task (see
:mod:`benchmarks.tasks_cka`).

SPEC's minibatch CKA written out in numpy float64: k = max(1, ⌊N/B⌋) consecutive batches
of ⌊N/k⌋ or ⌈N/k⌉ rows (larger first), each batch's kernels with zeroed diagonal, the
unbiased HSIC of Song et al. (2012) of every (x, y) and of each side with itself, summed
over batches. For ``kernel="rbf"``, σ² = 0.25 × the median of all squared distances
among the rows SPEC says (all rows up to 4,096; above, 2,048 rows drawn with
``default_rng(0).choice(arange(N), 2048, replace=False)``, the sample reprstore states in its
result), then k = exp(−d/2σ²). The timing is that of a numpy script that forms every
array's batch kernels once per batch and holds all arrays in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.tasks_cka import Run, _nbytes, _open

EXACT_ROWS, SAMPLE_ROWS, SAMPLE_SEED, SIGMA = 4096, 2048, 0, 0.5


def _sq_dist(x: np.ndarray) -> np.ndarray:
    n2 = (x * x).sum(axis=1)
    return np.maximum(n2[:, None] + n2[None, :] - 2.0 * (x @ x.T), 0.0)


def _sigma2(x: np.ndarray) -> float:
    n = x.shape[0]
    rows = np.arange(n)
    if n > EXACT_ROWS:
        rng = np.random.default_rng(SAMPLE_SEED)
        rows = np.sort(rng.choice(rows, size=SAMPLE_ROWS, replace=False))
    s = x[rows] - x[rows].mean(axis=0)
    d = _sq_dist(s)
    np.fill_diagonal(d, 0.0)
    return SIGMA**2 * float(np.median(d))


def _kernel(x: np.ndarray, kernel: str, sigma2: float) -> np.ndarray:
    x = x - x.mean(axis=0)  # HSIC₁ is invariant to the shift; it keeps digits
    k = x @ x.T if kernel == "linear" else np.exp(-_sq_dist(x) / (2.0 * sigma2))
    np.fill_diagonal(k, 0.0)
    return k


def _hsic1(k: np.ndarray, ell: np.ndarray, k1: np.ndarray, l1: np.ndarray) -> float:
    n = k.shape[0]
    tr = float(np.vdot(k, ell))
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * (k1 @ l1) / (n - 2)) / (
        n * (n - 3)
    )


def minibatch_oracle(params: dict[str, Any]) -> Run:
    """float64 minibatch CKA of every (x, y): ``batch_size``, ``kernel`` (linear, rbf)."""
    xs, ys = _open(params)
    kernel = params.get("kernel", "linear")
    b = params["batch_size"]

    def run() -> dict[str, Any]:
        arrays = [np.asarray(a[:], dtype=np.float64) for a in [*xs, *ys]]
        s2 = [_sigma2(a) if kernel == "rbf" else 1.0 for a in arrays]
        n = arrays[0].shape[0]
        k = max(1, n // b)
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        h = np.zeros((len(arrays), len(arrays)))
        start = 0
        for size in sizes:
            part = [a[start : start + size] for a in arrays]
            kern = [_kernel(x, kernel, s) for x, s in zip(part, s2, strict=True)]
            ones = [g.sum(axis=1) for g in kern]
            for i in range(len(arrays)):
                for j in range(i, len(arrays)):
                    if i < len(xs) <= j or i == j:
                        h[i, j] += _hsic1(kern[i], kern[j], ones[i], ones[j])
            start += size
        nx = len(xs)
        mat = [
            [h[i, nx + j] / np.sqrt(h[i, i] * h[nx + j, nx + j]) for j in range(len(ys))]
            for i in range(nx)
        ]
        return {"values": mat, "bytes_read": _nbytes([*xs, *ys]), "sigma2": s2}

    return run


def read_store(params: dict[str, Any]) -> Run:
    """Reading the data: every stored chunk of ``xs`` and ``ys`` decoded once, cold."""
    xs, ys = _open(params)

    def run() -> dict[str, Any]:
        for a in [*xs, *ys]:
            step = int(a.chunks[0])
            for start in range(0, int(a.shape[0]), step):
                a[start : start + step]
        return {"bytes_read": _nbytes([*xs, *ys])}

    return run
