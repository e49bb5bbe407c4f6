"""The remote-store round trip against a real S3-compatible server on 127.0.0.1.

moto's server mode is started and stopped by these tests (a session fixture); the CLI
reaches it through the standard ``AWS_ENDPOINT_URL`` setting that s3fs/botocore read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TESTS, assert_user_error, run_cli

moto_server = pytest.importorskip(
    "moto.server", reason="moto is not installed (pip install 'moto[server]', in .[dev])"
)
pytest.importorskip("s3fs", reason="s3fs is not installed (in .[dev])")

BUCKET = "reprstore-test"


@pytest.fixture(scope="session")
def s3() -> Iterator[object]:
    """A moto S3 server on 127.0.0.1 (a free port) with one bucket; the env points at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # type: ignore[attr-defined]
    settings = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def url(s3: object) -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}.zarr"


def _objects(s3, url: str) -> list[str]:  # type: ignore[no-untyped-def]
    prefix = url.split(f"s3://{BUCKET}/", 1)[1]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _reference(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))  # fmt: skip


def test_round_trip_import_ls_verify_cka_extract(s3, url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)).astype(np.float32)
    y = (x @ rng.normal(size=(12, 6)) + rng.normal(size=(500, 6))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "inputs.npy", rng.normal(size=(500, 8)).astype(np.float32))
    done = run_cli("import", url, "x.npy", "y.npy", "--name", "m", "--layer", "{stem}",
                   "--dtype", "float32", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listing = run_cli("ls", url, "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert sorted(r["layer"] for r in json.loads(listing.stdout)) == ["x", "y"]
    assert run_cli("verify", url, cwd=tmp_path).returncode == 0
    cka = run_cli("cka", url, "--a", "layer=x", "--b", "layer=y", "--estimator", "biased",
                  "--out", "r.csv", cwd=tmp_path)  # fmt: skip
    assert cka.returncode == 0, cka.stderr
    got = float(pd.read_csv(tmp_path / "r.csv")["cka"].iloc[0])
    assert got == pytest.approx(_reference(x.astype(np.float64), y.astype(np.float64)), rel=1e-6)
    model = ["--model", "models_for_tests:mlp", "--data", "inputs.npy", "--layers", "0,2"]
    extract = run_cli("extract", url, *model, "--name", "net", "--dataset", "probe", cwd=tmp_path)
    assert extract.returncode == 0, extract.stderr
    listing = json.loads(run_cli("ls", url, "--json", cwd=tmp_path).stdout)
    assert {(r["model"], r["layer"]) for r in listing} >= {("net", "0"), ("net", "2")}
    both = run_cli("cka", url, "--a", "model=net,layer=0", "--b", "model=net,layer=2", cwd=tmp_path)
    assert both.returncode == 0, both.stderr


def test_resume_after_interrupt_on_s3(s3, url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(1).normal(size=(24_000, 128)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["import", url, "x.npy", "--name", "m", "--layer", "a", "--dtype", "float32"]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([sys.executable, "-m", "reprstore", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    chunk_prefix = "/reprs/m/0/final/default/a/c/"
    while time.time() < deadline and proc.poll() is None:
        if any(chunk_prefix in k for k in _objects(s3, url)):
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    import zarr

    arr = zarr.open_array(f"{url}/reprs/m/0/final/default/a", mode="r")
    interrupted = proc.returncode == -9 and not arr.attrs.get("complete")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    arr = zarr.open_array(f"{url}/reprs/m/0/final/default/a", mode="r")
    assert arr.attrs["complete"] is True
    np.testing.assert_array_equal(arr[:], x)
    assert interrupted or proc.returncode == 0
    assert run_cli("verify", url, cwd=tmp_path).returncode == 0


def test_overwrite_and_corruption_on_s3(s3, url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    old, new, ref = (rng.normal(size=(2100, 700)).astype(np.float32) for _ in range(3))
    for name, data in (("old", old), ("new", new), ("ref", ref)):
        np.save(tmp_path / f"{name}.npy", data)
    base = ["--name", "m", "--dtype", "float32"]
    assert run_cli("import", url, "old.npy", "--layer", "a", *base, cwd=tmp_path).returncode == 0
    assert run_cli("import", url, "ref.npy", "--layer", "r", *base, cwd=tmp_path).returncode == 0
    over = run_cli("import", url, "new.npy", "--layer", "a", "--overwrite", *base, cwd=tmp_path)
    assert over.returncode == 0, over.stderr
    import zarr

    stored = zarr.open_array(f"{url}/reprs/m/0/final/default/a", mode="r")[:]
    np.testing.assert_array_equal(stored, new)
    assert not [k for k in _objects(s3, url) if "/.staging/" in k]
    chunk = next(k for k in _objects(s3, url) if "/reprs/m/0/final/default/a/c/1/" in k)
    s3.delete_object(Bucket=BUCKET, Key=chunk)
    result = run_cli("cka", url, "--a", "layer=a", "--b", "layer=r", cwd=tmp_path)
    assert_user_error(result, "m/0/final:a", "chunk 1", "missing")


def test_file_urls_work_for_writing(tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(300, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    file_url = f"file://{tmp_path / 's.zarr'}"
    for layer in ("a", "b"):
        done = run_cli("import", file_url, "x.npy", "--name", "m", "--layer", layer, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert run_cli("ls", str(tmp_path / "s.zarr")).returncode == 0
    again = run_cli("import", file_url, "x.npy", "--name", "m", "--layer", "a", "--dtype",
                    "float32", "--overwrite", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    cka = run_cli("cka", file_url, "--a", "layer=a", "--b", "layer=b", "--estimator", "biased")
    assert cka.returncode == 0, cka.stderr
    assert "1.000000" in cka.stdout


def _cli_with(env_changes: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("REPRSTORE_DEBUG", None)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "reprstore", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


def test_an_unreachable_endpoint_and_missing_credentials_are_one_line() -> None:
    """No server on the port (nothing listens on 127.0.0.1:9), then no credentials at all:
    'cannot reach' / 'cannot authenticate' to the store, not an Unexpected error."""
    from conftest import assert_user_error

    closed = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
              "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    result = _cli_with(closed, "ls", "s3://bucket/s.zarr")
    assert_user_error(result, "Cannot reach the store at s3://bucket/s.zarr", "AWS_ENDPOINT_URL")
    anonymous = {**closed, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                 "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
                 "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                 "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    result = _cli_with(anonymous, "ls", "s3://bucket/s.zarr")
    assert_user_error(result, "Cannot authenticate to the store", "AWS_ACCESS_KEY_ID")


def test_result_cache_on_s3(s3, url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The result cache lives in the bucket too: a rerun reuses it, verify checks it."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x @ rng.normal(size=(6, 5)) + rng.normal(size=(400, 5))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    done = run_cli("import", url, "x.npy", "y.npy", "--name", "m", "--layer", "{stem}",
                   "--dtype", "float32", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    args = ["cka", url, "--a", "layer=x", "--b", "layer=y", "--estimator", "biased"]
    first = run_cli(*args, "--out", "r1.csv", cwd=tmp_path)
    again = run_cli(*args, "--out", "r2.csv", cwd=tmp_path)
    assert first.returncode == again.returncode == 0, again.stderr
    assert "cache: reused 1 of 1 pair(s)" in again.stdout, again.stdout
    assert any("/cache/results/" in key for key in _objects(s3, url))
    one = float(pd.read_csv(tmp_path / "r1.csv")["cka"].iloc[0])
    assert float(pd.read_csv(tmp_path / "r2.csv")["cka"].iloc[0]) == one
    assert one == pytest.approx(_reference(x.astype(np.float64), y.astype(np.float64)), rel=1e-9)
    checked = run_cli("verify", url, cwd=tmp_path)
    assert checked.returncode == 0 and "1 cached result(s)" in checked.stdout, checked.stdout
    assert "1 cached result(s)" in run_cli("cache", url, cwd=tmp_path).stdout
