"""``reprstore.cka`` against the float64 reference: every estimator × kernel, chunkings,
merge trees, properties, hard data (large mean, float16) and bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from test_cka_reference import correlated, ref_cka, ref_hsic1

import reprstore
import reprstore.engine.arrays
from reprstore.engine.pass_context import TorchBackend
from reprstore.errors import ComparisonError, InputError
from reprstore.workflows.in_memory import cka

ESTIMATORS = ["biased", "debiased", "minibatch"]
KERNELS = ["linear", "rbf"]
REL = 1e-6


def close(value: float, expected: float, rel: float = REL) -> None:
    assert value == pytest.approx(expected, rel=rel, abs=1e-12), (value, expected)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_numpy_matches_reference(rng: np.random.Generator, estimator: str, kernel: str) -> None:
    x, y = correlated(rng)
    got = cka(x, y, estimator, kernel, batch_size=32)
    close(got.cka, ref_cka(x, y, estimator, kernel, batch_size=32))
    assert got.n_samples == 120
    assert (got.n_batches == 3) if estimator == "minibatch" else got.n_batches is None


CHUNKINGS = {
    "rows1": 1,
    "rows7": 7,
    "ragged": (30, 3, 20, 13, 4),
}


@pytest.mark.parametrize("split_every", [2, 5])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_dask_chunkings_match_reference(
    rng: np.random.Generator, estimator: str, kernel: str, chunks, split_every: int
) -> None:
    x, y = correlated(rng, n=70)
    dx = da.from_array(x, chunks=(chunks, -1))
    dy = da.from_array(y, chunks=(13, 4))  # different chunks on the other side: aligned
    got = cka(dx, dy, estimator, kernel, batch_size=24, split_every=split_every)
    close(got.cka, ref_cka(x, y, estimator, kernel, batch_size=24))


@pytest.mark.parametrize("kernel", KERNELS)
def test_shuffled_minibatch_matches_reference_and_is_reproducible(
    rng: np.random.Generator, kernel: str
) -> None:
    x, y = correlated(rng, n=150)
    dx, dy = da.from_array(x, chunks=(16, -1)), da.from_array(y, chunks=(16, -1))
    got = cka(dx, dy, "minibatch", kernel, batch_size=20, shuffle=7)
    close(got.cka, ref_cka(x, y, "minibatch", kernel, batch_size=20, shuffle=7))
    assert got.n_batches == 7 and got.n_samples == 150
    assert cka(x, y, "minibatch", kernel, batch_size=20, shuffle=7).cka == pytest.approx(got.cka)
    other = cka(x, y, "minibatch", kernel, batch_size=20, shuffle=8).cka
    assert other != pytest.approx(got.cka, rel=1e-9)


def test_shuffle_split_over_passes_by_memory(rng: np.random.Generator) -> None:
    import dask

    x, y = correlated(rng, n=150)
    expected = ref_cka(x, y, "minibatch", batch_size=20, shuffle=3)
    dx, dy = da.from_array(x, chunks=(16, -1)), da.from_array(y, chunks=(16, -1))
    calls, computes = [], []

    def counting_get(dsk, keys, **kwargs):
        computes.append(1)
        return dask.get(dsk, keys, **kwargs)

    got = reprstore.engine.arrays.compare_arrays(
        [dx, dy], [(0, 1)], estimator="minibatch", batch_size=20, shuffle=3,
        memory=56_000, progress=lambda d, t: calls.append((d, t)),
        scheduler=counting_get,
    )  # fmt: skip
    close(got[0].cka, expected)
    assert (
        len(computes) == 3
    )  # 7 batches, 3 per pass: what one task and the batch ids leave of the limit
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("shuffle", [None, 11])
def test_no_tiny_last_batch(rng: np.random.Generator, shuffle: int | None) -> None:
    """1,024 + 4 rows in batches of 256: 4 batches of 257 rows, each weighing the same."""
    x, y = correlated(rng, n=1028, p=5, q=4)
    got = cka(da.from_array(x, chunks=(100, -1)), y, "minibatch", batch_size=256,
              shuffle=shuffle)  # fmt: skip
    assert got.n_batches == 4 and got.n_samples == 1028
    order = np.arange(1028) if shuffle is None else np.random.default_rng(shuffle).permutation(1028)
    hxy = hxx = hyy = 0.0  # the oracle, written out: four batches of 257 consecutive slots
    for b in range(4):
        rows = order[257 * b : 257 * (b + 1)]
        k, l = x[rows] @ x[rows].T, y[rows] @ y[rows].T  # noqa: E741
        hxy, hxx, hyy = hxy + ref_hsic1(k, l), hxx + ref_hsic1(k, k), hyy + ref_hsic1(l, l)
    close(got.cka, hxy / np.sqrt(hxx * hyy))
    assert cka(x[:7], y[:7], "minibatch", batch_size=256).n_batches == 1


# ------------------------------------------------------------------------- properties


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_properties(rng: np.random.Generator, estimator: str, kernel: str) -> None:
    x, y = correlated(rng, n=80, p=6, q=6)
    kw = dict(estimator=estimator, kernel=kernel, batch_size=20)
    base = cka(x, y, **kw).cka
    close(cka(x, x, **kw).cka, 1.0, rel=1e-9)
    close(cka(y, x, **kw).cka, base, rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    close(cka(x @ q, y, **kw).cka, base, rel=1e-9)
    close(cka(x, 3.5 * y, **kw).cka, base, rel=1e-9)
    close(cka(0.01 * x @ q, y @ q.T, **kw).cka, base, rel=1e-9)
    general = np.diag([10.0, 1, 1, 1, 1, 0.1]) @ rng.normal(size=(6, 6))
    assert abs(cka(x @ general, y, **kw).cka - base) > 1e-3


def test_debiased_stays_near_zero_for_independent_wide_data() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 400)), rng.normal(size=(40, 400))
    assert abs(cka(x, y).cka) < 0.1 < cka(x, y, "biased").cka


# ------------------------------------------------------------------------- hard data


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_large_mean_matches_centred_reference(rng: np.random.Generator, estimator: str) -> None:
    """Mean 1000× the spread: the reference is taken on exactly centred data."""
    x, y = correlated(rng, n=160, p=16, q=9)
    x_raw = 1000.0 * (1.0 + rng.random(16)) + x
    y_raw = -1000.0 * (1.0 + rng.random(9)) + y
    dx, dy = da.from_array(x_raw, chunks=(7, -1)), da.from_array(y_raw, chunks=(7, -1))
    got = cka(dx, dy, estimator, batch_size=40).cka
    expected = ref_cka(x_raw - x_raw.mean(0), y_raw - y_raw.mean(0), estimator, batch_size=40)
    close(got, expected)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float16_input(rng: np.random.Generator, estimator: str, kernel: str) -> None:
    x, y = correlated(rng)
    x16, y16 = (50 + x).astype(np.float16), y.astype(np.float16)
    dx = da.from_array(x16, chunks=(7, -1))
    got = cka(dx, y16, estimator, kernel, batch_size=30).cka
    x64, y64 = x16.astype(np.float64), y16.astype(np.float64)
    close(got, ref_cka(x64 - x64.mean(0), y64, estimator, kernel, batch_size=30))


# -------------------------------------------------------------------------- inputs


def test_zarr_and_torch_inputs(rng: np.random.Generator) -> None:
    import torch
    import zarr

    x, y = correlated(rng)
    z = zarr.create_array(store={}, shape=x.shape, chunks=(16, x.shape[1]), dtype="float32")
    z[:] = x.astype(np.float32)
    t = torch.from_numpy(y).to(torch.bfloat16)
    expected = ref_cka(x.astype(np.float32), t.float().numpy())
    close(cka(z, t).cka, expected)


def test_torch_backend_on_cpu_matches_reference(rng: np.random.Generator) -> None:
    x, y = correlated(rng)
    for estimator in ESTIMATORS:
        got = cka(x, da.from_array(y, chunks=(7, -1)), estimator, batch_size=25,
                  device=TorchBackend("cpu"))  # fmt: skip
        close(got.cka, ref_cka(x, y, estimator, batch_size=25))


def test_cuda_refused_without_gpu(rng: np.random.Generator) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    x, y = correlated(rng, n=20)
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        cka(x, y, device="cuda")
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
        cka(x, y, device="tpu")


def test_public_api_exports_cka(rng: np.random.Generator) -> None:
    x, y = correlated(rng, n=30)
    assert reprstore.cka(x, y).cka == pytest.approx(cka(x, y).cka)


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_too_few_rows(estimator: str) -> None:
    x = np.arange(6.0).reshape(3, 2) ** 2
    with pytest.raises(ComparisonError, match=r"Too few samples.*at least 4 rows\. Got 3"):
        cka(x, x, estimator)
    assert cka(x, x, "biased").cka == pytest.approx(1.0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("value", [0.0, 0.1, 1234.567])
def test_constant_representation(
    rng: np.random.Generator, estimator: str, kernel: str, value: float
) -> None:
    x = rng.normal(size=(60, 5))
    const = np.full((60, 3), value)
    with pytest.raises(ComparisonError, match="Representation B is constant"):
        cka(x, da.from_array(const, chunks=(7, -1)), estimator, kernel, batch_size=20)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_nan_and_inf_named_with_row_count(
    rng: np.random.Generator, estimator: str, kernel: str
) -> None:
    x, y = correlated(rng, n=60)
    bad = x.copy()
    bad[[3, 40, 41], 1] = [np.nan, np.inf, -np.inf]
    with pytest.raises(ComparisonError, match="Representation A has NaN or Inf values in 3 of 60"):
        cka(da.from_array(bad, chunks=(7, -1)), y, estimator, kernel, batch_size=20)
    with pytest.raises(ComparisonError, match="Representation B has NaN or Inf values in 3 of"):
        cka(y, bad, estimator, kernel, batch_size=20)


def test_bad_options(rng: np.random.Generator) -> None:
    x, y = correlated(rng, n=30)
    with pytest.raises(InputError, match="Unknown estimator 'unbiased'"):
        cka(x, y, "unbiased")
    with pytest.raises(InputError, match="Unknown kernel 'poly'"):
        cka(x, y, kernel="poly")
    with pytest.raises(InputError, match="sigma must be a positive"):
        cka(x, y, kernel="rbf", sigma=0)
    with pytest.raises(InputError, match="batch-size must be at least 4"):
        cka(x, y, "minibatch", batch_size=3)
    with pytest.raises(ComparisonError, match="Row counts differ"):
        cka(x, y[:20])
    with pytest.raises(InputError, match="Expected a 2-D array"):
        cka(x[:, 0], y[:, 0])


def test_exact_rbf_runs_in_tiles_under_a_small_memory(rng: np.random.Generator) -> None:
    """Exact rbf no longer needs the n × n kernels: 1 MB holds 400 rows' tiles."""
    x, y = correlated(rng, n=400)
    small = cka(x, y, kernel="rbf", memory="1MB")
    assert small.route == "samples"
    assert small.cka == pytest.approx(cka(x, y, kernel="rbf").cka, rel=1e-9)
    with pytest.raises(ComparisonError, match="Raise --memory"):
        cka(x, y, kernel="rbf", memory="20KB")
    # minibatch rbf: the exact median of its 400² distances does not fit 1 MB (it once ran
    # over the limit unsaid), 4 MB holds it
    with pytest.raises(ComparisonError, match=r"RBF bandwidth .* needs 2 MiB"):
        cka(x, y, "minibatch", kernel="rbf", memory="1MB", batch_size=50)
    assert cka(x, y, "minibatch", kernel="rbf", memory="4MB", batch_size=50).n_batches == 8


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float32_products_keep_1e6_on_large_mean(rng: np.random.Generator, estimator: str) -> None:
    """The measurement behind offering ``precision="float32"`` (float64 stays the default)."""
    x, y = correlated(rng, n=200, p=64, q=32)
    x_raw, y_raw = 1000.0 * (1.0 + rng.random(64)) + x, -1000.0 + y
    expected = ref_cka(x_raw - x_raw.mean(0), y_raw - y_raw.mean(0), estimator, batch_size=40)
    dx = da.from_array(x_raw, chunks=(7, -1))
    close(cka(dx, y_raw, estimator, batch_size=40, precision="float32").cka, expected)
    got = cka(dx, y_raw, estimator, batch_size=40, device=TorchBackend("cpu", "float32"))
    close(got.cka, expected)
    with pytest.raises(InputError, match="Unknown precision"):
        cka(x, y, precision="float16")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_minibatch_float32_products_of_stored_halves_and_singles(
    rng: np.random.Generator, dtype: str, kernel: str
) -> None:
    """Minibatch linear kernels of float16/float32 rows are shifted in float32 (no float64
    copy): still within 1e-6 of the float64 reference of the same rows, also far from the
    origin. (The rbf case keeps float64 products: the same bound, by another route.)"""
    x, y = correlated(rng, n=240, p=48, q=24)
    x = (300.0 + x).astype(dtype)  # large mean: the shift must be exact where it matters
    y = (-20.0 + y).astype(dtype)
    # the reference on the float64 rows shifted by their mean (HSIC₁ ignores a shift; the
    # uncentred reference itself loses 1e-5 to cancellation at this offset)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    expected = ref_cka(x64 - x64.mean(0), y64 - y64.mean(0), "minibatch", kernel=kernel,
                       batch_size=40)  # fmt: skip
    dx = da.from_array(x, chunks=(64, -1))
    got = cka(dx, y, "minibatch", kernel=kernel, batch_size=40, precision="float32")
    close(got.cka, expected)


