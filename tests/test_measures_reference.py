"""In-memory float64 oracles of every measure, written from the published formulas.

Nothing here uses reprstore. Each oracle takes the whole matrices (n, p) and (n, q) and
computes the measure the way its paper states it (QR-based CCA as Björck & Golub; RDMs
with scipy's ``pdist``; principal angles with scipy's ``subspace_angles``). The tests in
this file check the oracles themselves against closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import pdist
from test_cka_reference import ref_cka


def centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0)


def ref_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations (Hotelling 1936) by QR of the centred sides (Björck & Golub)."""
    qx, _ = np.linalg.qr(centred(x))
    qy, _ = np.linalg.qr(centred(y))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def ref_cca(x, y, ridge: float = 0.0) -> dict[str, float]:
    """Raghu et al. 2017 mean ρ; Kornblith et al. 2019 R²_CCA = mean ρ². With a ridge, the
    SPEC's (Cxx + ε tr(Cxx)/p I)^-½ Cxy (Cyy + …)^-½ in plain matrix algebra."""
    if ridge:
        xc, yc = centred(x), centred(y)
        n = xc.shape[0]
        cxx, cyy, cxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
        rx = cxx + ridge * np.trace(cxx) / cxx.shape[0] * np.eye(cxx.shape[0])
        ry = cyy + ridge * np.trace(cyy) / cyy.shape[0] * np.eye(cyy.shape[0])
        m = scipy.linalg.fractional_matrix_power(rx, -0.5) @ cxy
        m = m @ scipy.linalg.fractional_matrix_power(ry, -0.5)
        rho = np.linalg.svd(np.real(m), compute_uv=False)
    else:
        rho = ref_rho(x, y)
    return {"cca": float(rho.mean()), "cca_r2": float((rho**2).mean())}


def ref_svcca(x, y, keep: float = 0.99, k: int | None = None) -> dict[str, float]:
    """Raghu et al. 2017: SVD of each centred side, keep the top directions explaining
    ``keep`` of the variance, CCA of the reduced sides."""

    def reduce(z):
        u, s, _ = np.linalg.svd(centred(z), full_matrices=False)
        kk = k if k is not None else int(np.searchsorted(np.cumsum(s**2) / (s**2).sum(), keep) + 1)
        return u[:, :kk] * s[:kk]

    rho = ref_rho(reduce(x), reduce(y))
    return {"svcca": float(rho.mean())}


def ref_pwcca(x, y) -> dict[str, float]:
    """Morcos et al. 2018: hᵢ the canonical variates of X; αᵢ = Σⱼ|⟨hᵢ, x̄ⱼ⟩| normalised."""
    xc, yc = centred(x), centred(y)
    qx, _ = np.linalg.qr(xc)
    qy, _ = np.linalg.qr(yc)
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qx @ u  # (n, k) unit-norm canonical variates of X
    alpha = np.abs(h.T @ xc).sum(axis=1)
    alpha /= alpha.sum()
    return {"pwcca": float(alpha @ rho)}


def ref_procrustes(x, y) -> dict[str, float]:
    """Ding et al. 2021: 2 − 2‖X̂ᵀŶ‖_* on centred, Frobenius-normalised sides."""
    xc, yc = centred(x), centred(y)
    xh, yh = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    return {"procrustes": float(2 - 2 * np.linalg.norm(xh.T @ yh, ord="nuc"))}


def ref_shape(x, y, alpha: float = 1.0) -> dict[str, float]:
    """Williams et al. 2021 as netrep's ``LinearMetric(alpha)`` computes it: centred columns,
    Z = V diag(α + (1−α)μ^-½) Vᵀ with X̄ᵀX̄ = V diag(μ) Vᵀ (``netrep.utils.whiten``; its
    variance-preserving rescale is one scalar, which the angle ignores), angular score
    arccos(‖(X̄Zx)ᵀ(ȲZy)‖_*/(‖X̄Zx‖‖ȲZy‖)). Directions below 1e-10 of the largest μ are
    dropped (the project's relative rank rule, not netrep's absolute clip at 1e-7)."""

    def whitened(m):
        mc = centred(m)
        mu, v = np.linalg.eigh(mc.T @ mc)
        keep = mu > 1e-10 * mu.max()
        d = np.where(keep, alpha + (1 - alpha) / np.sqrt(np.where(keep, mu, 1.0)), 0.0)
        return mc @ (v * d) @ v.T

    zx, zy = whitened(x), whitened(y)
    cos = np.linalg.norm(zx.T @ zy, ord="nuc") / (np.linalg.norm(zx) * np.linalg.norm(zy))
    return {"shape": float(np.arccos(min(cos, 1.0)))}


