"""``reprstore timeline``: every checkpoint against a reference checkpoint, table and plot."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reprstore.cli import cka_cmd as c
from reprstore.cli import compare_cmd as cc
from reprstore.cli import options as opt
from reprstore.cli import uncertainty_opts as unc
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import stdout_console

console = stdout_console()

AgainstOpt = Annotated[
    str,
    typer.Option(
        "--against",
        help="The reference checkpoint: checkpoint=final, or a label such as step0.",
        show_default=False,
    ),
]
SelectOpt = Annotated[
    str | None,
    typer.Option(
        "--select",
        help="The runs and layers (a selector without checkpoint), e.g. 'model=tiny,layer=act*'.",
        show_default=False,
    ),
]
FigureOpt = Annotated[
    str | None,
    typer.Option(
        "--plot",
        help="Draw the timeline (the first measure column) to .png, .svg or .pdf.",
        show_default=False,
    ),
]
LevelOpt = Annotated[float, typer.Option("--level", help="Level of the plot's seed band.")]
MomentsOpt = Annotated[
    bool,
    typer.Option(
        "--moments",
        help="Find the checkpoints where the measure jumps (robust z of consecutive changes, "
        "per line): a table, FILE.moments.EXT beside --out, and marks on --plot.",
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--moment-threshold",
        help="Smallest |z| that makes a moment (default 3.5).",
        show_default=False,
    ),
]
MaxMomentsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-moments", help="At most this many moments per line (default 5).", show_default=False
    ),
]


@handle_errors
def timeline(
    store: opt.StoreArg,
    against: AgainstOpt,
    select: SelectOpt = None,
    measure: cc.MeasureOpt = "cka",
    where: c.WhereOpt = None,
    out: c.OutOpt = None,
    plot: FigureOpt = None,
    final_step: opt.FinalStepOpt = None,
    band: opt.BandOpt = "ci",
    level: LevelOpt = 0.95,
    scheduler: c.SchedulerOpt = None,
    workers: c.WorkersOpt = None,
    memory: c.MemoryOpt = "2GB",
    allow_incomplete: c.IncompleteOpt = False,
    ci: unc.CiOpt = None,
    bootstrap: unc.BootstrapOpt = None,
    permutations: unc.PermutationsOpt = None,
    seed: unc.SeedOpt = None,
    refresh: c.RefreshOpt = False,
    no_cache: c.NoCacheOpt = False,
    moments: MomentsOpt = False,
    moment_threshold: ThresholdOpt = None,
    max_moments: MaxMomentsOpt = None,
) -> None:
    """Every checkpoint of every run compared with the run's reference checkpoint (same
    model, seed, dataset and layer), as a table and a timeline on a true step axis.

    Example: reprstore timeline runs.zarr --against checkpoint=final --out t.csv --plot t.png
    Moments: ... --moments --moment-threshold 3.5 --max-moments 3
    """
    if cc.measure_help(measure):
        return
    from reprstore.analysis.summary import check_level
    from reprstore.cli.progress import progress_bar
    from reprstore.engine.options import check_cache_choice
    from reprstore.report import check_output, write_results
    from reprstore.report.figures import check_band, check_figure_path, plot_results
    from reprstore.stats.plan import parse_memory
    from reprstore.workflows.timelines import timeline as run_timeline

    specs = cc.checked_measures(
        measure, None, workers, scheduler, ci, bootstrap, permutations, seed
    )
    check_cache_choice(not no_cache, refresh)
    budget = parse_memory(memory)
    check_output(out)
    if plot is not None:
        check_figure_path(plot)
    check_band(band)
    check_level(level)
    threshold, top = _moment_options(moments, moment_threshold, max_moments)
    with progress_bar("timeline", unit="blocks") as bar:
        df = run_timeline(
            store, against, select, measures=measure, where=where,
            allow_incomplete=allow_incomplete, memory=budget, workers=workers,
            scheduler=scheduler, progress=bar, ci=ci, bootstrap=bootstrap,
            permutations=permutations, seed=seed, report=unc.plan_printer(console),
            cache=not no_cache, refresh=refresh,
        )  # fmt: skip
    label = df.attrs["reprstore"]["options"]["against"]
    console.print(cc.pairs_table(df, f"{len(df)} checkpoint(s) against {label}"))
    if out is not None:
        console.print(f"wrote {write_results(df, out)}")
    first = specs[0]
    column = first.column(first.measure.columns(first.opts)[0][0])
    found = None
    if moments:
        from reprstore.analysis.moments import find_moments

        found = find_moments(df, column, threshold=threshold, top=top, final_step=final_step)
        _show_moments(found, out)
    if plot is not None:
        drawn = plot_results(df, "timeline", plot, measure=column, final_step=final_step,
                             band=band, level=level,
                             moments=found.table if found is not None else None)  # fmt: skip
        for note in drawn.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(f"wrote {drawn.path}")


def _moment_options(moments: bool, threshold: float | None, top: int | None) -> tuple[float, int]:
    """The moment threshold and count, checked; refused without ``--moments``."""
    from reprstore.analysis.moments import DEFAULT_THRESHOLD, DEFAULT_TOP, check_moment_options
    from reprstore.errors import InputError

    if not moments and (threshold is not None or top is not None):
        flag = "--moment-threshold" if threshold is not None else "--max-moments"
        raise InputError(f"{flag} applies to --moments; add --moments.")
    chosen = (DEFAULT_THRESHOLD if threshold is None else threshold,
              DEFAULT_TOP if top is None else top)  # fmt: skip
    check_moment_options(*chosen)
    return chosen


def _show_moments(found: Any, out: str | None) -> None:
    """Print the moments (or that there are none) and write them beside ``out``."""
    from pathlib import Path

    from reprstore.cli.formatting import PlainTable
    from reprstore.report import write_results

    for note in found.notes:
        console.print(f"note: {note}", highlight=False)
    if found.table.empty:
        console.print(found.summary, highlight=False)
    else:
        lines = found.line_columns
        table = PlainTable(title=found.summary)
        for col in (*lines, "before", "during", "after", "change", "z"):
            table.add_column(col.removeprefix("b_"), justify="right" if col in ("change", "z")
                             else "left")  # fmt: skip
        for row in found.table.itertuples(index=False):
            cells = [str(getattr(row, c)) for c in (*lines, "before", "during", "after")]
            table.add_row(*cells, f"{row.change:+.4g}", f"{row.z:+.1f}")
        console.print(table)
    if out is not None:
        path = Path(out)
        beside = path.with_name(f"{path.stem}.moments{path.suffix}")
        console.print(f"wrote {write_results(found.table, beside)}")
