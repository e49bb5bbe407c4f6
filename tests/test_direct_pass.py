"""The direct linear pass (:mod:`reprstore.engine.direct`): inputs of a few row blocks read
whole and summed without a dask graph. Checked against a plain float64 numpy reference of
linear CKA written here (the n × n kernels), against the dask pass on the same blocks for
every measure that takes it, and for when the planner takes it (the plan line, the
plan's ``direct``) and when not; masks, NaN and constant inputs as before."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import reprstore
from reprstore.engine.arrays import measure_arrays
from reprstore.engine.planner import DryRun, Plan
from reprstore.errors import ComparisonError
from reprstore.stats.plan import STORED_COPIES
from reprstore.uncertainty import options

REL = 1e-12
MEASURES = "cka,cka:estimator=biased,cca,svcca,pwcca,procrustes,linreg,rsa,shape,cosine,pca"


def reference_cka(x: np.ndarray, y: np.ndarray, estimator: str) -> float:
    """Linear CKA from the n × n kernels in float64: Kornblith et al.'s HSIC₀ on centred
    kernels (biased) or Song et al.'s HSIC₁ on kernels with zeroed diagonals (debiased).
    Both are invariant to translating the features: the columns are centred first, so
    that a large mean does not cancel in the kernels."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    n = x.shape[0]

    def hsic(k: np.ndarray, ell: np.ndarray) -> float:
        if estimator == "biased":
            h = np.eye(n) - np.ones((n, n)) / n
            return float(np.trace(k @ h @ ell @ h))
        k, ell = k.copy(), ell.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(ell, 0.0)
        one = np.ones(n)
        return float(
            np.trace(k @ ell)
            + (one @ k @ one) * (one @ ell @ one) / ((n - 1) * (n - 2))
            - 2.0 * (one @ k @ ell @ one) / (n - 2)
        ) / (n * (n - 3))

    k, ell = x @ x.T, y @ y.T
    return hsic(k, ell) / np.sqrt(hsic(k, k) * hsic(ell, ell))


def pair(rng: np.random.Generator, n: int = 300, p: int = 20, q: int = 15,
         mean: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Two related representations of the same n rows (a mean far from 0 when asked)."""
    x = rng.standard_normal((n, p))
    y = x[:, :q] @ rng.standard_normal((q, q)) + 0.7 * rng.standard_normal((n, q))
    return x + mean, y - mean


def threaded(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's local threads behind a callable the planner does not know: the dask pass."""
    return dask.threaded.get(dsk, keys, **kwargs)


def plan_of(arrays: list[Any], measures: str = "cka", **settings: Any) -> Plan:
    with pytest.raises(DryRun) as got:
        measure_arrays(arrays, [(0, 1)], measures, dry_run=True, **settings)
    return got.value.plan


def values(out: Any, key: tuple[int, int]) -> dict[str, float]:
    return {k: v for k, v in out.pairs[key].items() if isinstance(v, float)}


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_direct_matches_numpy_reference(
    rng: np.random.Generator, estimator: str, dtype: str
) -> None:
    x, y = pair(rng, mean=300.0 if dtype != "float16" else 3.0)
    x, y = x.astype(dtype), y.astype(dtype)
    assert plan_of([x, y]).direct
    got = reprstore.cka(x, y, estimator=estimator).cka
    assert got == pytest.approx(reference_cka(x, y, estimator), rel=1e-10)


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
def test_direct_reads_zarr_whole_and_matches_reference(
    rng: np.random.Generator, estimator: str
) -> None:
    x, y = pair(rng, n=500)
    zx = zarr.create_array(store={}, shape=x.shape, chunks=(128, x.shape[1]), dtype="float16")
    zy = zarr.create_array(store={}, shape=y.shape, chunks=(128, y.shape[1]), dtype="float16")
    zx[:], zy[:] = x, y
    plan = plan_of([zx, zy])
    assert plan.direct and "direct" in plan.line()
    got = reprstore.cka(zx, zy, estimator=estimator).cka
    expected = reference_cka(zx[:], zy[:], estimator)
    assert got == pytest.approx(expected, rel=1e-10)
    # the zarr arrays give what their values in memory give, on the same row blocks
    same = reprstore.engine.arrays.compare_arrays([zx[:], zy[:]], [(0, 1)], estimator=estimator,
                                                  block_rows=128)  # fmt: skip
    assert got == pytest.approx(same[0].cka, rel=REL)
    assert reprstore.cka(zy, zx, estimator=estimator).cka == got  # the same bits both ways


def test_direct_equals_dask_pass_for_every_measure(rng: np.random.Generator) -> None:
    x, y = pair(rng, q=20, mean=50.0)
    arrays = [x.astype(np.float32), y.astype(np.float32)]
    assert plan_of(arrays, MEASURES, block_rows=100).direct  # 3 row blocks
    assert not plan_of(arrays, MEASURES, block_rows=100, scheduler=threaded).direct
    direct = measure_arrays(arrays, [(0, 1), (1, 0)], MEASURES, block_rows=100)
    graph = measure_arrays(arrays, [(0, 1), (1, 0)], MEASURES, block_rows=100,
                           scheduler=threaded)  # fmt: skip
    for key in [(0, 1), (1, 0)]:
        a, b = values(direct, key), values(graph, key)
        assert a.keys() == b.keys() and len(a) > 10
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=REL, abs=1e-13), name


