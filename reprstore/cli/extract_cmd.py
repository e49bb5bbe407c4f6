"""``reprstore extract``: run a model on a probe set and stream layer outputs into a store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.text import Text

from reprstore.cli import options as opt
from reprstore.cli.error_lines import fail, handle_errors
from reprstore.cli.formatting import PlainTable, human_bytes, stdout_console

console = stdout_console()

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="package.module:callable returning an nn.Module (the current directory is "
        "importable), a TorchScript file, or hf:DIR, a local transformers model "
        "(offline; nothing is downloaded).",
        show_default=False,
    ),
]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Samples, in a fixed order: .npy/.npz/.pt/.safetensors (rows are samples; "
        "several tensors in one file are passed as keyword arguments, e.g. input_ids and "
        "attention_mask), a zarr array, a .txt file (one sample a line, tokenized with the "
        "hf: model's tokenizer), or package.module:callable returning batches.",
        show_default=False,
    ),
]
LayersOpt = Annotated[
    str | None,
    typer.Option(
        "--layers",
        help="Comma-separated module paths or globs: '*' stays within one name "
        "('encoder.layer.*' = the blocks, not their submodules), '**' spans names. Also "
        "names of returned tensors: output, output.1, hidden_states.3. See --list-layers.",
        show_default=False,
    ),
]


class _Rate:
    """samples/s for the progress bar."""

    def __call__(self, task: Any) -> str:
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} samples/s" if speed else "… samples/s"


@contextmanager
def _progress_bar() -> Iterator[tuple[Callable[[int, int, int], None], Callable[[str], None]]]:
    """``(progress(done, total, nbytes), new_checkpoint(label))`` driving a rich bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from reprstore.cli.progress import stderr

    if not stderr.is_terminal or stderr.quiet:
        yield (lambda done, total, nbytes: None), (lambda label: None)
        return

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(_Rate()(task))

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples"),
        RateColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stored]} stored"),
    )
    with Progress(*columns, console=stderr, transient=False) as bar:
        tasks: dict[str, Any] = {}
        current: list[str] = []

        def new_checkpoint(label: str) -> None:
            current[:] = [label]
            tasks[label] = bar.add_task(f"checkpoint {label}", total=None, stored="0 B")

        def progress(done: int, total: int, nbytes: int) -> None:
            if current:
                bar.update(
                    tasks[current[0]], completed=done, total=total, stored=human_bytes(nbytes)
                )

        yield progress, new_checkpoint


