"""Sample-level uncertainty: calibrated intervals, valid permutation tests, reproducibility.

References are written here in plain float64 numpy: the unbiased HSIC of Song et al.
(2012) on explicit n × n kernels, the population CKA of jointly Gaussian X, Y in closed
form (‖Σxy‖²_F / (‖Σxx‖_F ‖Σyy‖_F)), and the population linear predictivity
R² = tr(Σyx Σxx⁻¹ Σxy) / tr(Σyy). Only the *definitions* of the resampling (which rows form
a group, which weights a replicate has, which permutation) are taken from
:mod:`reprstore.stats.resample`; every estimate, replicate, SE and p-value is recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from conftest import assert_user_error, run_cli
from scipy import stats

import reprstore
from reprstore.errors import ComparisonError, InputError
from reprstore.stats import resample as rs
from reprstore.workflows.comparison import compare
from reprstore.workflows.ingest import import_files

LEVEL = 0.95


# ------------------------------------------------------------------ references


def hsic1(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC on explicit kernels."""
    n = k.shape[0]
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    value = (
        np.trace(k @ l_)
        + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l_ @ one)
    )
    return float(value / (n * (n - 3)))


def cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    k, l_ = x @ x.T, y @ y.T
    return hsic1(k, l_) / math.sqrt(hsic1(k, k) * hsic1(l_, l_))


def t_quantile(df: int) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def coverage_bounds(trials: int) -> tuple[float, float]:
    """95 % ± 3 binomial standard deviations."""
    sd = math.sqrt(LEVEL * (1 - LEVEL) / trials)
    return LEVEL - 3 * sd, LEVEL + 3 * sd


def gaussian_model(p: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chol of Σxx, A, noise sd): X = Z·chol, Y = X·A + noise·E."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(p, p))
    sxx = m @ m.T / p + np.eye(p)
    return np.linalg.cholesky(sxx).T, 0.6 * rng.normal(size=(p, q)), np.array(1.0)


def population(chol: np.ndarray, a: np.ndarray, sd: np.ndarray) -> tuple[float, float]:
    """Population linear CKA and linear predictivity R² of the Gaussian model."""
    sxx = chol.T @ chol
    sxy = sxx @ a
    syy = a.T @ sxx @ a + float(sd) ** 2 * np.eye(a.shape[1])
    cka = float(np.sum(sxy**2) / (np.linalg.norm(sxx) * np.linalg.norm(syy)))
    r2 = float(np.trace(sxy.T @ np.linalg.solve(sxx, sxy)) / np.trace(syy))
    return cka, r2


def draw(chol: np.ndarray, a: np.ndarray, sd: np.ndarray, n: int, rng: np.random.Generator):
    x = rng.normal(size=(n, chol.shape[0])) @ chol + 5.0  # a mean far from zero
    y = (x - 5.0) @ a + float(sd) * rng.normal(size=(n, a.shape[1])) - 3.0
    return x, y


# ----------------------------------------------------------- calibration: CKA


@pytest.mark.slow
def test_cka_interval_covers_population_cka_at_nominal_rate() -> None:
    chol, a, sd = gaussian_model(4, 3, seed=11)
    truth, _ = population(chol, a, sd)
    rng = np.random.default_rng(12)
    trials, covered, widths = 300, 0, []
    for t in range(trials):
        x, y = draw(chol, a, sd, 240, rng)
        r = reprstore.cka(x, y, ci=LEVEL, bootstrap=24, seed=t)
        covered += r.cka_lo <= truth <= r.cka_hi
        widths.append(r.cka_hi - r.cka_lo)
    lo, hi = coverage_bounds(trials)
    assert lo <= covered / trials <= hi, (covered / trials, truth)
    assert np.median(widths) > 0