def ref_linreg(x, y, ridge: float = 0.0) -> dict[str, float]:
    """R² of Ȳ from X̄ by least squares (numpy lstsq); with a ridge, the in-sample R² of
    the ridge predictor W = (Cxx + λ·tr(Cxx)/p·I)⁻¹Cxy (SPEC)."""
    xc, yc = centred(x), centred(y)
    if ridge:
        n, p = xc.shape
        cxx = xc.T @ xc / n
        w = np.linalg.solve(cxx + ridge * np.trace(cxx) / p * np.eye(p), xc.T @ yc / n)
        return {"linreg": float(1.0 - np.linalg.norm(yc - xc @ w) ** 2 / np.linalg.norm(yc) ** 2)}
    beta, *_ = np.linalg.lstsq(xc, yc, rcond=None)
    return {"linreg": float(np.linalg.norm(xc @ beta) ** 2 / np.linalg.norm(yc) ** 2)}


def ref_rsa(x, y, rdm: str = "sqeuclidean") -> dict[str, float]:
    """Kriegeskorte et al. 2008: Pearson r of the RDMs' upper triangles (scipy pdist)."""
    dx = pdist(np.asarray(x, dtype=np.float64), metric=rdm)
    dy = pdist(np.asarray(y, dtype=np.float64), metric=rdm)
    return {"rsa": float(np.corrcoef(dx, dy)[0, 1])}


def ref_cosine(x, y) -> dict[str, float]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rows = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {
        "cosine": float(np.vdot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))),
        "cosine_rows": float(rows.mean()),
    }


def _pr(w):
    return float(w.sum() ** 2 / (w**2).sum())


def ref_pca(x, y, k: int | None = None) -> dict[str, float]:
    """The lab's script: PCA of A (np.cov), cumulative variance of B along A's PCs and back,
    participation ratios, principal angles (scipy.linalg.subspace_angles)."""
    ca, cb = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    la, va = np.linalg.eigh(ca)
    lb, vb = np.linalg.eigh(cb)
    la, va, lb, vb = la[::-1], va[:, ::-1], lb[::-1], vb[:, ::-1]
    kk = k if k is not None else min(20, x.shape[1])
    curve = {
        "cev_b_in_a": np.cumsum([v @ cb @ v for v in va.T]) / np.trace(cb),
        "cev_a_in_b": np.cumsum([v @ ca @ v for v in vb.T]) / np.trace(ca),
        "cev_a_self": np.cumsum(la) / la.sum(),
        "cev_b_self": np.cumsum(lb) / lb.sum(),
    }
    proj = va[:, :kk].T @ cb @ va[:, :kk]
    out = {name: float(c[kk - 1]) for name, c in curve.items()}
    out.update(pr_a=_pr(la), pr_b=_pr(lb), pr_b_in_a=_pr(np.linalg.eigvalsh(proj)))
    out["angles"] = np.sort(scipy.linalg.subspace_angles(va[:, :kk], vb[:, :kk]))
    return out


def ref_attention(x, heads: int) -> dict[str, float]:
    """Attention entropy by loops: per sample, head and real query (a row that is not all
    zero in every head), −Σ p log p over the real keys; mean over queries, then samples."""
    x = np.asarray(x, dtype=np.float64)
    t = round(float(np.sqrt(x.shape[1] / heads)))
    maps = x.reshape(x.shape[0], heads, t, t)
    per_sample = []
    for sample in maps:
        real = [q for q in range(t) if np.any(sample[:, q, :] != 0)]
        ent = np.zeros(heads)
        for h in range(heads):
            for q in real:
                p = np.array([sample[h, q, k] for k in real])
                p = p[p > 0]
                ent[h] += -np.sum(p * np.log(p))
        per_sample.append(ent / len(real))
    e = np.mean(per_sample, axis=0)
    return {"attention_entropy": float(e.mean()), "attention_entropy_heads": e,
            "head_specialization": float(np.sqrt(np.mean((e - e.mean()) ** 2)))}  # fmt: skip


