"""``import``, ``ls`` and ``info``: get representations in and see what is there."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from reprstore.cli import options as opt
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import PlainTable, human_bytes, shape_text, stdout_console

console = stdout_console()


@handle_errors
def import_(
    store: opt.StoreArg,
    files: Annotated[
        list[str],
        typer.Argument(
            help=".npy/.npz/.pt/.safetensors files (rows are samples), or ONE path template "
            "that takes each file's key from its path: "
            "'runs/{model}_seed{seed}/step_{checkpoint}/layer_{layer}.pt' (fields model, seed, "
            "checkpoint, dataset, layer; * for parts outside the key; quote it).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Model name (unless the template has {model}).", show_default=False
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Layer name, or a template: '{stem}' names each layer after its file "
            "(layer_3.pt → layer_3), '{key}' after each tensor inside a file.",
            show_default=False,
        ),
    ] = None,
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
        str,
        typer.Option(
            "--reduce",
            help="For (N, T, D) token dumps (or (N, C, H, W)): mean, first, last or max over "
            "the positions, or flatten; 2-D inputs need none.",
        ),
    ] = "none",
    ids: opt.IdsOpt = None,
    meta: opt.MetaOpt = None,
    meta_types: Annotated[
        str | None,
        typer.Option(
            "--meta-types",
            help="Numeric metadata columns, e.g. 'age=int,score=float' (id=int for --ids); "
            "all others stay text. A header 'age:int' works too.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With a template: list what would be imported; write nothing."
        ),
    ] = False,
    attr_ignore: Annotated[
        str | None,
        typer.Option(
            "--attr-ignore",
            help="With a template: names in metadata.json/metadata.csv not to keep as run "
            "attributes, e.g. 'seed,step'.",
            show_default=False,
        ),
    ] = None,
    attr_rename: Annotated[
        str | None,
        typer.Option(
            "--attr-rename",
            help="With a template: keep metadata names under other attribute names, e.g. "
            "'seed=orig_seed,step=orig_step'.",
            show_default=False,
        ),
    ] = None,
    overwrite: opt.OverwriteOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Import existing representation files into STORE, streamed; all in one process.

    Examples: reprstore import runs.zarr acts/layer_*.npy --name mlp --layer '{stem}' ;
    reprstore import runs.zarr 'dumps/{model}/seed{seed}/{layer}.npy' --dry-run
    """
    from reprstore.sources.templates import is_template

    opt.set_quiet(quiet)
    if len(files) == 1 and is_template(files[0]):
        from reprstore.cli.import_tree import run_tree_import

        run_tree_import(
            console, store, files[0], dry_run=dry_run, ids=ids, meta=meta,
            meta_types=meta_types, name=name, layer=layer, seed=seed, checkpoint=checkpoint,
            dataset=dataset, dtype=dtype, keep_bits=keep_bits, key=key, reduce=reduce,
            overwrite=overwrite, attr_ignore=attr_ignore, attr_rename=attr_rename,
        )  # fmt: skip
        return
    from reprstore.cli.progress import progress_bar
    from reprstore.errors import InputError
    from reprstore.workflows.ingest import import_files

    for flag, value in (("--dry-run", dry_run), ("--attr-ignore", attr_ignore),
                        ("--attr-rename", attr_rename)):  # fmt: skip
        if value:
            raise InputError(f"{flag} needs a path template (e.g. 'runs/{{model}}/{{layer}}.npy').")
    if name is None or layer is None:
        raise InputError(
            f"Give --{'name' if name is None else 'layer'} for the files, or one path template "
            "with {model} and {layer} instead of file names."
        )
    with progress_bar("import") as bar:
        keys = import_files(
            store, files, name=name, layer=layer, seed=seed, checkpoint=checkpoint,
            dataset=dataset, dtype=dtype, keep_bits=keep_bits, key=key, reduce=reduce,
            ids=ids, meta=meta, meta_types=meta_types, overwrite=overwrite, progress=bar,
        )  # fmt: skip
    for k in keys:
        console.print(f"imported [bold]{k.label()}[/bold]")
    if not keys:
        console.print("nothing to import: every input is already stored, complete")


def _ls_row(info: Any) -> list[Any]:
    nonfinite = info.attrs.get("nonfinite", {})
    bad = int(nonfinite.get("nan", 0)) + int(nonfinite.get("inf", 0))
    ratio = info.ratio
    return [
        info.key.model, info.key.seed, info.key.checkpoint, info.dataset, info.key.layer,
        shape_text(info.shape), info.stored_dtype, human_bytes(info.nbytes_stored),
        f"{ratio:.2f}×" if ratio else "-",
        "yes" if info.complete else Text(f"no ({info.rows_written} rows)", style="red"),
        Text(str(bad), style="red") if bad else "0",
    ]  # fmt: skip