def test_direct_taken_for_small_inputs_only(rng: np.random.Generator) -> None:
    x, y = pair(rng, n=1000)
    small = plan_of([x, y])
    assert small.direct and "(direct: whole arrays read at once)" in small.line()
    assert plan_of([x, y], scheduler="sync").direct  # synchronous: one thread, no graph
    many = plan_of([x, y], block_rows=100)  # 10 row blocks: the dask pass
    assert not many.direct and "direct" not in many.line()
    assert not plan_of([x, y], scheduler=threaded).direct
    assert not plan_of([x, y], "cka:estimator=minibatch").direct
    assert plan_of([x, y], "rsa:rdm=cosine").direct  # a row view of the whole arrays
    with pytest.raises(DryRun) as got:  # an interval: its own passes
        measure_arrays([x, y], [(0, 1)], "cka", dry_run=True,
                       uncertainty=options(ci=0.9, bootstrap=10))  # fmt: skip
    assert not got.value.plan.direct


def test_direct_memory_counts_the_whole_arrays(rng: np.random.Generator) -> None:
    x, y = pair(rng, n=2000, p=40, q=30)
    dx, dy = (da.from_array(a, chunks=(500, -1)) for a in (x, y))  # dask inputs: 4 blocks
    plan = plan_of([dx, dy])
    assert plan.direct and plan.memory >= STORED_COPIES * (x.nbytes + y.nbytes)
    # a budget below the direct pass's need: the dask pass (within it), the same value
    tight = plan_of([dx, dy], memory=plan.memory - 1)
    assert not tight.direct and tight.memory <= plan.memory - 1
    direct = reprstore.cka(dx, dy).cka
    assert direct == pytest.approx(reference_cka(x, y, "debiased"), rel=1e-10)
    assert reprstore.cka(dx, dy, memory=plan.memory - 1).cka == pytest.approx(direct, rel=REL)


def test_direct_with_a_row_mask(rng: np.random.Generator) -> None:
    x, y = pair(rng, n=400, mean=20.0)
    mask = rng.random(400) < 0.6
    mask[:100] = False  # the first row block holds no selected row
    assert plan_of([x, y], mask=mask, block_rows=100).direct
    for estimator in ("debiased", "biased"):
        spec = f"cka:estimator={estimator}"
        got = measure_arrays([x, y], [(0, 1)], spec, mask=mask, block_rows=100)
        graph = measure_arrays([x, y], [(0, 1)], spec, mask=mask, block_rows=100,
                               scheduler=threaded)  # fmt: skip
        value = got.pairs[(0, 1)]["cka"]
        assert value == pytest.approx(reference_cka(x[mask], y[mask], estimator), rel=1e-10)
        assert value == pytest.approx(graph.pairs[(0, 1)]["cka"], rel=REL)


def _error(x: np.ndarray, y: np.ndarray, **settings: Any) -> str:
    with pytest.raises(ComparisonError) as got:
        reprstore.cka(x, y, **settings)
    return str(got.value)


def test_direct_refuses_bad_input_as_the_dask_pass(rng: np.random.Generator) -> None:
    x, y = pair(rng, n=200)
    bad = x.copy()
    bad[7, 3] = np.nan
    constant = np.ones_like(y)
    for a, b in [(bad, y), (x, constant), (x[:3], y[:3])]:
        message = _error(a, b)
        assert "\n" not in message
        assert message == _error(a, b, scheduler=threaded)
    assert "NaN" in _error(bad, y)


@pytest.mark.slow  # 1 GiB of numpy arrays: the size where the old count fell short
def test_direct_memory_counts_the_row_views_being_made(rng: np.random.Generator) -> None:
    """A row view of a whole array holds two more float64 copies while it is made (the
    float64 rows, their scaled copy, the unit rows), and the working buffers are at most
    fused.WORK_BYTES: the plan counts both. numpy's own allocations (tracemalloc) stay
    within the plan's figure (the old count: 964 MiB planned, 1,055 MiB held)."""
    import tracemalloc

    x = rng.normal(size=(30_000, 1024)).astype(np.float16)
    y = rng.normal(size=(30_000, 1024)).astype(np.float16)
    dx, dy = (da.from_array(a, chunks=(7_500, -1)) for a in (x, y))
    spec = "rsa:rdm=correlation"
    plan = plan_of([dx, dy], spec, scheduler="sync")
    assert plan.direct
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        measure_arrays([dx, dy], [(0, 1)], spec, scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= plan.memory, (peak / 2**20, plan.memory / 2**20)
