"""The typer app: one command per function, registered here; heavy imports stay inside.

Every command is wrapped by :func:`reprstore.cli._errors.handle_errors`, so a user error
is one line on stderr with exit status 1 (``REPRSTORE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import typer
from typer.core import TyperGroup

from reprstore.cli import _options as opt
from reprstore.cli import (
    admin_cmds,
    analysis_cmds,
    cka_cmd,
    compare_cmd,
    extract_cmd,
    store_cmds,
    timeline_cmd,
)

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


app = typer.Typer(
    cls=_Group,
    name="reprstore",
    help="Store neural-network representations in zarr and compare them out of core: CKA, "
    "CCA, Procrustes, RSA, PCA overlap and more, with intervals, permutation tests and plots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_MIN_WIDTH},
)


@app.callback()
def _global(quiet: opt.QuietOpt = False) -> None:
    """Store neural-network representations in zarr and compare them with out-of-core CKA."""
    opt.set_quiet(quiet, reset=True)


app.command("extract")(extract_cmd.extract)
app.command("import")(store_cmds.import_)
app.command("ls")(store_cmds.ls)
app.command("info")(store_cmds.info)
app.command("tag")(admin_cmds.tag)
app.command("rm")(admin_cmds.rm)
app.command("upgrade")(admin_cmds.upgrade)
app.command("cache")(admin_cmds.cache)
app.command("verify")(store_cmds.verify)
app.command("cka")(cka_cmd.cka)
app.command("compare")(compare_cmd.compare)
app.command("describe")(compare_cmd.describe)
app.command("summarize")(analysis_cmds.summarize)
app.command("plot")(analysis_cmds.plot)
app.command("drift")(analysis_cmds.drift)
app.command("timeline")(timeline_cmd.timeline)


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
    """Console-script entry point."""
    _one_blas_thread_for_light_commands(sys.argv[1:])
    app()
