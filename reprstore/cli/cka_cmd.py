"""``reprstore cka``: compare every selected A with every selected B, out of core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import typer

from reprstore.cli import options as opt
from reprstore.cli import uncertainty_opts as unc
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import PlainTable, stdout_console

console = stdout_console()

AOpt = Annotated[
    str | None,
    typer.Option(
        "--a",
        help="Selector of the A side (rows of the grid), e.g. "
        "'model=minilm,seed=0,layer=encoder.layer.*' (keys model, seed, checkpoint, layer, "
        "dataset; globs; missing keys match all).",
        show_default=False,
    ),
]
BOpt = Annotated[
    str | None,
    typer.Option("--b", help="Selector of the B side (columns of the grid).", show_default=False),
]
EstimatorOpt = Annotated[
    str,
    typer.Option(
        "--estimator",
        help="debiased (unbiased HSIC, Song et al. 2012; exact, out of core), biased "
        "(Kornblith et al. 2019), or minibatch (Nguyen et al. 2021; any kernel, any size).",
    ),
]
KernelOpt = Annotated[
    str,
    typer.Option(
        "--kernel",
        help="linear, or rbf (exact rbf: tiles of the n×n kernels, σ from the exact median "
        "distance; any n within --memory, time grows as n²).",
    ),
]
RouteOpt = Annotated[
    str,
    typer.Option(
        "--route",
        help="How exact CKA is computed: features (p×q statistics; cheap when p << n), "
        "samples (tiles of the n×n Gram matrices; any width, cheap when p >> n) or auto "
        "(the cheaper per pair, from the plan's cost model). The value is the same.",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the plan (routes, passes, bytes to read, FLOPs and time, memory) and "
        "exit without reading any chunk.",
    ),
]
RefreshOpt = Annotated[
    bool,
    typer.Option(
        "--refresh",
        help="Recompute every pair and overwrite its entry in the store's result cache "
        "(by default a pair computed before, with the same data, rows and options, is "
        "reused bit for bit).",
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Neither read nor write the store's result cache (nor checkpoint the passes).",
    ),
]
SigmaOpt = Annotated[
    float,
    typer.Option("--sigma", help="rbf width: σ² = sigma² × median squared distance."),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", help="Rows per minibatch (--estimator minibatch).")
]
ShuffleOpt = Annotated[
    int | None,
    typer.Option(
        "--shuffle",
        help="Seed for random minibatch membership (default: consecutive rows).",
        show_default=False,
    ),
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        help="Keep rows matching a condition over the dataset's id and metadata columns, "
        "e.g. \"region != 'Atlantis' and id >= 1000\" or \"matches(region, '^north')\". "
        "Parsed safely (never run as code): comparisons, and/or/not, in [...], arithmetic "
        "and the functions matches, fullmatch, startswith, endswith, contains, lower, upper, "
        "len, abs, number, str.",
        show_default=False,
    ),
]
PairWhereOpt = Annotated[
    str | None,
    typer.Option(
        "--pair-where",
        help="Keep pairs matching a condition over both sides, a.<key> and b.<key> (keys "
        "model, seed, checkpoint, dataset, layer, step, and run attributes), e.g. "
        '"a.seed != b.seed and not (a.tasks & b.tasks)" (comma-separated values act as sets). '
        "Parsed safely, like --where.",
        show_default=False,
    ),
]
UnorderedOpt = Annotated[
    bool,
    typer.Option(
        "--unordered",
        help="Keep one of each mirror pair: of (X, Y) and (Y, X) the one whose A comes "
        "first in natural key order; self-pairs stay (a seed grid without its mirror half).",
    ),
]
MatchOpt = Annotated[
    str | None,
    typer.Option("--match", help="Keys equal within a pair, e.g. 'layer'.", show_default=False),
]
DifferOpt = Annotated[
    str | None,
    typer.Option(
        "--differ", help="Keys that differ within a pair, e.g. 'seed'.", show_default=False
    ),
]
PairsOpt = Annotated[
    str | None,
    typer.Option(
        "--pairs",
        help="CSV with columns a_model,a_seed,a_checkpoint,a_layer,b_model,b_seed,"
        "b_checkpoint,b_layer: compare only these pairs (any results file works: .csv, "
        ".json, .parquet).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Write results to .csv, .json or .parquet.", show_default=False),
]
PlotOpt = Annotated[
    str | None,
    typer.Option(
        "--plot",
        help="Draw the result as reprstore plot does: a heatmap of a grid, line panels "
        "against the matched key (.png, .svg or .pdf).",
        show_default=False,
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Address of a running dask scheduler (tcp://host:8786).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Compute with N threads of this process (default: one per core); for a cluster, "
        "give --scheduler.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="Where block products run: cpu or cuda[:N].")
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="float64, or float32 for the per-block matrix products (sums stay float64): "
        "about 2x faster where float32 GEMM is fast; CKA typically moves by under 1e-8.",
    ),
]
MemoryOpt = Annotated[
    str,
    typer.Option(
        "--memory",
        help="Memory for the statistics of one pass (e.g. 2GB, 512MiB); pairs that do not "
        "fit are spread over more passes.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="With --scheduler/--workers: seconds the cluster may go without an answering "
        "scheduler or any worker before the comparison fails.",
    ),
]
IncompleteOpt = Annotated[
    bool,
    typer.Option(
        "--allow-incomplete",
        help="Also compare representations whose extraction was interrupted (on the rows "
        "written so far).",
    ),
]

TABLE_COLUMNS = ("A", "B", "dataset", "estimator", "kernel", "n_samples", "cka")


def _label(row: Any, side: str) -> str:
    return "/".join(str(row[f"{side}_{k}"]) for k in ("model", "seed", "checkpoint")) + (
        f":{row[f'{side}_layer']}"
    )


def _table(df: Any) -> PlainTable:
    """The result rows; minibatch adds the number of batches, rbf how σ was chosen."""
    extra = [c for c in ("n_batches", "sigma_method") if c in df and df[c].notna().any()]
    more = unc.extra_columns(df)
    table = PlainTable(title=f"CKA: {len(df)} pair(s)", caption=unc.caption(df))
    for column in (*TABLE_COLUMNS, *more, *extra):
        right = column in ("n_samples", "cka", *more)
        table.add_column(column, justify="right" if right else "left")
    for _, row in df.iterrows():
        cells = [
            _label(row, "a"), _label(row, "b"), str(row["dataset"]), str(row["estimator"]),
            str(row["kernel"]), str(row["n_samples"]), f"{row['cka']:.6f}",
        ]  # fmt: skip
        cells += [unc.cell(c, row[c]) for c in more]
        cells += [_cell(row[c]) for c in extra]
        table.add_row(*cells)
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or value != value else str(value)


@handle_errors
def cka(
    store: opt.StoreArg,
    a: AOpt = None,
    b: BOpt = None,
    estimator: EstimatorOpt = "debiased",
    kernel: KernelOpt = "linear",
    sigma: SigmaOpt = 0.5,
    batch_size: BatchSizeOpt = 256,
    shuffle: ShuffleOpt = None,
    where: WhereOpt = None,
    pair_where: PairWhereOpt = None,
    unordered: UnorderedOpt = False,
    match: MatchOpt = None,
    differ: DifferOpt = None,
    pairs: PairsOpt = None,
    out: OutOpt = None,
    plot: PlotOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = "float64",
    memory: MemoryOpt = "2GB",
    allow_incomplete: IncompleteOpt = False,
    timeout: TimeoutOpt = 60.0,
    ci: unc.CiOpt = None,
    bootstrap: unc.BootstrapOpt = None,
    permutations: unc.PermutationsOpt = None,
    seed: unc.SeedOpt = None,
    route: RouteOpt = "auto",
    dry_run: DryRunOpt = False,
    refresh: RefreshOpt = False,
    no_cache: NoCacheOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Compare every A with every B by CKA, reading each stored chunk once per pass.

    Example: reprstore cka runs.zarr --a seed=0 --b seed=1 --match layer --out cka.csv
    With error bars: ... --ci 0.95 --bootstrap 200 --seed 1 --permutations 999
    """
    from reprstore.errors import InputError
    from reprstore.workflows.compare_options import CompareOptions

    opt.set_quiet(quiet)
    if (a is None or b is None) and pairs is None:
        raise InputError("Give both --a and --b selectors (or a --pairs file).")
    request = CompareOptions.make(
        a, b, estimator=estimator, kernel=kernel, sigma=sigma, batch_size=batch_size,
        shuffle=shuffle, where=where, match=match, differ=differ, pair_where=pair_where,
        unordered=unordered, allow_incomplete=allow_incomplete, device=device,
        precision=precision, memory=memory, workers=workers, scheduler=scheduler,
        timeout=timeout, ci=ci, bootstrap=bootstrap, permutations=permutations, seed=seed,
        route=route, dry_run=dry_run, cache=not no_cache, refresh=refresh,
        report=unc.plan_printer(console),
    )  # fmt: skip
    run_and_report(store, request, "cka", out=out, plot=plot, pairs=pairs, table=_table)


