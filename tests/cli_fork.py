"""Run the real CLI in a fresh process per call, fast: a fork server with imports done.

Starting ``python -m reprstore`` costs one to four seconds of imports (torch, dask,
zarr); the bad-input table runs well over a hundred commands. This server imports them
once, then forks one child per command: each child is a separate process that runs
``reprstore`` exactly as the console script does (same entry point, its own stdout,
stderr, working directory and exit status), so what is tested is unchanged.

Protocol (one JSON line each way): ``{"args": [...], "cwd": "..."}`` → ``{"rc": int,
"stdout": str, "stderr": str}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).parent


def _serve() -> None:
    import dask.array  # noqa: F401  (the imports every command needs, done once)
    import torch  # noqa: F401
    import zarr  # noqa: F401

    import reprstore.cli.app
    import reprstore.workflows.comparison
    import reprstore.workflows.extraction
    import reprstore.workflows.ingest  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            pid = os.fork()
            if pid == 0:
                _child(request, out, err)
            _, status = os.waitpid(pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            reply = {"rc": rc, "stdout": out.read_text(errors="replace"),
                     "stderr": err.read_text(errors="replace")}  # fmt: skip
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _child(request: dict, out: Path, err: Path) -> None:
    code = 1
    try:
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


class ForkedCLI:
    """Client side: ``run(*args, cwd=...)`` returns a ``CompletedProcess``."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
            "PYTHONPATH", "")])}  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd)}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(list(args), reply["rc"], reply["stdout"],
                                           reply["stderr"])  # fmt: skip

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    _serve()
