"""The public API and the dependency direction between subpackages."""

from __future__ import annotations

import subprocess
import sys

import reprstore

PUBLIC = {"ReprKey", "ReprstoreError", "Selector", "Store", "ReprInfo", "import_files",
          "extract", "recorder", "cka", "CKAResult", "compare", "describe", "measures",
          "__version__", "summarize", "contrast", "weight_drift", "plot_results"}  # fmt: skip


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
    mods = _imports_after("import reprstore.store, reprstore.ingest")
    assert "torch" not in mods


def test_cli_help_does_not_import_heavy_modules() -> None:
    mods = _imports_after("import reprstore.cli")
    assert "torch" not in mods and "zarr" not in mods
