"""The cited definitions, against the cited codes' formulas: linreg's ridge form against
scikit-learn's Ridge and r2_score; shape against netrep's LinearMetric (its whitening
written out here in numpy); and the exactness owed (SPEC: Measures)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

import reprstore
from reprstore.engine.arrays import measure_arrays
from reprstore.errors import InputError

ROUTES = ["features", "samples"]


def data(n: int, p: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p) + 2.0
    k = min(p, q)
    y = x[:, :k] @ rng.standard_normal((k, q)) + rng.standard_normal((n, q)) - 1.0
    return x, y


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("n,p,q,lam", [(500, 20, 15, 0.1), (300, 50, 10, 1.0), (90, 400, 30, 0.1)])
def test_linreg_ridge_is_sklearns_ridge_r2(route, n, p, q, lam):
    x, y = data(n, p, q, seed=p)
    xc = x - x.mean(0)
    model = Ridge(alpha=lam * np.trace(xc.T @ xc) / p).fit(x, y)
    expected = r2_score(y, model.predict(x), multioutput="variance_weighted")
    got = measure_arrays([x, y], [(0, 1)], f"linreg:ridge={lam}", route=route)
    assert got.pairs[(0, 1)]["linreg"] == pytest.approx(expected, rel=1e-9)


def netrep_shape(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """netrep ``LinearMetric(alpha, center_columns=True, zero_pad=True,
    score_method="angular")``: ``whiten`` with X̄ᵀX̄ = V diag(μ) Vᵀ, d = α + (1−α)μ^-½
    (rescaled by one scalar to keep the variance), rotation alignment, then the angle.
    The relative rank rule replaces netrep's absolute eigenvalue clip."""

    def whiten(a: np.ndarray) -> np.ndarray:
        ac = a - a.mean(0)
        mu, v = np.linalg.eigh(ac.T @ ac)
        keep = mu > 1e-10 * mu.max()
        d = np.where(keep, alpha + (1 - alpha) / np.sqrt(np.where(keep, mu, 1.0)), 0.0)
        new_var = np.sum(np.where(keep, mu * d**2, 0.0))
        return ac @ (v * (d * np.sqrt(mu.sum() / new_var))) @ v.T

    xw, yw = whiten(x), whiten(y)
    width = max(xw.shape[1], yw.shape[1])  # zero padding
    xw = np.pad(xw, ((0, 0), (0, width - xw.shape[1])))
    yw = np.pad(yw, ((0, 0), (0, width - yw.shape[1])))
    u, _, vt = np.linalg.svd(xw.T @ yw)  # orthogonal Procrustes alignment of X to Y
    aligned = xw @ (u @ vt)
    cos = np.vdot(aligned, yw) / (np.linalg.norm(aligned) * np.linalg.norm(yw))
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("n,p,q", [(400, 30, 20), (90, 300, 200)])
def test_shape_is_netreps_linear_metric(route, alpha, n, p, q):
    x, y = data(n, p, q, seed=7)
    got = measure_arrays([x, y], [(0, 1)], f"shape:alpha={alpha}", route=route)
    # arccos near 1 turns rounding of the cosine into √ε ≈ 1.5e-8 of angle: abs=1e-7
    expected = netrep_shape(x, y, alpha)
    assert got.pairs[(0, 1)]["shape"] == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_of_a_representation_with_itself_is_exactly_one(estimator, kernel):
    rng = np.random.default_rng(3)
    for trial in range(8):
        x = rng.standard_normal((int(rng.integers(20, 200)), int(rng.integers(2, 40))))
        x = x * 10.0 ** rng.uniform(-3, 3) + rng.uniform(-5, 5)
        got = reprstore.cka(x, x, estimator, kernel, batch_size=16)
        assert got.cka == 1.0, (trial, got.cka)
        assert np.arccos(got.cka) == 0.0


@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_a_grid_fills_both_orientations_with_the_same_bits(estimator, kernel):
    x, y = data(150, 12, 9, seed=4)
    spec = f"cka:estimator={estimator}:kernel={kernel}:batch_size=16"
    out = measure_arrays([x, y], [(0, 1), (1, 0)], spec)
    assert out.pairs[(0, 1)]["cka"] == out.pairs[(1, 0)]["cka"]
    assert out.pairs[(0, 1)]["hsic_aa"] == out.pairs[(1, 0)]["hsic_bb"]


@pytest.mark.parametrize(
    "estimator,kernel,route",
    [("debiased", "linear", "features"), ("biased", "linear", "features"),
     ("debiased", "linear", "samples"), ("biased", "linear", "samples"),
     ("debiased", "rbf", "auto"), ("biased", "rbf", "auto"), ("minibatch", "linear", "auto"),
     ("minibatch", "rbf", "auto")],
)  # fmt: skip
def test_swapped_arguments_give_the_same_bits(estimator, kernel, route):
    rng = np.random.default_rng(5)
    for _ in range(6):
        x, y = data(int(rng.integers(30, 200)), int(rng.integers(2, 30)),
                    int(rng.integers(2, 30)), seed=int(rng.integers(1000)))  # fmt: skip
        a = reprstore.cka(x, y, estimator, kernel, batch_size=16, route=route).cka
        b = reprstore.cka(y, x, estimator, kernel, batch_size=16, route=route).cka
        assert a == b


