"""CKA grids over a store: equal to pair-by-pair runs and the reference, one pass over the
data, row filters, dask.distributed, and every way the input can be wrong."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from test_cka_reference import ref_cka
from zarr.storage import LocalStore

from reprstore.engine.arrays import compare_arrays
from reprstore.errors import (
    ComparisonError,
    DatasetMismatchError,
    ExpressionError,
    IncompleteError,
    InputError,
    NotFoundError,
)
from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.workflows.comparison import RESULT_COLUMNS, compare, plan_grid, read_pairs_file
from reprstore.workflows.in_memory import cka
from reprstore.workflows.ingest import import_files

N = 200
LAYERS = {"l1": 4, "l2": 8, "l3": 12}  # different widths → different stored chunk rows


def _meta(path: Path, n: int) -> Path:
    regions = ["north", "south", "east", "west"]
    rows = "".join(f"{i % 3},{regions[i % 4]}\n" for i in range(n))
    path.write_text("label,region\n" + rows)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds 0 and 1 of model m (layers l1–l3, n=200, chunks of 16–64 rows), a second
    dataset, a constant layer, a NaN layer and an interrupted import."""
    tmp = tmp_path_factory.mktemp("grid")
    path = tmp / "s.zarr"
    rng = np.random.default_rng(5)
    base = rng.normal(size=(N, 6))
    meta = _meta(tmp / "meta.csv", N)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("reprstore.store.encoding.TARGET_CHUNK_BYTES", 512)
        for seed in ("0", "1"):
            files = []
            for layer, p in LAYERS.items():
                x = np.tanh(base @ rng.normal(size=(6, p))) + 0.4 * rng.normal(size=(N, p))
                np.save(tmp / f"{layer}.npy", (3.0 + x).astype(np.float32))
                files.append(tmp / f"{layer}.npy")
            import_files(path, files, name="m", seed=seed, layer="{stem}", dtype="float32",
                         meta=meta)  # fmt: skip
        np.save(tmp / "const.npy", np.full((N, 5), 0.1, np.float32))
        bad = rng.normal(size=(N, 5)).astype(np.float32)
        bad[[7, 70], 2] = np.nan
        np.save(tmp / "nan.npy", bad)
        import_files(path, [tmp / "const.npy", tmp / "nan.npy"], name="odd", layer="{stem}",
                     dtype="float32")  # fmt: skip
        np.save(tmp / "other.npy", rng.normal(size=(150, 4)).astype(np.float32))
        import_files(path, [tmp / "other.npy"], name="m2", layer="l1", dataset="other",
                     dtype="float32")  # fmt: skip
        calls: list[int] = []

        def interrupt(done: int, total: int) -> None:
            calls.append(done)
            if len(calls) == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            import_files(path, [tmp / "l1.npy"], name="part", layer="l1", dtype="float32",
                         progress=interrupt)  # fmt: skip
    return path


def stored(store: Path, key: str) -> np.ndarray:
    """Read a representation with plain zarr."""
    return zarr.open_group(str(store), mode="r")[f"reprs/{key}"][:].astype(np.float64)


def test_store_fixture_has_several_chunk_sizes(store: Path) -> None:
    group = zarr.open_group(str(store), mode="r")
    chunks = {group[f"reprs/m/0/final/default/{layer}"].chunks[0] for layer in LAYERS}
    assert len(chunks) > 1 and max(chunks) < N


