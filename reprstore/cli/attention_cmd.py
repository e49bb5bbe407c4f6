"""``reprstore plot-attention``: attention maps from a store, entropies from results."""

from __future__ import annotations

from typing import Annotated

import typer

from reprstore.cli import options as opt
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import stdout_console

console = stdout_console()


@handle_errors
def plot_attention(
    source: Annotated[
        str,
        typer.Argument(
            help="A store (--kind pattern, heads) or describe results with "
            "attention_entropy (.csv/.json/.parquet; --kind entropy).",
            show_default=False,
        ),
    ],
    selector: opt.SelectorArg = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="pattern (one head, one sample), heads (every head of one sample, a row "
            "per checkpoint) or entropy (per-head entropy over training).",
            show_default=False,
        ),
    ] = "pattern",
    out: Annotated[
        str, typer.Option("--out", "-o", help="A .png, .svg or .pdf file.", show_default=False)
    ] = "",
    sample: Annotated[int, typer.Option("--sample", help="Row of the dataset (from 0).")] = 0,
    head: Annotated[int, typer.Option("--head", help="Head (from 0), for pattern.")] = 0,
    layer: Annotated[
        list[str] | None,
        typer.Option("--layer", help="entropy: draw only these layers.", show_default=False),
    ] = None,
    final_step: opt.FinalStepOpt = None,
) -> None:
    """Draw attention maps (extract --attentions) or their entropy over training.

    Example: reprstore plot-attention runs.zarr 'model=minilm,layer=attentions.3,checkpoint=final'
    --kind pattern --sample 2 --head 5 --out head5.png
    """
    from reprstore.errors import InputError
    from reprstore.report import attention_figures as af

    af.check_attention_kind(kind)
    if not out:
        raise InputError("Give the figure file: --out FILE.png|.svg|.pdf.")
    if kind == "entropy":
        if selector:
            raise InputError("--kind entropy reads a result table; choose layers with --layer.")
        path, notes = af.plot_entropy(source, out, layers=layer, final_step=final_step)
        for note in notes:
            console.print(f"note: {note}", highlight=False)
    else:
        from reprstore.store import Store

        st = Store.open(source)
        if kind == "pattern":
            path = af.plot_pattern(st, selector, out, sample=sample, head=head)
        else:
            path = af.plot_heads(st, selector, out, sample=sample)
    console.print(f"wrote {path}")
