"""Damaged stores never reach a result: each chunk a comparison reads is CRC-checked.

Every case damages real files of a real store on disk, then runs the real CLI. Before the
checked reader, a deleted chunk read back as zeros and swapped chunks decoded fine, so
``cka`` exited 0 with a wrong value; a truncated chunk gave "Unexpected RuntimeError".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, run_cli

from reprstore.errors import CorruptDataError
from reprstore.workflows.ingest import import_files

N, P = 5000, 512  # float32: 2048-row chunks, 3 per array


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(7)
    base = rng.normal(size=(N, P))
    for i in range(3):
        x = base + (i + 1) * rng.normal(size=(N, P))
        np.save(root / f"l{i}.npy", x.astype(np.float32))
    import_files(root / "s.zarr", [root / f"l{i}.npy" for i in range(3)], name="m",
                 layer="{stem}", dtype="float32")  # fmt: skip
    for i in range(3):
        (root / f"l{i}.npy").unlink()
    return root / "s.zarr"


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "s.zarr")
    return tmp_path / "s.zarr"


def _chunk(store: Path, layer: str, index: int) -> Path:
    return store / f"reprs/m/0/final/default/{layer}/c/{index}/0"


def _cka(store: Path, a: str = "l0", b: str = "l1", *extra: str):
    return run_cli("cka", str(store), "--a", f"layer={a}", "--b", f"layer={b}", *extra)


def _reference(store: Path, a: str, b: str) -> float:
    import zarr

    run = store / "reprs/m/0/final/default"
    x = np.asarray(zarr.open_array(str(run / a), mode="r")[:], np.float64)
    y = np.asarray(zarr.open_array(str(run / b), mode="r")[:], np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_healthy_store_still_compares(store: Path) -> None:
    result = _cka(store, "l0", "l1", "--estimator", "biased", "--out", str(store.parent / "r.csv"))
    assert result.returncode == 0, result.stderr
    import pandas as pd

    got = float(pd.read_csv(store.parent / "r.csv")["cka"].iloc[0])
    assert got == pytest.approx(_reference(store, "l0", "l1"), rel=1e-6)


def test_deleted_chunk_is_named_not_read_as_zeros(store: Path) -> None:
    _chunk(store, "l0", 1).unlink()
    result = _cka(store)
    assert_user_error(result, "m/0/final:l0", "chunk 1", "missing", "reprstore verify")


def test_swapped_chunk_files_fail_their_checksum(store: Path) -> None:
    a, b = _chunk(store, "l1", 0), _chunk(store, "l1", 1)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    result = _cka(store)
    assert_user_error(result, "m/0/final:l1", "chunk 0", "checksum", "verify")


def test_chunk_copied_from_another_layer_fails_its_checksum(store: Path) -> None:
    shutil.copyfile(_chunk(store, "l2", 2), _chunk(store, "l0", 2))
    assert_user_error(_cka(store), "m/0/final:l0", "chunk 2", "checksum")


def test_flipped_bytes_are_an_error(store: Path) -> None:
    chunk = _chunk(store, "l0", 1)
    data = bytearray(chunk.read_bytes())
    for pos in range(len(data) // 3, len(data) // 3 + 8):
        data[pos] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert_user_error(_cka(store), "m/0/final:l0", "chunk 1")


def test_truncated_chunk_is_one_line_not_a_blosc_error(store: Path) -> None:
    chunk = _chunk(store, "l1", 2)
    chunk.write_bytes(chunk.read_bytes()[:100])
    result = _cka(store, "l1", "l2")
    assert_user_error(result, "m/0/final:l1", "chunk 2", "cannot be decoded", "verify")
    assert "blosc" not in result.stderr.lower() or "Unexpected" not in result.stderr


@pytest.mark.parametrize("keep", [0, 15, 16, 100, -1])
def test_truncated_frame_is_refused_before_blosc_reads_it(store: Path, keep: int) -> None:
    """c-blosc trusts the frame's own sizes: a cut frame read past its buffer (SIGSEGV in CI)."""
    import zarr

    chunk = _chunk(store, "l1", 1)
    data = chunk.read_bytes()
    chunk.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    array = zarr.open_array(str(store / "reprs/m/0/final/default/l1"), mode="r")
    with pytest.raises(ValueError, match="Blosc frame"):
        array[2048:4096]
    np.asarray(array[:2048])  # the healthy chunks still read


