"""``import``, ``ls`` and ``info``: get representations in and see what is there."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from reprstore.cli import _options as opt
from reprstore.cli._errors import handle_errors
from reprstore.cli._format import human_bytes, shape_text, stdout_console

console = stdout_console()


@handle_errors
def import_(
    store: opt.StoreArg,
    files: Annotated[
        list[str],
        typer.Argument(
            help=".npy/.npz/.pt/.safetensors files; rows are samples.", show_default=False
        ),
    ],
    name: opt.NameOpt,
    layer: Annotated[
        str,
        typer.Option(
            "--layer",
            help="Layer name, or a template: '{stem}' names each layer after its file "
            "(layer_3.pt → layer_3), '{key}' after each tensor inside a file.",
            show_default=False,
        ),
    ],
    seed: opt.SeedOpt = "0",
    checkpoint: opt.CheckpointLabelOpt = "final",
    dataset: opt.DatasetOpt = "default",
    dtype: opt.DtypeOpt = "float16",
    keep_bits: opt.KeepBitsOpt = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Import only this tensor of each file.", show_default=False),
    ] = None,
    reduce: Annotated[
        str, typer.Option("--reduce", help="none (2-D inputs) or flatten (higher rank).")
    ] = "none",
    ids: opt.IdsOpt = None,
    meta: opt.MetaOpt = None,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Import existing representation files (one per layer) into STORE, streamed.

    Example: reprstore import runs.zarr acts/layer_*.npy --name mlp --layer '{stem}'
    """
    from reprstore.cli.progress import progress_bar
    from reprstore.ingest import import_files

    with progress_bar("import") as bar:
        keys = import_files(
            store, files, name=name, layer=layer, seed=seed, checkpoint=checkpoint,
            dataset=dataset, dtype=dtype, keep_bits=keep_bits, key=key, reduce=reduce,
            ids=ids, meta=meta, overwrite=overwrite, progress=bar,
        )  # fmt: skip
    for k in keys:
        console.print(f"imported [bold]{k.label()}[/bold]")
    if not keys:
        console.print("nothing to import: every input is already stored, complete")


def _ls_row(info: Any) -> list[str]:
    nonfinite = info.attrs.get("nonfinite", {})
    bad = int(nonfinite.get("nan", 0)) + int(nonfinite.get("inf", 0))
    ratio = info.ratio
    return [
        info.key.model, info.key.seed, info.key.checkpoint, info.key.layer, info.dataset,
        shape_text(info.shape), info.stored_dtype, human_bytes(info.nbytes_stored),
        f"{ratio:.2f}×" if ratio else "-",
        "yes" if info.complete else f"[red]no ({info.rows_written} rows)[/red]",
        f"[red]{bad}[/red]" if bad else "0",
    ]  # fmt: skip


def _selected(store: str, selector: str | None, sizes: bool) -> tuple[Any, list[Any]]:
    from reprstore.store import Store

    st = Store.open(store)
    infos = st.select(selector, sizes=sizes)
    return st, infos


def _damaged_rows(st: Any, selector: str | None) -> list[Any]:
    return st.damaged(selector)


@handle_errors
def ls(store: opt.StoreArg, selector: opt.SelectorArg = None, as_json: opt.JsonOpt = False) -> None:
    """List representations (and datasets) in STORE, optionally filtered by SELECTOR."""
    st, infos = _selected(store, selector, sizes=True)
    damaged = _damaged_rows(st, selector)
    if as_json:
        rows = [{k: v for k, v in i.to_dict().items() if k != "attrs"} for i in infos]
        rows += [{"damaged": d.label, "path": d.path, "reason": d.reason} for d in damaged]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    title = f"{st.url}: {len(infos)} representation(s)"
    table = Table(title=title + (f", {len(damaged)} damaged" if damaged else ""))
    for column in ("model", "seed", "checkpoint", "layer", "dataset", "shape", "dtype",
                   "on disk", "vs f32", "complete", "NaN/Inf"):  # fmt: skip
        table.add_column(column, no_wrap=column in ("shape", "on disk"))
    for info in infos:
        table.add_row(*_ls_row(info))
    for bad in damaged:
        parts = [*bad.path.split("/")[1:], "", "", "", ""][:4]
        table.add_row(*parts, "", "", "", "", "", "[red]DAMAGED[/red]", "")
    console.print(table)
    for bad in damaged:
        console.print(f"[red]✗ {bad.message()}[/red]", highlight=False)
    for name in st.datasets():
        ds = st.dataset(name)
        cols = ", ".join(ds.meta_columns()) or "none"
        console.print(f"dataset [bold]{name}[/bold]: {ds.n_samples} samples, metadata: {cols}")


def _tree(label: str, data: Any, node: Tree | None = None) -> Tree:
    node = node or Tree(label)
    for key, value in data.items():
        if isinstance(value, dict):
            _tree("", value, node.add(f"[bold]{key}[/bold]"))
        elif key == "chunk_crc32":
            node.add(f"[bold]{key}[/bold]: {len(value)} checksums")
        else:
            node.add(f"[bold]{key}[/bold]: {value}")
    return node


@handle_errors
def info(
    store: opt.StoreArg, selector: opt.SelectorArg = None, as_json: opt.JsonOpt = False
) -> None:
    """Everything known about the representations SELECTOR matches, provenance included."""
    from reprstore.errors import NotFoundError

    st, infos = _selected(store, selector, sizes=True)
    damaged = _damaged_rows(st, selector)
    if damaged and not infos:
        from reprstore.errors import CorruptDataError

        raise CorruptDataError(damaged[0].message() + ".")
    if not infos:
        raise NotFoundError(f"No representation in {store} matches {selector or '*'}.")
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2, default=str))
        return
    for i in infos:
        summary = {k: v for k, v in i.to_dict().items() if k not in ("attrs",)}
        summary["on disk"] = human_bytes(i.nbytes_stored)
        attrs = {k: v for k, v in i.attrs.items() if k not in summary}
        console.print(_tree(f"[bold cyan]{i.key.label()}[/bold cyan]", {**summary, **attrs}))


@handle_errors
def verify(
    store: opt.StoreArg, selector: opt.SelectorArg = None, as_json: opt.JsonOpt = False
) -> None:
    """Check every chunk of the selected representations: present, decodable, checksum.

    Also checks shapes, dtypes and dataset row counts. Exit status 1 if anything is wrong;
    each problem names the representation and the chunk (row range) it concerns.
    """
    from reprstore.cli.progress import progress_bar
    from reprstore.store.verify import verify as run_verify

    with progress_bar("verify", unit="representations") as bar:
        report = run_verify(store, selector, progress=bar)
    if as_json:
        typer.echo(json.dumps({
            "representations": report.representations, "chunks": report.chunks,
            "bytes_read": report.bytes_read, "problems": [str(p) for p in report.problems],
        }, indent=2))  # fmt: skip
    else:
        for problem in report.problems:
            console.print(f"[red]✗[/red] {problem}", highlight=False)
        status = (
            "[green]OK[/green]" if report.ok else f"[red]{len(report.problems)} problem(s)[/red]"
        )
        console.print(
            f"verified {report.representations} representation(s), {report.chunks} chunk(s), "
            f"{human_bytes(report.bytes_read)} read: {status}"
        )
    if not report.ok:
        from reprstore.cli._errors import fail

        raise fail(f"verify found {len(report.problems)} problem(s) in {store}.")
