"""Comparisons on real dask.distributed clusters: other working directories, lost clusters.

The scheduler and workers are real processes started here (``dask scheduler`` /
``dask worker``), the workers in a different working directory from the command, so a
relative store path only works if it is resolved before it travels to them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TESTS, assert_user_error, run_cli

from reprstore.workflows.ingest import import_files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "DASK_LOGGING__DISTRIBUTED": "error"}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _wait_listening(port: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the dask scheduler did not start")


class Cluster:
    """A scheduler process plus ``n`` worker processes running in ``cwd``."""

    def __init__(self, cwd: Path, n_workers: int) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler = _spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", str(self.port), "--no-dashboard"], cwd)  # fmt: skip
        _wait_listening(self.port)
        self.workers = [
            _spawn(
                [
                    "distributed.cli.dask_worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--no-nanny",
                ],
                cwd,
            )
            for _ in range(n_workers)
        ]
        if n_workers:
            from distributed import Client

            with Client(self.address, timeout=60) as client:
                client.wait_for_workers(n_workers, timeout=60)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    rng = np.random.default_rng(9)
    base = rng.normal(size=(3000, 10))
    for i in range(2):
        np.save(root / f"l{i}.npy", (base + rng.normal(size=(3000, 10))).astype(np.float32))
    import_files(root / "s.zarr", [root / "l0.npy", root / "l1.npy"], name="m", layer="{stem}",
                 dtype="float32")  # fmt: skip
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture
def cluster(root: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(root / "elsewhere", getattr(request, "param", 2))
    try:
        yield c
    finally:
        c.stop()


def _reference(root: Path) -> float:
    x = np.load(root / "l0.npy").astype(np.float64)
    y = np.load(root / "l1.npy").astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))  # fmt: skip


def test_two_workers_in_another_directory_read_the_right_store(
    root: Path, cluster: Cluster
) -> None:
    args = ["cka", "s.zarr", "--a", "layer=l0", "--b", "layer=l1", "--estimator", "biased"]
    result = run_cli(*args, "--scheduler", cluster.address, "--out", "r.csv", cwd=root)
    assert result.returncode == 0, result.stderr
    got = float(pd.read_csv(root / "r.csv")["cka"].iloc[0])
    assert got == pytest.approx(_reference(root), rel=1e-6)


@pytest.mark.parametrize("cluster", [0], indirect=True)
@pytest.mark.slow
def test_cluster_without_workers_is_one_line_after_the_timeout(
    root: Path, cluster: Cluster
) -> None:
    start = time.time()
    result = run_cli("cka", "s.zarr", "--a", "layer=l0", "--b", "layer=l1", "--scheduler",
                     cluster.address, "--timeout", "3", cwd=root, timeout=120)  # fmt: skip
    assert_user_error(result, cluster.address, "no worker is left")
    assert "Unexpected" not in result.stderr
    assert time.time() - start < 60


@pytest.mark.parametrize("cluster", [0], indirect=True)
@pytest.mark.slow
def test_killed_scheduler_is_one_line(root: Path, cluster: Cluster) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([sys.executable, "-m", "reprstore", "cka", "s.zarr", "--a",
                             "layer=l0", "--b", "layer=l1", "--scheduler", cluster.address,
                             "--timeout", "4"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(6)  # connected and waiting for a worker
    cluster.scheduler.kill()
    cluster.scheduler.wait()
    _, err = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert_user_error(result, cluster.address)
    assert "FutureCancelledError" not in err and "Unexpected" not in err


def test_unreachable_scheduler(root: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = run_cli("cka", "s.zarr", "--a", "layer=l0", "--b", "layer=l1", "--scheduler",
                     address, "--timeout", "2", cwd=root)  # fmt: skip
    assert_user_error(result, "Cannot reach the dask scheduler", address)


def test_local_cluster_workers_in_another_directory(root: Path) -> None:
    """A 2-worker LocalCluster started from another working directory (API, relative path)."""
    from reprstore.workflows.comparison import compare

    here = Path.cwd()
    os.chdir(root)
    try:
        from distributed import Client, LocalCluster

        os.chdir(root / "elsewhere")  # the worker processes start here
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as lc, Client(lc) as client:  # fmt: skip
            os.chdir(root)  # the store path is relative to this one
            df = compare("s.zarr", "layer=l0", "layer=l1", estimator="biased", scheduler=client)
            assert len(client.nthreads()) == 2
    finally:
        os.chdir(here)
    assert float(df["cka"].iloc[0]) == pytest.approx(_reference(root), rel=1e-6)
