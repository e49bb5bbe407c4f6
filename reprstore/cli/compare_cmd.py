"""``reprstore compare`` (any registered measures, one pass) and ``reprstore describe``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reprstore.cli import cka_cmd as c
from reprstore.cli import options as opt
from reprstore.cli import uncertainty_opts as unc
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import PlainTable, stdout_console

console = stdout_console()

MeasureOpt = Annotated[
    str,
    typer.Option(
        "--measure",
        help="Measures, comma-separated, with options as NAME:opt=value (e.g. "
        "'cka,cca,svcca:keep=0.99,pca:k=20'); 'help' lists every measure and its options.",
    ),
]
DescribeMeasureOpt = Annotated[
    str,
    typer.Option(
        "--measure",
        help="pr, erank, variance, sparsity[:tol=T], selectivity:label=COLUMN "
        "(comma-separated); 'help' lists every measure.",
    ),
]
KEYS = ("model", "seed", "checkpoint")


def _scalars(df: Any, skip: tuple[str, ...]) -> list[str]:
    out = []
    for col in df.columns:
        if col in skip or col.startswith(("a_", "b_")):
            continue
        values = df[col].dropna()
        if len(values) and all(isinstance(v, (int, float)) for v in values):
            out.append(col)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}"
    return "" if v is None else str(v)


def pairs_table(df: Any, title: str) -> PlainTable:
    """The scalar columns of a comparison, one row per pair (lists are in --out)."""
    skip = ("n_samples", "b_n_samples", "n_batches", "batch_size", "sigma", "hsic_ab", "hsic_aa",
            "hsic_bb", "pca_k", *unc.HIDDEN)  # fmt: skip
    scalars = _scalars(df, skip)
    across = "b_dataset" in df.columns  # feature-paired sides from two datasets
    sides = (
        ("dataset", "b_dataset", "n_samples", "b_n_samples") if across else ("dataset", "n_samples")
    )
    table = PlainTable(title=title, caption=unc.caption(df))
    for col in ("A", "B", *sides, *scalars):
        table.add_column(
            col, justify="left" if col in ("A", "B", "dataset", "b_dataset") else "right"
        )
    for _, row in df.iterrows():
        a, b = side_labels(row)
        table.add_row(a, b, *(str(row[col]) for col in sides), *(_fmt(row[col]) for col in scalars))
    return table


def side_labels(row: Any) -> tuple[str, str]:
    """The A and B labels of a result row, ``model/seed/checkpoint:layer``; a pair whose
    sides come from two datasets names each side's (``model/seed/checkpoint/dataset:layer``,
    the store's own spelling), so that the two never read alike."""
    b_dataset = row.get("b_dataset")
    if not isinstance(b_dataset, str) or b_dataset == row["dataset"]:
        return c._label(row, "a"), c._label(row, "b")
    return _full_label(row, "a", str(row["dataset"])), _full_label(row, "b", b_dataset)


def _full_label(row: Any, side: str, dataset: str) -> str:
    run = "/".join(str(row[f"{side}_{k}"]) for k in ("model", "seed", "checkpoint"))
    return f"{run}/{dataset}:{row[f'{side}_layer']}"


def measure_help(measure: str) -> bool:
    """Print the list of measures if ``--measure`` asks for it (help, list, ?)."""
    from reprstore.metrics.registry import help_text

    if measure.strip().lower() in ("help", "list", "?"):
        console.print(help_text(), markup=False, highlight=False)
        return True
    return False


def checked_measures(
    measure: str,
    defaults: dict[str, dict[str, Any]] | None,
    workers: int | None,
    scheduler: str | None,
    ci: float | None,
    bootstrap: int | None,
    permutations: int | None,
    seed: int | None,
) -> list[Any]:
    """The measure specs of ``--measure``, with the scheduler and uncertainty options
    checked against them (``timeline``; ``compare`` builds a CompareOptions)."""
    from reprstore.engine.cluster import check_cluster_choice
    from reprstore.metrics.registry import parse_measures

    check_cluster_choice(workers, scheduler)
    specs = parse_measures(measure, defaults)
    asked = unc.check(ci, bootstrap, permutations, seed)
    if asked is not None:
        from reprstore.uncertainty import check_measures

        check_measures(specs, asked)
    return specs