def test_minibatch_interval_covers_population_cka_at_nominal_rate() -> None:
    # E[HSIC₁ of a batch] is the population HSIC, so minibatch CKA targets the population CKA
    chol, a, sd = gaussian_model(3, 3, seed=21)
    truth, _ = population(chol, a, sd)
    rng = np.random.default_rng(22)
    trials, covered = 200, 0
    for t in range(trials):
        x, y = draw(chol, a, sd, 1200, rng)
        r = reprstore.cka(x, y, estimator="minibatch", batch_size=40, ci=LEVEL, seed=t)
        covered += r.cka_lo <= truth <= r.cka_hi
    lo, hi = coverage_bounds(trials)
    assert lo <= covered / trials <= hi, (covered / trials, truth)


# -------------------------------------------- calibration: a second measure (R²)


def _r2_sums(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int) -> list:
    """Per group: n, Σx, Σy, XᵀX, XᵀY, YᵀY (sums over rows that add)."""
    out = []
    for g in range(n_groups):
        xs, ys = x[groups == g], y[groups == g]
        out.append({"n": len(xs), "sx": xs.sum(0), "sy": ys.sum(0), "xx": xs.T @ xs,
                    "xy": xs.T @ ys, "yy": ys.T @ ys} if len(xs) else None)  # fmt: skip
    return out


def _r2(s: dict) -> np.ndarray:
    """Linear predictivity R² = tr(Cyx Cxx⁻¹ Cxy)/tr(Cyy) from sums (oracle, in the test)."""
    n = s["n"]
    cxx = s["xx"] - np.outer(s["sx"], s["sx"]) / n
    cxy = s["xy"] - np.outer(s["sx"], s["sy"]) / n
    cyy = s["yy"] - np.outer(s["sy"], s["sy"]) / n
    return np.array([np.trace(cxy.T @ np.linalg.solve(cxx, cxy)) / np.trace(cyy)])


def test_grouped_jackknife_of_r2_covers_population_r2() -> None:
    chol, a, sd = gaussian_model(2, 3, seed=31)
    _, truth = population(chol, a, sd)
    rng = np.random.default_rng(32)
    trials, covered, n_groups = 300, 0, 30
    for t in range(trials):
        x, y = draw(chol, a, sd, 400, rng)
        groups = rs.group_ids(np.arange(len(x)), t, n_groups)
        stacked = rs.stack_states(_r2_sums(x, y, groups, n_groups))
        used = np.flatnonzero(stacked["n"] > 0)
        full = _r2({k: v.sum(0) for k, v in stacked.items()})[0]
        whole = {"n": len(x), "sx": x.sum(0), "sy": y.sum(0), "xx": x.T @ x, "xy": x.T @ y,
                 "yy": y.T @ y}  # fmt: skip
        assert full == pytest.approx(_r2(whole)[0])
        loo = rs.jackknife_values(stacked, _r2, used)[:, 0]
        se = math.sqrt((len(used) - 1) / len(used) * np.sum((loo - loo.mean()) ** 2))
        q = t_quantile(len(used) - 1)
        covered += full - q * se <= truth <= full + q * se
    lo, hi = coverage_bounds(trials)
    assert lo <= covered / trials <= hi, (covered / trials, truth)


# ----------------------------------------------- what the interval is, recomputed


def test_jackknife_interval_recomputed_from_the_definition() -> None:
    rng = np.random.default_rng(41)
    x = rng.normal(size=(90, 5)) + 2.0
    y = x @ rng.normal(size=(5, 4)) + rng.normal(size=(90, 4))
    ids = np.arange(90)
    r = reprstore.cka(x, y, ci=LEVEL, bootstrap=12, seed=7)
    groups = rs.group_ids(ids, 7, 12)
    used = np.unique(groups)
    loo = np.array([cka_debiased(x[groups != g], y[groups != g]) for g in used])
    se = math.sqrt((len(used) - 1) / len(used) * np.sum((loo - loo.mean()) ** 2))
    full = cka_debiased(x - x.mean(0), y - y.mean(0))
    assert r.cka == pytest.approx(full, rel=1e-9)
    assert r.cka_se == pytest.approx(se, rel=1e-7)
    q = t_quantile(len(used) - 1)
    assert r.cka_lo == pytest.approx(full - q * se, rel=1e-7)
    assert r.cka_hi == pytest.approx(full + q * se, rel=1e-7)
    assert r.ci_replicates == len(used) and r.resample_seed == 7


