"""Intervals and permutation tests of the measures other than CKA (cca, linreg, rsa, …).

References are written here in plain float64 numpy: the population R² and canonical
correlations of jointly Gaussian X, Y in closed form; the measures' published formulas on
explicit rows (mean canonical correlation, least-squares R², the Pearson correlation of
RDM upper triangles with scipy's ``pdist``, the Procrustes distance from a nuclear norm).
Only the definitions of the resampling (which rows form a group, which permutation) come
from :mod:`reprstore.stats.resample`; every estimate, replicate, SE and p-value is
recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli
from scipy import stats
from scipy.spatial.distance import pdist

from reprstore.engine.arrays import measure_arrays
from reprstore.errors import ComparisonError, InputError
from reprstore.stats import resample as rs
from reprstore.uncertainty import options
from reprstore.workflows.comparison import compare
from reprstore.workflows.ingest import import_files

LEVEL = 0.95


# ------------------------------------------------------------------ references


def _cov(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)).T @ (y - y.mean(0)) / len(x)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w**-0.5) @ v.T


def rho(sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray) -> np.ndarray:
    """Canonical correlations: singular values of Σxx^-½ Σxy Σyy^-½."""
    return np.linalg.svd(_inv_sqrt(sxx) @ sxy @ _inv_sqrt(syy), compute_uv=False)


def cca_mean(x: np.ndarray, y: np.ndarray) -> float:
    return float(rho(_cov(x, x), _cov(x, y), _cov(y, y)).mean())


def r2(x: np.ndarray, y: np.ndarray) -> float:
    """R² of y from x by least squares with an intercept."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    beta, *_ = np.linalg.lstsq(xc, yc, rcond=None)
    return float(1.0 - np.sum((yc - xc @ beta) ** 2) / np.sum(yc**2))


def rsa(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(pdist(x, "sqeuclidean"), pdist(y, "sqeuclidean"))[0, 1])


def procrustes(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    return float(2.0 - 2.0 * np.linalg.svd(xc.T @ yc, compute_uv=False).sum())


def jackknife(fn, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """(estimate, delete-group jackknife SE, bias-corrected estimate G·θ̂ − (G − 1)·mean(θ̂₍₋g₎),
    Quenouille 1956) of fn from the definition."""
    loo = np.array([fn(x[groups != g], y[groups != g]) for g in np.unique(groups)])
    g = len(loo)
    est = fn(x, y)
    return (
        est,
        math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)),
        g * est - (g - 1) * loo.mean(),
    )


def t_quantile(df: int) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def coverage_bounds(trials: int) -> tuple[float, float]:
    sd = math.sqrt(LEVEL * (1 - LEVEL) / trials)
    return LEVEL - 3 * sd, LEVEL + 3 * sd


def _toy(n: int = 90, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) + 3.0
    return x, (x - 3.0) @ rng.normal(size=(4, 4)) * 0.4 + rng.normal(size=(n, 4)) - 1.0


def _run(x, y, measures, pairs=((0, 1),), **kw):
    opts = options(**{"seed": 0, **kw})
    out = measure_arrays([x, y], list(pairs), measures, uncertainty=opts)
    return out.pairs


# ----------------------------------------------------------------- calibration


@pytest.mark.slow
def test_linreg_and_cca_intervals_cover_their_population_values() -> None:
    """X ~ N(μ, Σxx), Y = XA + E: population R² = tr(Σyx Σxx⁻¹ Σxy)/tr(Σyy) and the
    population canonical correlations are closed forms of (Σxx, A, σ²); p small and n large,
    so the estimators' bias (O(p/n)) is far below their SE (O(1/√n))."""
    rng = np.random.default_rng(71)
    p, q, n, trials, groups = 2, 3, 400, 300, 30
    m = rng.normal(size=(p, p))
    sxx = m @ m.T / p + np.eye(p)
    a = np.array([[1.0, 0.5, 0.2], [-0.4, 1.2, 0.3]])
    sxy, syy = sxx @ a, a.T @ sxx @ a + np.eye(q)
    truth_r2 = float(np.trace(sxy.T @ np.linalg.solve(sxx, sxy)) / np.trace(syy))
    truth_cca = float(rho(sxx, sxy, syy).mean())
    assert rho(sxx, sxy, syy).min() > 0.3  # no canonical correlation near the boundary
    chol = np.linalg.cholesky(sxx).T
    covered = {"linreg": 0, "cca": 0}
    for t in range(trials):
        x = rng.normal(size=(n, p)) @ chol
        y = x @ a + rng.normal(size=(n, q)) + 4.0
        row = _run(x + 2.0, y, "linreg,cca", ci=LEVEL, bootstrap=groups, seed=t)[(0, 1)]
        covered["linreg"] += row["linreg_lo"] <= truth_r2 <= row["linreg_hi"]
        covered["cca"] += row["cca_lo"] <= truth_cca <= row["cca_hi"]
    lo, hi = coverage_bounds(trials)
    for name, k in covered.items():
        assert lo <= k / trials <= hi, (name, k / trials)


