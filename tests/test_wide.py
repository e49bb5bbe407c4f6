"""The sample route (tiles of the n × n kernels): exact CKA of any width, the exact RBF
median by selection over tiles, the planner's routes, plan line and refusals.

Every value is checked against a plain float64 numpy computation of the published
formula written here (full n × n Gram matrices in memory), never the package's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
from test_cka_reference import ref_hsic0, ref_hsic1

from reprstore.engine.arrays import cka_spec, measure_arrays
from reprstore.engine.planner import DryRun
from reprstore.errors import ComparisonError, InputError
from reprstore.stats.gram_tiles import sample_layout
from reprstore.stats.selection import OrderStatistics, median_ranks

# ------------------------------------------------------------------ the references


def ref_hsic(k: np.ndarray, l: np.ndarray, estimator: str) -> float:  # noqa: E741
    """HSIC₀ = tr(KHLH) (Kornblith et al. 2019) or HSIC₁ (Song et al. 2012), float64, as
    written in tests/test_cka_reference.py."""
    return (ref_hsic0 if estimator == "biased" else ref_hsic1)(k, l)


def ref_cka(k: np.ndarray, l: np.ndarray, estimator: str) -> float:  # noqa: E741
    return ref_hsic(k, l, estimator) / np.sqrt(
        ref_hsic(k, k, estimator) * ref_hsic(l, l, estimator)
    )


def linear_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def sq_dist(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return d


def rbf_gram(x: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """Kornblith et al.'s reference: σ² = sigma² × median of all n² squared distances."""
    d = sq_dist(x)
    s2 = sigma**2 * float(np.median(d))
    return np.exp(-d / (2 * s2)), s2


def data(n: int, p: int, q: int, seed: int = 0, shift: float = 3.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8))
    x = z @ rng.standard_normal((8, p)) + 0.5 * rng.standard_normal((n, p)) + shift
    y = z @ rng.standard_normal((8, q)) + 0.5 * rng.standard_normal((n, q)) - shift
    return x, y


def run(arrays, estimator="debiased", kernel="linear", route="auto", **kw):
    spec = cka_spec(estimator=estimator, kernel=kernel, sigma=0.5)
    out = measure_arrays(arrays, [(0, 1)], [spec], route=route, **kw)
    return out.pairs[(0, 1)]


# ----------------------------------------------------------------- order statistics


@pytest.mark.parametrize("collect", [0, 50, 1 << 23])
def test_order_statistics_are_exact_with_ties_weights_and_every_level(collect):
    rng = np.random.default_rng(collect)
    for trial in range(6):
        x = rng.standard_normal((120, 3)) * 10.0 ** rng.integers(-3, 4)
        if trial % 2:
            x = np.round(x)  # many ties, many zeros
        d = sq_dist(x)
        np.fill_diagonal(d, 0.0)
        flat = np.sort(d, axis=None)
        total = d.size
        ranks = [0, 7, total // 3, *median_ranks(total), total - 1]
        stats = OrderStatistics(total, ranks, collect=collect)
        while not stats.done:
            for i in range(0, 120, 32):
                for j in range(i, 120, 32):
                    stats.add(d[i : i + 32, j : j + 32], 1 if i == j else 2)
            stats.end_round()
        assert stats.results() == [float(flat[r]) for r in ranks]
        if collect == 0:  # nothing collected: every bit found by histograms
            assert stats.rounds == 3


def test_order_statistics_refuse_a_round_that_missed_values():
    stats = OrderStatistics(10, [5])
    stats.add(np.arange(9.0))
    with pytest.raises(RuntimeError, match="saw 9 values"):
        stats.end_round()


# --------------------------------------------------------------------- exact values


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
@pytest.mark.parametrize("block_rows", [37, 128, 400])
def test_linear_sample_route_matches_the_gram_reference_and_the_feature_route(
    estimator, block_rows
):
    x, y = data(400, 60, 45)
    expected = ref_cka(linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0)), estimator)
    got = run([x, y], estimator, route="samples", block_rows=block_rows)
    feat = run([x, y], estimator, route="features", block_rows=block_rows)
    assert got["route"] == "samples" and feat["route"] == "features"
    assert got["cka"] == pytest.approx(expected, rel=1e-9)
    assert got["cka"] == pytest.approx(feat["cka"], rel=1e-9)