def test_frame_with_a_damaged_size_field_is_refused(store: Path) -> None:
    """A whole frame whose header claims another decoded size (a flipped bit in bytes 4..8)."""
    import zarr

    chunk = _chunk(store, "l1", 0)
    data = bytearray(chunk.read_bytes())
    data[6] ^= 0x01
    chunk.write_bytes(bytes(data))
    array = zarr.open_array(str(store / "reprs/m/0/final/default/l1"), mode="r")
    with pytest.raises(ValueError, match="decodes to"):
        array[:2048]
    assert_user_error(_cka(store, "l1", "l2"), "m/0/final:l1", "chunk 0", "cannot be decoded")


def test_empty_chunk_file(store: Path) -> None:
    _chunk(store, "l2", 0).write_bytes(b"")
    assert_user_error(_cka(store, "l2", "l0", "--estimator", "biased"), "l2", "chunk 0")


def test_minibatch_and_rbf_read_checked_too(store: Path) -> None:
    _chunk(store, "l0", 0).unlink()
    assert_user_error(_cka(store, "l0", "l1", "--estimator", "minibatch"), "l0", "chunk 0")
    assert_user_error(
        _cka(store, "l0", "l1", "--estimator", "minibatch", "--kernel", "rbf"), "l0", "chunk 0"
    )


def test_healthy_siblings_compare_when_one_layer_is_damaged(store: Path) -> None:
    _chunk(store, "l0", 1).unlink()
    result = _cka(store, "l1", "l2")
    assert result.returncode == 0, result.stderr


def test_checksums_edited_to_match_nothing(store: Path) -> None:
    meta = store / "reprs/m/0/final/default/l1/zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["chunk_crc32"][1] ^= 1
    meta.write_text(json.dumps(doc))
    assert_user_error(_cka(store), "l1", "chunk 1", "checksum")


def test_api_raises_the_error_family(store: Path) -> None:
    from reprstore.workflows.comparison import compare

    _chunk(store, "l0", 2).unlink()
    with pytest.raises(CorruptDataError, match=r"chunk 2 \(rows 4096\.\.5000\)"):
        compare(store, "layer=l0", "layer=l1")


@pytest.mark.parametrize("garbage", [b"{not json", b"", b'{"zarr_format": 3}', b"\xff\xfe\x00"])
def test_one_damaged_zarr_json_does_not_break_the_rest(store: Path, garbage: bytes) -> None:
    (store / "reprs/m/0/final/default/l0/zarr.json").write_bytes(garbage)
    listing = run_cli("ls", str(store))
    assert listing.returncode == 0, listing.stderr
    assert "l1" in listing.stdout and "l2" in listing.stdout
    assert "DAMAGED" in listing.stdout and "m/0/final:l0 is damaged" in listing.stdout
    as_json = json.loads(run_cli("ls", str(store), "--json").stdout)
    assert {r.get("damaged") for r in as_json} >= {"m/0/final:l0"}
    assert len([r for r in as_json if "layer" in r]) == 2
    verify = run_cli("verify", str(store))
    assert_user_error(verify, "1 problem")
    assert "m/0/final:l0" in verify.stdout and "damaged" in verify.stdout
    assert _cka(store, "l1", "l2").returncode == 0
    assert_user_error(_cka(store, "l0", "l1"), "m/0/final:l0 is damaged", "verify")
    assert_user_error(_cka(store, "l*", "l1"), "m/0/final:l0 is damaged")
    assert_user_error(run_cli("info", str(store), "layer=l0"), "l0 is damaged")
    assert run_cli("info", str(store), "layer=l1").returncode == 0


def test_damaged_group_is_named_and_other_runs_work(store: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(N, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    import_files(store, [tmp_path / "x.npy"], name="m", seed="1", layer="l0")
    (store / "reprs/m/1/zarr.json").write_text("[1, 2")
    listing = run_cli("ls", str(store))
    assert listing.returncode == 0 and "m/1 is damaged" in listing.stdout
    healthy = run_cli("cka", str(store), "--a", "seed=0,layer=l0", "--b", "seed=0,layer=l1")
    assert healthy.returncode == 0, healthy.stderr  # seed 0 only: not damaged
    assert_user_error(
        run_cli("cka", str(store), "--a", "seed=1", "--b", "seed=0,layer=l1"), "m/1 is damaged"
    )
