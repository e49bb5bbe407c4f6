"""The store on disk: layout, the streaming writer, resume, leases, encodings, plain zarr."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from reprstore.errors import (
    AlreadyExistsError,
    DatasetMismatchError,
    IncompleteError,
    InputError,
    LockedError,
    StoreNotFoundError,
)
from reprstore.keys import ReprKey
from reprstore.store import Encoding, ReprSettings, Store, bitround, write_dataset
from reprstore.store import handle as store_module
from reprstore.store.encoding import chunk_rows_for

KEY = ReprKey("mlp", "0", "final", "default", "fc1")


def settings(n: int | None, f: int, dtype: str = "float32", **kw) -> ReprSettings:
    return ReprSettings(
        dataset="default", n_features=f, n_samples=n, original_shape=(f,), reduction="none",
        stored_dtype=dtype, source_dtype="float32", **kw,
    )  # fmt: skip


def write_blocks(store: Store, x: np.ndarray, sizes: list[int], dtype: str = "float32") -> None:
    s = settings(len(x), x.shape[1], dtype)
    with store.writer(KEY, s, encoding=Encoding(dtype)) as writer:
        start = 0
        for size in sizes:
            writer.write(x[start : start + size])
            start += size
        writer.write(x[start:])


def test_round_trip_any_block_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(3000, 40)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    write_blocks(store, x, [1, 7, 500, 1024, 3])
    arr = store.array(KEY)
    assert arr.chunks[0] == chunk_rows_for(40, 4, 3000)
    np.testing.assert_array_equal(arr[:], x)
    attrs = arr.attrs.asdict()
    assert attrs["complete"] is True and attrs["rows_written"] == 3000
    rows = arr.chunks[0]
    expected = [zlib.crc32(x[i : i + rows].tobytes()) for i in range(0, 3000, rows)]
    assert attrs["chunk_crc32"] == expected


def test_plain_zarr_reads_store(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(100, 8)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    write_dataset(store.root, "default", 100, meta={"label": np.arange(100) % 3})
    write_blocks(store, x, [50])
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(group["reprs/mlp/0/final/default/fc1"][:], x)
    np.testing.assert_array_equal(group["datasets/default/ids"][:], np.arange(100))
    np.testing.assert_array_equal(group["datasets/default/meta/label"][:], np.arange(100) % 3)
    attrs = group["reprs/mlp/0/final/default/fc1"].attrs.asdict()
    for name in ("dataset", "original_shape", "reduction", "stored_dtype", "source_dtype",
                 "complete", "provenance"):  # fmt: skip
        assert name in attrs
    for name in ("reprstore", "torch", "zarr", "command", "time"):
        assert name in attrs["provenance"]


def test_interrupted_write_is_incomplete_and_resumes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    x = rng.normal(size=(5000, 300)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    s = settings(5000, 300)
    writer = store.writer(KEY, s, encoding=Encoding("float32"))
    rows = writer.chunk_rows
    writer.write(x[: rows * 2 + 10])  # two whole chunks land; 10 rows stay buffered
    writer.abort()
    info = store.info(KEY)
    assert not info.complete and info.rows_written == rows * 2
    with pytest.raises(IncompleteError, match="incomplete"):
        store.array(KEY)
    resumed = store.writer(KEY, s, encoding=Encoding("float32"))
    assert resumed.resumed_from == rows * 2
    resumed.write_at(0, x)  # rows already on disk are skipped
    resumed.close()
    np.testing.assert_array_equal(store.array(KEY)[:], x)


def test_unknown_row_count_grows_and_resumes(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(9000, 256)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    s = settings(None, 256)
    writer = store.writer(KEY, s, encoding=Encoding("float32"))
    rows = writer.chunk_rows
    writer.write(x[: rows + 5])
    writer.abort()
    assert store.info(KEY).shape[0] == rows
    writer = store.writer(KEY, s, encoding=Encoding("float32"))
    assert writer.resumed_from == rows
    writer.write(x[rows:])
    writer.close()
    np.testing.assert_array_equal(store.array(KEY)[:], x)


def test_killed_writer_process_leaves_incomplete_resumable_array(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    x = rng.normal(size=(4096, 512)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, os, signal
        from reprstore.keys import ReprKey
        from reprstore.store import Encoding, ReprSettings, Store
        x = np.load({str(tmp_path / "x.npy")!r})
        st = Store.open({str(tmp_path / "s.zarr")!r}, create=True)
        s = ReprSettings("default", 512, 4096, (512,), "none", "float32", "float32")
        key = ReprKey("mlp", "0", "final", "default", "fc1")
        w = st.writer(key, s, encoding=Encoding("float32"))
        w.write(x[: w.chunk_rows * 3])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    store = Store.open(tmp_path / "s.zarr", create=True)
    info = store.info(KEY)
    assert not info.complete
    with pytest.raises(IncompleteError):
        store.array(KEY)
    s = settings(4096, 512)
    with store.writer(KEY, s, encoding=Encoding("float32")) as writer:  # stale lease broken
        assert writer.resumed_from == info.rows_written > 0
        writer.write_at(0, x)
    np.testing.assert_array_equal(store.array(KEY)[:], x)


def test_second_writer_is_refused_while_first_is_live(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.zarr", create=True)
    s = settings(100, 4)
    first = store.writer(KEY, s, encoding=Encoding("float32"))
    with pytest.raises(LockedError, match="being written by process"):
        store.writer(KEY, s, encoding=Encoding("float32"))
    other = store.writer(
        ReprKey("mlp", "0", "final", "default", "fc2"), s, encoding=Encoding("float32")
    )
    other.abort()  # a different representation in the same store is fine
    first.abort()
    store.writer(KEY, s, encoding=Encoding("float32")).abort()  # free again


def test_complete_array_needs_overwrite_and_other_settings_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    x = rng.normal(size=(64, 4)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    write_blocks(store, x, [])
    with pytest.raises(AlreadyExistsError, match="--overwrite"):
        store.writer(KEY, settings(64, 4), encoding=Encoding("float32"))
    with store.writer(KEY, settings(64, 4), encoding=Encoding("float32"), overwrite=True) as w:
        w.write(2 * x)
    np.testing.assert_array_equal(store.array(KEY)[:], 2 * x)
    partial = store.writer(
        ReprKey("mlp", "0", "final", "default", "p"), settings(64, 4), encoding=Encoding("float32")
    )
    partial.abort()
    with pytest.raises(InputError, match="other settings"):
        store.writer(
            ReprKey("mlp", "0", "final", "default", "p"),
            settings(64, 8),
            encoding=Encoding("float32"),
        )


def test_wrong_row_counts_are_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.zarr", create=True)
    with store.writer(KEY, settings(10, 4), encoding=Encoding("float32")) as w:
        with pytest.raises(DatasetMismatchError, match="more rows"):
            w.write(np.zeros((11, 4)))
        with pytest.raises(DatasetMismatchError, match="expected row blocks"):
            w.write(np.zeros((2, 5)))
        w.write(np.zeros((10, 4)))
    writer = store.writer(
        ReprKey("a", "0", "final", "default", "b"), settings(10, 4), encoding=Encoding("float32")
    )
    writer.write(np.zeros((9, 4)))
    with pytest.raises(DatasetMismatchError, match="got 9 rows"):
        writer.close()


def test_float16_storage_and_nonfinite_counts(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(200, 6)).astype(np.float32)
    x[3, 1] = np.nan
    x[5, 2] = np.inf
    store = Store.open(tmp_path / "s.zarr", create=True)
    write_blocks(store, x, [100], dtype="float16")
    arr = store.array(KEY)
    assert arr.dtype == np.float16
    np.testing.assert_array_equal(arr[:], x.astype(np.float16))
    assert arr.attrs["nonfinite"] == {"nan": 1, "inf": 1}
    with pytest.raises(InputError, match="1 NaN and 0 Inf"):
        s = settings(200, 6, "float16")
        k = ReprKey("mlp", "0", "final", "default", "strict")
        with store.writer(k, s, encoding=Encoding("float16"), on_nonfinite="error") as w:
            w.write(np.where(np.isinf(x), 0, x))


def test_bitround_matches_numcodecs(rng: np.random.Generator) -> None:
    from numcodecs import BitRound

    x = (rng.normal(size=10_000) * 10.0 ** rng.integers(-5, 5, size=10_000)).astype(np.float32)
    for keep in (0, 3, 7, 12, 22):
        ours = bitround(x.copy(), keep)
        theirs = BitRound(keepbits=keep).encode(x.copy()).view(np.float32)
        np.testing.assert_array_equal(ours, theirs)


def test_bfloat16_encoding_equals_torch_rounding(rng: np.random.Generator) -> None:
    import torch

    x = rng.normal(size=(50, 30)).astype(np.float32) * 100
    stored = Encoding("bfloat16").encode(x)
    assert stored.dtype == np.float32
    reference = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(stored, reference)


def test_keep_bits_shrinks_store_and_is_recorded(tmp_path: Path, rng: np.random.Generator) -> None:
    base = rng.normal(size=(4096, 8)) @ rng.normal(size=(8, 128))
    x = (base + 0.1 * rng.normal(size=base.shape)).astype(np.float32)
    store = Store.open(tmp_path / "s.zarr", create=True)
    sizes = {}
    for keep in (None, 7):
        key = ReprKey("m", "0", "final", "default", f"k{keep}")
        s = settings(4096, 128, "float16", keep_bits=keep)
        with store.writer(key, s, encoding=Encoding("float16", keep)) as w:
            w.write(x)
        sizes[keep] = store.info(key).nbytes_stored
        assert store.info(key).attrs["keep_bits"] == keep
    assert sizes[7] < 0.9 * sizes[None]
    stored = store.array(ReprKey("m", "0", "final", "default", "k7"))[:].astype(np.float32)
    normal = np.abs(x) > 1e-2  # away from float16's subnormals
    rel = np.abs(stored - x)[normal] / np.abs(x)[normal]
    assert rel.max() <= 2.0**-8 + 2.0**-11  # half an ulp of 7 bits, plus float16's own


def test_keep_bits_out_of_range() -> None:
    with pytest.raises(InputError, match="out of range"):
        Encoding("float16", 11)
    with pytest.raises(InputError, match="Unknown storage dtype"):
        Encoding("int8")


def test_open_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a brand-new folder is waited for as a store another process may be creating; a
    # second rather than ten keeps that path (the wait, then the refusal) and its meaning
    monkeypatch.setattr(store_module, "CREATION_WAIT_S", 1.0)
    with pytest.raises(StoreNotFoundError, match="No store"):
        Store.open(tmp_path / "missing.zarr")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(StoreNotFoundError, match="not a zarr store"):
        Store.open(tmp_path / "notes", create=True)
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_group("x")
    with pytest.raises(StoreNotFoundError, match="not a reprstore store"):
        Store.open(tmp_path / "foreign.zarr")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreNotFoundError, match="is a file"):
        Store.open(tmp_path / "file")


def test_fsspec_memory_store(rng: np.random.Generator) -> None:
    x = rng.normal(size=(300, 5)).astype(np.float32)
    store = Store.open("memory://reprstore-test", create=True)
    write_blocks(store, x, [7, 64])
    np.testing.assert_array_equal(Store.open("memory://reprstore-test").array(KEY)[:], x)


def test_select_by_dataset_and_globs(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.zarr", create=True)
    for seed in ("0", "1"):
        for layer in ("l1", "l2"):
            s = ReprSettings(
                "probe" if layer == "l1" else "other", 3, 4, (3,), "none", "float32", "float32"
            )
            with store.writer(
                ReprKey("m", seed, "final", s.dataset, layer), s, encoding=Encoding("float32")
            ) as w:
                w.write(np.ones((4, 3)))
    assert len(store.select("seed=*")) == 4
    assert [i.key.layer for i in store.select("seed=1,dataset=probe")] == ["l1"]
    assert [i.key.seed for i in store.select("layer=l2")] == ["0", "1"]