@handle_errors
def extract(
    store: opt.StoreArg,
    model: ModelOpt,
    data: DataOpt,
    layers: LayersOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name in the store.", show_default=False)
    ] = None,
    seed: opt.SeedOpt = "0",
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            help="state_dict file(s) or a quoted glob ('ckpt/step*.pt'), loaded with "
            "weights_only=True and extracted in turn; each is labelled by its file name "
            "(step1000.pt → step1000). Without it the model is used as built, labelled 'final'.",
            show_default=False,
        ),
    ] = None,
    checkpoint_label: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-label",
            help="Label for the single checkpoint (instead of its file name).",
            show_default=False,
        ),
    ] = None,
    dataset: opt.DatasetOpt = "default",
    layer_name: Annotated[
        str | None,
        typer.Option(
            "--layer-name",
            help="Stored layer names from a template with the fields {layer} and {reduce}: "
            "'{layer}.cls' with --reduce first keeps a CLS pooling beside the mean one.",
            show_default=False,
        ),
    ] = None,
    reduce: Annotated[
        str,
        typer.Option(
            "--reduce",
            help="For outputs with more than 2 dimensions: mean (real tokens only for text, "
            "H×W for images), first (CLS), last (last real token), max, or flatten (keep "
            "everything; text is padded to --max-length).",
        ),
    ] = "mean",
    dtype: opt.DtypeOpt = "float16",
    keep_bits: opt.KeepBitsOpt = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help="Samples per forward pass (ignored for package.module:callable data, "
            "whose batches are used as given). Resume with the same value.",
        ),
    ] = 32,
    device: Annotated[
        str, typer.Option("--device", help="Where the model runs: cpu, cuda, cuda:1, mps.")
    ] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="torch threads (default: the cores available). Compression runs in one "
            "extra background thread.",
            show_default=False,
        ),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            help="Text: truncate to this many tokens (default: the tokenizer's limit, ≤ 512).",
            show_default=False,
        ),
    ] = None,
    data_key: Annotated[
        str | None,
        typer.Option(
            "--data-key", help="Use only this tensor of the data file.", show_default=False
        ),
    ] = None,
    autocast: Annotated[
        str | None,
        typer.Option(
            "--autocast",
            help="bf16: run the forward in bfloat16 where supported (faster on recent "
            "hardware; recorded in the attributes).",
            show_default=False,
        ),
    ] = None,
    on_nonfinite: Annotated[
        str,
        typer.Option(
            "--on-nonfinite", help="NaN/Inf in the outputs: warn (count and store) or error."
        ),
    ] = "warn",
    ids: opt.IdsOpt = None,
    meta: opt.MetaOpt = None,
    overwrite: opt.OverwriteOpt = False,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow checkpoints that need full unpickling (weights_only=False). This "
            "can run arbitrary code: only for files you trust.",
        ),
    ] = False,
    attentions: Annotated[
        bool,
        typer.Option(
            "--attentions",
            help="Keep attention maps per head, (samples, heads·T·T): hf: models run with "
            "eager attention and return them as attentions.0, attentions.1 … (the default "
            "--layers then); a module's weights element is MODULE:N "
            "('encoder.layer.*.attention.self:1'). Padded to the longest sample; padded "
            "tokens are zeros. Store with --dtype float32 for exact entropies.",
        ),
    ] = False,
    list_layers: Annotated[
        bool,
        typer.Option(
            "--list-layers",
            help="Print the model's modules and returned tensors with their output shapes "
            "for one small batch of --data, and exit.",
        ),
    ] = False,
) -> None:
    """Run a model on a probe set and stream the chosen layers' outputs into STORE.

    Rows are reduced to (n_samples, n_features) and written while the model runs.

    A killed run resumes when the same command is run again.

    Example: reprstore extract runs.zarr --model hf:models/minilm --data sentences.txt
    --layers 'encoder.layer.*' --name minilm
    """
    if list_layers:
        _print_layers(model, data, device, max_length, data_key, autocast, threads, attentions)
        return
    if attentions and not layers:
        layers = "attentions.*"
    if not layers or not name:
        raise fail("--layers and --name are required (or pass --list-layers).", 2)
    from reprstore.workflows.extract_options import ExtractOptions
    from reprstore.workflows.extraction import run_extraction

    options = ExtractOptions(
        model=model, data=data, layers=(layers,), name=name, seed=seed,  # split at commas there
        checkpoint=tuple(checkpoint or ()), checkpoint_label=checkpoint_label,
        dataset=dataset, reduce=reduce, dtype=dtype, keep_bits=keep_bits,
        batch_size=batch_size, device=device, threads=threads, max_length=max_length,
        data_key=data_key, ids=ids, meta=meta, autocast=autocast, on_nonfinite=on_nonfinite,
        overwrite=overwrite, trust_checkpoint=trust_checkpoint, layer_name=layer_name,
        attentions=attentions,
    )  # fmt: skip
    with _progress_bar() as (progress, new_checkpoint):
        result = run_extraction(store, options, progress=progress, on_checkpoint=new_checkpoint)
    for label, row in result.resumed_from.items():
        if row > 0:
            console.print(f"checkpoint {label}: resumed at row {row}")
    for key in result.written:
        console.print(f"extracted [bold]{key.label()}[/bold] ({result.n_samples} samples)")
    for key in result.skipped:
        console.print(f"already complete, skipped {key.label()}")


def _print_layers(
    model: str,
    data: str,
    device: str,
    max_length: int | None,
    data_key: str | None,
    autocast: str | None,
    threads: int | None,
    attentions: bool = False,
) -> None:
    from reprstore.workflows.extraction import list_layers

    rows = list_layers(
        model=model, data=data, device=device, max_length=max_length, data_key=data_key,
        autocast=autocast, threads=threads, attentions=attentions,
    )  # fmt: skip
    table = PlainTable(title=f"{model}: output shapes for a batch of 2 samples")
    for column in ("layer", "type", "output shape", "dtype"):
        table.add_column(column)
    for row in rows:
        depth = row.name.count(".") if row.kind != "output" else 0
        shape = (
            "×".join(str(s) for s in row.shape) if row.shape else Text("did not run", style="dim")
        )
        label = ("  " * depth) + (row.name.rsplit(".", 1)[-1] if depth else row.name)
        table.add_row(
            Text(f"{label} ") + Text(row.name, style="dim") if depth else row.name,
            row.kind,
            shape,
            row.dtype or "",
        )
    console.print(table)
