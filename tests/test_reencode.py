"""Chunk codecs: new arrays use Blosc(LZ4, bit shuffle); arrays of the older
Blosc(zstd 3, byte shuffle) still read and compare, and ``reprstore upgrade --reencode``
rewrites them with the same values, checksums and result-cache fingerprints, resumably."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import TESTS, assert_user_error, run_cli

from reprstore.store import Store
from reprstore.store.migration import upgrade
from reprstore.store.result_cache import fingerprint
from reprstore.workflows.comparison import compare

FIXTURE = TESTS / "fixtures" / "v1_store"  # format 1, written with the old codec
OLD = {"cname": "zstd", "clevel": 3, "shuffle": "shuffle", "blocksize": 0}


def _is_old(codec: dict) -> bool:
    conf = dict(codec["configuration"])
    conf.pop("typesize")
    return codec["name"] == "blosc" and conf == OLD


A = "model=m,seed=0,checkpoint=step20,layer=layer_2"
B = "model=m,seed=1,checkpoint=step100,layer=layer_10"


def _new(typesize: int) -> dict:
    conf = {"typesize": typesize, "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"}
    return {"name": "blosc", "configuration": {**conf, "blocksize": 0}}


def _arrays(store: Path) -> dict[str, dict]:
    """Every array's folder (relative), codecs, attributes, chunk file names and values."""
    out = {}
    for meta in sorted(store.joinpath("reprs").rglob("zarr.json")):
        doc = json.loads(meta.read_text())
        if doc["node_type"] != "array":
            continue
        folder = meta.parent
        rel = folder.relative_to(store).as_posix()
        values = zarr.open_array(str(folder), mode="r")[:]
        chunks = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("c/*/*"))
        out[rel] = {"codecs": doc["codecs"], "attrs": doc["attributes"], "chunks": chunks,
                    "values": values.tobytes(), "dtype": str(values.dtype)}  # fmt: skip
    return out


def _cka_biased(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _format2_old_codec(tmp_path: Path) -> Path:
    """The fixture upgraded to format 2 by renames only: every array keeps the old codec."""
    store = tmp_path / "s.zarr"
    shutil.copytree(FIXTURE, store)
    assert upgrade(store).moved == 11
    assert all(_is_old(a["codecs"][1]) for a in _arrays(store).values())
    return store


def test_new_arrays_use_lz4_bitshuffle(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(600, dtype=np.float32).reshape(100, 6) / 7)
    for dtype, typesize in (("float16", 2), ("float32", 4), ("bfloat16", 4)):
        r = run_cli("import", "s.zarr", "x.npy", "--name", dtype, "--layer", "l",
                    "--dtype", dtype, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        meta = json.loads(
            (tmp_path / f"s.zarr/reprs/{dtype}/0/final/default/l/zarr.json").read_text()
        )
        assert meta["codecs"][1] == _new(typesize)


def test_old_codec_store_compares_and_reencodes_keeping_values_and_fingerprints(
    tmp_path: Path,
) -> None:
    store = _format2_old_codec(tmp_path)
    before = _arrays(store)
    raw = zarr.open_group(str(store), mode="r")
    x = raw["reprs/m/0/step20/default/layer_2"][:].astype(np.float64)
    y = raw["reprs/m/1/step100/default/layer_10"][:].astype(np.float64)
    notes: list[str] = []
    old = compare(store, A, B, estimator="biased", report=notes.append)
    assert old["cka"].item() == pytest.approx(_cka_biased(x, y), rel=1e-9)
    prints = {i.key.path: fingerprint(i) for i in Store.open(store).select()}

    checked = run_cli("verify", str(store))  # the fixture holds one incomplete array
    result = run_cli("upgrade", str(store), "--reencode")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["upgraded", str(store), "re-encoded", "11", "array(s)",
                                     "with", "the", "current", "codec"]  # fmt: skip
    after = _arrays(store)
    assert sorted(after) == sorted(before)
    for rel, was in before.items():
        now = after[rel]
        assert now["codecs"][1] == _new(np.dtype(was["dtype"]).itemsize), rel
        assert now["values"] == was["values"] and now["attrs"] == was["attrs"], rel
        assert now["chunks"] == was["chunks"], rel
    # the recorded CRC-32s are of the decoded values, so they still hold
    arr = zarr.open_array(str(store / "reprs/m/1/step100/default/layer_10"), mode="r")
    rows = arr.chunks[0]
    crcs = [
        zlib.crc32(arr[i * rows : (i + 1) * rows].tobytes())
        for i in range(len(arr.attrs["chunk_crc32"]))
    ]
    assert crcs == arr.attrs["chunk_crc32"]
    assert {i.key.path: fingerprint(i) for i in Store.open(store).select()} == prints
    assert not (store / "__reencode__").exists() and not (store / "upgrade-journal.json").exists()

    notes.clear()
    again = compare(store, A, B, estimator="biased", report=notes.append)
    assert any("cache: reused 1 of 1 pair(s)" in n for n in notes), notes
    assert again["cka"].item() == old["cka"].item()
    fresh = compare(store, A, B, estimator="biased", cache=False)
    assert fresh["cka"].item() == pytest.approx(_cka_biased(x, y), rel=1e-9)
    rechecked = run_cli("verify", str(store))
    assert (rechecked.returncode, rechecked.stdout.splitlines()[0]) == (
        checked.returncode, checked.stdout.splitlines()[0])  # fmt: skip
    assert "10 chunk(s)" in rechecked.stdout and "1 problem(s)" in rechecked.stdout
    done = run_cli("upgrade", str(store), "--reencode")
    assert done.returncode == 0 and "nothing to do" in done.stdout


def test_format_1_upgrades_and_reencodes_in_one_run(tmp_path: Path) -> None:
    store = tmp_path / "v1.zarr"
    shutil.copytree(FIXTURE, store)
    report = upgrade(store, reencode=True)
    assert (report.from_format, report.moved, report.reencoded) == (1, 11, 11)
    assert all(a["codecs"][1]["configuration"]["cname"] == "lz4" for a in _arrays(store).values())


def test_interrupted_reencoding_refuses_reads_then_resumes(tmp_path: Path) -> None:
    store = _format2_old_codec(tmp_path)
    before = _arrays(store)

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upgrade(store, progress=stop, reencode=True)
    assert_user_error(run_cli("ls", str(store)), "interrupted", "reprstore upgrade")
    journal = json.loads((store / "upgrade-journal.json").read_text())
    # the state a kill leaves between steps 2 and 3 of the next array: its folder moved
    # aside, the checked copy not yet in place
    nxt = journal["arrays"][3]
    from reprstore.store import reencode

    root = zarr.open_group(str(store), mode="a")
    reencode._rebuild(root, store, nxt, "__reencode__/3", lambda: None)
    (store / nxt).rename(store / "__reencode__/3.old")
    assert not (store / nxt).exists()

    report = upgrade(store)  # plain 'reprstore upgrade' finishes the job
    assert report.resumed and report.reencoded == 11
    after = _arrays(store)
    assert sorted(after) == sorted(before)
    for rel, was in before.items():
        assert after[rel]["values"] == was["values"], rel
        assert after[rel]["codecs"][1]["configuration"]["cname"] == "lz4", rel
    assert not (store / "__reencode__").exists()
    assert len(Store.open(store).select()) == 11
