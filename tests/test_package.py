"""The public API and the dependency direction between subpackages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reprstore

PUBLIC = {"ReprKey", "ReprstoreError", "Selector", "Store", "ReprInfo", "import_files",
          "extract", "recorder", "cka", "CKAResult", "compare", "describe", "measures",
          "__version__", "summarize", "contrast", "weight_drift", "plot_results",
          "open"}  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert set(reprstore.__all__) == PUBLIC
    for name in reprstore.__all__:
        assert getattr(reprstore, name) is not None


def _imports_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_reprstore_is_light() -> None:
    mods = _imports_after("import reprstore")
    assert "torch" not in mods and "zarr" not in mods and "dask" not in mods


def test_store_does_not_import_torch() -> None:
    mods = _imports_after("import reprstore.store, reprstore.workflows.ingest")
    assert "torch" not in mods


def test_cli_help_does_not_import_heavy_modules() -> None:
    mods = _imports_after("import reprstore.cli")
    assert [m for m in (*HEAVY, "zarr", "numpy") if m in mods] == []


#: modules a command that only lists, describes or imports arrays must not import: each
#: costs a user tenths of a second to seconds at every call (typer.rich_utils: help only)
HEAVY = ("torch", "dask", "distributed", "pandas", "scipy", "matplotlib", "transformers",
         "re2", "pyarrow", "typer.rich_utils")  # fmt: skip

CLI_MODULES = """
import runpy, sys
out, sys.argv = sys.argv[1], ["reprstore", *sys.argv[2:]]
try:
    runpy.run_module("reprstore", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
finally:
    with open(out, "w") as fh:
        fh.write(" ".join(sorted(sys.modules)))
sys.exit(code)
"""


def _modules_after_cli(tmp_path: Path, *args: str) -> set[str]:
    """The modules loaded by the time ``reprstore ARGS`` exits (run as ``python -m``)."""
    out = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", CLI_MODULES, str(out), *args], cwd=tmp_path,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store of two imported representations, and their .npy files beside it."""
    work = tmp_path_factory.mktemp("light")
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(work / f"layer_{i}.npy", rng.normal(size=(50, 4)).astype(np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "reprstore", "import", "s.zarr", "layer_0.npy", "layer_1.npy",
         "--name", "toy", "--layer", "{stem}"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return work


@pytest.mark.parametrize(
    "args",
    [["--help"], ["ls", "s.zarr"], ["info", "s.zarr", "layer=layer_0"], ["ls", "s.zarr", "--json"],
     ["import", "new.zarr", "layer_0.npy", "layer_1.npy", "--name", "m", "--layer", "{stem}"]],
    ids=["help", "ls", "info", "ls-json", "import"],
)  # fmt: skip
def test_light_commands_import_no_heavy_module(small_store: Path, args: list[str]) -> None:
    """``--help``, ``ls``, ``info`` and an import of .npy files start fast: none of them
    imports torch, dask, distributed, pandas … (re-adding an eager import fails here)."""
    mods = _modules_after_cli(small_store, *args)
    assert "reprstore.cli.app" in mods
    heavy = [m for m in HEAVY if m in mods and not (args == ["--help"] and m.startswith("typer"))]
    assert heavy == [], (args, heavy)
    if args != ["--help"]:  # only the command run is set up, not the fifteen others
        assert "reprstore.cli.cka_cmd" not in mods and "reprstore.cli.extract_cmd" not in mods


BLAS_THREADS = """
import os, runpy, sys
sys.argv = ["reprstore", *sys.argv[1:]]
try:
    runpy.run_module("reprstore", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("threads", os.environ.get("OPENBLAS_NUM_THREADS"), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "env", "threads"),
    [(["ls", "s.zarr"], {}, "1"), (["--quiet", "info", "s.zarr"], {}, "1"),
     (["cka", "--help"], {}, "None"), (["ls", "s.zarr"], {"OMP_NUM_THREADS": "2"}, "None"),
     (["ls", "s.zarr"], {"OPENBLAS_NUM_THREADS": "3"}, "3")],
    ids=["ls", "info", "cka", "user-omp", "user-openblas"],
)  # fmt: skip
def test_light_commands_start_one_blas_thread(
    small_store: Path, args: list[str], env: dict[str, str], threads: str
) -> None:
    """``ls``, ``info`` … multiply no matrices: numpy's OpenBLAS starts with one thread for
    them (its pool of a thread per core costs start-up time); comparisons keep the default,
    and a thread count the user set is kept."""
    import os

    from reprstore.cli.app import BLAS_THREAD_VARIABLES

    base = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    done = subprocess.run([sys.executable, "-c", BLAS_THREADS, *args], cwd=small_store,
                          capture_output=True, text=True, env={**base, **env})  # fmt: skip
    assert f"threads {threads}" in done.stderr.splitlines()[-1], done.stderr