def test_batch_bootstrap_recomputed_from_the_definition() -> None:
    rng = np.random.default_rng(42)
    x = rng.normal(size=(200, 4))
    y = x @ rng.normal(size=(4, 3)) + rng.normal(size=(200, 3))
    r = reprstore.cka(x, y, estimator="minibatch", batch_size=20, ci=LEVEL, bootstrap=50, seed=3)
    h = np.array([[hsic1(xb @ xb.T, yb @ yb.T), hsic1(xb @ xb.T, xb @ xb.T),
                   hsic1(yb @ yb.T, yb @ yb.T)]
                  for xb, yb in zip(np.split(x, 10), np.split(y, 10), strict=True)])  # fmt: skip
    assert r.cka == pytest.approx(h[:, 0].sum() / math.sqrt(h[:, 1].sum() * h[:, 2].sum()))
    w = rs.poisson_weights(3, 50, 10)
    reps = (w @ h[:, 0]) / np.sqrt((w @ h[:, 1]) * (w @ h[:, 2]))
    reps = reps[np.isfinite(reps)]
    se = float(np.std(reps, ddof=1))
    assert r.cka_se == pytest.approx(se, rel=1e-9)
    assert r.cka_hi - r.cka_lo == pytest.approx(2 * t_quantile(9) * se, rel=1e-9)


