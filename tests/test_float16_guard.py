"""float16 storage never silently loses the signal (issue: trust v2).

CKA of data with a large common offset, stored with the default dtype, against a float64
reference of the published formula computed here from the unrounded data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_user_error, run_cli

from reprstore.workflows.comparison import compare


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA (Kornblith et al. 2019) in float64."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _pair(n: int = 2000, p: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    y = x @ rng.normal(size=(p, p)) * 0.3 + rng.normal(size=(n, p))
    return x, y


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_large_common_offset_keeps_cka(tmp_path: Path, offset: float) -> None:
    x, y = _pair()
    want = _linear_cka(x, y)
    for name, data in (("x", x + offset), ("y", y + offset)):
        np.save(tmp_path / f"{name}.npy", data.astype(np.float32))
    result = run_cli("import", "s.zarr", "x.npy", "y.npy", "--name", "m", "--layer", "{stem}",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warned) == 2 and all("stored as float32" in w for w in warned), result.stderr
    arr = zarr.open_array(str(tmp_path / "s.zarr/reprs/m/0/final/default/x"), mode="r")
    assert arr.dtype == np.float32 and "float16 rounding" in arr.attrs["storage_fallback"]
    assert "mean" in arr.attrs["storage_fallback"]
    df = compare(tmp_path / "s.zarr", "layer=x", "layer=y", estimator="biased")
    # float32 storage of the offset data loses ~offset × 6e-8 per value: well within 1e-5
    assert float(df["cka"].iloc[0]) == pytest.approx(want, rel=1e-5)
    assert run_cli("verify", "s.zarr", cwd=tmp_path).returncode == 0
    ls = run_cli("ls", "s.zarr", cwd=tmp_path)
    assert "float32" in ls.stdout


def test_well_scaled_data_stays_float16(tmp_path: Path) -> None:
    x, y = _pair()
    for name, data in (("x", x), ("y", y)):
        np.save(tmp_path / f"{name}.npy", data.astype(np.float32))
    result = run_cli("import", "s.zarr", "x.npy", "y.npy", "--name", "m", "--layer", "{stem}",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    arr = zarr.open_array(str(tmp_path / "s.zarr/reprs/m/0/final/default/x"), mode="r")
    assert arr.dtype == np.float16 and "storage_fallback" not in arr.attrs
    df = compare(tmp_path / "s.zarr", "layer=x", "layer=y", estimator="biased")
    assert float(df["cka"].iloc[0]) == pytest.approx(_linear_cka(x, y), rel=1e-5)


def test_values_beyond_float16_range_are_never_inf(tmp_path: Path) -> None:
    x, _ = _pair(n=500, p=4)
    x[3, 1] = 1e5
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "beyond float16's range" in result.stderr
    arr = zarr.open_array(str(tmp_path / "s.zarr/reprs/m/0/final/default/x"), mode="r")
    stored = arr[:]
    assert np.isfinite(stored).all() and stored[3, 1] == np.float32(1e5)
    assert arr.attrs["nonfinite"] == {"nan": 0, "inf": 0}


def test_out_of_range_after_the_first_chunk_is_an_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(70_000, 64))  # several chunks: the first one is fine
    x[-10, 0] = -7e4
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "x", cwd=tmp_path)
    assert_user_error(result, "beyond float16's range", "--dtype float32")


def test_resumed_fallback_stays_float32(tmp_path: Path) -> None:
    from reprstore.keys import ReprKey
    from reprstore.store import Encoding, ReprSettings, Store
    from reprstore.store.datasets import write_dataset

    x, _ = _pair(n=4000, p=512)
    x += 1e4
    store = Store.open(tmp_path / "s.zarr", create=True)
    write_dataset(store.root, "default", 4000, None, None, source="test")
    settings = ReprSettings("default", 512, 4000, (512,), "none", "float16", "float64",
                            source_fingerprint="t")  # fmt: skip
    key = ReprKey("m", "0", "final", "default", "x")
    with pytest.warns(UserWarning, match="stored as float32"):
        writer = store.writer(key, settings, encoding=Encoding("float16"))
        writer.write(x[:2048])
    writer.abort()  # interrupted after the first chunk
    writer = store.writer(key, settings, encoding=Encoding("float16"))
    assert writer.rows_written == 2048 and writer.encoding.name == "float32"
    writer.write(x[2048:])
    writer.close()
    stored = np.asarray(store.array(key)[:], np.float64)
    np.testing.assert_allclose(stored, x.astype(np.float32), rtol=0)


def test_dead_units_and_small_offsets_stay_float16(tmp_path: Path) -> None:
    """Real activations: a few near-constant columns and offsets of ~2 × the spread."""
    x, _ = _pair(n=1000, p=32)
    x[:, :8] += 2.0
    x[:, 30] = 1e-9 * x[:, 30] - 5e-8  # a dead unit: no variance worth keeping
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    result = run_cli("import", "s.zarr", "x.npy", "--name", "m", "--layer", "x", cwd=tmp_path)
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    stored = zarr.open_array(str(tmp_path / "s.zarr/reprs/m/0/final/default/x"), mode="r")
    assert stored.dtype == np.float16