@pytest.mark.parametrize("estimator", ["debiased", "biased", "minibatch"])
def test_grid_equals_reference_and_pairwise_runs(store: Path, estimator: str) -> None:
    df = compare(store, "model=m,seed=0", "model=m,seed=1", estimator=estimator, batch_size=48)
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(df) == 9 and set(df["n_samples"]) == {N}
    group = zarr.open_group(str(store), mode="r")
    for _, row in df.iterrows():
        a = f"m/0/final/default/{row['a_layer']}"
        b = f"m/1/final/default/{row['b_layer']}"
        expected = ref_cka(stored(store, a), stored(store, b), estimator, batch_size=48)
        assert row["cka"] == pytest.approx(expected, rel=1e-6)
        single = cka(group[f"reprs/{a}"], group[f"reprs/{b}"], estimator, batch_size=48)
        assert row["cka"] == pytest.approx(single.cka, rel=1e-9)
    if estimator == "minibatch":
        assert set(df["n_batches"]) == {4}  # 200 rows, B = 48: 4 batches of 50


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_float32_products_stay_close_to_the_float64_reference(store: Path, estimator: str) -> None:
    df = compare(store, "model=m,seed=0", "model=m,seed=1", estimator=estimator,
                 batch_size=48, precision="float32")  # fmt: skip
    assert len(df) == 9
    for _, row in df.iterrows():
        x = stored(store, f"m/0/final/default/{row['a_layer']}")
        y = stored(store, f"m/1/final/default/{row['b_layer']}")
        expected = ref_cka(x, y, estimator, batch_size=48)
        assert abs(row["cka"] - expected) < 1e-6
    exact = compare(store, "model=m,seed=0", "model=m,seed=1", estimator=estimator, batch_size=48)
    assert (df["cka"] != exact["cka"]).any()  # the option reached the products


def test_match_differ_and_pairs_file(store: Path, tmp_path: Path) -> None:
    df = compare(store, "model=m", "model=m", match=["layer"], differ=["seed"])
    got = zip(df["a_seed"], df["b_seed"], df["a_layer"], df["b_layer"], strict=True)
    want = [(s, t, la, la) for la in LAYERS for s, t in (("0", "1"), ("1", "0"))]
    assert sorted(got) == sorted(want)
    same = df[(df["a_seed"] == "0")].set_index("a_layer")["cka"]
    flipped = df[(df["a_seed"] == "1")].set_index("a_layer")["cka"]
    pd.testing.assert_series_equal(same, flipped, check_names=False)  # symmetric
    df.iloc[[0, 3]].to_csv(tmp_path / "pairs.csv", index=False)
    listed = read_pairs_file(tmp_path / "pairs.csv")
    again = compare(store, "model=m", "model=m", pairs=listed)
    assert len(again) == 2
    np.testing.assert_allclose(again["cka"], df.iloc[[0, 3]]["cka"], rtol=1e-12)


def test_where_uses_the_same_rows_on_both_sides(store: Path) -> None:
    where = "region != 'north' and id >= 20 and label < 2"
    df = compare(store, "model=m,seed=0,layer=l2", "model=m,seed=1,layer=l3", where=where)
    ids = np.arange(N)
    keep = np.array([["north", "south", "east", "west"][i % 4] != "north" for i in ids])
    keep &= (ids >= 20) & (ids % 3 < 2)
    a, b = stored(store, "m/0/final/default/l2")[keep], stored(store, "m/1/final/default/l3")[keep]
    assert df["n_samples"].item() == keep.sum()
    assert df["cka"].item() == pytest.approx(ref_cka(a, b), rel=1e-6)


class CountingStore(LocalStore):
    """A local zarr store that counts reads of every key (subclass, not a mock)."""

    def __init__(self, root: Path, counts: collections.Counter) -> None:
        super().__init__(root, read_only=True)
        self.counts = counts

    async def get(self, key, prototype, byte_range=None):  # type: ignore[override]
        self.counts[key] += 1
        return await super().get(key, prototype, byte_range)


def _counting(path: Path) -> tuple[Store, collections.Counter]:
    counts: collections.Counter = collections.Counter()
    root = zarr.open_group(store=CountingStore(path, counts), mode="r")
    return Store(root, str(path), read_only=True), counts


def _chunk_reads(counts: collections.Counter, layer_path: str) -> list[int]:
    prefix = f"reprs/{layer_path}/c/"
    return [v for k, v in counts.items() if k.startswith(prefix)]