def test_weights_and_groups_depend_only_on_their_keys() -> None:
    ids = np.array([f"s{i}" for i in range(500)])
    g = rs.group_ids(ids, 5, 16)
    assert np.array_equal(g[::-1], rs.group_ids(ids[::-1], 5, 16))  # row order is irrelevant
    assert not np.array_equal(g, rs.group_ids(ids, 6, 16))
    counts = np.bincount(g, minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4  # groups are evenly filled
    w = rs.poisson_weights(1, 4000, 8)
    assert w.mean() == pytest.approx(1.0, abs=0.03) and w.var() == pytest.approx(1.0, abs=0.06)
    assert np.array_equal(w[:100], rs.poisson_weights(1, 100, 8))
    h = rs.half_sample_weights(2, 4000, 8)
    assert set(np.unique(h)) == {0.0, 1.0} and h.mean() == pytest.approx(0.5, abs=0.02)
    perms = rs.permutations(9, 50, 3, 30)
    assert all(np.array_equal(np.sort(p), np.arange(30)) for p in perms)
    assert np.array_equal(perms[17], rs.permutation(9, 17, 3, 30))


# ----------------------------------------------------------- permutation tests


def _randomized(p: np.ndarray, r: int, rng: np.random.Generator) -> np.ndarray:
    """Discrete permutation p-values made continuous: exactly U(0, 1) under the null."""
    return p - rng.uniform(0.0, 1.0 / (r + 1), size=p.shape)


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_permutation_p_values_are_uniform_under_the_null(estimator: str) -> None:
    rng = np.random.default_rng(51)
    r, ps = 49, []
    for t in range(150):
        x, y = rng.normal(size=(80, 3)), rng.normal(size=(80, 2))
        res = reprstore.cka(x, y, estimator=estimator, batch_size=20, permutations=r, seed=t)
        assert res.cka_p_resolution == pytest.approx(1 / (r + 1))
        ps.append(res.cka_p)
    assert stats.kstest(_randomized(np.array(ps), r, rng), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
def test_permutation_p_value_is_minimal_under_a_planted_relation(estimator: str) -> None:
    rng = np.random.default_rng(52)
    x = rng.normal(size=(120, 4))
    y = x[:, :2] + 0.5 * rng.normal(size=(120, 2))
    res = reprstore.cka(x, y, estimator=estimator, batch_size=30, permutations=199, seed=1)
    assert res.cka_p == pytest.approx(1 / 200)
    assert ("within each of 4 batches" in res.permutation_method) == (estimator == "minibatch")


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_a_representation_against_itself_has_minimal_p(estimator: str) -> None:
    x = np.random.default_rng(54).normal(size=(60, 3))
    res = reprstore.cka(x, x, estimator=estimator, batch_size=20, permutations=49, seed=0)
    assert res.cka == pytest.approx(1.0) and res.cka_p == pytest.approx(1 / 50)


def test_row_permutation_p_value_recomputed_from_the_definition() -> None:
    rng = np.random.default_rng(53)
    x = rng.normal(size=(40, 3))
    y = 0.3 * x[:, :2] + rng.normal(size=(40, 2))
    res = reprstore.cka(x, y, permutations=99, seed=4)
    observed = cka_debiased(x - x.mean(0), y - y.mean(0))
    null = [cka_debiased(x - x.mean(0), (y - y.mean(0))[p]) for p in rs.permutations(4, 99, 0, 40)]
    assert res.cka_p_statistic == pytest.approx(observed, rel=1e-9)
    assert res.cka_p == (1 + sum(v >= observed for v in null)) / 100


# ------------------------------------------ identical for any chunking, workers, rerun


def _toy(n: int = 61) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(61)
    x = rng.normal(size=(n, 4)) + 1.0
    return x, 0.5 * x[:, :3] + rng.normal(size=(n, 3))


@pytest.mark.parametrize(
    "estimator,options",
    [
        ("debiased", dict(bootstrap=10)),
        ("minibatch", dict(batch_size=12, bootstrap=40)),
        ("minibatch", dict(batch_size=8, bootstrap=40, shuffle=3)),
    ],
)
def test_interval_and_p_value_identical_for_any_chunking(estimator: str, options: dict) -> None:
    x, y = _toy()
    got = []
    for rows in (None, 1, 7):  # one block; one row per block; 7-row blocks, ragged last
        xa = x if rows is None else da.from_array(x, chunks=(rows, -1))
        ya = y if rows is None else da.from_array(y, chunks=(rows, -1))
        got.append(reprstore.cka(xa, ya, estimator=estimator, ci=LEVEL, permutations=59,
                                 seed=2, **options))  # fmt: skip
    for r in got[1:]:
        assert r.cka_p == got[0].cka_p
        for f in ("cka", "cka_lo", "cka_hi", "cka_se"):
            assert getattr(r, f) == pytest.approx(getattr(got[0], f), rel=1e-10, abs=1e-13)
    again = reprstore.cka(x, y, estimator=estimator, ci=LEVEL, permutations=59, seed=2, **options)
    assert again == got[0]  # a rerun is bit-identical


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unc")
    x, y = _toy(300)
    for name, v in (("a", x), ("b", y), ("c", np.random.default_rng(3).normal(size=(300, 3)))):
        np.save(root / f"{name}.npy", v.astype(np.float32))
        import_files(root / "s.zarr", [root / f"{name}.npy"], name="m", seed=name, layer="l")
    return root


def test_store_comparison_identical_on_a_local_cluster(store: Path) -> None:
    kw = dict(ci=LEVEL, bootstrap=20, permutations=99, seed=5)
    local = compare(store / "s.zarr", "seed=a", "seed=[bc]", **kw)
    cluster = compare(store / "s.zarr", "seed=a", "seed=[bc]", workers=2, **kw)
    for col in ("cka", "cka_lo", "cka_hi", "cka_se"):
        np.testing.assert_allclose(cluster[col], local[col], rtol=1e-10)
    assert list(cluster["cka_p"]) == list(local["cka_p"])
    assert local["cka_p"].iloc[0] == pytest.approx(0.01)  # a vs b: related
    assert set(local["resample_seed"]) == {5}
    assert local["ci_method"].iloc[0].startswith("jackknife-t")


# ----------------------------------------------------------------------- bad input


def test_api_refuses_bad_options() -> None:
    x, y = _toy()
    for kw, needle in [
        (dict(ci=LEVEL, bootstrap=0), "--bootstrap"),
        (dict(ci=1.0), "between 0 and 1"),
        (dict(ci=0.0), "between 0 and 1"),
        (dict(permutations=0), "--permutations"),
        (dict(bootstrap=50), "needs --ci"),
        (dict(ci=LEVEL, seed=-1), "--seed"),
    ]:
        with pytest.raises(InputError, match=needle):
            reprstore.cka(x, y, **kw)
    with pytest.raises(InputError, match="rbf"):
        reprstore.cka(x, y, kernel="rbf", permutations=9)
    with pytest.raises(ComparisonError, match="Raise --memory"):
        reprstore.cka(
            np.random.default_rng(0).normal(size=(50, 400)), y[:50], ci=LEVEL, memory="4MB"
        )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--ci", "0.95", "--bootstrap", "0"], "--bootstrap"),
        (["--ci", "1.5"], "between 0 and 1"),
        (["--ci", "-0.1"], "between 0 and 1"),
        (["--permutations", "0"], "--permutations"),
        (["--kernel", "rbf", "--permutations", "99"], "rbf"),
        (["--bootstrap", "20"], "needs --ci"),
    ],
)
def test_cli_bad_uncertainty_options(store: Path, args: list[str], needle: str) -> None:
    result = run_cli("cka", str(store / "s.zarr"), "--a", "seed=a", "--b", "seed=b", *args)
    assert_user_error(result, needle)


