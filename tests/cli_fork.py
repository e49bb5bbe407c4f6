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
bool}``. The kill loops start a command and SIGKILL it while it runs: ``{"spawn": true,
"args", "cwd", "env", "stdout": PATH, "stderr": PATH}`` forks the child with its streams
to those files (a FIFO for a piped stdout) and answers ``{"pid": int}`` at once; the
client kills it (a real SIGKILL of a separate process) and then asks ``{"reap": pid}`` →
``{"rc": int, "timed_out": false}``: the server stays its parent, so no other process
can take its pid before then (:class:`ForkedProcess`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


def _preload() -> None:
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


def _serve() -> None:
    _preload()
    for line in sys.stdin:
        request = json.loads(line)
        if "reap" in request:
            rc, timed_out = _wait(request["reap"], request.get("timeout"))
            _reply({"rc": rc, "timed_out": timed_out})
            continue
        if request.get("spawn"):
            pid = os.fork()
            if pid == 0:
                _child(request, Path(request["stdout"]), Path(request["stderr"]))
            _reply({"pid": pid})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            pid = os.fork()
            if pid == 0:
                _child(request, out, err)
            rc, timed_out = _wait(pid, request.get("timeout"))
            reply = {"rc": rc, "stdout": out.read_text(errors="replace"),
                     "stderr": err.read_text(errors="replace"), "timed_out": timed_out}  # fmt: skip
        _reply(reply)


def _reply(reply: dict) -> None:
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


def _child(request: dict, out: Path | None, err: Path | None,
           fds: list[int] | None = None) -> None:  # fmt: skip
    """Run the command in this forked child, its stdout and stderr to ``out`` and ``err``
    or, for the shim, its stdin, stdout and stderr the caller's ``fds``; never returns."""
    code = 1
    try:
        if fds is not None:
            for fd, handle in enumerate(fds):
                os.dup2(handle, fd)
                os.close(handle)
            sys.stdin = open(0, closefd=False)  # noqa: SIM115
        else:
            # the streams first: a FIFO's reader waits for this open, whatever fails after
            for fd, path in ((1, out), (2, err)):
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # type: ignore[arg-type]
                os.dup2(handle, fd)
                os.close(handle)
        if request.get("env") is not None:
            os.environ.clear()
            os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # PYTHONUNBUFFERED=1 (read at start-up): each line reaches a pipe when printed
        buffering = 1 if os.environ.get("PYTHONUNBUFFERED") else -1
        sys.stdout = open(1, "w", buffering=buffering, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=buffering, closefd=False)  # noqa: SIM115
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

    def spawn(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: bool = True
    ) -> ForkedProcess:
        """Start ``reprstore ARGS`` in a forked child and return at once (a
        :class:`ForkedProcess`); ``stdout``: pipe it (else to /dev/null)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        tmp = Path(tempfile.mkdtemp(prefix="cli-spawn-"))
        out = tmp / "out"
        if stdout:
            os.mkfifo(out)
        request = {"spawn": True, "args": list(args), "cwd": str(cwd), "env": env,
                   "stdout": str(out) if stdout else os.devnull,
                   "stderr": str(tmp / "err")}  # fmt: skip
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        return ForkedProcess(self, pid, ["reprstore", *args], tmp, out if stdout else None)

    def reap(self, pid: int) -> int:
        """The exit status of a spawned child that has ended (the server waits for it)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"reap": pid}) + "\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["rc"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


class ForkedProcess:
    """A command the server forked and left running: what the kill loops use of
    ``subprocess.Popen`` (``pid``, ``stdout`` as text lines, ``poll``, ``kill``, ``wait``,
    ``communicate``, ``returncode``). ``kill`` sends a real SIGKILL; the child stays the
    server's until it is reaped (by ``poll``, ``wait`` or ``communicate``), so its pid
    cannot be reused meanwhile."""

    def __init__(self, server: ForkedCLI, pid: int, args: list[str], tmp: Path,
                 fifo: Path | None) -> None:  # fmt: skip
        self.args, self.pid, self.returncode = args, pid, None
        self._server, self._tmp, self._err = server, tmp, ""
        self._pidfd = os.pidfd_open(pid)  # readable once the child has ended
        # the child opens its end first thing; this open waits for it
        self.stdout = open(fifo, errors="replace") if fifo is not None else None  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self._reap()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """The rest of stdout and all of stderr once the child has ended; a child still
        running after ``timeout`` s is killed and ``TimeoutExpired`` raised."""
        import threading

        fired: list[bool] = []
        timer = None
        if timeout is not None and self.returncode is None:
            timer = threading.Timer(timeout, lambda: (fired.append(True), self.kill()))
            timer.start()
        try:
            out = self.stdout.read() if self.stdout is not None else ""
            self.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if fired:
            raise subprocess.TimeoutExpired(self.args, timeout or 0, out, self._err)
        return out, self._err

    def _reap(self) -> None:
        self.returncode = self._server.reap(self.pid)
        os.close(self._pidfd)
        self._err = (self._tmp / "err").read_text(errors="replace")
        shutil.rmtree(self._tmp, ignore_errors=True)  # an open stdout reads on


# ------------------------------------------- the shim: `reprstore` on PATH for bash scripts

SHIM = """#!{python} -IS
# reprstore for a test's bash script: the command runs in a child forked by the server on
# {socket} (tests/cli_fork.py), with this process's streams, directory and environment
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect({socket!r})
request = {{"args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
rc = json.loads(s.recv(4096))["rc"]
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def _serve_socket(path: str) -> None:
    """Serve the shim's commands on the Unix socket ``path``: for each, a handler process
    forks the child that runs it (with the caller's stdin, stdout and stderr, received with
    the request) and sends back its exit status; commands may overlap (a pipeline)."""
    import socket

    _preload()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:  # the handler
            server.close()
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            pid = os.fork()
            if pid == 0:
                _child(json.loads(msg), None, None, fds)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            conn.send(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode())
            os._exit(0)
        conn.close()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


@contextlib.contextmanager
def shim() -> Iterator[Path]:
    """A folder holding a ``reprstore`` executable whose commands run forked from a server
    with the imports done (started here, stopped on exit): put it first on a script's PATH.
    Each command is a process of its own running the console script's entry point
    (``reprstore.cli:main``) with the script's streams, directory, environment and exit
    status, a second or more sooner than a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="cli-shim-") as tmp:
        sock = str(Path(tmp) / "s")
        proc = subprocess.Popen([sys.executable, __file__, "--socket", sock],
                                stdout=subprocess.PIPE, text=True, env=server_env())  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            exe = Path(tmp) / "bin" / "reprstore"
            exe.parent.mkdir()
            exe.write_text(SHIM.format(python=sys.executable, socket=sock))
            exe.chmod(0o755)
            yield exe.parent
        finally:
            proc.kill()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    if sys.argv[1:2] == ["--socket"]:
        _serve_socket(sys.argv[2])
    else:
        _serve()
