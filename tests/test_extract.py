"""extract: stored values equal a direct forward pass, for real models and checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import models_for_tests as mft
import numpy as np
import pytest
import torch
import zarr

import reprstore
from reprstore.capture.hooks import layer_glob, select_layers
from reprstore.capture.reduce import reduce_output
from reprstore.errors import DatasetMismatchError, InputError
from reprstore.workflows.extraction import extract

N_MLP, N_CNN = 50, 30


def _train(make, x: torch.Tensor, seed: int, out: Path) -> list[Path]:
    """A few SGD steps from a seeded init; a state_dict after each of 3 steps."""
    torch.manual_seed(seed)
    model = make()
    for p in model.parameters():  # seed-dependent initialisation
        torch.nn.init.normal_(p, std=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out.mkdir(parents=True)
    paths = []
    for step in (1, 2, 3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        paths.append(out / f"step{step}.pt")
        torch.save(model.state_dict(), paths[-1])
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Data files and checkpoints: {mlp, cnn} × seeds {0, 1} × steps {1, 2, 3}."""
    root = tmp_path_factory.mktemp("runs")
    gen = np.random.default_rng(0)
    x_mlp = gen.standard_normal((N_MLP, 8)).astype(np.float32)
    x_cnn = gen.standard_normal((N_CNN, 3, 8, 8)).astype(np.float32)
    np.save(root / "x_mlp.npy", x_mlp)
    torch.save(torch.from_numpy(x_cnn), root / "x_cnn.pt")
    ckpts = {}
    for name, make, x in (("mlp", mft.mlp, x_mlp), ("cnn", mft.cnn, x_cnn)):
        for seed in (0, 1):
            ckpts[name, seed] = _train(make, torch.from_numpy(x), seed, root / f"{name}_{seed}")
    return {"root": root, "x_mlp": x_mlp, "x_cnn": x_cnn, "ckpts": ckpts}


def _reference(model: torch.nn.Module, x: np.ndarray, layers: list[str], batch: int) -> dict:
    """Layer outputs by plain forward hooks, in the same batches; images mean-pooled."""
    got: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: got[name].append(
                (o.mean(dim=(2, 3)) if o.ndim == 4 else o).detach().numpy()
            )
        )
        for name in layers
    ]
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            model(torch.from_numpy(x[lo : lo + batch]))
    for h in handles:
        h.remove()
    return {name: np.concatenate(blocks) for name, blocks in got.items()}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_values_equal_direct_forward(runs: dict, tmp_path: Path, kind: str) -> None:
    store = tmp_path / "s.zarr"
    data = runs["root"] / ("x_mlp.npy" if kind == "mlp" else "x_cnn.pt")
    x = runs[f"x_{kind}"]
    layers = ["0", "1", "3", "4"] if kind == "mlp" else ["features.0", "features.2", "head"]
    for seed in (0, 1):
        result = extract(
            store, model=f"models_for_tests:{kind}", data=str(data), layers=",".join(layers),
            name=kind, seed=str(seed), checkpoint=str(runs["root"] / f"{kind}_{seed}/step*.pt"),
            dtype="float32", batch_size=16,
        )  # fmt: skip
        assert len(result.written) == 3 * len(layers)
        for step, path in enumerate(runs["ckpts"][kind, seed], start=1):
            model = getattr(mft, kind)().eval()
            model.load_state_dict(torch.load(path, weights_only=True))
            ref = _reference(model, x, layers, 16)
            for layer in layers:
                arr = zarr.open_array(
                    store / f"reprs/{kind}/{seed}/step{step}/default/{layer}", mode="r"
                )
                stored = arr[:]
                assert arr.attrs["complete"] and stored.shape == ref[layer].shape
                if ref[layer].ndim == 2 and kind == "mlp":
                    np.testing.assert_array_equal(stored, ref[layer])  # float32: exact
                else:
                    np.testing.assert_allclose(stored, ref[layer], rtol=1e-6, atol=1e-6)
    if kind == "cnn":
        attrs = zarr.open_array(store / "reprs/cnn/1/step3/default/features.0", mode="r").attrs
        assert attrs["original_shape"] == [6, 8, 8] and attrs["reduction"] == "mean"
        assert attrs["provenance"]["checkpoint_sha256"]
    group = zarr.open_group(store, mode="r")
    assert group["datasets/default"].attrs["fingerprint"]


def test_float16_within_rounding_and_resume_is_skip(runs: dict, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    data = str(runs["root"] / "x_mlp.npy")
    kwargs = dict(model="models_for_tests:mlp", data=data, layers="3", name="m", batch_size=8)
    extract(store, **kwargs)
    ref = _reference(mft.mlp().eval(), runs["x_mlp"], ["3"], 8)["3"]
    stored = zarr.open_array(store / "reprs/m/0/final/default/3", mode="r")[:]
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, ref.astype(np.float16))
    again = extract(store, **kwargs)  # same command again: nothing to do
    assert again.written == [] and len(again.skipped) == 1
    with pytest.raises(reprstore.ReprstoreError, match="other settings"):
        extract(store, **{**kwargs, "dtype": "float32"})


