"""A plain float64 CKA reference written from the formulas in SPEC.md, in Gram space.

Nothing here uses reprstore: the engine is tested against these functions. The tests in
this file check the reference itself against closed forms and known facts.
"""

from __future__ import annotations

import numpy as np
import pytest


def ref_linear_kernel(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def ref_sq_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)


def ref_sigma2(x: np.ndarray, sigma: float) -> float:
    """σ² = sigma² × median of all n² squared distances (diagonal included)."""
    return sigma**2 * float(np.median(ref_sq_distances(x)))


def ref_rbf_kernel(x: np.ndarray, sigma2: float) -> np.ndarray:
    return np.exp(-ref_sq_distances(x) / (2.0 * sigma2))


def ref_hsic0(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h))


def ref_hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), unbiased HSIC."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value / (n * (n - 3)))


def ref_cka_kernels(k: np.ndarray, l: np.ndarray, hsic) -> float:  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def ref_batches(n: int, batch_size: int, shuffle: int | None) -> list[np.ndarray]:
    """SPEC: k = max(1, ⌊n/B⌋) batches of ⌊n/k⌋ or ⌈n/k⌉ rows (the larger ones first),
    consecutive in stored order or in the order of ``default_rng(shuffle).permutation``."""
    order = np.arange(n) if shuffle is None else np.random.default_rng(shuffle).permutation(n)
    k = max(1, n // batch_size)
    sizes = [n // k + (1 if b < n % k else 0) for b in range(k)]
    return np.split(order, np.cumsum(sizes)[:-1])


def ref_cka(
    x: np.ndarray,
    y: np.ndarray,
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = 32,
    shuffle: int | None = None,
) -> float:
    """CKA by the book. RBF σ² is taken over all rows, also for minibatches."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if kernel == "linear":

        def kx(rows):
            return ref_linear_kernel(x[rows])

        def ky(rows):
            return ref_linear_kernel(y[rows])
    else:
        sx, sy = ref_sigma2(x, sigma), ref_sigma2(y, sigma)

        def kx(rows):
            return ref_rbf_kernel(x[rows], sx)

        def ky(rows):
            return ref_rbf_kernel(y[rows], sy)

    everything = np.arange(x.shape[0])
    if estimator == "biased":
        return ref_cka_kernels(kx(everything), ky(everything), ref_hsic0)
    if estimator == "debiased":
        return ref_cka_kernels(kx(everything), ky(everything), ref_hsic1)
    hxy = hxx = hyy = 0.0
    batches = ref_batches(x.shape[0], batch_size, shuffle)
    for rows in batches:
        k, l = kx(rows), ky(rows)  # noqa: E741
        hxy += ref_hsic1(k, l)
        hxx += ref_hsic1(k, k)
        hyy += ref_hsic1(l, l)
    return hxy / np.sqrt(hxx * hyy)


def correlated(rng: np.random.Generator, n: int = 120, p: int = 12, q: int = 7):
    """Two related representations (n, p) and (n, q)."""
    x = rng.normal(size=(n, p))
    y = np.tanh(x @ rng.normal(size=(p, q))) + 0.5 * rng.normal(size=(n, q))
    return x, y


# ---------------------------------------------------------------- the reference itself


def test_reference_biased_linear_is_kornblith_feature_space(rng: np.random.Generator) -> None:
    x, y = correlated(rng)
    xc, yc = x - x.mean(0), y - y.mean(0)
    feature_space = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert ref_cka(x, y, "biased") == pytest.approx(feature_space, rel=1e-12)


def test_reference_hsic1_is_shift_invariant(rng: np.random.Generator) -> None:
    """HSIC₁ of linear kernels does not change when every row is shifted by a vector."""
    x, y = correlated(rng, n=40)
    shift_x, shift_y = rng.normal(size=x.shape[1]) * 3, rng.normal(size=y.shape[1]) * 3
    k, l = ref_linear_kernel(x), ref_linear_kernel(y)  # noqa: E741
    k2, l2 = ref_linear_kernel(x - shift_x), ref_linear_kernel(y - shift_y)
    assert ref_hsic1(k2, l2) == pytest.approx(ref_hsic1(k, l), rel=1e-10)
    assert ref_hsic1(k2, k2) == pytest.approx(ref_hsic1(k, k), rel=1e-10)
    # HSIC₀ is invariant too (it centres); a raw tr(KL) is not.
    assert ref_hsic0(k2, l2) == pytest.approx(ref_hsic0(k, l), rel=1e-10)
    assert np.trace(k2 @ l2) != pytest.approx(np.trace(k @ l), rel=1e-3)


def test_reference_hsic1_is_unbiased_on_average() -> None:
    """Debiased CKA of independent data averages near 0; the biased one does not."""
    rng = np.random.default_rng(0)
    deb, bia = [], []
    for _ in range(30):
        x, y = rng.normal(size=(20, 50)), rng.normal(size=(20, 50))
        deb.append(ref_cka(x, y, "debiased"))
        bia.append(ref_cka(x, y, "biased"))
    assert abs(np.mean(deb)) < 0.05 < np.mean(bia)