@handle_errors
def compare(
    store: opt.StoreArg,
    a: c.AOpt = None,
    b: c.BOpt = None,
    measure: MeasureOpt = "cka",
    estimator: c.EstimatorOpt = "debiased",
    kernel: c.KernelOpt = "linear",
    sigma: c.SigmaOpt = 0.5,
    batch_size: c.BatchSizeOpt = 256,
    shuffle: c.ShuffleOpt = None,
    where: c.WhereOpt = None,
    match: c.MatchOpt = None,
    differ: c.DifferOpt = None,
    pairs: c.PairsOpt = None,
    pair_where: c.PairWhereOpt = None,
    unordered: c.UnorderedOpt = False,
    out: c.OutOpt = None,
    plot: c.PlotOpt = None,
    scheduler: c.SchedulerOpt = None,
    workers: c.WorkersOpt = None,
    device: c.DeviceOpt = "cpu",
    precision: c.PrecisionOpt = "float64",
    memory: c.MemoryOpt = "2GB",
    allow_incomplete: c.IncompleteOpt = False,
    ci: unc.CiOpt = None,
    bootstrap: unc.BootstrapOpt = None,
    permutations: unc.PermutationsOpt = None,
    seed: unc.SeedOpt = None,
    route: c.RouteOpt = "auto",
    dry_run: c.DryRunOpt = False,
    refresh: c.RefreshOpt = False,
    no_cache: c.NoCacheOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Compare every A with every B by any measures, all from one pass over the data.

    Example: reprstore compare runs.zarr --a seed=0 --b seed=1 --measure cka,cca,procrustes
    With error bars (cka): ... --measure cka --ci 0.95 --bootstrap 200 --permutations 999
    """
    opt.set_quiet(quiet)
    if measure_help(measure):
        return
    from reprstore.errors import InputError
    from reprstore.workflows.compare_options import CompareOptions

    if (a is None or b is None) and pairs is None:
        raise InputError("Give both --a and --b selectors (or a --pairs file).")
    request = CompareOptions.make(
        a, b, measures=measure, estimator=estimator, kernel=kernel, sigma=sigma,
        batch_size=batch_size, shuffle=shuffle, where=where, match=match, differ=differ,
        pair_where=pair_where, unordered=unordered, allow_incomplete=allow_incomplete,
        device=device, precision=precision, memory=memory, workers=workers,
        scheduler=scheduler, ci=ci, bootstrap=bootstrap, permutations=permutations, seed=seed,
        route=route, dry_run=dry_run, cache=not no_cache, refresh=refresh,
        report=unc.plan_printer(console),
    )  # fmt: skip
    names = ", ".join(s.name + s.suffix for s in request.specs)
    c.run_and_report(store, request, "compare", out=out, plot=plot, pairs=pairs,
                     table=lambda df: pairs_table(df, f"{names}: {len(df)} pair(s)"))  # fmt: skip


@handle_errors
def describe(
    store: opt.StoreArg,
    selector: opt.SelectorArg = None,
    measure: DescribeMeasureOpt = "pr,erank,variance",
    where: c.WhereOpt = None,
    out: c.OutOpt = None,
    scheduler: c.SchedulerOpt = None,
    workers: c.WorkersOpt = None,
    memory: c.MemoryOpt = "2GB",
    allow_incomplete: c.IncompleteOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Measures of single representations: participation ratio, effective rank, variance,
    sparsity, class selectivity.

    Example: reprstore describe runs.zarr seed=0 --measure pr,erank,selectivity:label=label
    """
    opt.set_quiet(quiet)
    if measure_help(measure):
        return
    from reprstore.cli.progress import progress_bar
    from reprstore.report import check_output, write_results
    from reprstore.stats.plan import parse_memory
    from reprstore.workflows.description import describe as run_describe

    budget = parse_memory(memory)
    check_output(out)
    with progress_bar("describe", unit="blocks") as bar:
        df = run_describe(
            store, selector, measures=measure, where=where, allow_incomplete=allow_incomplete,
            memory=budget, workers=workers, scheduler=scheduler, progress=bar,
        )  # fmt: skip
    scalars = _scalars(df, ("n_samples",))
    table = PlainTable(title=f"{len(df)} representation(s)")
    for col in ("representation", "dataset", "n_samples", *scalars):
        table.add_column(col, justify="left" if col in ("representation", "dataset") else "right")
    for _, row in df.iterrows():
        label = "/".join(str(row[k]) for k in KEYS) + f":{row['layer']}"
        table.add_row(label, str(row["dataset"]), str(row["n_samples"]),
                      *(_fmt(row[col]) for col in scalars))  # fmt: skip
    console.print(table)
    for note in df.attrs.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    if out is not None:
        console.print(f"wrote {write_results(df, out)}")
