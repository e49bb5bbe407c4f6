"""``reprstore import``, ``ls`` and ``info``: every file type, datasets, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_user_error, run_cli, store_digest

from reprstore.errors import DatasetMismatchError, InputError
from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.workflows.ingest import import_files


def stored(store: Path, layer: str, model: str = "m") -> np.ndarray:
    """Read back with plain zarr, not reprstore."""
    return zarr.open_group(str(store), mode="r")[f"reprs/{model}/0/final/default/{layer}"][:]


def test_npy_files_one_layer_each(tmp_path: Path, rng: np.random.Generator) -> None:
    layers = {f"layer_{i}": rng.normal(size=(300, 16 + i)).astype(np.float32) for i in range(3)}
    for name, x in layers.items():
        np.save(tmp_path / f"{name}.npy", x)
    files = sorted(str(p) for p in tmp_path.glob("layer_*.npy"))
    result = run_cli("import", str(tmp_path / "s.zarr"), *files, "--name", "m",
                     "--layer", "{stem}", "--dtype", "float32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name, x in layers.items():
        np.testing.assert_array_equal(stored(tmp_path / "s.zarr", name), x)


def test_npz_with_key_template(tmp_path: Path, rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 6))
    np.savez_compressed(tmp_path / "acts.npz", h1=a, h2=b)
    keys = import_files(tmp_path / "s.zarr", [tmp_path / "acts.npz"], name="m",
                        layer="blk.{key}", dtype="float32")  # fmt: skip
    assert [k.layer for k in keys] == ["blk.h1", "blk.h2"]
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "blk.h1"), a.astype(np.float32))
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "blk.h2"), b.astype(np.float32))


def test_npz_streams_in_blocks_and_resumes_at_any_row(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    from reprstore.sources.files import open_tensor_files

    x = rng.normal(size=(1000, 3))
    np.savez(tmp_path / "x.npz", x=x)
    (tensor,) = open_tensor_files(tmp_path / "x.npz")
    np.testing.assert_array_equal(np.concatenate(list(tensor.blocks(64))), x)
    np.testing.assert_array_equal(np.concatenate(list(tensor.blocks(100, start=700))), x[700:])


def test_pt_tensor_and_dict(tmp_path: Path, rng: np.random.Generator) -> None:
    import torch

    x = rng.normal(size=(40, 5)).astype(np.float32)
    torch.save(torch.from_numpy(x), tmp_path / "single.pt")
    torch.save({"fc1": torch.from_numpy(2 * x), "fc2": torch.from_numpy(3 * x)}, tmp_path / "d.pt")
    import_files(tmp_path / "s.zarr", [tmp_path / "single.pt"], name="m", layer="{stem}",
                 dtype="float32")  # fmt: skip
    import_files(tmp_path / "s.zarr", [tmp_path / "d.pt"], name="m", layer="{key}", dtype="float32")
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "single"), x)
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "fc2"), 3 * x)


def test_safetensors_float32_and_bfloat16(tmp_path: Path, rng: np.random.Generator) -> None:
    import torch
    from safetensors.torch import save_file

    x = torch.from_numpy(rng.normal(size=(30, 7)).astype(np.float32))
    save_file({"h": x, "hb": x.to(torch.bfloat16)}, str(tmp_path / "a.safetensors"))
    import_files(tmp_path / "s.zarr", [tmp_path / "a.safetensors"], name="m", layer="{key}",
                 dtype="float32")  # fmt: skip
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "h"), x.numpy())
    np.testing.assert_array_equal(
        stored(tmp_path / "s.zarr", "hb"), x.to(torch.bfloat16).float().numpy()
    )


def test_float16_default_and_flatten(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(20, 3, 4)).astype(np.float32)
    np.save(tmp_path / "conv.npy", x)
    import_files(tmp_path / "s.zarr", [tmp_path / "conv.npy"], name="m", layer="conv",
                 reduce="flatten")  # fmt: skip
    arr = zarr.open_array(str(tmp_path / "s.zarr/reprs/m/0/final/default/conv"), mode="r")
    assert arr.dtype == np.float16
    np.testing.assert_array_equal(arr[:], x.reshape(20, 12).astype(np.float16))
    assert arr.attrs["original_shape"] == [3, 4] and arr.attrs["reduction"] == "flatten"
    with pytest.raises(InputError, match="--reduce flatten"):
        import_files(tmp_path / "s.zarr", [tmp_path / "conv.npy"], name="m", layer="c2")


def test_ids_and_meta_create_then_check_dataset(tmp_path: Path, rng: np.random.Generator) -> None:
    np.save(tmp_path / "x.npy", rng.normal(size=(5, 2)))
    (tmp_path / "ids.txt").write_text("s1\ns2\ns3\ns4\ns5\n")
    (tmp_path / "meta.csv").write_text("label,region\n0,north\n1,south\n0,east\n1,west\n0,north\n")
    store = tmp_path / "s.zarr"
    import_files(store, [tmp_path / "x.npy"], name="m", layer="a", ids=tmp_path / "ids.txt",
                 meta=tmp_path / "meta.csv")  # fmt: skip
    ds = Store.open(store).dataset("default")
    assert list(ds.ids()) == ["s1", "s2", "s3", "s4", "s5"]
    assert list(ds.meta("region")) == ["north", "south", "east", "west", "north"]
    assert list(ds.meta("label")) == ["0", "1", "0", "1", "0"]  # text unless declared numeric
    (tmp_path / "other.txt").write_text("s1\ns2\ns3\ns5\ns4\n")
    with pytest.raises(DatasetMismatchError, match="ids given do not match"):
        import_files(store, [tmp_path / "x.npy"], name="m", layer="b", ids=tmp_path / "other.txt")
    import_files(store, [tmp_path / "x.npy"], name="m", layer="b", ids=tmp_path / "ids.txt")


def test_ls_and_info_json(tmp_path: Path, rng: np.random.Generator) -> None:
    np.save(tmp_path / "l1.npy", rng.normal(size=(64, 8)).astype(np.float32))
    np.save(tmp_path / "l2.npy", rng.normal(size=(64, 8)).astype(np.float32))
    store = tmp_path / "s.zarr"
    import_files(store, [tmp_path / "l1.npy", tmp_path / "l2.npy"], name="m", layer="{stem}")
    listing = json.loads(run_cli("ls", str(store), "layer=l*", "--json").stdout)
    assert [r["layer"] for r in listing] == ["l1", "l2"]
    assert listing[0]["shape"] == [64, 8] and listing[0]["complete"] is True
    assert listing[0]["stored_dtype"] == "float16" and listing[0]["nbytes_stored"] > 0
    info = json.loads(run_cli("info", str(store), "layer=l2", "--json").stdout)
    assert info[0]["attrs"]["provenance"]["data_source"].endswith("l2.npy")
    table = run_cli("ls", str(store))
    assert table.returncode == 0 and "l2" in table.stdout and "64×8" in table.stdout


@pytest.fixture
def filled_store(tmp_path: Path, rng: np.random.Generator) -> Path:
    np.save(tmp_path / "x.npy", rng.normal(size=(100, 4)).astype(np.float32))
    np.save(tmp_path / "short.npy", rng.normal(size=(90, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.normal(size=(100, 4)).astype(np.float32))
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "table.txt").write_text("1,2,3")
    import_files(tmp_path / "s.zarr", [tmp_path / "x.npy"], name="m", layer="a")
    return tmp_path


BAD_IMPORTS = [
    (["short.npy", "--name", "m", "--layer", "b"], "100 samples"),
    (["text.npy", "--name", "m", "--layer", "b"], "not a readable .npy"),
    (["table.txt", "--name", "m", "--layer", "b"], "unsupported file type"),
    (["missing.npy", "--name", "m", "--layer", "b"], "No such file"),
    (["y.npy", "--name", "m", "--layer", "a"], "--overwrite"),
    (["x.npy", "--name", "m", "--layer", "a", "--dtype", "float32"], "--overwrite"),
    (["x.npy", "--name", "m/x", "--layer", "b"], "'/'"),
    (["x.npy", "--name", "m", "--layer", ".."], "'..'"),
    (["x.npy", "--name", "m", "--layer", "b", "--dtype", "int8"], "storage dtype"),
    (["x.npy", "short.npy", "--name", "m", "--layer", "{stem}"], "different row counts"),
    (["x.npy", "x.npy", "--name", "m", "--layer", "b"], "{stem}"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_IMPORTS)
def test_bad_imports_fail_cleanly_and_change_nothing(
    filled_store: Path, args: list[str], needle: str
) -> None:
    before = store_digest(filled_store / "s.zarr")
    result = run_cli("import", "s.zarr", *args, cwd=filled_store)
    assert_user_error(result, needle)
    assert store_digest(filled_store / "s.zarr") == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ls", "missing.zarr"], "No store"),
        (["ls", "s.zarr", "colour=red"], "Unknown selector key"),
        (["info", "s.zarr", "layer=nope"], "No representation"),
        (["ls", "x.npy"], "is a file"),
    ],
)
def test_bad_listing_fails_cleanly(filled_store: Path, args: list[str], needle: str) -> None:
    before = store_digest(filled_store / "s.zarr")
    assert_user_error(run_cli(*args, cwd=filled_store), needle)
    assert store_digest(filled_store / "s.zarr") == before


def test_same_import_again_is_a_no_op(filled_store: Path) -> None:
    before = store_digest(filled_store / "s.zarr")
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "a", cwd=filled_store)
    assert result.returncode == 0 and "nothing to import" in result.stdout
    assert store_digest(filled_store / "s.zarr") == before


def test_overwrite_replaces(filled_store: Path) -> None:
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "a", "--overwrite",
                     "--dtype", "float32", cwd=filled_store)  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        stored(filled_store / "s.zarr", "a"), np.load(filled_store / "x.npy")
    )


def test_debug_env_shows_traceback(filled_store: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "REPRSTORE_DEBUG": "1"}
    result = subprocess.run([sys.executable, "-m", "reprstore", "ls", "missing.zarr"],
                            capture_output=True, text=True, cwd=filled_store, env=env)  # fmt: skip
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_interrupted_import_resumes(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(9000, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    store = Store.open(tmp_path / "s.zarr", create=True)
    calls = []

    def stop_after_two_chunks(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_files(store, [tmp_path / "x.npy"], name="m", layer="a", dtype="float32",
                     progress=stop_after_two_chunks)  # fmt: skip
    info = store.info(ReprKey("m", "0", "final", "default", "a"))
    assert not info.complete and 0 < info.rows_written < 9000
    import_files(store, [tmp_path / "x.npy"], name="m", layer="a", dtype="float32")
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "a"), x)


def test_ids_and_text_columns_keep_leading_zeros(tmp_path: Path, rng: np.random.Generator) -> None:
    from reprstore.workflows.comparison import compare

    n = 40
    ids = [f"{i * 37:05d}" for i in range(n)]  # 00000, 00037, … 01443
    np.save(tmp_path / "x.npy", rng.normal(size=(n, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.normal(size=(n, 3)).astype(np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    zips = [f"{i % 7:05d}" for i in range(n)]
    rows = [f"{z},{20 + i},{i / 4},NA" for i, z in enumerate(zips)]
    (tmp_path / "meta.csv").write_text("zip,age:int,score,note\n" + "\n".join(rows) + "\n")
    result = run_cli("import", "s.zarr", "x.npy", "y.npy", "--name", "m", "--layer", "{stem}",
                     "--ids", "ids.txt", "--meta", "meta.csv", "--meta-types", "score=float",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["datasets/default"]
    assert [str(v) for v in group["ids"][:]] == ids
    assert [str(v) for v in group["meta/zip"][:]] == zips
    assert [str(v) for v in group["meta/note"][:]] == ["NA"] * n  # not a missing value
    assert group["meta/age"].dtype == np.int64 and list(group["meta/age"][:]) == list(range(20, 60))
    assert group["meta/score"].dtype == np.float64
    kept = sum(1 for i in ids if i.startswith("00"))
    df = compare(tmp_path / "s.zarr", "layer=x", "layer=y", where="startswith(id, '00')")
    assert int(df["n_samples"].iloc[0]) == kept
    df = compare(tmp_path / "s.zarr", "layer=x", "layer=y",
                 where="matches(zip, '^0000[0-3]$') and age >= 25")  # fmt: skip
    want = sum(1 for i, z in enumerate(zips) if z[-1] in "0123" and 20 + i >= 25)
    assert int(df["n_samples"].iloc[0]) == want


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--meta-types", "zip=int"], "row 2 holds 'x7'"),
        (["--meta-types", "age=integer"], "COLUMN=TYPE"),
        (["--meta-types", "colour=int"], "colour"),
    ],
)
def test_bad_metadata_types_fail_cleanly(filled_store: Path, extra: list[str], needle: str) -> None:
    rows = ["01", "x7"] + [f"{i:02d}" for i in range(98)]
    (filled_store / "meta.csv").write_text("zip,age\n" + "".join(f"{z},1\n" for z in rows))
    before = store_digest(filled_store / "s.zarr")
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "c", "--meta",
                     "meta.csv", "--dataset", "other", *extra, cwd=filled_store)  # fmt: skip
    assert_user_error(result, needle)
    assert store_digest(filled_store / "s.zarr") == before
