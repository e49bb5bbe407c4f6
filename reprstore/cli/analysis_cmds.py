"""``reprstore summarize``, ``plot`` and ``drift``: analyses of result tables and checkpoints."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from reprstore.cli import options as opt
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import PlainTable, stdout_console

console = stdout_console()

ResultsArg = Annotated[
    str,
    typer.Argument(
        help="A result table: .csv, .json or .parquet (reprstore cka --out).", show_default=False
    ),
]
ByOpt = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Group columns, e.g. 'model,layer' (a_/b_ resolved where "
        "unambiguous) or 'b_model,b_layer'.",
        show_default=False,
    ),
]
OverOpt = Annotated[
    str, typer.Option("--over", help="What replicates are: seed (a_seed/b_seed) or columns.")
]
MeasureOpt = Annotated[str, typer.Option("--measure", help="The measure column, e.g. cka.")]
PlotMeasureOpt = Annotated[
    str | None,
    typer.Option(
        "--measure",
        help="The measure column (default cka; rel_change for a drift table).",
        show_default=False,
    ),
]
ValueOpt = Annotated[
    str | None,
    typer.Option(
        "--value",
        help="'cka' or its complement '1-cka' (nothing is evaluated).",
        show_default=False,
    ),
]
DriftOpt = Annotated[bool, typer.Option("--drift", help="Use 1 − measure (drift = 1 − CKA).")]
LevelOpt = Annotated[float, typer.Option("--level", help="Confidence level, in (0, 1).")]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Write the table to .csv, .json or .parquet.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")]


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(df: Any, title: str, columns: list[str]) -> PlainTable:
    import pandas as pd

    table = PlainTable(title=title)
    for column in columns:
        numeric = pd.api.types.is_numeric_dtype(df[column])
        table.add_column(column, justify="right" if numeric else "left")
    for row in df[columns].itertuples(index=False):
        table.add_row(*(_number(v) for v in row))
    return table


def _value_title(df: Any) -> str:
    from reprstore.analysis.results import Value

    return Value.parse(str(df["value"].iloc[0])).title


def _show(df: Any, title: str, columns: list[str], out: str | None, as_json: bool) -> None:
    import json

    from reprstore.report import records, write_results

    if as_json:
        typer.echo(json.dumps(records(df), indent=1))
    else:
        console.print(_table(df, title, columns))
    if df.attrs.get("interval") and not as_json:
        console.print(f"[dim]{escape(df.attrs['interval'])}[/dim]", highlight=False)
    for note in df.attrs.get("notes", []):  # on stderr under --json, so stdout stays JSON
        if as_json:
            typer.echo(f"note: {note}", err=True)
        else:
            console.print(f"note: {note}", highlight=False)
    if out is not None:
        console.print(f"wrote {write_results(df, out)}")


@handle_errors
def summarize(
    results: ResultsArg,
    by: ByOpt = None,
    over: OverOpt = "seed",
    measure: MeasureOpt = "cka",
    value: ValueOpt = None,
    drift: DriftOpt = False,
    level: LevelOpt = 0.95,
    contrast: Annotated[
        str | None,
        typer.Option(
            "--contrast",
            help="KEY=X:Y, e.g. 'model=lora:full': X against Y per --by group, across seeds.",
            show_default=False,
        ),
    ] = None,
    alternative: Annotated[
        str, typer.Option("--alternative", help="two-sided, less (X below r₀·Y) or greater.")
    ] = "two-sided",
    null_ratio: Annotated[
        float, typer.Option("--null-ratio", help="r₀ of H₀ 'X = r₀·Y' (0.8: a 20 % reduction).")
    ] = 1.0,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Significance level whose reachability is stated.")
    ] = 0.05,
    permutations: Annotated[
        int,
        typer.Option(
            "--permutations",
            help="Random arrangements when there are more "
            "than 100,000 (otherwise all are enumerated).",
        ),
    ] = 9999,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sampled arrangements.")] = 0,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mean, sd, sem and a t-interval over seeds per group; or a contrast of two groups.

    Example: reprstore summarize drift.csv --by layer --drift --contrast 'model=lora:full'
    """
    from reprstore.analysis.contrasts import ContrastSpec
    from reprstore.analysis.contrasts import contrast as run_contrast
    from reprstore.analysis.summary import check_level
    from reprstore.analysis.summary import summarize as run_summary
    from reprstore.report import check_output

    check_level(level)
    check_output(out)
    if contrast is None:
        df = run_summary(
            results, by, over=over, measure=measure, value=value, drift=drift, level=level
        )
        cols = [c for c in df.columns if c not in ("level",)]
        _show(
            df,
            f"{_value_title(df)} over {over}s: {len(df)} group(s), {level:.0%} t-interval",
            cols,
            out,
            as_json,
        )
        return
    spec = ContrastSpec.parse(contrast)
    df = run_contrast(
        results,
        spec,
        by,
        over=over,
        measure=measure,
        value=value,
        drift=drift,
        level=level,
        alternative=alternative,
        null_ratio=null_ratio,
        alpha=alpha,
        permutations=permutations,
        seed=seed,
    )
    keys = list(df.columns[: list(df.columns).index("value")])
    cols = [
        *keys,
        "n_x",
        "n_y",
        "mean_x",
        "mean_y",
        "diff",
        "diff_lo",
        "diff_hi",
        "ratio",
        "ratio_lo",
        "ratio_hi",
        "p",
        "p_holm",
        "p_min",
    ]
    h1 = {"two-sided": "≠", "less": "<", "greater": ">"}[alternative]
    scaled = f"{null_ratio:g}·{spec.y}" if null_ratio != 1 else spec.y
    title = (
        f"{_value_title(df)}: {spec.x} vs {spec.y} ({df['key'].iloc[0]}), {level:.0%} "
        f"intervals; p of H₁ {spec.x} {h1} {scaled} ({df['test'].iloc[0]})"
    )
    _show(df, title, cols, out, as_json)