@pytest.mark.parametrize("memory", ["2MB", "6MB", "2GB"])
def test_tiles_and_panels_under_a_small_memory_give_the_same_value(memory):
    x, y = data(500, 300, 200, seed=1)
    from reprstore.stats.plan import parse_memory

    layout = sample_layout(500, [300, 200], [8, 8], parse_memory(memory), 2, 50)
    assert layout is not None
    if memory == "2MB":  # rows read in panels, panel pairs streamed
        assert layout.panels > 1 and layout.tile < 500
    if memory == "6MB":  # every row held, the kernel in tiles
        assert layout.panels == 1 and layout.tile < 500
    expected = ref_cka(linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0)), "debiased")
    got = run([x, y], route="samples", memory=memory, block_rows=50)
    assert got["cka"] == pytest.approx(expected, rel=1e-9)


def test_a_row_mask_selects_the_same_rows_on_both_sides():
    x, y = data(300, 40, 30, seed=2)
    mask = np.random.default_rng(3).random(300) < 0.6
    xs, ys = x[mask], y[mask]
    expected = ref_cka(linear_gram(xs - xs.mean(0)), linear_gram(ys - ys.mean(0)), "debiased")
    got = run([x, y], route="samples", mask=mask, block_rows=64)
    assert got["cka"] == pytest.approx(expected, rel=1e-9)
    assert got["_result"].n_samples == int(mask.sum())


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
@pytest.mark.parametrize("memory", ["4MB", "2GB"])
def test_rbf_uses_the_exact_median_and_reports_the_bandwidths(estimator, memory):
    x, y = data(300, 12, 9, seed=4)
    k, s2x = rbf_gram(x, 0.5)
    l, s2y = rbf_gram(y, 0.5)  # noqa: E741
    got = run([x, y], estimator, kernel="rbf", memory=memory, block_rows=50)
    assert got["route"] == "samples"
    assert got["bandwidth_a"] == pytest.approx(s2x, rel=1e-12)
    assert got["bandwidth_b"] == pytest.approx(s2y, rel=1e-12)
    assert got["cka"] == pytest.approx(ref_cka(k, l, estimator), rel=1e-9)
    assert "exact median" in got["sigma_method"]


def test_rbf_of_an_odd_row_count_takes_the_middle_value():
    x, y = data(101, 5, 4, seed=5)
    _, s2 = rbf_gram(x, 1.0)
    got = measure_arrays([x, y], [(0, 1)], [cka_spec(kernel="rbf", sigma=1.0)]).pairs[(0, 1)]
    assert got["bandwidth_a"] == pytest.approx(s2, rel=1e-12)


def test_float16_wide_layer_matches_numpy_gram():
    """The flattened-conv case in small: more features than rows, float16 storage."""
    x, y = data(120, 3000, 2500, seed=6, shift=0.5)
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    xf, yf = x16.astype(np.float64), y16.astype(np.float64)
    expected = ref_cka(linear_gram(xf - xf.mean(0)), linear_gram(yf - yf.mean(0)), "debiased")
    got = run([x16, y16], block_rows=40)
    assert got["route"] == "samples"  # auto: p >> n
    assert got["cka"] == pytest.approx(expected, rel=1e-9)


