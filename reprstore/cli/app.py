"""The typer app: one command per function, registered here; heavy imports stay inside.

Every command is wrapped by :func:`reprstore.cli._errors.handle_errors`, so a user error
is one line on stderr with exit status 1 (``REPRSTORE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import typer

from reprstore.cli import analysis_cmds, cka_cmd, extract_cmd, store_cmds

app = typer.Typer(
    name="reprstore",
    help="Store neural-network representations in zarr and compare them with out-of-core CKA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("extract")(extract_cmd.extract)
app.command("import")(store_cmds.import_)
app.command("ls")(store_cmds.ls)
app.command("info")(store_cmds.info)
app.command("verify")(store_cmds.verify)
app.command("cka")(cka_cmd.cka)
app.command("summarize")(analysis_cmds.summarize)
app.command("plot")(analysis_cmds.plot)
app.command("drift")(analysis_cmds.drift)


def main() -> None:
    """Console-script entry point."""
    app()