def test_other_data_under_same_dataset_is_refused(runs: dict, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    x = runs["x_mlp"]
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x[::-1].copy())  # same rows, other order
    extract(store, model="models_for_tests:mlp", data=str(tmp_path / "a.npy"), layers="1", name="m")
    with pytest.raises(DatasetMismatchError, match="same samples in the same order"):
        extract(
            store, model="models_for_tests:mlp", data=str(tmp_path / "b.npy"), layers="1",
            name="m", seed="1",
        )  # fmt: skip
    assert not (store / "reprs/m/1").exists()


def test_callable_data_tuple_output_and_torchscript(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    result = extract(
        store, model="models_for_tests:mlp", data="models_for_tests:batches", layers="2,output",
        name="m", dtype="float32",
    )  # fmt: skip
    assert result.n_samples == 25
    net = mft.mlp().eval()

    def batched(f: Any) -> torch.Tensor:
        """``f`` applied batch by batch, as extraction does: BLAS may round a product of
        other shapes (all 25 rows at once) differently in the last bit."""
        return torch.cat([f(b) for b, _ in mft.batches()])

    with torch.no_grad():
        np.testing.assert_array_equal(
            zarr.open_array(store / "reprs/m/0/final/default/output")[:], batched(net)
        )
        np.testing.assert_array_equal(
            zarr.open_array(store / "reprs/m/0/final/default/2")[:], batched(net[:3])
        )
    scripted = tmp_path / "mlp.ts"
    torch.jit.script(net).save(str(scripted))
    extract(store, model=str(scripted), data="models_for_tests:batches", layers="output", name="ts")
    got = zarr.open_array(store / "reprs/ts/0/final/default/output")[:]
    with torch.no_grad():
        np.testing.assert_array_equal(got, batched(net).numpy().astype(np.float16))
    extract(store, model="models_for_tests:tuplenet", data=str(_seq(tmp_path)),
            layers="rnn,output.1", name="gru", reduce="last", dataset="seq")  # fmt: skip
    assert zarr.open_array(store / "reprs/gru/0/final/seq/rnn").shape == (6, 6)
    assert zarr.open_array(store / "reprs/gru/0/final/seq/output.1").attrs["reduction"] == "last"


def _seq(tmp_path: Path) -> Path:
    path = tmp_path / "seq.npy"
    np.save(path, np.random.default_rng(2).standard_normal((6, 5, 4)).astype(np.float32))
    return path


def test_shuffling_data_callable_is_not_completed(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    with pytest.raises(DatasetMismatchError, match="other samples on the second pass"):
        extract(store, model="models_for_tests:mlp", data="models_for_tests:shuffled_batches",
                layers="1", name="m")  # fmt: skip
    assert not zarr.open_array(store / "reprs/m/0/final/default/1").attrs["complete"]


def test_autocast_bf16_is_recorded(runs: dict, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    extract(store, model="models_for_tests:cnn", data=str(runs["root"] / "x_cnn.pt"),
            layers="features.3", name="c", autocast="bf16", dtype="float32")  # fmt: skip
    arr = zarr.open_array(store / "reprs/c/0/final/default/features.3")
    assert arr.attrs["settings"]["extra"]["autocast"] == "bf16"
    assert arr.attrs["source_dtype"] == "bfloat16"
    ref = _reference(mft.cnn().eval(), runs["x_cnn"], ["features.3"], 32)["features.3"]
    np.testing.assert_allclose(arr[:], ref, atol=0.05, rtol=0.05)


# -- units: layer patterns and reductions ------------------------------------------------
def test_layer_globs_stay_within_one_name() -> None:
    names = ["encoder", "encoder.layer.0", "encoder.layer.0.attention", "encoder.layer.1"]
    assert select_layers("encoder.layer.*", names) == ["encoder.layer.0", "encoder.layer.1"]
    assert select_layers("**.attention", names) == ["encoder.layer.0.attention"]
    assert layer_glob("features.[0-2]").fullmatch("features.1")
    with pytest.raises(InputError, match=r"Closest names: encoder\.layer\.0"):
        select_layers("encoder.layr.0", names)


def test_reductions_use_the_attention_mask() -> None:
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(reduce_output(x, "mean", mask)[0], x[0, :2].mean(0))
    np.testing.assert_allclose(reduce_output(x, "last", mask)[0], x[0, 1])
    np.testing.assert_allclose(reduce_output(x, "last", mask)[1], x[1, 2])
    np.testing.assert_allclose(reduce_output(x, "max", mask)[0], x[0, 1])
    np.testing.assert_allclose(reduce_output(x, "first", mask), x[:, 0])
    img = torch.randn(2, 3, 4, 5)
    np.testing.assert_allclose(reduce_output(img, "mean"), img.mean(dim=(2, 3)), rtol=1e-5)
    assert reduce_output(img, "flatten").shape == (2, 60)


def test_import_reprstore_extraction_is_light() -> None:
    import subprocess

    code = (
        "import sys, reprstore, reprstore.workflows.extraction, reprstore.capture; "
        "assert callable(reprstore.extract); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