@handle_errors
def plot(
    results: ResultsArg,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="heatmap, timeline, profile, seeds, or measures (what compare --plot draws).",
            show_default=False,
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", help="A .png, .svg or .pdf file.", show_default=False)
    ],
    measure: PlotMeasureOpt = None,
    value: ValueOpt = None,
    drift: DriftOpt = False,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Columns that make the lines (default: the layer for a "
            "timeline, what varies besides layer and seed for a profile).",
            show_default=False,
        ),
    ] = None,
    over: OverOpt = "seed",
    x: Annotated[
        str | None,
        typer.Option(
            "--x",
            help="The x axis: a timeline's checkpoint column (default: the one that varies), "
            "or a profile's categories (default layer; e.g. tasks, a run attribute).",
            show_default=False,
        ),
    ] = None,
    band: opt.BandOpt = "ci",
    level: LevelOpt = 0.95,
    final_step: opt.FinalStepOpt = None,
    title: Annotated[str | None, typer.Option("--title", show_default=False)] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="Draw only rows where this holds, e.g. \"kernel == 'linear'\".",
            show_default=False,
        ),
    ] = None,
    average: Annotated[
        str | None,
        typer.Option(
            "--average",
            help="Columns to average over on purpose (e.g. layer); "
            "the title says so. Rows differing in other columns are never pooled.",
            show_default=False,
        ),
    ] = None,
    vmin: Annotated[
        float | None,
        typer.Option(
            "--vmin", help="Heatmap colour range minimum (default: the data's).", show_default=False
        ),
    ] = None,
    vmax: Annotated[
        float | None,
        typer.Option("--vmax", help="Heatmap colour range maximum.", show_default=False),
    ] = None,
    logx: Annotated[bool, typer.Option("--logx", help="Log step axis for a timeline.")] = False,
    cols: Annotated[
        int | None,
        typer.Option("--cols", help="Panels across (default up to 3).", show_default=False),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="Show a value or key under another name, FROM=TO "
            "(repeatable), e.g. --label layer_0=embedding --label seed=run.",
            show_default=False,
        ),
    ] = None,
    ticks: Annotated[
        str | None,
        typer.Option(
            "--ticks",
            help="Label layers by this run attribute's values (a_ATTR/b_ATTR), e.g. --ticks "
            "depth; the axes then name the attribute.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw a result table: A × B heatmap, timeline over checkpoints, layer profile, the
    seed-robustness matrix averaged over seeds, or the per-measure panels of compare.

    Example: reprstore plot drift.csv --kind profile --drift --out profile.png
    """
    from reprstore.report.figures import plot_results
    from reprstore.report.style import Style, parse_labels

    style = Style(vmin=vmin, vmax=vmax, logx=logx, cols=cols, labels=parse_labels(label),
                  title=title, average=average, ticks=ticks)  # fmt: skip

    drawn = plot_results(
        results,
        kind,
        out,
        measure=measure,
        value=value,
        drift=drift,
        by=by,
        over=over,
        x=x,
        band=band,
        level=level,
        final_step=final_step,
        where=where,
        style=style,
    )
    for note in drawn.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {drawn.path}")


@handle_errors
def drift(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Checkpoint files (state dicts or .safetensors); without "
            "--against the first is the reference.",
            show_default=False,
        ),
    ] = None,
    checkpoints: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoints",
            help="More checkpoint files or a glob, e.g. 'ckpts/step*.pt' (natural order).",
            show_default=False,
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="The reference: a checkpoint label (final, step0) or a file.",
            show_default=False,
        ),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(
            "--params", help="Glob over tensor names, e.g. '*.weight'.", show_default=False
        ),
    ] = None,
    out: OutOpt = None,
    plot_file: Annotated[
        str | None,
        typer.Option("--plot", help="Draw the timeline to .png, .svg or .pdf.", show_default=False),
    ] = None,
    measure: Annotated[
        str, typer.Option("--measure", help="What --plot draws: rel_change, cosine or change.")
    ] = "rel_change",
    top: Annotated[int, typer.Option("--top", help="Tensors drawn besides (all).")] = 8,
    final_step: opt.FinalStepOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Weight drift of each checkpoint from a reference: per tensor, cosine and
    ‖W − W_ref‖ / ‖W_ref‖, read one tensor at a time (weights_only=True).

    Example: reprstore drift --checkpoints 'ckpts/*.pt' --against final --plot drift.png
    """
    from reprstore.errors import InputError
    from reprstore.report import check_output
    from reprstore.report.figures import check_figure_path, plot_weight_drift
    from reprstore.workflows.drift import weight_drift

    given = [*(files or []), *(checkpoints or [])]
    if not given:
        raise InputError("Give checkpoint files, or --checkpoints 'ckpts/step*.pt'.")
    if measure not in ("rel_change", "cosine", "change"):
        raise InputError(f"--measure must be rel_change, cosine or change. Got {measure!r}.")
    check_output(out)
    if plot_file is not None:
        check_figure_path(plot_file)
    df = weight_drift(given, against, params=params)
    whole = df[df["parameter"] == "(all)"]
    cols = ["checkpoint", "step", "parameter", "numel", "rel_change", "cosine", "change"]
    cols = ["seed", *cols] if "seed" in df.columns else cols
    refs = sorted(set(df["reference"].astype(str)))
    seeds = df["seed"].nunique() if "seed" in df.columns else 0
    title = f"weight drift against {', '.join(refs)}"
    title += f" (each of {seeds} seed(s) against its own)" if seeds else ""
    title += f": all {len(df) // len(whole) - 1} "
    title += "tensor(s) together (--out for each tensor)"
    if as_json:
        _show(df, title, cols, None, True)
    else:
        _show(whole, title, cols, None, False)
    if out is not None:
        from reprstore.report import write_results

        console.print(f"wrote {write_results(df, out)}")
    if plot_file is not None:
        drawn = plot_weight_drift(df, plot_file, measure=measure, top=top, final_step=final_step)
        for note in drawn.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(f"wrote {drawn.path}")
