"""reprstore.open: ls and load round-trip what extract and the writer stored, bit for bit;
reprstore.compare gives the CLI's columns; --unordered keeps one of each mirror pair."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dask.array as da
import models_for_tests as mft
import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from conftest import assert_user_error, run_cli

import reprstore
from reprstore.errors import (
    CorruptDataError,
    IncompleteError,
    InputError,
    NotFoundError,
    SelectorError,
)
from reprstore.keys import ReprKey
from reprstore.store import Encoding, ReprSettings, Store, write_dataset

N = 40
LAYERS = ["1", "3"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The small MLP of the extraction tests, two seeds, two layers, float32, with ids and
    a label column; plus what its own forward hooks return (the reference)."""
    root = tmp_path_factory.mktemp("nb")
    x = np.random.default_rng(3).standard_normal((N, 8)).astype(np.float32)
    np.save(root / "x.npy", x)
    ids = np.array([f"s{i:03d}" for i in range(N)])
    label = np.arange(N) % 3
    for seed in ("0", "1"):
        reprstore.extract(
            root / "s.zarr", model="models_for_tests:mlp", data=str(root / "x.npy"),
            layers=",".join(LAYERS), name="mlp", seed=seed, dtype="float32", batch_size=16,
            ids=ids, meta={"label": label},
        )  # fmt: skip
    model = mft.mlp().eval()
    modules = dict(model.named_modules())
    got: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS}
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: got[name].append(o.detach().numpy())
        )
        for name in LAYERS
    ]
    with torch.no_grad():
        for lo in range(0, N, 16):
            model(torch.from_numpy(x[lo : lo + 16]))
    for h in handles:
        h.remove()
    ref = {name: np.concatenate(blocks) for name, blocks in got.items()}
    return {"store": root / "s.zarr", "ids": ids, "label": label, "ref": ref}


def test_load_returns_what_extract_wrote_bit_for_bit(extracted: dict) -> None:
    opened = reprstore.open(extracted["store"])
    plain = zarr.open_array(extracted["store"] / "reprs/mlp/0/final/default/3", mode="r")[:]
    got = opened.load("seed=0,layer=3")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (N, 12)
    np.testing.assert_array_equal(got, extracted["ref"]["3"])  # the model's own hooks
    assert got.tobytes() == plain.tobytes()
    lazy = opened.load("seed=0,layer=3", as_="dask")
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32
    assert lazy.compute().tobytes() == plain.tobytes()
    labelled = opened.load("seed=0,layer=3", as_="xarray")
    assert labelled.dims == ("sample", "feature") and labelled.dtype == np.float32
    assert labelled.values.tobytes() == plain.tobytes()
    assert list(labelled["sample"].values) == list(extracted["ids"])
    np.testing.assert_array_equal(labelled["label"].values, extracted["label"])
    assert labelled["label"].dims == ("sample",)
    attrs = labelled.attrs
    assert (attrs["model"], attrs["seed"], attrs["checkpoint"], attrs["layer"],
            attrs["dataset"]) == ("mlp", "0", "final", "3", "default")  # fmt: skip
    assert attrs["provenance"]["reprstore"] and attrs["stored_dtype"] == "float32"