def ref_describe(x, name: str, labels=None, tol: float = 0.0, heads: int = 0) -> dict:
    if name in ("attention_entropy", "head_specialization"):
        out = ref_attention(x, heads)
        return {k: v for k, v in out.items() if k.startswith(name)}
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(centred(x), compute_uv=False)
    lam = s**2 / x.shape[0]
    if name == "pr":
        return {"pr": _pr(lam)}
    if name == "erank":
        p = lam[lam > 0] / lam.sum()
        return {"erank": float(np.exp(-(p * np.log(p)).sum()))}
    if name == "variance":
        return {"variance": float(x.var(axis=0).sum())}
    if name == "sparsity":
        return {"sparsity": float((np.abs(x) <= tol).mean())}
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    top = means.max(axis=0)
    rest = (means.sum(axis=0) - top) / (len(classes) - 1)
    return {"selectivity": float(((top - rest) / (top + rest)).mean())}


def ref_cka_measure(x, y, estimator: str = "debiased", kernel: str = "linear", **kw) -> dict:
    """CKA by the book; linear kernels of the centred sides (HSIC₀ and HSIC₁ are exactly
    shift invariant: test_cka_reference), so that a large mean costs the oracle no digits."""
    if kernel == "linear":
        x, y = centred(x), centred(y)
    return {"cka": ref_cka(x, y, estimator, kernel, **kw)}


ORACLES = {
    "cka": ref_cka_measure,
    "cca": ref_cca,
    "svcca": ref_svcca,
    "pwcca": ref_pwcca,
    "procrustes": ref_procrustes,
    "shape": ref_shape,
    "linreg": ref_linreg,
    "rsa": ref_rsa,
    "pca": ref_pca,
    "cosine": ref_cosine,
}


# ------------------------------------------------------------------ the oracles themselves


def test_oracles_closed_forms() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert ref_cca(x, x @ q)["cca"] == pytest.approx(1.0)
    assert ref_procrustes(x, 3 * x @ q + 1)["procrustes"] == pytest.approx(0.0, abs=1e-12)
    assert ref_shape(x, x @ q)["shape"] == pytest.approx(0.0, abs=1e-6)
    assert ref_linreg(x, x @ rng.normal(size=(4, 2)))["linreg"] == pytest.approx(1.0)
    assert ref_rsa(x, x @ q)["rsa"] == pytest.approx(1.0)
    # one canonical pair: y = x₀ + noise of variance σ² → ρ₁ = 1/√(1 + σ²) (in expectation)
    big = rng.normal(size=(200_000, 1))
    rho = ref_rho(big, big + 0.5 * rng.normal(size=big.shape))
    assert rho[0] == pytest.approx(1 / np.sqrt(1.25), rel=1e-2)


def test_pca_oracle_on_a_known_spectrum() -> None:
    """Axis-aligned data with variances 4, 1: PR = 25/17; B = A rotated by 90° swaps them."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(100_000, 2))
    a = z * [2.0, 1.0]
    b = a[:, ::-1]
    got = ref_pca(a, b, k=1)
    assert got["pr_a"] == pytest.approx(25 / 17, rel=1e-2)
    assert got["cev_b_in_a"] == pytest.approx(1 / 5, rel=2e-2)
    assert got["cev_b_self"] == pytest.approx(4 / 5, rel=2e-2)
    assert got["angles"][0] == pytest.approx(np.pi / 2, abs=1e-2)


def test_pwcca_oracle_equals_cca_when_one_direction() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 1))
    y = x + rng.normal(size=(300, 1))
    assert ref_pwcca(x, y)["pwcca"] == pytest.approx(ref_cca(x, y)["cca"])
