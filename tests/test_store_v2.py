"""Store format 2 workflows: one layer on two probe sets, two poolings of one layer under
``--layer-name``, natural order of layers and checkpoints, and the recorded step."""

from __future__ import annotations

import json
from pathlib import Path

import models_for_tests as mft
import numpy as np
import pytest
import torch
import zarr
from conftest import assert_user_error, run_cli, store_digest

from reprstore.keys import ReprKey
from reprstore.report.plot import grid
from reprstore.store import Store
from reprstore.workflows.comparison import compare
from reprstore.workflows.extraction import extract
from reprstore.workflows.ingest import import_files


def _npy(path: Path, x: np.ndarray) -> Path:
    np.save(path, x.astype(np.float32))
    return path


def test_one_layer_on_two_datasets_side_by_side(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = tmp_path / "s.zarr"
    xa, xb = rng.normal(size=(10, 4)), rng.normal(size=(7, 4))
    for model in ("m", "n"):
        import_files(store, [_npy(tmp_path / "a.npy", xa)], name=model, layer="enc.3",
                     dataset="taskA", dtype="float32")  # fmt: skip
        import_files(store, [_npy(tmp_path / "b.npy", xb)], name=model, layer="enc.3",
                     dataset="taskB", dtype="float32")  # fmt: skip
    raw = zarr.open_group(str(store), mode="r")
    np.testing.assert_array_equal(raw["reprs/m/0/final/taskA/enc.3"][:], xa.astype(np.float32))
    np.testing.assert_array_equal(raw["reprs/m/0/final/taskB/enc.3"][:], xb.astype(np.float32))
    st = Store.open(store)
    assert [k.dataset for k in st.keys("model=m")] == ["taskA", "taskB"]
    assert st.info(ReprKey("m", "0", "final", "taskB", "enc.3")).shape == (7, 4)
    assert ReprKey("m", "0", "final", "taskB", "enc.3").label() == "m/0/final/taskB:enc.3"
    df = compare(store, "model=m", "model=n", match=["dataset"], estimator="biased")
    assert list(df["dataset"]) == ["taskA", "taskB"] and list(df["n_samples"]) == [10, 7]
    assert df["cka"].tolist() == pytest.approx([1.0, 1.0], rel=1e-9)  # same rows both sides
    rows = json.loads(run_cli("ls", str(store), "dataset=taskB", "--json").stdout)
    assert [(r["model"], r["dataset"], r["shape"]) for r in rows] == [
        ("m", "taskB", [7, 4]), ("n", "taskB", [7, 4])]  # fmt: skip


def _gru_reference(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        seq, _ = mft.tuplenet().rnn(torch.from_numpy(x))
    return seq.numpy().astype(np.float64)  # (N, T, 6)


def test_two_poolings_of_one_layer_coexist(tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal((6, 5, 4)).astype(np.float32)
    data = tmp_path / "seq.npy"
    np.save(data, x)
    store = tmp_path / "s.zarr"
    run = dict(model="models_for_tests:tuplenet", data=str(data), layers="output.1", name="gru",
               dtype="float32")  # fmt: skip
    for reduce in ("mean", "first"):
        extract(store, reduce=reduce, layer_name="{layer}.{reduce}", **run)
    extract(store, reduce="last", layer_name="{layer}.cls", **run)
    seq = _gru_reference(x)
    st = Store.open(store)
    assert [k.layer for k in st.keys(None)] == ["output.1.cls", "output.1.first", "output.1.mean"]
    for layer, want in (("output.1.mean", seq.mean(1)), ("output.1.first", seq[:, 0]),
                        ("output.1.cls", seq[:, -1])):  # fmt: skip
        key = ReprKey("gru", "0", "final", "default", layer)
        np.testing.assert_allclose(st.array(key)[:], want, rtol=1e-5, atol=1e-6)
        assert st.info(key).attrs["provenance"]["layer"] == "output.1"
    # re-running the same command skips the complete array (resume, not clash)
    again = extract(store, reduce="first", layer_name="{layer}.{reduce}", **run)
    assert [k.layer for k in again.skipped] == ["output.1.first"] and not again.written


@pytest.mark.parametrize(
    ("template", "needle"),
    [("{layer.__class__}", "{layer.__class__} is not a field"),
     ("{layer[0]}", "not a field"), ("{name}", "not a field"), ("{layer", "without its"),
     ("cls", "same name"), ("{layer}/x", "may not contain '/'")],
)  # fmt: skip
def test_bad_layer_name_templates(tmp_path: Path, template: str, needle: str) -> None:
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    store = tmp_path / "s.zarr"
    import_files(store, [tmp_path / "x.npy"], name="keep", layer="l")
    before = store_digest(store)
    args = ["--model", "models_for_tests:mlp", "--data", "x.npy", "--layers", "1,3", "--name", "m"]
    result = run_cli("extract", str(store), *args, "--layer-name", template, cwd=tmp_path)
    assert_user_error(result, "--layer-name", needle)
    assert store_digest(store) == before


def test_natural_order_and_steps(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    store = tmp_path / "s.zarr"
    for ckpt in ("step100", "step20", "step3", "final"):
        files = [_npy(tmp_path / f"layer_{i}.npy", rng.normal(size=(9, 3))) for i in (10, 2, 1)]
        import_files(store, files, name="m", layer="{stem}", checkpoint=ckpt, dtype="float32")
    st = Store.open(store)
    ckpts = ["final", "step3", "step20", "step100"]
    layers = ["layer_1", "layer_2", "layer_10"]
    assert [(k.checkpoint, k.layer) for k in st.keys(None)] == [
        (c, la) for c in ckpts for la in layers
    ]
    steps = {i.key.checkpoint: i.step for i in st.select("layer=layer_1")}
    assert steps == {"final": None, "step3": 3, "step20": 20, "step100": 100}
    raw = zarr.open_group(str(store), mode="r")
    assert raw["reprs/m/0/step20/default/layer_2"].attrs["step"] == 20
    assert "step" not in raw["reprs/m/0/final/default/layer_2"].attrs
    listed = json.loads(run_cli("ls", str(store), "--json").stdout)
    assert [(r["checkpoint"], r["layer"]) for r in listed] == [
        (c, la) for c in ckpts for la in layers]  # fmt: skip
    df = compare(store, "layer=layer_2", "layer=layer_10", estimator="biased")
    assert list(df["a_checkpoint"]) == [c for c in ckpts for _ in ckpts]
    assert list(df["b_checkpoint"]) == ckpts * 4
    # the heatmap's axes sort naturally even when the table does not
    rows, cols, _ = grid(df.sample(frac=1.0, random_state=0))
    assert rows == [f"checkpoint={c} · layer_2" for c in ckpts]
    assert cols == [f"checkpoint={c} · layer_10" for c in ckpts]