def test_a_grid_shares_tiles_and_gives_every_pair_its_reference():
    x, y = data(200, 30, 20, seed=7)
    w, _ = data(200, 25, 5, seed=8)
    arrays = [x, y, w]
    pairs = [(0, 1), (0, 2), (1, 2), (2, 2)]
    out = measure_arrays(arrays, pairs, [cka_spec()], route="samples", block_rows=64)
    grams = [linear_gram(a - a.mean(0)) for a in arrays]
    for i, j in pairs:
        assert out.pairs[(i, j)]["cka"] == pytest.approx(
            ref_cka(grams[i], grams[j], "debiased"), rel=1e-9
        )
    assert out.pairs[(2, 2)]["cka"] == pytest.approx(1.0, abs=1e-12)


def test_constant_and_nonfinite_sides_are_refused_on_the_sample_route():
    x, _ = data(100, 10, 10)
    with pytest.raises(ComparisonError, match="constant"):
        run([x, np.ones((100, 10))], route="samples")
    bad = x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ComparisonError, match="NaN or Inf"):
        run([bad, x], route="samples")
    with pytest.raises(ComparisonError, match=r"constant|duplicate"):
        run([x, np.ones((100, 10))], kernel="rbf")


# ------------------------------------------------- rsa and procrustes in sample space