@pytest.mark.parametrize("scale", [1e-24, 1e-21, 1e-13, 1e18])
def test_minibatch_float32_products_far_from_float32_range(
    rng: np.random.Generator, scale: float
) -> None:
    """float32 squares underflow below ~1e-38 and overflow above ~3e38: batches whose
    kernels would leave [1e-24, 1e24] are scaled first (the careful route), not summed as
    subnormal noise or infinities."""
    x, y = correlated(rng, n=160, p=32, q=16)
    x32 = (scale * x).astype(np.float32)
    expected = ref_cka(x32, y, "minibatch", batch_size=40)
    close(cka(x32, y, "minibatch", batch_size=40, precision="float32").cka, expected)


def test_rbf_sigma_estimated_from_a_sample_for_large_n() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5000, 3)), rng.normal(size=(5000, 2))
    got = cka(da.from_array(x, chunks=(512, -1)), y, "minibatch", "rbf", batch_size=1000)
    assert got.n_batches == 5
    assert "estimated from the 2048² squared distances among 2048 of 5000 rows" in str(
        got.sigma_method
    )
    sub = x[rng.choice(5000, size=1500, replace=False)]
    median = np.median(((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1))
    assert got.sigma2_a == pytest.approx(0.25 * median, rel=0.05)


def test_minibatch_rbf_keeps_float64_products_under_float32() -> None:
    """The minibatch rbf kernel is made from distances ‖x‖² + ‖y‖² − 2g, which cancel for
    rows close together (tight clusters) or far from the batch's mean: as on the sample
    route, its products stay float64 under precision="float32" (the same bits as float64);
    only the linear kernel's run in float32."""
    from test_wide import drifted

    x, y = drifted()
    f32 = cka(x, y, "minibatch", kernel="rbf", batch_size=60, precision="float32").cka
    f64 = cka(x, y, "minibatch", kernel="rbf", batch_size=60).cka
    assert f32 == f64
    assert f64 == pytest.approx(ref_cka(x, y, "minibatch", kernel="rbf", batch_size=60), rel=1e-9)