def test_cli_prints_plan_interval_and_resolution(store: Path) -> None:
    out = store / "ci.csv"
    args = ["--ci", "0.9", "--bootstrap", "20", "--permutations", "99", "--out", str(out)]
    result = run_cli("cka", str(store / "s.zarr"), "--a", "seed=a", "--b", "seed=b", *args)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "plan: interval: delete-group jackknife over 20 row groups" in text
    assert "resolution 0.01" in text and "seed 0" in text
    import pandas as pd

    df = pd.read_csv(out)
    assert {"cka_lo", "cka_hi", "cka_se", "cka_p", "cka_p_resolution", "permutation_method",
            "resample_seed"} <= set(df.columns)  # fmt: skip
    assert df["cka_lo"].iloc[0] < df["cka"].iloc[0] < df["cka_hi"].iloc[0]
    assert df["ci_level"].iloc[0] == 0.9


def test_biased_cka_has_no_interval() -> None:
    """Its interval missed the population value in the coverage simulation (docs)."""
    x, y = _toy(200)
    with pytest.raises(InputError, match="not offered for cka:estimator=biased"):
        reprstore.cka(x, y, estimator="biased", ci=LEVEL)


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_point_estimate_is_the_plain_one(estimator: str) -> None:
    x, y = _toy(200)
    plain = reprstore.cka(x, y, estimator=estimator, batch_size=25)
    full = reprstore.cka(x, y, estimator=estimator, batch_size=25, ci=LEVEL, permutations=19)
    assert full.cka == pytest.approx(plain.cka, rel=1e-12)
    assert full.cka_lo < full.cka < full.cka_hi
    if estimator == "debiased":
        assert full.cka == pytest.approx(cka_debiased(x - x.mean(0), y - y.mean(0)), rel=1e-9)


def test_row_filter_uses_the_kept_rows_ids(store: Path, tmp_path: Path) -> None:
    from reprstore.store import Store

    st = Store.open(store / "s.zarr")
    ids = st.dataset("default").ids()
    where = "id >= 100"
    got = compare(store / "s.zarr", "seed=a", "seed=b", where=where, ci=LEVEL, bootstrap=15,
                  seed=8)  # fmt: skip
    x, y = (np.asarray(st.array(info.key)[:], dtype=np.float64)
            for info in (st.select(f"seed={n}")[0] for n in "ab"))  # fmt: skip
    keep = ids >= 100
    x, y = x[keep], y[keep]
    groups = rs.group_ids(ids[keep], 8, 15)
    loo = np.array([cka_debiased(x[groups != g], y[groups != g]) for g in np.unique(groups)])
    g = len(loo)
    se = math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2))
    assert got["n_samples"].iloc[0] == keep.sum()
    assert got["cka_se"].iloc[0] == pytest.approx(se, rel=1e-6)