@pytest.mark.parametrize("estimator", ["debiased", "minibatch"])
def test_one_pass_reads_every_chunk_once(store: Path, estimator: str) -> None:
    st, counts = _counting(store)
    df = compare(st, "model=m,seed=0", "model=m,seed=*", estimator=estimator, batch_size=40,
                 scheduler="threads")  # fmt: skip
    assert len(df) == 18
    for seed in ("0", "1"):
        for layer in LAYERS:
            reads = _chunk_reads(counts, f"m/{seed}/final/default/{layer}")
            chunks = zarr.open_group(str(store), mode="r")[f"reprs/m/{seed}/final/default/{layer}"]
            assert len(reads) == -(-N // chunks.chunks[0])  # every chunk read …
            assert set(reads) == {1}  # … exactly once


def test_memory_limit_splits_passes_with_same_results(store: Path) -> None:
    st, counts = _counting(store)
    # 40 kB: the largest pair fits alone, not all pairs together (whatever an earlier test
    # of this module left in the result cache: 30 kB passed only after one had)
    small = compare(st, "model=m,seed=0", "model=m,seed=1", memory=40_000)
    reads = _chunk_reads(counts, "m/1/final/default/l3")
    assert max(reads) > 1  # more than one pass
    assert len(set(reads)) == 1  # every chunk as often as the others
    big = compare(store, "model=m,seed=0", "model=m,seed=1", cache=False)
    np.testing.assert_allclose(small["cka"], big["cka"], rtol=1e-12)
    with pytest.raises(ComparisonError, match="Raise --memory"):
        compare(store, "model=m,seed=0", "model=m,seed=1", memory=8_000, cache=False)
    # every pair cached: nothing to compute, so nothing to refuse
    assert compare(store, "model=m,seed=0", "model=m,seed=1", memory=8_000)["cka"].equals(
        small["cka"]
    )


def test_row_blocks_without_selected_rows_are_not_read(store: Path) -> None:
    st, counts = _counting(store)
    arrays = [
        st.array(ReprKey("m", "0", "final", "default", "l3")),
        st.array(ReprKey("m", "1", "final", "default", "l3")),
    ]
    chunk = arrays[0].chunks[0]
    mask = np.arange(N) < 40
    (got,) = compare_arrays(arrays, [(0, 1)], mask=mask, block_rows=chunk)
    reads = _chunk_reads(counts, "m/0/final/default/l3")
    assert sum(reads) == len(reads) == -(-40 // chunk)
    a, b = stored(store, "m/0/final/default/l3")[:40], stored(store, "m/1/final/default/l3")[:40]
    assert got.cka == pytest.approx(ref_cka(a, b), rel=1e-6)


def test_pair_api_blocks_never_straddle_stored_chunks(store: Path) -> None:
    """Blocks asked for between two multiples of the chunk rows still read each chunk once."""
    st, counts = _counting(store)
    arrays = [st.array(ReprKey("m", s, "final", "default", "l3")) for s in ("0", "1")]
    chunk = arrays[0].chunks[0]
    (got,) = compare_arrays(arrays, [(0, 1)], block_rows=chunk + chunk // 2)
    reads = _chunk_reads(counts, "m/0/final/default/l3")
    assert len(reads) == -(-N // chunk) and set(reads) == {1}
    a, b = stored(store, "m/0/final/default/l3"), stored(store, "m/1/final/default/l3")
    assert got.cka == pytest.approx(ref_cka(a, b), rel=1e-6)


def test_local_workers_are_threads_and_the_plan_says_why(store: Path) -> None:
    """``workers=2`` on one machine runs two threads of this process (a local process
    cluster measured ×2.4 slower): same values as the reference, and the plan says why."""
    notes: list[str] = []
    got = compare(store, "model=m,seed=0,layer=l3", "model=m,seed=1,layer=l3", workers=2,
                  cache=False, report=notes.append)  # fmt: skip
    a, b = stored(store, "m/0/final/default/l3"), stored(store, "m/1/final/default/l3")
    assert got["cka"].item() == pytest.approx(ref_cka(a, b), rel=1e-6)
    (line,) = [n for n in notes if n.startswith("workers:")]
    assert line.startswith("workers: 2 thread(s) in this process, not processes: ")
    assert "release the GIL" in line


def test_incomplete_refused_unless_allowed(store: Path) -> None:
    with pytest.raises(IncompleteError, match=r"part/0/final:l1 is incomplete.*--allow-incomplete"):
        compare(store, "model=part", "model=m,seed=0,layer=l1")
    df = compare(store, "model=part", "model=m,seed=0,layer=l1", allow_incomplete=True)
    n = df["n_samples"].item()
    assert 0 < n < N
    a, b = stored(store, "part/0/final/default/l1")[:n], stored(store, "m/0/final/default/l1")[:n]
    assert df["cka"].item() == pytest.approx(ref_cka(a, b), rel=1e-6)


BAD = [
    (dict(a="model=m2", b="model=m,seed=0"), DatasetMismatchError, "dataset 'other'"),
    (dict(a="model=nope", b="model=m"), NotFoundError, "No representation matches --a"),
    (dict(a="model=m,seed=0", b="model=m,seed=1", match=["seed"]), ComparisonError,
     "No pair left"),
    (dict(a="model=m,seed=0,layer=l1", b="model=m,seed=1,layer=l1", where="id < 3"),
     ComparisonError, "keeps 3 of 200 rows"),
    (dict(a="model=m,seed=0,layer=l1", b="model=m,seed=1,layer=l1", where="colour == 1"),
     ExpressionError, "names the column 'colour'.*Columns: id, label, region"),
    (dict(a="model=odd,layer=const", b="model=m,seed=0,layer=l1"), ComparisonError,
     "odd/0/final:const is constant"),
    (dict(a="model=m,seed=0,layer=l1", b="model=odd,layer=nan"), ComparisonError,
     "odd/0/final:nan has NaN or Inf values in 2 of 200 rows"),
    (dict(a="model=m,seed=0", b="model=m,seed=1", estimator="unbiased"), InputError,
     "Unknown estimator"),
    (dict(a="model=m,seed=0", b="model=m,seed=1", kernel="cosine"), InputError,
     "Unknown kernel"),
    (dict(a="model=m,seed=0", b="model=m,seed=1", workers=2, scheduler="tcp://x:1"),
     InputError, "either --workers or --scheduler"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD)
def test_bad_input(store: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        compare(store, **kwargs)


def test_pairs_file_naming_a_missing_representation(store: Path, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        "a_model,a_seed,a_checkpoint,a_layer,b_model,b_seed,b_checkpoint,b_layer\n"
        "m,0,final,l1,m,0,final,l9\n"
    )
    with pytest.raises(NotFoundError, match="m/0/final:l9, which is not stored"):
        compare(store, "model=m", "model=m", pairs=read_pairs_file(tmp_path / "p.csv"))
    (tmp_path / "q.csv").write_text("a_model,b_model\nm,m\n")
    with pytest.raises(InputError, match="Missing: a_seed"):
        read_pairs_file(tmp_path / "q.csv")


def test_plan_lists_each_representation_once(store: Path) -> None:
    plan = plan_grid(Store.open(store), "model=m", "model=m,seed=1")
    assert len(plan.reprs) == 6 and len(plan.pairs) == 18
    assert plan.reprs[plan.pairs[0][0]].key == ReprKey("m", "0", "final", "default", "l1")


def test_table_headers_and_cells_are_plain_text_never_markup(store: Path) -> None:
    """``cca[default]`` and a layer named like markup print as written (rich would eat
    ``[default]`` and ``[bold]`` as markup)."""
    from conftest import run_cli

    sides = ["--a", "model=m,seed=0,layer=l1", "--b", "model=m,seed=1,layer=l1"]
    done = run_cli("compare", str(store), *sides, "--measure", "cca:ridge=0.1,cca", "--no-cache")
    assert done.returncode == 0, done.stderr
    assert "cca[default]" in done.stdout and "cca_r2[default]" in done.stdout
