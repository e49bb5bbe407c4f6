"""Options and arguments shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

StoreArg = Annotated[
    str, typer.Argument(help="Store path or fsspec URL (s3://…, memory://…).", show_default=False)
]
SelectorArg = Annotated[
    str | None,
    typer.Argument(
        help="key=glob pairs over model, seed, checkpoint, layer, dataset, e.g. "
        "'model=minilm,layer=encoder.layer.*'. Missing keys match everything.",
        show_default=False,
    ),
]
NameOpt = Annotated[
    str, typer.Option("--name", help="Model name in the store.", show_default=False)
]
SeedOpt = Annotated[str, typer.Option("--seed", help="Seed label of the run.")]
CheckpointLabelOpt = Annotated[str, typer.Option("--checkpoint", help="Checkpoint label.")]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Dataset (probe set) the rows belong to.")
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Storage dtype: float16 (default, 2 bytes a value), float32, or bfloat16 "
        "(stored as float32 with zeroed low bits; compresses to ~2 bytes).",
    ),
]
KeepBitsOpt = Annotated[
    int | None,
    typer.Option(
        "--keep-bits",
        help="Lossy: round mantissas to N bits before compressing (e.g. 7 with float16 "
        "gives ~2.8x smaller stores). Recorded in the attributes.",
        show_default=False,
    ),
]
IdsOpt = Annotated[
    str | None,
    typer.Option(
        "--ids", help="Sample ids: .npy, or a text file with one id per line.", show_default=False
    ),
]
MetaOpt = Annotated[
    str | None,
    typer.Option(
        "--meta",
        help="Metadata CSV (header row; one row per sample, in order).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace complete representations that exist.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="For scripts: no progress bars, tables or messages, only errors (and the "
        "output --json asks for). Also a global option: reprstore --quiet COMMAND.",
    ),
]


def set_quiet(quiet: bool, *, reset: bool = False) -> bool:
    """Silence every console of the CLI (results and progress) when ``quiet``; errors stay.

    The app's callback passes ``reset`` so each invocation starts from its own global
    ``--quiet`` (one process may run several, as tests do); a command's own ``--quiet``
    can only add to it. Returns whether the CLI is quiet now.
    """
    from reprstore.cli import formatting, progress

    if quiet or reset:
        progress.stderr.quiet = quiet
        for console in formatting.CONSOLES:
            console.quiet = quiet
    return progress.stderr.quiet


FinalStepOpt = Annotated[
    float | None,
    typer.Option(
        "--final-step", help="The step of checkpoint 'final' on a timeline.", show_default=False
    ),
]
BandOpt = Annotated[
    str, typer.Option("--band", help="Seed bands and error bars: ci, sd, sem or none.")
]
