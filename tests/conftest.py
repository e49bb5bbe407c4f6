"""Shared test helpers: run the real CLI in a subprocess, fingerprint a store on disk."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cli_fork
import numpy as np
import pytest

TESTS = Path(__file__).parent


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """Run ``reprstore ARGS`` as a user would, in a process of its own; tests/ is importable.

    The process is a child forked from a server that has done the imports
    (:mod:`cli_fork`), with this process's environment and working directory: the same
    entry point, streams and exit status as ``python -m reprstore``, a second or more
    sooner. A server is started for each set of the variables read at start-up
    (``PYTHON*``, thread counts, ``DASK_*``) the tests run with. ``fresh=True`` runs a new
    interpreter instead.
    """
    env = cli_fork.server_env()
    if fresh:
        return subprocess.run(
            [sys.executable, "-m", "reprstore", *args],
            capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
        )  # fmt: skip
    server = _fork_server(env)
    return server.run(*args, cwd=cwd or Path.cwd(), env=env, timeout=timeout)


def spawn_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: bool = True
) -> cli_fork.ForkedProcess:
    """Start ``reprstore ARGS`` and return at once, for the kill loops: a process of its own
    forked like :func:`run_cli`'s, with this process's environment updated by ``env``, its
    stdout piped (``stdout=False``: discarded) and its stderr kept; the parts of
    ``subprocess.Popen`` the loops use (:class:`cli_fork.ForkedProcess`). ``kill()`` is a
    real SIGKILL of that process."""
    full = {**cli_fork.server_env(), **(env or {})}
    return _fork_server(full).spawn(*args, cwd=cwd, env=full, stdout=stdout)


_SERVERS: dict[tuple[tuple[str, str], ...], cli_fork.ForkedCLI] = {}


def _fork_server(env: dict[str, str]) -> cli_fork.ForkedCLI:
    """A fork server started with ``env``'s start-up variables (on first use, again if it
    died); the least recently used of more than three is stopped."""
    key = cli_fork.startup_key(env)
    server = _SERVERS.pop(key, None)
    if server is None or not server.alive():
        server = cli_fork.ForkedCLI(env)
    _SERVERS[key] = server  # the most recently used last
    while len(_SERVERS) > 3:
        _SERVERS.pop(next(iter(_SERVERS))).close()
    return server


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the fork servers with the session."""
    for server in _SERVERS.values():
        server.close()
    _SERVERS.clear()


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
