"""Moments of training: the checkpoints where a timeline's measure jumps.

Per line of a timeline (one run's layer: every design column but the checkpoint), with the
values v₀ … v_m in step order (:func:`reprstore.analysis.steps.step_axis`, ``final`` last):

1. the changes between consecutive checkpoints, dᵢ = vᵢ − vᵢ₋₁ (i = 1 … m);
2. their robust z-scores, zᵢ = (dᵢ − median(d)) / s, with s = 1.4826 · MAD(d) (the median
   absolute deviation, scaled to the standard deviation of normal changes). Where MAD is 0
   (most changes equal, as on a plateau with one step), s = 1.2533 · mean |dᵢ − median(d)|
   (the scaled mean absolute deviation; Iglewicz & Hoaglin's fallback, 1993). Where that is 0
   too (every change alike, up to 1e-9 of the largest), the line has no moment;
3. a **moment** is a change with |zᵢ| ≥ ``threshold`` (default 3.5, Iglewicz & Hoaglin's
   cut-off for modified z-scores), at most ``top`` per line, largest |z| first. Each names
   the checkpoint **before** the jump (vᵢ₋₁), the one **during** it (vᵢ, where the jump has
   happened) and the one **after** (vᵢ₊₁, empty at the last checkpoint).

The reference checkpoint compared with itself (a timeline's point at 1 by definition) is
left out: its value says nothing about training, and its step would always look like a
jump. The median and MAD ignore how large a few jumps are, so a jump cannot hide itself by
inflating the scale, as it would with the mean and standard deviation. A line needs at
least :data:`MIN_CHANGES` changes (4 checkpoints); shorter lines are named in a note.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reprstore.analysis.results import (
    design_columns,
    natural_groups,
    read_results,
    resolve_key,
    resolve_keys,
    same_partition,
    self_pairs,
    value_of,
)
from reprstore.analysis.steps import step_axis
from reprstore.errors import InputError

DEFAULT_THRESHOLD = 3.5
DEFAULT_TOP = 5
MAD_TO_SD = 1.4826  # 1 / Φ⁻¹(3/4): MAD → sd for normal data
MEAN_AD_TO_SD = 1.2533  # √(π/2): mean absolute deviation → sd for normal data
MIN_CHANGES = 3
CHECKPOINT_COLUMNS = ("a_checkpoint", "b_checkpoint", "checkpoint")
MOMENT_COLUMNS = ["value", "rank", "before", "during", "after", "step_before", "step_during",
                  "step_after", "value_before", "value_during", "value_after", "change", "z",
                  "scale", "rule"]  # fmt: skip


@dataclass(frozen=True)
class Moments:
    """The moments of a timeline.

    Attributes
    ----------
    table : DataFrame
        One row per moment: the line's columns, then :data:`MOMENT_COLUMNS`; lines in
        natural order, each line's moments largest |z| first.
    lines : int
        How many lines were searched.
    threshold : float
    notes : list of str
        Lines too short to search, checkpoints left off the step axis.
    """

    table: pd.DataFrame
    lines: int
    threshold: float
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: how many moments in how many lines, or that there are none."""
        rule = f"|z| ≥ {self.threshold:g} of consecutive changes"
        if self.table.empty:
            return f"no moments found in {self.lines} line(s) ({rule})"
        hit = self.table.groupby(self.line_columns, sort=False).ngroups if self.line_columns \
            else 1  # fmt: skip
        return f"{len(self.table)} moment(s) in {hit} of {self.lines} line(s) ({rule})"

    @property
    def line_columns(self) -> list[str]:
        return list(self.table.columns[: list(self.table.columns).index("value")])


def check_moment_options(threshold: float, top: int) -> None:
    """Refuse a threshold that is not a positive number, or a count below 1."""
    if not isinstance(threshold, (int, float)) or not np.isfinite(threshold) or threshold <= 0:
        raise InputError(
            f"--moment-threshold must be a positive number (e.g. 3.5). Got {threshold!r} instead."
        )
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"--max-moments must be at least 1. Got {top!r} instead.")


