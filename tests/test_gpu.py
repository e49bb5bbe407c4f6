"""The ``--device cuda`` paths, run where a CUDA GPU is present and skipped, with the
reason, where it is not (a CPU machine is never an error for CPU runs: see
``test_cka.test_cuda_refused_without_gpu`` for the refusal of ``--device cuda`` there).

Every value is checked against a plain float64 numpy computation of the published formula
(full n × n Gram matrices in memory), as in ``test_wide``; the same code paths run on the
CPU in ``test_wide.test_sample_route_tiles_run_on_the_torch_backend`` and
``test_cka.test_torch_backend_on_cpu_matches_reference`` with torch's CPU device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_cka_reference import correlated
from test_cka_reference import ref_cka as ref_minibatch_cka
from test_wide import data, linear_gram, rbf_gram, ref_cka, ref_rsa

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False on this machine)",
)


def _grams(x: np.ndarray, y: np.ndarray, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    if kernel == "rbf":
        return rbf_gram(x, 0.5)[0], rbf_gram(y, 0.5)[0]
    return linear_gram(x - x.mean(0)), linear_gram(y - y.mean(0))


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(
    ("route", "kernel"), [("features", "linear"), ("samples", "linear"), ("samples", "rbf")]
)
def test_exact_cka_on_the_gpu_matches_the_float64_reference(route, kernel, precision):
    from reprstore.engine.arrays import cka_spec, measure_arrays

    x, y = data(400, 70, 50, seed=31)
    k, l = _grams(x, y, kernel)  # noqa: E741
    lines: list[str] = []
    out = measure_arrays([x, y], [(0, 1)], [cka_spec(kernel=kernel, sigma=0.5)], route=route,
                         device="cuda", precision=precision, block_rows=64,
                         report=lines.append)  # fmt: skip
    got = out.pairs[(0, 1)]
    assert got["route"] == route
    rel = 1e-9 if precision == "float64" else 1e-6
    assert got["cka"] == pytest.approx(ref_cka(k, l, "debiased"), rel=rel)
    assert f"products on torch cuda ({precision})" in lines[0]


def test_minibatch_cka_on_the_gpu_matches_the_reference_of_the_same_batches():
    import reprstore

    rng = np.random.default_rng(32)
    x, y = correlated(rng, n=300)
    got = reprstore.cka(x, y, "minibatch", batch_size=50, device="cuda")
    assert got.cka == pytest.approx(ref_minibatch_cka(x, y, "minibatch", batch_size=50), rel=1e-9)


@pytest.mark.parametrize("spec", ["rsa", "procrustes,shape"])
def test_sample_route_measures_on_the_gpu(spec):
    from reprstore.engine.arrays import measure_arrays

    x, y = data(200, 300, 250, seed=33)
    got = measure_arrays([x, y], [(0, 1)], spec, route="samples", device="cuda",
                         block_rows=50).pairs[(0, 1)]  # fmt: skip
    if spec == "rsa":
        assert got["rsa"] == pytest.approx(ref_rsa(x, y, "sqeuclidean"), rel=1e-9)
    else:
        xc, yc = x - x.mean(0), y - y.mean(0)
        ratio = np.linalg.svd(xc.T @ yc, compute_uv=False).sum()
        ratio /= np.linalg.norm(xc) * np.linalg.norm(yc)
        assert got["procrustes"] == pytest.approx(2.0 - 2.0 * ratio, rel=1e-9)
        assert got["shape"] == pytest.approx(np.arccos(ratio), rel=1e-9)


def test_extract_on_the_gpu_stores_what_the_cpu_forward_pass_gives(tmp_path: Path):
    import models_for_tests as mft
    import zarr

    from reprstore import extract

    x = np.random.default_rng(34).standard_normal((64, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    store = tmp_path / "s.zarr"
    extract(store, model="models_for_tests:mlp", data=str(tmp_path / "x.npy"), layers="3",
            name="m", dtype="float32", batch_size=16, device="cuda")  # fmt: skip
    stored = zarr.open_array(store / "reprs/m/0/final/default/3", mode="r")[:]
    model = mft.mlp().eval()
    got: list[np.ndarray] = []
    handle = dict(model.named_modules())["3"].register_forward_hook(
        lambda _m, _i, out: got.append(out.detach().numpy())
    )
    with torch.no_grad():
        model(torch.from_numpy(x))
    handle.remove()
    np.testing.assert_allclose(stored, got[0], rtol=1e-4, atol=1e-5)