# ------------------------------------------------------- reprstore compare --measure cka


def _jackknife_se(store: Path, seed: int, groups_asked: int) -> float:
    """The delete-group jackknife SE of debiased CKA of seeds a and b, from the definition."""
    from reprstore.store import Store

    st = Store.open(store / "s.zarr")
    ids = st.dataset("default").ids()
    x, y = (np.asarray(st.array(info.key)[:], dtype=np.float64)
            for info in (st.select(f"seed={n}")[0] for n in "ab"))  # fmt: skip
    groups = rs.group_ids(ids, seed, groups_asked)
    loo = np.array([cka_debiased(x[groups != g], y[groups != g]) for g in np.unique(groups)])
    g = len(loo)
    return math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2))


def test_compare_measure_cka_has_the_same_interval_and_test_as_cka(
    store: Path, tmp_path: Path
) -> None:
    import pandas as pd

    args = ["--a", "seed=a", "--b", "seed=[bc]", "--ci", "0.9", "--bootstrap", "15",
            "--permutations", "99", "--seed", "8", "--no-cache"]  # fmt: skip
    got = {}
    for command, more in (("cka", []), ("compare", ["--measure", "cka"])):
        out = tmp_path / f"{command}.csv"
        result = run_cli(command, str(store / "s.zarr"), *args, *more, "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "plan: interval: delete-group jackknife over 15 row groups" in " ".join(
            result.stdout.split()
        )
        got[command] = pd.read_csv(out)
    a, b = got["cka"], got["compare"]
    for col in ("cka", "cka_lo", "cka_hi", "cka_se", "cka_p", "cka_p_resolution"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-12)
    assert list(b["permutation_method"]) == list(a["permutation_method"])
    assert b["cka_se"].iloc[0] == pytest.approx(_jackknife_se(store, 8, 15), rel=1e-6)
    assert b["cka_p"].iloc[0] == pytest.approx(0.01)  # a vs b: related; resolution 1/100


def test_compare_takes_the_cka_options_of_the_measure(store: Path) -> None:
    measure = "cka:estimator=minibatch:batch_size=30"
    got = compare(store / "s.zarr", "seed=a", "seed=b", measures=measure, ci=LEVEL,
                  bootstrap=50, permutations=19)  # fmt: skip
    assert got["estimator"].iloc[0] == "minibatch" and got["n_batches"].iloc[0] == 10
    assert "bootstrap" in got["ci_method"].iloc[0]
    assert "within each of 10 batches" in got["permutation_method"].iloc[0]
    assert got["cka_lo"].iloc[0] < got["cka"].iloc[0] < got["cka_hi"].iloc[0]


@pytest.mark.parametrize(
    "measure,needle",
    [("cka:estimator=minibatch,cca", "run on their own"), ("pca", "no permutation test")],
)
def test_compare_refuses_uncertainty_without_a_meaning(store: Path, measure: str,
                                                       needle: str) -> None:  # fmt: skip
    args = ["--a", "seed=a", "--b", "seed=b", "--measure", measure, "--permutations", "9"]
    result = run_cli("compare", str(store / "s.zarr"), *args)
    assert_user_error(result, needle)
    with pytest.raises(InputError, match=needle):
        compare(store / "s.zarr", "seed=a", "seed=b", measures=measure, permutations=9)


def test_row_permutation_statistic_is_cka_on_offset_and_scaled_data() -> None:
    x, y = _toy(120)
    x, y = 37.0 * x + 5.0, 0.01 * y - 2.0  # the engine offsets and rescales each side
    got = reprstore.cka(x, y, permutations=19, seed=3)
    want = cka_debiased(x - x.mean(0), y - y.mean(0))
    assert "over all 120 rows" in got.permutation_method
    assert got.cka_p_statistic == pytest.approx(want, rel=1e-9)
    assert got.cka == pytest.approx(want, rel=1e-9)