@pytest.mark.parametrize(
    "n,p,q,ridge,k", [(500, 20, 15, 0.0, 5), (300, 10, 8, 0.1, 3), (101, 30, 5, 1.0, 10)]
)
def test_linreg_folds_is_sklearns_cross_validated_r2(n, p, q, ridge, k):
    """linreg:folds=k from one pass of per-fold sums = cross_val_predict(KFold(k)) +
    variance-weighted r2_score; the ridge is Ridge(alpha=λ·tr(X̄ᵀX̄)/p) on every fold."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    x, y = data(n, p, q, seed=n)
    xc = x - x.mean(0)
    model = Ridge(alpha=ridge * np.trace(xc.T @ xc) / p) if ridge else LinearRegression()
    expected = r2_score(y, cross_val_predict(model, x, y, cv=KFold(k)),
                        multioutput="variance_weighted")  # fmt: skip
    spec = f"linreg:folds={k}" + (f":ridge={ridge}" if ridge else "")
    out = measure_arrays([x, y], [(0, 1), (1, 0)], spec, block_rows=64)
    assert out.pairs[(0, 1)]["linreg"] == pytest.approx(expected, rel=1e-9)
    back = cross_val_predict(
        LinearRegression()
        if not ridge
        else Ridge(alpha=ridge * np.trace((y - y.mean(0)).T @ (y - y.mean(0))) / q),
        y,
        x,
        cv=KFold(k),
    )
    assert out.pairs[(1, 0)]["linreg"] == pytest.approx(
        r2_score(x, back, multioutput="variance_weighted"), rel=1e-9
    )


def test_linreg_folds_refusals_come_before_the_pass():
    x, y = data(100, 5, 5, seed=1)
    with pytest.raises(InputError, match="between 2 and the 100 rows"):
        measure_arrays([x, y], [(0, 1)], "linreg:folds=1")
    from reprstore.uncertainty import options

    with pytest.raises(InputError, match="cross-validated"):
        measure_arrays([x, y], [(0, 1)], "linreg:folds=5", uncertainty=options(ci=0.9))


def test_linreg_folds_shares_one_pass_with_the_other_measures(monkeypatch):
    """With other measures, one pass of per-fold sums serves all: their total is every
    row's statistics; no plain linear pass runs."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    from reprstore.engine import dask_graph, passes

    x, y = data(500, 20, 15, seed=3)
    plain = measure_arrays([x, y], [(0, 1)], "cka,cca,rsa", block_rows=64).pairs[(0, 1)]
    calls: list[int] = []
    original = passes._fold_pass

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    def no_plain_pass(*args, **kwargs):
        raise AssertionError("a plain linear pass ran")

    monkeypatch.setattr(passes, "_fold_pass", counted)
    monkeypatch.setattr(dask_graph, "linear_pass", no_plain_pass)
    out = measure_arrays([x, y], [(0, 1), (1, 0)], "cka,cca,linreg:folds=5,rsa", block_rows=64)
    assert calls == [1]
    expected = r2_score(y, cross_val_predict(LinearRegression(), x, y, cv=KFold(5)),
                        multioutput="variance_weighted")  # fmt: skip
    assert out.pairs[(0, 1)]["linreg"] == pytest.approx(expected, rel=1e-9)
    for col in ("cka", "cca", "rsa"):
        assert out.pairs[(0, 1)][col] == pytest.approx(plain[col], rel=1e-12), col
        assert out.pairs[(1, 0)][col] == out.pairs[(0, 1)][col]


def test_linreg_fold_by_a_metadata_column_of_the_store(tmp_path):
    """linreg:fold_by=site over a real store: folds are the column's values (sorted), as
    scikit-learn's PredefinedSplit; --where selects the rows and their folds alike; a
    missing column is refused before the pass."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    from reprstore.workflows.comparison import compare
    from reprstore.workflows.ingest import import_files

    x, y = data(300, 10, 6, seed=9)
    site = np.random.default_rng(1).choice(["b", "a", "c", "d"], size=300)
    pd.DataFrame({"site": site, "group": np.arange(300) % 2}).to_csv(tmp_path / "m.csv",
                                                                     index=False)  # fmt: skip
    store = tmp_path / "s.zarr"
    for name, v in (("x", x), ("y", y)):
        np.save(tmp_path / f"{name}.npy", v)
        import_files(store, [tmp_path / f"{name}.npy"], name="m", layer=name, dtype="float32",
                     meta=tmp_path / "m.csv")  # fmt: skip
    xs, ys = x.astype(np.float32).astype(float), y.astype(np.float32).astype(float)
    keep = np.arange(300) % 2 == 0
    codes = np.unique(site[keep], return_inverse=True)[1]
    pred = cross_val_predict(LinearRegression(), xs[keep], ys[keep], cv=PredefinedSplit(codes))
    expected = r2_score(ys[keep], pred, multioutput="variance_weighted")
    df = compare(store, "layer=x", "layer=y", measures="linreg:fold_by=site",
                 where="group == 0")  # fmt: skip
    assert float(df["linreg"].iloc[0]) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InputError, match="no metadata column 'region'"):
        compare(store, "layer=x", "layer=y", measures="linreg:fold_by=region")
