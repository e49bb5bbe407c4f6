"""The typer app: one command per function, registered here; heavy imports stay inside.

Every command is wrapped by :func:`reprstore.cli._errors.handle_errors`, so a user error
is one line on stderr with exit status 1 (``REPRSTORE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import shutil
import sys

import typer

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


def _set_help_width() -> None:
    """Lay typer's help and usage errors out :func:`_help_width` wide.

    typer imports ``typer.rich_utils`` (rich's markdown, syntax and traceback modules:
    65 ms) only to show help or a usage error, and reads ``TERMINAL_WIDTH`` then; importing
    it here to set its ``MAX_WIDTH`` would cost every command those 65 ms.
    """
    rich_utils = sys.modules.get("typer.rich_utils")
    if rich_utils is not None:
        rich_utils.MAX_WIDTH = _help_width()  # type: ignore[attr-defined]
    else:
        os.environ["TERMINAL_WIDTH"] = str(_help_width())


_set_help_width()

app = typer.Typer(
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


def main() -> None:
    """Console-script entry point."""
    app()