def ref_rdm(x: np.ndarray, rdm: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if rdm == "sqeuclidean":
        return sq_dist(x)
    if rdm == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - u @ u.T


def ref_rsa(x: np.ndarray, y: np.ndarray, rdm: str) -> float:
    iu = np.triu_indices(x.shape[0], 1)
    return float(np.corrcoef(ref_rdm(x, rdm)[iu], ref_rdm(y, rdm)[iu])[0, 1])


def ref_nuclear_ratio(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(0), y - y.mean(0)
    xh, yh = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    return float(np.linalg.svd(xh.T @ yh, compute_uv=False).sum())


@pytest.mark.parametrize("rdm", ["sqeuclidean", "cosine", "correlation"])
def test_rsa_sample_route_matches_the_rdm_reference_and_the_feature_route(rdm):
    x, y = data(250, 40, 30, seed=11, shift=1.0)
    spec = f"rsa:rdm={rdm}"
    got = measure_arrays([x, y], [(0, 1), (1, 0)], spec, route="samples", block_rows=60,
                         memory="3MB")  # fmt: skip
    feat = measure_arrays([x, y], [(0, 1)], spec, route="features", block_rows=60)
    expected = ref_rsa(x, y, rdm)
    assert got.pairs[(0, 1)]["rsa"] == pytest.approx(expected, rel=1e-9)
    assert got.pairs[(0, 1)]["rsa"] == pytest.approx(feat.pairs[(0, 1)]["rsa"], rel=1e-9)
    assert got.pairs[(1, 0)]["rsa"] == got.pairs[(0, 1)]["rsa"]


def test_procrustes_and_angular_shape_of_a_wide_pair_by_the_n_by_n_eigenproblem():
    x, y = data(90, 700, 500, seed=12)
    out = measure_arrays([x, y], [(0, 1), (1, 0)], "cka,procrustes,shape", block_rows=30)
    row = out.pairs[(0, 1)]
    ratio = ref_nuclear_ratio(x, y)
    assert row["route"] == "samples"  # auto: p >> n, and every measure has a sample form
    assert row["procrustes"] == pytest.approx(2.0 - 2.0 * ratio, rel=1e-9)
    assert row["shape"] == pytest.approx(np.arccos(ratio), rel=1e-9)
    assert out.pairs[(1, 0)]["procrustes"] == row["procrustes"]
    feat = measure_arrays([x, y], [(0, 1)], "procrustes", route="features", block_rows=30)
    # the feature route takes singular values as √eig(MMᵀ): at p > n its 411 zero ones
    # come out as √(rounding) each, 1.7e-7 of the sum here; within the SPEC's 1e-6
    assert feat.pairs[(0, 1)]["procrustes"] == pytest.approx(row["procrustes"], rel=1e-4)
    assert 1 - feat.pairs[(0, 1)]["procrustes"] / 2 == pytest.approx(ratio, rel=1e-6)


def ref_ridge_cca(x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """Canonical correlations of Cxx + ε·tr(Cxx)/p·I and Cyy alike (SPEC: cca)."""

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c)
        return (v / np.sqrt(w)) @ v.T

    n = x.shape[0]
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
    cxx += eps * np.trace(cxx) / x.shape[1] * np.eye(x.shape[1])
    cyy += eps * np.trace(cyy) / y.shape[1] * np.eye(y.shape[1])
    rho = np.linalg.svd(inv_sqrt(cxx) @ cxy @ inv_sqrt(cyy), compute_uv=False)
    return rho[: min(n - 1, *cxy.shape)]


def test_ridge_cca_of_a_wide_pair_on_factors_of_the_gram_matrices():
    """cca:ridge at p > n: each side replaced by a factor F (FFᵀ = X̄X̄ᵀ, n × r); the ridge
    keeps the representation's own width p."""
    x, y = data(90, 700, 500, seed=13)
    out = measure_arrays([x, y], [(0, 1)], "cca:ridge=0.1", block_rows=30)
    row = out.pairs[(0, 1)]
    rho = ref_ridge_cca(x, y, 0.1)
    assert row["cca"] == pytest.approx(rho.mean(), rel=1e-9)
    assert row["cca_r2"] == pytest.approx((rho**2).mean(), rel=1e-9)
    assert np.allclose(row["cca_rho"], rho, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "measure", ["svcca:k=20", "svcca:keep=0.9", "linreg:ridge=0.1", "shape:alpha=0.5",
                "shape", "cka,cca:ridge=1e-3"],
)  # fmt: skip
def test_factor_measures_agree_with_the_feature_route(measure):
    x, y = data(90, 400, 300, seed=14)
    pairs = [(0, 1), (1, 0)]
    got = measure_arrays([x, y], pairs, measure, route="samples", block_rows=30)
    feat = measure_arrays([x, y], pairs, measure, route="features", block_rows=30)
    for pair in pairs:
        for col, value in feat.pairs[pair].items():
            if isinstance(value, float) and not col.startswith(("hsic", "_")):
                assert got.pairs[pair][col] == pytest.approx(value, rel=1e-6, abs=1e-9), col
    assert got.pairs[(0, 1)].get("route", "samples") == "samples"


def test_pwcca_has_no_sample_form_and_says_so():
    arrays = [unreadable(1000, 30), unreadable(1000, 20)]
    with pytest.raises(InputError, match=r"pwcca:ridge=0\.0 has no exact sample-space form"):
        measure_arrays(arrays, [(0, 1)], "pwcca", route="samples")


# ------------------------------------------------------------- planner and refusals


def _boom(block: np.ndarray) -> np.ndarray:
    raise AssertionError("a chunk was read")


def unreadable(n: int, p: int) -> da.Array:
    """A real dask array whose every block fails when computed."""
    return da.zeros((n, p), chunks=(max(n // 4, 1), p)).map_blocks(_boom, dtype=np.float64)


def test_shape_refusals_come_before_any_chunk_is_read():
    arrays = [unreadable(100, 300), unreadable(100, 200)]
    for measure, words in [("cca", "ridge"), ("pwcca", "ridge"), ("linreg", "linreg:ridge"),
                           ("svcca:k=150", r"k ≤ 99")]:  # fmt: skip
        with pytest.raises(ComparisonError, match=words):
            measure_arrays(arrays, [(0, 1)], measure)


def test_a_measure_without_a_sample_form_says_so_before_the_pass():
    arrays = [unreadable(1000, 30), unreadable(1000, 20)]
    with pytest.raises(InputError, match="cosine has no exact sample-space form"):
        measure_arrays([unreadable(1000, 30)] * 2, [(0, 1)], "cka,cosine", route="samples")
    with pytest.raises(InputError, match="no feature route"):
        measure_arrays(arrays, [(0, 1)], "cka:kernel=rbf", route="features")
    with pytest.raises(InputError, match="Unknown route"):
        measure_arrays(arrays, [(0, 1)], "cka", route="gram")


def test_dry_run_plans_without_reading_and_auto_picks_by_shape():
    lines: list[str] = []
    wide = [unreadable(2000, 32768), unreadable(2000, 32768)]
    with pytest.raises(DryRun) as got:
        measure_arrays(wide, [(0, 1)], "cka", report=lines.append, dry_run=True)
    assert got.value.plan.routes == {(0, 1): "samples"}
    narrow = [unreadable(50000, 64), unreadable(50000, 64)]
    with pytest.raises(DryRun) as got2:
        measure_arrays(narrow, [(0, 1)], "cka", report=lines.append, dry_run=True)
    assert got2.value.plan.routes == {(0, 1): "features"}
    assert len(lines) == 2
    assert "1 by samples" in lines[0] and "reads" in lines[0] and "FLOP" in lines[0]
    assert "memory" in lines[0] and "of 2 GiB" in lines[0]


# ------------------------------------------------------------------------- the CLI


@pytest.fixture
def wide_store(tmp_path):
    from typer.testing import CliRunner

    from reprstore.cli import app

    x, y = data(150, 2000, 1500, seed=9, shift=0.2)
    np.save(tmp_path / "a.npy", x.astype(np.float16))
    np.save(tmp_path / "b.npy", y.astype(np.float16))
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    for name in ("a", "b"):
        r = runner.invoke(app, ["import", store, str(tmp_path / f"{name}.npy"), "--name", "m",
                                "--layer", name])  # fmt: skip
        assert r.exit_code == 0, r.output
    return store, x.astype(np.float16).astype(float), y.astype(np.float16).astype(float)


def test_cli_prints_the_plan_first_and_writes_the_route(wide_store, tmp_path):
    from typer.testing import CliRunner

    from reprstore.cli import app

    store, x, y = wide_store
    out = tmp_path / "r.csv"
    r = CliRunner().invoke(app, ["cka", store, "--a", "layer=a", "--b", "layer=b",
                                 "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.lstrip().startswith("plan: 1 pair(s) (1 by samples)")
    import pandas as pd

    (row,) = pd.read_csv(out, comment="#").to_dict("records")
    assert row["route"] == "samples"
    expected = ref_cka(linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0)), "debiased")
    assert row["cka"] == pytest.approx(expected, rel=1e-9)


def test_cli_dry_run_reads_nothing_and_exits_0(wide_store, tmp_path):
    from typer.testing import CliRunner

    from reprstore.cli import app

    store, _, _ = wide_store
    before = sorted(os.walk(store))
    r = CliRunner().invoke(app, ["compare", store, "--a", "layer=a", "--b", "layer=b",
                                 "--measure", "cka", "--dry-run"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "plan:" in r.output and "dry run" in r.output and "┃" not in r.output
    assert sorted(os.walk(store)) == before


def test_cli_cca_on_a_wide_layer_is_refused_in_one_line(wide_store):
    from typer.testing import CliRunner

    from reprstore.cli import app

    store, _, _ = wide_store
    r = CliRunner().invoke(app, ["compare", store, "--a", "layer=a", "--b", "layer=b",
                                 "--measure", "cca"])  # fmt: skip
    assert r.exit_code == 1
    assert "cca:ridge=1e-3" in r.output and "Traceback" not in r.output
    assert "plan:" not in r.output  # refused before the plan, before any read


# ------------------------------------------------------------ memory under a limit

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from reprstore.engine.arrays import cka_spec, measure_arrays

    kernel, estimator, route, memory, n, p = sys.argv[1:7]
    n, p = int(n), int(p)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, p)).astype(np.float32)
    y = (x[:, : p // 2] @ rng.standard_normal((p // 2, p))).astype(np.float32)
    spec = cka_spec(estimator=estimator, kernel=kernel)
    measure_arrays([x[:64], y[:64]], [(0, 1)], [spec], route=route)  # threads, BLAS, arenas
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    base = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here (ru_maxrss is inherited)
        f.write("5")
    limit = int(status("VmSize:") + 1.2 * int(memory) + 384 * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = measure_arrays([x, y], [(0, 1)], [spec], route=route, memory=int(memory))
    peak = status("VmHWM:")
    print(json.dumps({"base": base, "peak": peak, "cka": out.pairs[(0, 1)]["cka"],
                      "route": out.pairs[(0, 1)]["route"]}))
    """
)


@pytest.mark.parametrize(
    "kernel,estimator,route,n,p",
    [
        ("rbf", "debiased", "auto", 6000, 32),  # two 6000² kernels would be 576 MiB
        ("rbf", "biased", "auto", 6000, 32),
        ("linear", "debiased", "samples", 6000, 32),
        ("linear", "biased", "features", 20000, 256),
    ],
)
def test_peak_rss_stays_within_memory_under_a_real_address_space_limit(
    kernel, estimator, route, n, p
):
    memory = 160 * 2**20
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    r = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, kernel, estimator, route, str(memory),
         str(n), str(p)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # the inputs are held before ``base``: the comparison may add --memory + 20 %
    assert got["peak"] - got["base"] <= 1.2 * memory, got
    assert got["route"] == ("samples" if route == "auto" else route)


def test_sample_route_with_local_workers(wide_store):
    """--workers 2 (two local threads): the value is the default scheduler's, for cka
    (tiles) and cca:ridge (factors)."""
    from reprstore.workflows.comparison import compare

    store, x, y = wide_store
    local = compare(store, "layer=a", "layer=b", measures="cka,cca:ridge=0.1")
    remote = compare(store, "layer=a", "layer=b", measures="cka,cca:ridge=0.1", workers=2)
    assert list(remote["route"]) == ["samples"]
    assert float(remote["cka"].iloc[0]) == pytest.approx(float(local["cka"].iloc[0]), rel=1e-12)
    assert float(remote["cca"].iloc[0]) == pytest.approx(float(local["cca"].iloc[0]), rel=1e-12)
    expected = ref_cka(linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0)), "debiased")
    assert float(remote["cka"].iloc[0]) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------ the tiles' products by other backends


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_sample_route_tiles_run_on_the_torch_backend(kernel):
    """--device cuda runs the sample route's Gram tiles with torch (the natural GPU work):
    the same backend on the CPU gives the float64 reference's value, and the plan names
    where the products run."""
    from reprstore.engine.pass_context import TorchBackend

    x, y = data(300, 70, 50, seed=21)
    if kernel == "rbf":
        k, _ = rbf_gram(x, 0.5)
        l, _ = rbf_gram(y, 0.5)  # noqa: E741
    else:
        k, l = linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0))  # noqa: E741
    lines: list[str] = []
    got = run([x, y], kernel=kernel, route="samples", block_rows=64, memory="4MB",
              device=TorchBackend("cpu", "float64"), report=lines.append)  # fmt: skip
    assert got["route"] == "samples"
    assert got["cka"] == pytest.approx(ref_cka(k, l, "debiased"), rel=1e-9)
    assert "products on torch cpu (float64)" in lines[0]


def drifted(n: int = 240, seed: int = 22) -> tuple[np.ndarray, np.ndarray]:
    """Shifted data whose rows after the first 60 (the first block, where offsets come
    from) drift far from it, and a second side of tight clusters: where float32 products
    of distances would cancel."""
    x, y = data(n, 90, 60, seed=seed, shift=20.0)
    x[60:] += 300.0 * np.sign(np.sin(np.arange(n - 60)))[:, None]
    centres = np.random.default_rng(seed).normal(size=(4, 60)) * 5.0
    y = centres[np.arange(n) % 4] + 1e-3 * y / np.abs(y).max()
    return x, y


@pytest.mark.parametrize("kind", ["shifted", "drifted"])
def test_sample_route_float32_products_of_the_linear_kernel_stay_within_1e6(kind):
    """--precision float32 now reaches the sample route's linear-kernel tiles (it used to
    be ignored there): products in float32, sums in float64, within 1e-6 of the float64
    reference's value, as the feature route's float32 products."""
    x, y = data(240, 90, 60, seed=22, shift=20.0) if kind == "shifted" else drifted()
    lines: list[str] = []
    f32 = measure_arrays([x, y], [(0, 1)], "cka", route="samples", block_rows=60,
                         precision="float32", report=lines.append).pairs[(0, 1)]  # fmt: skip
    f64 = measure_arrays([x, y], [(0, 1)], "cka", route="samples", block_rows=60).pairs[(0, 1)]
    expected = ref_cka(linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0)), "debiased")
    assert f64["cka"] == pytest.approx(expected, rel=1e-9)
    assert f32["cka"] == pytest.approx(expected, rel=1e-6)
    assert f32["cka"] != f64["cka"]  # the float32 products did run
    assert "products in float32" in lines[0]


@pytest.mark.parametrize("spec", ["cka:kernel=rbf", "rsa", "rsa:rdm=correlation",
                                  "rsa:rdm=cosine"])  # fmt: skip
def test_sample_route_distance_tiles_keep_float64_products_under_float32(spec):
    """Distances ‖x‖² + ‖y‖² − 2g (rbf, rsa) and 1 − uᵢ·uⱼ (cosine, correlation RDMs) cancel
    where rows sit far from the offset or close together: with float32 products the rbf
    CKA of tight clusters came out 0.566 instead of 0.853. Those tiles stay float64
    products under --precision float32: the same bits as float64, the reference's value."""
    x, y = drifted()
    f32 = measure_arrays([x, y], [(0, 1)], spec, route="samples", block_rows=60,
                         precision="float32").pairs[(0, 1)]  # fmt: skip
    f64 = measure_arrays([x, y], [(0, 1)], spec, route="samples", block_rows=60).pairs[(0, 1)]
    col = spec.split(":")[0]
    if col == "cka":
        expected = ref_cka(rbf_gram(x, 0.5)[0], rbf_gram(y, 0.5)[0], "debiased")
    else:
        expected = ref_rsa(x, y, spec.split("=")[1] if "=" in spec else "sqeuclidean")
    assert f32[col] == f64[col]
    assert f32[col] == pytest.approx(expected, rel=1e-9)


def test_sample_route_factors_keep_float64_products_under_float32():
    """The factor measures' n × n Gram matrices stay float64 with --precision float32:
    their rank rule would read float32 rounding as rank (linreg came out 1 % high, ridge-free
    cca refused a full-rank side), so float32 changes nothing there."""
    x, y = data(240, 90, 60, seed=22, shift=20.0)
    spec = "procrustes,linreg,shape"
    f32 = measure_arrays([x, y], [(0, 1)], spec, route="samples", block_rows=60,
                         precision="float32").pairs[(0, 1)]  # fmt: skip
    ratio = ref_nuclear_ratio(x, y)
    assert f32["procrustes"] == pytest.approx(2.0 - 2.0 * ratio, rel=1e-9)
    assert f32["shape"] == pytest.approx(np.arccos(ratio), rel=1e-9)
    xc, yc = x - x.mean(0), y - y.mean(0)
    beta, *_ = np.linalg.lstsq(xc, yc, rcond=None)
    r2 = 1.0 - float(((yc - xc @ beta) ** 2).sum()) / float((yc**2).sum())
    assert f32["linreg"] == pytest.approx(r2, rel=1e-9)