def _selected(store: str, selector: str | None, sizes: bool, what: str) -> tuple[Any, list[Any]]:
    """The store and the selected infos; a selector that matches nothing is an error."""
    from reprstore.store import Store

    st = Store.open(store)
    given = selector is not None and selector.strip() not in ("", "*")
    # a selection whose only match is damaged is reported as damaged, not as empty
    must = what if given and not st.damaged(selector) else None
    infos = st.select(selector, sizes=sizes, must_match=must)
    return st, infos


def _damaged_rows(st: Any, selector: str | None) -> list[Any]:
    return st.damaged(selector)


@handle_errors
def ls(
    store: opt.StoreArg,
    selector: opt.SelectorArg = None,
    as_json: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """List representations (and datasets, run attributes) in STORE, filtered by SELECTOR.

    Rows come in natural order (layer_2 before layer_10). A SELECTOR that matches nothing
    is an error; an empty store lists nothing.
    """
    from reprstore.store.housekeeping import describe

    opt.set_quiet(quiet)
    st, infos = _selected(store, selector, sizes=True, what="ls")
    damaged = _damaged_rows(st, selector)
    if as_json:
        rows = [
            {**{k: v for k, v in i.to_dict().items() if k != "attrs"},
             "attributes": st.attributes(i.key)}
            for i in infos
        ]  # fmt: skip
        rows += [{"damaged": d.label, "path": d.path, "reason": d.reason} for d in damaged]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    title = f"{st.url}: {len(infos)} representation(s)"
    table = PlainTable(title=title + (f", {len(damaged)} damaged" if damaged else ""))
    for column in ("model", "seed", "checkpoint", "dataset", "layer", "shape", "dtype",
                   "on disk", "vs f32", "complete", "NaN/Inf"):  # fmt: skip
        table.add_column(column, no_wrap=column in ("shape", "on disk"))
    for info in infos:
        table.add_row(*_ls_row(info))
    for bad in damaged:
        table.add_row(*bad.fields, "", "", "", "", Text("DAMAGED", style="red"), "")
    console.print(table)
    for bad in damaged:
        console.print(f"[red]✗ {bad.message()}[/red]", highlight=False)
    for name in st.datasets():
        ds = st.dataset(name)
        cols = ", ".join(ds.meta_columns()) or "none"
        console.print(f"dataset [bold]{name}[/bold]: {ds.n_samples} samples, metadata: {cols}")
    for line in describe(st.run_attributes()):
        console.print(f"attributes {line}", highlight=False, markup=False)


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
    store: opt.StoreArg,
    selector: opt.SelectorArg = None,
    as_json: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Everything known about the representations SELECTOR matches, provenance included."""
    from reprstore.errors import NotFoundError

    opt.set_quiet(quiet)
    st, infos = _selected(store, selector, sizes=True, what="info")
    damaged = _damaged_rows(st, selector)
    if damaged and not infos:
        from reprstore.errors import CorruptDataError

        raise CorruptDataError(damaged[0].message() + ".")
    if not infos:
        raise NotFoundError(f"No representation in {store} matches {selector or '*'}.")
    if as_json:
        rows = [{**i.to_dict(), "attributes": st.attributes(i.key)} for i in infos]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for i in infos:
        summary = {k: v for k, v in i.to_dict().items() if k not in ("attrs",)}
        summary["run attributes"] = st.attributes(i.key) or "none"
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
    from reprstore.store.integrity import verify as run_verify

    with progress_bar("verify", unit="representations") as bar:
        report = run_verify(store, selector, progress=bar)
    if as_json:
        typer.echo(json.dumps({
            "representations": report.representations, "chunks": report.chunks,
            "bytes_read": report.bytes_read, "cache_entries": report.cache_entries,
            "problems": [str(p) for p in report.problems],
        }, indent=2))  # fmt: skip
    else:
        for problem in report.problems:
            console.print(f"[red]✗[/red] {problem}", highlight=False)
        status = (
            "[green]OK[/green]" if report.ok else f"[red]{len(report.problems)} problem(s)[/red]"
        )
        console.print(
            f"verified {report.representations} representation(s), {report.chunks} chunk(s), "
            f"{human_bytes(report.bytes_read)} read"
            + (f", {report.cache_entries} cached result(s)" if report.cache_entries else "")
            + f": {status}"
        )
    if not report.ok:
        from reprstore.cli.error_lines import fail

        raise fail(f"verify found {len(report.problems)} problem(s) in {store}.")
