"""Run the real CLI in a fresh process per call, fast: a fork server with imports done.

Starting ``python -m reprstore`` costs one to four seconds of imports (torch, dask,
zarr), and the suite runs a few hundred commands. This server imports them once, then
forks one child per command: each child is a separate process that runs ``reprstore``
exactly as the console script does (same entry point, its own stdout, stderr,
environment, working directory and exit status), so what is tested is unchanged.
:func:`conftest.run_cli` uses it, with one server for each set of the variables that
Python, OpenBLAS or dask read when they start.

Protocol (one JSON line each way): ``{"args": [...], "cwd": "...", "env": {...} | null,
"timeout": float | null}`` → ``{"rc": int, "stdout": str, "stderr": str, "timed_out":
bool}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).parent

#: Environment variables read when an interpreter or a library starts (not when a command
#: runs): a command whose values differ from the server's needs a fresh process.
STARTUP_PREFIXES = ("PYTHON", "OMP_", "OPENBLAS_", "GOTO_", "MKL_", "DASK_", "LD_", "MALLOC_")


#: What the commands import, done once in the server (torch, dask, zarr, pandas, pyarrow,
#: matplotlib, scipy and every command's modules); distributed is left to the commands
#: that start a cluster.
PRELOAD = (
    "torch", "dask.array", "zarr", "pandas", "pyarrow.parquet", "scipy.linalg", "scipy.stats",
    "s3fs", "reprstore.cli.app", "reprstore.workflows.comparison",
    "reprstore.workflows.extraction", "reprstore.workflows.ingest", "reprstore.workflows.bulk",
    "reprstore.workflows.description", "reprstore.workflows.drift",
    "reprstore.workflows.timelines", "reprstore.analysis.summary", "reprstore.report.plot",
    "reprstore.capture.models", "transformers",
)  # fmt: skip


def _serve() -> None:
    import importlib

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as an hf: model sets it, before the import
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from reprstore.cli.app import COMMANDS, build_app
    from reprstore.report.style import pyplot

    pyplot()  # matplotlib on Agg, its font cache read
    for command in COMMANDS:  # each command's own modules
        build_app([command])

    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            pid = os.fork()
            if pid == 0:
                _child(request, out, err)
            rc, timed_out = _wait(pid, request.get("timeout"))
            reply = {"rc": rc, "stdout": out.read_text(errors="replace"),
                     "stderr": err.read_text(errors="replace"), "timed_out": timed_out}  # fmt: skip
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _wait(pid: int, timeout: float | None) -> tuple[int, bool]:
    """The child's exit status; a child still running after ``timeout`` s is killed."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), not ready


def _child(request: dict, out: Path, err: Path) -> None:
    code = 1
    try:
        if request.get("env") is not None:
            os.environ.clear()
            os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for fd, path in ((1, out), (2, err)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = ["reprstore", *request["args"]]
        os.environ.pop("REPRSTORE_DEBUG", None)
        from reprstore.cli import main

        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def server_env() -> dict[str, str]:
    """The environment the server is started with: the tests' own, tests/ importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    env.pop("REPRSTORE_DEBUG", None)
    return env


def startup_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """``env``'s variables read at start-up: commands that agree on them share a server."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(STARTUP_PREFIXES)))


class ForkedCLI:
    """Client side: ``run(*args, cwd=...)`` returns a ``CompletedProcess``."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = server_env() if env is None else env
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=self.env)  # fmt: skip

    def run(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"args": list(args), "cwd": str(cwd), "env": env, "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if reply.get("timed_out"):
            raise subprocess.TimeoutExpired(["reprstore", *args], timeout or 0,
                                            reply["stdout"], reply["stderr"])  # fmt: skip
        return subprocess.CompletedProcess(["reprstore", *args], reply["rc"], reply["stdout"],
                                           reply["stderr"])  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    _serve()
