"""Shared test helpers: run the real CLI in a subprocess, fingerprint a store on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m reprstore ARGS`` as a user would; tests/ is importable for model specs."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("REPRSTORE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "reprstore", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1, exactly one line on stderr starting with 'Error:', no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def store_digest(path: Path) -> str:
    """A hash over every file's relative path and bytes (what 'unchanged' means)."""
    digest = hashlib.sha256()
    if not path.exists():
        return "missing"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@contextlib.contextmanager
def tmpfs(parent: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. ``1m``) under ``parent``; skips where mounting is not
    allowed (it needs root). Unmounted afterwards."""
    mount = parent / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