def run_and_report(
    store: str, request: Any, name: str, *, out: str | None, plot: str | None,
    pairs: str | None, table: Callable[[Any], PlainTable],
) -> None:  # fmt: skip
    """What ``cka`` and ``compare`` do with their checked request: check where results
    and figures go and read the ``--pairs`` file before the store is opened, run with a
    progress bar and the plan line, then print the table, write ``--out`` (recording the
    pairs file's hash) and draw ``--plot``."""
    from reprstore.cli.progress import progress_bar
    from reprstore.engine.cluster import quiet_distributed_logs
    from reprstore.report import check_output, write_results
    from reprstore.report.figures import check_figure_path
    from reprstore.report.plot import plot_comparison
    from reprstore.workflows.comparison import read_pairs_file, run_comparison

    if request.compute.scheduler is not None or request.compute.workers is not None:
        quiet_distributed_logs()
    check_output(out)
    if plot is not None:
        check_figure_path(plot)
    if pairs is not None:  # a file of pairs: read (and checked) before the store is opened
        request = replace(request, selection=replace(
            request.selection, pairs=tuple(read_pairs_file(pairs))))  # fmt: skip
    with progress_bar(name, unit="blocks") as bar:
        df = run_comparison(store, request, progress=bar, report=unc.plan_printer(console))
    if request.compute.dry_run:
        console.print("dry run: no chunk read, nothing written")
        return
    if pairs is not None:
        from reprstore.resultfiles.provenance import file_sha256

        record = df.attrs.setdefault("reprstore", {})
        record["pairs_file"] = {"path": pairs, "sha256": file_sha256(pairs)}
    console.print(table(df))
    if out is not None:
        console.print(f"wrote {write_results(df, out)}")
    if plot is not None:
        drawn = plot_comparison(df, plot)
        for note in drawn.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(f"wrote {drawn.path}")