# -------------------------------------------------- the interval, recomputed


def test_jackknife_intervals_recomputed_from_the_definitions() -> None:
    x, y = _toy(400)  # p/n = 0.01: the largest ratio at which cca's --ci is offered
    rows = _run(x, y, "cca,linreg,rsa,procrustes", pairs=[(0, 1), (1, 0)], ci=0.9,
                bootstrap=9, seed=4)  # fmt: skip
    groups = rs.group_ids(np.arange(len(x)), 4, 9)
    q = float(stats.t.ppf(0.95, len(np.unique(groups)) - 1))
    for (a, b), (xa, xb) in (((0, 1), (x, y)), ((1, 0), (y, x))):
        row = rows[(a, b)]
        for col, fn in (("cca", cca_mean), ("linreg", r2), ("rsa", rsa),
                        ("procrustes", procrustes)):  # fmt: skip
            est, se, corrected = jackknife(fn, xa, xb, groups)
            centre = est if col == "rsa" else corrected  # in-sample fits: bias-corrected
            assert row[col] == pytest.approx(est, rel=1e-9), col
            assert row[f"{col}_se"] == pytest.approx(se, rel=1e-6), col
            assert row[f"{col}_lo"] == pytest.approx(centre - q * se, rel=1e-6), col
            assert row[f"{col}_hi"] == pytest.approx(centre + q * se, rel=1e-6), col
        assert row["ci_method"].startswith("jackknife-t, 9 groups; centred on the bias-corrected")
        assert row["resample_seed"] == 4
    assert rows[(0, 1)]["linreg_se"] != pytest.approx(rows[(1, 0)]["linreg_se"])  # asymmetric


def test_point_estimates_are_the_plain_ones() -> None:
    x, y = _toy(400)
    measures = "cca,svcca,pwcca,procrustes,shape,linreg,rsa:rdm=cosine,cosine,cka"
    plain = measure_arrays([x, y], [(0, 1)], measures).pairs[(0, 1)]
    got = _run(x, y, measures, ci=LEVEL, bootstrap=12, permutations=9)[(0, 1)]
    for col in ("cca", "svcca", "pwcca", "procrustes", "shape", "linreg", "rsa", "cosine",
                "cosine_rows", "cka"):  # fmt: skip
        assert got[col] == pytest.approx(plain[col], rel=1e-9, abs=1e-12), col
        assert got[f"{col}_lo"] < got[f"{col}_hi"], col
        assert got[f"{col}_se"] > 0 and 0 < got[f"{col}_p"] <= 1, col
    assert got["p_resolution"] == pytest.approx(0.1)


def test_pca_within_one_dataset_has_intervals_but_no_test() -> None:
    x, y = _toy(120)
    row = _run(x, y, "pca:k=2", ci=LEVEL, bootstrap=12)[(0, 1)]
    rng_groups = rs.group_ids(np.arange(120), 0, 12)

    def cev(xa: np.ndarray, xb: np.ndarray) -> float:  # variance of B in A's top 2 PCs
        _, v = np.linalg.eigh(_cov(xa, xa))
        top = v[:, ::-1][:, :2]
        return float(np.trace(top.T @ _cov(xb, xb) @ top) / np.trace(_cov(xb, xb)))

    est, se, _ = jackknife(cev, x, y, rng_groups)
    assert row["cev_b_in_a"] == pytest.approx(est, rel=1e-9)
    assert row["cev_b_in_a_se"] == pytest.approx(se, rel=1e-6)
    with pytest.raises(InputError, match="no permutation test"):
        _run(x, y, "pca", permutations=9)
    with pytest.raises(InputError, match="span datasets"):
        measure_arrays([x, y], [], "pca", own=[0, 1], uncertainty=options(ci=LEVEL))


# ----------------------------------------------------------- permutation tests


def _randomized(p: np.ndarray, r: int, rng: np.random.Generator) -> np.ndarray:
    return p - rng.uniform(0.0, 1.0 / (r + 1), size=p.shape)


