"""The typer app: one command per function, listed in :data:`COMMANDS`; heavy imports stay
inside the functions.

Every command is wrapped by :func:`reprstore.cli.error_lines.handle_errors`, so a user error
is one line on stderr with exit status 1 (``REPRSTORE_DEBUG=1`` shows the traceback).
``app`` (every command) is built on first use; :func:`main` builds only the command it
runs, so that ``reprstore ls`` neither imports nor sets up the other fifteen.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import typer
from typer.core import TyperGroup

from reprstore.cli import options as opt

HELP_MIN_WIDTH = 120
"""--help is laid out at least this wide (a narrower terminal wraps the lines itself):
rich would otherwise cut long option values and examples with '…' to fit 80 columns."""


def _help_width() -> int:
    if os.environ.get("TERMINAL_WIDTH"):
        return int(os.environ["TERMINAL_WIDTH"])
    return max(shutil.get_terminal_size((HELP_MIN_WIDTH, 24)).columns, HELP_MIN_WIDTH)


@contextlib.contextmanager
def _help_width_set() -> Iterator[None]:
    """Lay typer's help and usage errors out :func:`_help_width` wide during one invocation.

    typer imports ``typer.rich_utils`` (rich's markdown, syntax and traceback modules:
    65 ms) only to show help or a usage error, and then reads its width from
    ``TERMINAL_WIDTH``: importing it to set its ``MAX_WIDTH`` would cost every command those
    65 ms. The variable is restored afterwards, so it reaches no other program.
    """
    width = _help_width()
    rich_utils = sys.modules.get("typer.rich_utils")
    if rich_utils is not None:  # imported by an earlier invocation in this process
        rich_utils.MAX_WIDTH = width  # type: ignore[attr-defined]
    saved = os.environ.get("TERMINAL_WIDTH")
    os.environ["TERMINAL_WIDTH"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TERMINAL_WIDTH", None)
        else:
            os.environ["TERMINAL_WIDTH"] = saved


class _Group(TyperGroup):
    """The app's command group; its help and usage errors are at least 120 columns wide."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with _help_width_set():
            return super().main(*args, **kwargs)


COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("extract_cmd", "extract"),
    "import": ("store_cmds", "import_"),
    "ls": ("store_cmds", "ls"),
    "info": ("store_cmds", "info"),
    "tag": ("admin_cmds", "tag"),
    "rm": ("admin_cmds", "rm"),
    "upgrade": ("admin_cmds", "upgrade"),
    "cache": ("admin_cmds", "cache"),
    "verify": ("store_cmds", "verify"),
    "cka": ("cka_cmd", "cka"),
    "compare": ("compare_cmd", "compare"),
    "describe": ("compare_cmd", "describe"),
    "summarize": ("analysis_cmds", "summarize"),
    "plot": ("analysis_cmds", "plot"),
    "plot-attention": ("attention_cmd", "plot_attention"),
    "drift": ("analysis_cmds", "drift"),
    "timeline": ("timeline_cmd", "timeline"),
}
"""Command name → (module of :mod:`reprstore.cli`, function), in the order help lists them."""


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": HELP_MIN_WIDTH}


def _global(quiet: opt.QuietOpt = False) -> None:
    """Store neural-network representations in zarr and compare them with out-of-core CKA."""
    opt.set_quiet(quiet, reset=True)


def build_app(names: Iterable[str] = COMMANDS) -> typer.Typer:
    """The typer app with the commands ``names`` (all by default), importing their modules."""
    built = typer.Typer(
        cls=_Group,
        name="reprstore",
        help="Store neural-network representations in zarr and compare them out of core: "
        "CKA, CCA, Procrustes, RSA, PCA overlap and more, with intervals, permutation tests "
        "and plots.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
        context_settings=CONTEXT_SETTINGS,
    )
    built.callback()(_global)
    for name in names:
        module, function = COMMANDS[name]
        command = getattr(importlib.import_module(f"reprstore.cli.{module}"), function)
        built.command(name)(command)
    return built


def __getattr__(name: str) -> Any:
    """``app``: every command, built on first use and kept."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


NO_LINEAR_ALGEBRA = frozenset({"import", "ls", "info", "verify", "tag", "rm", "upgrade", "cache"})
"""Commands that multiply no matrices: numpy's BLAS thread pool is of no use to them."""

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _command_name(args: list[str]) -> str | None:
    """The command ``args`` run: the first word after the global options (all flags)."""
    return next((a for a in args if not a.startswith("-")), None)


def _one_blas_thread_for_light_commands(args: list[str]) -> None:
    """Start OpenBLAS with one thread for the commands in :data:`NO_LINEAR_ALGEBRA`.

    Importing numpy starts OpenBLAS's pool of a thread per core: 50 ms of ``ls`` on a
    2-core machine, more with more cores, for commands that never use it. A thread count
    the user set is kept; the comparisons keep every core.
    """
    if _command_name(args) not in NO_LINEAR_ALGEBRA or "numpy" in sys.modules:
        return
    if not any(name in os.environ for name in BLAS_THREAD_VARIABLES):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


def main() -> None:
    """Console-script entry point: an app with only the command run (all for help)."""
    args = sys.argv[1:]
    _one_blas_thread_for_light_commands(args)
    name = _command_name(args)
    build_app([name] if name in COMMANDS else COMMANDS)()
