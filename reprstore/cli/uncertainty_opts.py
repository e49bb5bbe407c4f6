"""The ``--ci``/``--bootstrap``/``--permutations``/``--seed`` options and their table cells."""

from __future__ import annotations

from typing import Annotated, Any

import typer

CiOpt = Annotated[
    float | None,
    typer.Option(
        "--ci",
        help="Confidence level of an interval for each value, e.g. 0.95: a delete-group "
        "jackknife (every measure on the linear statistics) or a batch bootstrap (minibatch "
        "cka); columns <col>_lo, <col>_hi, <col>_se (cka_lo …).",
        show_default=False,
    ),
]
BootstrapOpt = Annotated[
    int | None,
    typer.Option(
        "--bootstrap",
        help="Replicates of the interval (default 200): row groups of the jackknife (fewer "
        "if they do not fit --memory), or bootstrap resamples of the batches.",
        show_default=False,
    ),
]
PermutationsOpt = Annotated[
    int | None,
    typer.Option(
        "--permutations",
        help="Permutation test of 'A and B are unrelated' with R permutations, e.g. 999: "
        "columns <col>_p (cka_p …; resolution 1/(R+1)) and permutation_method; row-paired "
        "measures only.",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Seed of the resampling groups, weights and permutations (default 0, recorded "
        "in resample_seed).",
        show_default=False,
    ),
]


def check(ci: float | None, bootstrap: int | None, permutations: int | None,
          seed: int | None) -> Any:  # fmt: skip
    """Refuse bad values before any work (one-line errors); the options (or ``None``)."""
    from reprstore.uncertainty import options

    return options(ci=ci, bootstrap=bootstrap, permutations=permutations, seed=seed)


def plan_printer(console: Any) -> Any:
    """The ``report`` callback: each plan line on stdout as ``plan: …``."""
    return lambda line: console.print(f"plan: {line}", markup=False, soft_wrap=True)


#: Columns the compare table leaves to --out (the caption says how the values were made).
HIDDEN = ("ci_level", "ci_replicates", "cka_p_resolution", "cka_p_statistic", "permutations",
          "resample_seed", "p_resolution")  # fmt: skip


def extra_columns(df: Any) -> list[str]:
    """The uncertainty columns of the printed table, where the results have them."""
    return [c for c in ("cka_lo", "cka_hi", "cka_p") if c in df and df[c].notna().any()]


def cell(column: str, value: Any) -> str:
    if value is None or value != value:
        return ""
    return f"{value:.4g}" if column.endswith("_p") else f"{value:.6f}"


def _resolution(df: Any) -> float | None:
    for col in ("p_resolution", "cka_p_resolution"):
        if col in df and df[col].notna().any():
            return float(df[col].dropna().iloc[0])
    return None


def caption(df: Any) -> str | None:
    """A line under the table: the interval's method and the p-value's resolution."""
    parts = []
    if "ci_method" in df and df["ci_method"].notna().any():
        level = df["ci_level"].dropna().iloc[0]
        methods = "; ".join(sorted(set(df["ci_method"].dropna())))
        parts.append(f"{level:.0%} interval: {methods}")
    res = _resolution(df)
    if res is not None and "permutations" in df and df["permutations"].notna().any():
        perms = int(df["permutations"].dropna().iloc[0])
        methods = "; ".join(sorted(set(df["permutation_method"].dropna())))
        parts.append(f"p from {perms} permutations (resolution {res:.2g}): {methods}")
    if not parts:
        return None
    return " | ".join(parts) + f" | seed {int(df['resample_seed'].dropna().iloc[0])}"