def test_cca_and_procrustes_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(81)
    r, ps = 49, {"cca": [], "procrustes": []}
    for t in range(150):
        x, y = rng.normal(size=(80, 3)), rng.normal(size=(80, 2))
        row = _run(x, y, "cca,procrustes", permutations=r, seed=t)[(0, 1)]
        for col in ps:
            ps[col].append(row[f"{col}_p"])
    for col, got in ps.items():
        assert stats.kstest(_randomized(np.array(got), r, rng), "uniform").pvalue > 1e-3, col


def test_p_values_are_minimal_under_a_planted_relation() -> None:
    rng = np.random.default_rng(82)
    x = rng.normal(size=(120, 4))
    y = x[:, :3] + 0.5 * rng.normal(size=(120, 3))
    row = _run(x, y, "cca,linreg,rsa,procrustes,shape", permutations=199, seed=1)[(0, 1)]
    for col in ("cca", "cca_r2", "linreg", "rsa", "procrustes", "shape"):  # distances too
        assert row[f"{col}_p"] == pytest.approx(1 / 200), col
    assert row["permutation_method"] == "rows of B permuted over all 120 rows"


def test_rsa_p_value_recomputed_from_the_definition() -> None:
    rng = np.random.default_rng(83)
    x = rng.normal(size=(40, 3))
    y = 0.25 * x[:, :2] + rng.normal(size=(40, 2))
    row = _run(x, y, "rsa,procrustes", permutations=99, seed=6)[(0, 1)]
    perms = rs.permutations(6, 99, 0, 40)
    for col, fn, sign in (("rsa", rsa, 1.0), ("procrustes", procrustes, -1.0)):
        observed = sign * fn(x, y)
        null = np.array([sign * fn(x, y[p]) for p in perms])
        assert row[f"{col}_p"] == (1 + np.sum(null >= observed - 1e-12)) / 100, col


def test_a_representation_against_itself_has_minimal_p() -> None:
    x = np.random.default_rng(84).normal(size=(60, 3))
    row = _run(x, x, "cca,rsa", pairs=[(0, 0)], permutations=49)[(0, 0)]
    assert row["rsa"] == pytest.approx(1.0) and row["rsa_p"] == pytest.approx(1 / 50)
    assert row["cca_p"] == pytest.approx(1 / 50)


def test_permutations_beyond_the_budget_are_refused_with_the_cost() -> None:
    x, y = _toy(200)
    with pytest.raises(ComparisonError, match="multiply-adds"):
        _run(x, y, "cca", permutations=10, permute="batches")
    with pytest.raises(ComparisonError, match="Raise --memory"):
        measure_arrays([x, y], [(0, 1)], "cca", memory="10KB",
                       uncertainty=options(permutations=9))  # fmt: skip


# ------------------------------------------ identical for any chunking, workers, rerun


def test_intervals_and_p_values_identical_for_any_chunking() -> None:
    x, y = _toy(400)
    measures = "cca,linreg,rsa:rdm=correlation,cosine,procrustes"
    got = []
    for rows in (None, 1, 7):  # one block; one row per block; 7-row blocks, ragged last
        xa = x if rows is None else da.from_array(x, chunks=(rows, -1))
        ya = y if rows is None else da.from_array(y, chunks=(rows, -1))
        got.append(_run(xa, ya, measures, pairs=[(0, 1), (1, 0)], ci=LEVEL, bootstrap=10,
                        permutations=29, seed=2))  # fmt: skip
    for other in got[1:]:
        for pair, row in got[0].items():
            for col, v in row.items():
                if col.endswith("_p"):
                    assert other[pair][col] == v, col
                elif isinstance(v, float):
                    assert other[pair][col] == pytest.approx(v, rel=1e-10, abs=1e-13), col
    again = _run(x, y, measures, pairs=[(0, 1), (1, 0)], ci=LEVEL, bootstrap=10,
                 permutations=29, seed=2)  # fmt: skip
    for pair, row in got[0].items():
        assert {k: v for k, v in again[pair].items() if isinstance(v, float)} == {
            k: v for k, v in row.items() if isinstance(v, float)
        }  # a rerun is bit-identical


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uncm")
    x, y = _toy(400, seed=5)
    for name, v in (("a", x), ("b", y), ("c", np.random.default_rng(3).normal(size=(400, 4)))):
        np.save(root / f"{name}.npy", v.astype(np.float32))
        import_files(root / "s.zarr", [root / f"{name}.npy"], name="m", seed=name, layer="l")
    np.save(root / "d.npy", np.random.default_rng(4).normal(size=(200, 4)).astype(np.float32))
    import_files(root / "s.zarr", [root / "d.npy"], name="m", seed="d", layer="l",
                 dataset="other")  # fmt: skip
    return root