def robust_z(changes: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Robust z-scores of ``changes`` (see the module docstring).

    Returns
    -------
    z : ndarray (m,)
        Zeros when the changes are all alike.
    scale : float
        The denominator s (0 when there is none).
    rule : str
        ``"MAD"``, ``"mean absolute deviation"`` (MAD was 0) or ``"none"``.
    """
    d = np.asarray(changes, dtype=np.float64)
    centre = float(np.median(d))
    deviation = np.abs(d - centre)
    tiny = 1e-9 * float(np.abs(d).max(initial=0.0))
    for factor, spread, rule in ((MAD_TO_SD, float(np.median(deviation)), "MAD"),
                                 (MEAN_AD_TO_SD, float(deviation.mean()),
                                  "mean absolute deviation")):  # fmt: skip
        scale = factor * spread
        if scale > tiny and scale > 0:
            return (d - centre) / scale, scale, rule
    return np.zeros_like(d), 0.0, "none"


def line_columns(df: pd.DataFrame, x: str) -> list[str]:
    """The design columns that tell a timeline's lines apart: those that vary, but the
    checkpoint, one per way of splitting the rows (``b_layer`` for ``a_layer``/``b_layer``)."""
    chosen: list[str] = []
    candidates = sorted(design_columns(df), key=lambda c: not c.startswith("b_"))
    for column in candidates:
        if column in (x, *CHECKPOINT_COLUMNS) or df[column].nunique(dropna=False) < 2:
            continue
        if not any(same_partition(df, column, c) for c in chosen):
            chosen.append(column)
    return chosen


def find_moments(
    results: pd.DataFrame | str | os.PathLike[str],
    measure: str = "cka",
    *,
    value: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    top: int = DEFAULT_TOP,
    by: str | Sequence[str] | None = None,
    x: str | None = None,
    final_step: float | None = None,
) -> Moments:
    """The moments of every line of a timeline table (see the module docstring).

    Parameters
    ----------
    results : DataFrame or path
        A timeline (``reprstore timeline --out``, or any result table over checkpoints).
    measure, value
        The measure column, or ``1-column`` (:func:`reprstore.analysis.results.value_of`).
    threshold : float
        Smallest |z| that makes a moment.
    top : int
        At most this many moments per line.
    by : str or list of str, optional
        The columns that make the lines (default: :func:`line_columns`).
    x : str, optional
        The checkpoint column (default: the one that varies).
    final_step : float, optional
        Where ``final`` sits on the step axis (default: one spacing after the last step).
    """
    check_moment_options(threshold, top)
    df = read_results(results).reset_index(drop=True)
    own = self_pairs(df)
    if own is not None and own.any() and not own.all():
        df = df[~own.to_numpy()].reset_index(drop=True)  # the reference against itself
    what = value_of(measure, value)
    values = what.of(df)
    xcol = resolve_key(df, x or "checkpoint", "--x")
    lines = resolve_keys(df, by, "--by") if by is not None else line_columns(df, xcol)
    axis = step_axis(df[xcol].astype(str).tolist(), final_step)
    notes = list(axis.notes)
    work = df[[*lines, xcol]].astype(str).assign(_value=values)
    work = work[work[xcol].isin(axis.positions)]
    rows: list[list[object]] = []
    short: list[str] = []
    groups = natural_groups(work, lines)
    for group, part in groups:
        if part[xcol].duplicated().any():
            twice = part.loc[part[xcol].duplicated(), xcol].iloc[0]
            raise InputError(
                f"Line {_name(lines, group)} has several rows at checkpoint {twice!r}: "
                "name the columns that tell them apart with --by."
            )
        part = part.assign(_x=part[xcol].map(axis.positions)).sort_values("_x")
        if len(part) - 1 < MIN_CHANGES:
            short.append(_name(lines, group))
            continue
        rows += [[*group, what.label, *m] for m in _line_moments(part, xcol, threshold, top)]
    if short:
        notes.append(
            f"{len(short)} line(s) have fewer than {MIN_CHANGES + 1} checkpoints, too few to "
            f"find a moment: {', '.join(short[:5])}{' …' if len(short) > 5 else ''}"
        )
    table = pd.DataFrame(rows, columns=[*lines, *MOMENT_COLUMNS])
    table.attrs = dict(df.attrs)
    return Moments(table, len(groups), float(threshold), notes)


def _line_moments(part: pd.DataFrame, xcol: str, threshold: float, top: int) -> list[list[object]]:
    """The moments of one line (sorted by step): columns from ``rank`` on."""
    labels = part[xcol].tolist()
    steps = part["_x"].to_numpy(dtype=np.float64)
    v = part["_value"].to_numpy(dtype=np.float64)
    d = np.diff(v)
    z, scale, rule = robust_z(d)
    hits = [i for i in np.argsort(-np.abs(z), kind="stable") if abs(z[i]) >= threshold][:top]
    out: list[list[object]] = []
    for rank, i in enumerate(hits, start=1):
        after = i + 2 if i + 2 < len(labels) else None
        out.append([
            rank, labels[i], labels[i + 1], labels[after] if after is not None else "",
            steps[i], steps[i + 1], steps[after] if after is not None else np.nan,
            v[i], v[i + 1], v[after] if after is not None else np.nan,
            float(d[i]), float(z[i]), scale, rule,
        ])  # fmt: skip
    return out


def _name(lines: list[str], group: tuple[str, ...]) -> str:
    if not lines:
        return "(all rows)"
    return ", ".join(f"{c}={v}" for c, v in zip(lines, group, strict=True))