def test_ls_lists_keys_shapes_dtypes_and_run_attributes(extracted: dict, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(extracted["store"], store)
    assert run_cli("tag", str(store), "seed=1", "method=lora").returncode == 0
    table = reprstore.open(store).ls()
    assert list(table[["seed", "layer"]].itertuples(index=False, name=None)) == [
        ("0", "1"), ("0", "3"), ("1", "1"), ("1", "3")]  # fmt: skip
    assert list(table["n_features"]) == [16, 12, 16, 12]  # ReLU of Linear(8, 16), Tanh of (16, 12)
    assert set(table["stored_dtype"]) == {"float32"} and table["complete"].all()
    assert (table["n_samples"] == N).all() and table["method"].tolist()[2:] == ["lora"] * 2
    assert table["method"].isna().tolist()[:2] == [True, True]
    one = reprstore.open(store).ls("seed=1,layer=3")
    assert len(one) == 1 and one["method"].item() == "lora"
    with pytest.raises(NotFoundError, match="no layer '9'"):
        reprstore.open(store).ls("layer=9")


def test_load_errors_are_one_line_and_name_the_way_out(
    extracted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = reprstore.open(extracted["store"])
    with pytest.raises(SelectorError, match=r"matches 4 representations .*narrow.*seed=0, layer=1"):
        opened.load("model=mlp")
    with pytest.raises(NotFoundError, match="closest"):
        opened.load("seed=0,layer=30")
    with pytest.raises(InputError, match=r"numpy, xarray, dask\. Got 'pandas'"):
        opened.load("seed=0,layer=3", as_="pandas")
    monkeypatch.setitem(sys.modules, "xarray", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'reprstore\[xarray\]'"):
        opened.load("seed=0,layer=3", as_="xarray")


KEY = ReprKey("m", "0", "final", "default", "wide")


def _partial(tmp_path: Path) -> tuple[Path, np.ndarray, int]:
    """A representation of 5,000 × 300 whose write stopped after two chunks (+10 buffered)."""
    x = np.random.default_rng(5).standard_normal((5000, 300)).astype(np.float32)
    store = Store.open(tmp_path / "p.zarr", create=True)
    write_dataset(store.root, "default", 5000)
    s = ReprSettings(dataset="default", n_features=300, n_samples=5000, original_shape=(300,),
                     reduction="none", stored_dtype="float32", source_dtype="float32")  # fmt: skip
    writer = store.writer(KEY, s, encoding=Encoding("float32"))
    rows = writer.chunk_rows
    writer.write(x[: 2 * rows + 10])
    writer.abort()
    return tmp_path / "p.zarr", x, rows


def test_incomplete_loads_only_its_rows_written_and_only_when_allowed(tmp_path: Path) -> None:
    path, x, rows = _partial(tmp_path)
    opened = reprstore.open(path)
    with pytest.raises(IncompleteError, match="allow_incomplete=True"):
        opened.load("layer=wide")
    got = opened.load("layer=wide", allow_incomplete=True)
    assert got.shape == (2 * rows, 300) and got.tobytes() == x[: 2 * rows].tobytes()
    lazy = opened.load("layer=wide", as_="dask", allow_incomplete=True)
    assert lazy.chunks[0] == (rows, rows)  # one block per stored chunk
    assert lazy.compute().tobytes() == x[: 2 * rows].tobytes()
    labelled = opened.load("layer=wide", as_="xarray", allow_incomplete=True)
    assert labelled.shape == (2 * rows, 300) and labelled["sample"].size == 2 * rows


def test_dask_reads_nothing_until_computed_and_checks_each_chunk(tmp_path: Path) -> None:
    path, x, rows = _partial(tmp_path)
    store = Store.open(path, writable=True)
    with store.writer(KEY, ReprSettings(dataset="default", n_features=300, n_samples=5000,
                                        original_shape=(300,), reduction="none",
                                        stored_dtype="float32", source_dtype="float32"),
                      encoding=Encoding("float32")) as writer:  # fmt: skip
        writer.write_at(0, x)  # resume and finish
    lazy = reprstore.open(path).load("layer=wide", as_="dask")
    assert lazy.chunks[0] == (rows, rows, 5000 - 2 * rows)
    (path / "reprs/m/0/final/default/wide/c/1/0").unlink()  # after the call: still lazy
    assert lazy[:rows].compute().tobytes() == x[:rows].tobytes()
    with pytest.raises(CorruptDataError, match="chunk 1"):
        lazy.compute()


def test_compare_returns_the_cli_columns_and_unordered_keeps_one_of_each_mirror(
    extracted: dict, tmp_path: Path
) -> None:
    store = str(extracted["store"])
    out = tmp_path / "grid.csv"
    done = run_cli("compare", store, "--a", "*", "--b", "*", "--match", "layer", "--measure",
                   "cka,cca", "--out", str(out), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli = pd.read_csv(out, dtype=str)
    df = reprstore.compare(store, "*", "*", match="layer", measures="cka,cca")
    assert list(df.columns) == list(cli.columns)
    np.testing.assert_allclose(df["cka"].to_numpy(), cli["cka"].astype(float), rtol=1e-12)
    assert len(df) == 8  # 2 layers × (2 seeds)²
    half = reprstore.compare(store, "*", "*", match="layer", unordered=True)
    pairs = set(half[["a_seed", "b_seed", "a_layer"]].itertuples(index=False, name=None))
    assert pairs == {("0", "0", "1"), ("0", "1", "1"), ("1", "1", "1"),
                     ("0", "0", "3"), ("0", "1", "3"), ("1", "1", "3")}  # fmt: skip
    full = df.set_index(["a_seed", "b_seed", "a_layer"])["cka"]
    for row in half.itertuples(index=False):
        assert row.cka == full[(row.a_seed, row.b_seed, row.a_layer)]
    assert half.attrs["reprstore"]["options"]["unordered"] is True
    # disjoint sides have no mirrors: --unordered changes nothing
    apart = reprstore.compare(store, "seed=1", "seed=0", match="layer", unordered=True)
    assert len(apart) == 2
    done = run_cli("cka", store, "--a", "*", "--b", "*", "--match", "layer", "--unordered",
                   "--out", str(tmp_path / "u.csv"), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "u.csv")) == 6
    with pytest.raises(SelectorError, match="Unknown key 'layers' in --match"):
        reprstore.compare(store, "*", "*", match="layers")
    assert_user_error(run_cli("compare", store, "--a", "*", "--b", "*", "--match", "layers"),
                      "--match")  # fmt: skip