def test_store_comparison_identical_on_a_local_cluster(store: Path) -> None:
    kw = dict(measures="cca,linreg,rsa", ci=LEVEL, bootstrap=20, permutations=49, seed=5)
    local = compare(store / "s.zarr", "seed=a", "seed=[bc]", **kw)
    cluster = compare(store / "s.zarr", "seed=a", "seed=[bc]", workers=2, **kw)
    for col in ("cca", "cca_lo", "cca_hi", "linreg_se", "rsa_lo", "rsa_hi"):
        np.testing.assert_allclose(cluster[col], local[col], rtol=1e-10)
    for col in ("cca_p", "linreg_p", "rsa_p"):
        assert list(cluster[col]) == list(local[col])
    assert local["cca_p"].iloc[0] == pytest.approx(0.02)  # a vs b: related
    assert local["cca_p"].iloc[1] > 0.02  # a vs c: unrelated


def test_cli_compare_plans_and_writes_the_columns(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ci.csv"
    args = ["--a", "seed=a", "--b", "seed=b", "--measure", "cca,linreg", "--ci", "0.9",
            "--bootstrap", "15", "--permutations", "19", "--seed", "3",
            "--out", str(out)]  # fmt: skip
    result = run_cli("compare", str(store / "s.zarr"), *args)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "plan: interval: delete-group jackknife over 15 row groups" in text
    assert "leave-one-group-out recomputations of cca, linreg" in text
    assert "plan: test of cca, linreg: 19 permutations of rows" in text
    assert "resolution 0.05" in text and "seed 3" in text
    df = pd.read_csv(out)
    for col in ("cca", "cca_r2", "linreg"):
        assert df[f"{col}_lo"].iloc[0] < df[col].iloc[0] < df[f"{col}_hi"].iloc[0]
        assert df[f"{col}_p"].iloc[0] == pytest.approx(0.05)
    assert df["ci_level"].iloc[0] == 0.9 and df["resample_seed"].iloc[0] == 3


def test_pairs_across_datasets_are_refused_before_any_work(store: Path) -> None:
    args = ["--a", "seed=a", "--b", "seed=d", "--measure", "pca", "--ci", "0.95"]
    assert_user_error(run_cli("compare", str(store / "s.zarr"), *args), "span datasets")
    plain = compare(store / "s.zarr", "seed=a", "seed=d", measures="pca")  # without: fine
    assert plain["cev_b_in_a"].iloc[0] > 0


def test_progress_counts_every_row_block_of_the_uncertainty_passes() -> None:
    x, y = _toy(70)
    calls: list[tuple[int, int]] = []
    xa, ya = da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(10, -1))
    measure_arrays([xa, ya], [(0, 1)], "rsa", progress=lambda d, t: calls.append((d, t)),
                   uncertainty=options(ci=LEVEL, bootstrap=10, permutations=9))  # fmt: skip
    totals = {t for _, t in calls}
    assert totals == {7 + 2 * 7}  # the grouped pass, then the gather of both sides
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(done) >= 7 and done[-1] == 21


def test_progress_of_a_test_alone_follows_the_plain_pass() -> None:
    x, y = _toy(70)
    calls: list[tuple[int, int]] = []
    xa, ya = da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(10, -1))
    measure_arrays([xa, ya], [(0, 1)], "rsa", progress=lambda d, t: calls.append((d, t)),
                   uncertainty=options(permutations=9))  # fmt: skip
    assert {t for _, t in calls} == {7 + 2 * 7}  # the plain pass, then the gather of both
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 21


@pytest.mark.slow
def test_every_offered_interval_covers_at_the_ratio_where_it_is_offered() -> None:
    """The coverage simulation (benchmarks/coverage.py) at p/n = 0.01, in small: 100 datasets
    of 2,000 rows, 50 groups; every interval reprstore offers there must cover the
    population value (its value on 10⁶ rows) at 95 % within 3.5 binomial SDs. The full
    table (300 datasets, p/n up to 0.2) is in docs/uncertainty.md."""
    from benchmarks import coverage as cov

    b = np.random.default_rng(7).standard_normal((cov.P, cov.P)) * 0.25
    pop = cov.population(b)
    pop = {k: v for k, v in pop.items() if not k.startswith("cka_estimator")}
    measures = cov.MEASURES
    cov.MEASURES = measures.replace("cka:estimator=biased,", "")  # biased: refused
    try:
        got = cov.run_design(2000, 50, 100, b, pop)
    finally:
        cov.MEASURES = measures
    low = LEVEL - 3.5 * math.sqrt(LEVEL * (1 - LEVEL) / 100)
    assert len(got) >= 15
    for col, r in got.items():
        assert low <= r["reprstore"], (col, r)
