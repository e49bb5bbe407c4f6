"""Seed summaries: mean, sd, sem and a t-interval over replicates (seeds) per group.

Each group (``--by``) holds replicates (``--over seed``: one value per seed, or per seed
pair); rows of one replicate are averaged first. With n replicates of a group, mean x̄,
sample sd s (ddof 1) and sem = s/√n, the interval is x̄ ± t_{(1+level)/2, n−1} · sem — exact
for normally distributed replicate values, and what a paper's error bar over seeds means.
A value bounded by its definition (cka in [−1, 1], a fraction in [0, 1]) gets the same
interval on the logit scale of its range (:func:`bounded_interval`), which stays inside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reprstore.analysis.results import (
    Value,
    natural_groups,
    read_results,
    replicate_columns,
    replicates,
    resolve_keys,
    self_pairs,
    value_of,
)
from reprstore.errors import InputError

SUMMARY_COLUMNS = ["value", "n", "rows", "mean", "sd", "sem", "ci_lo", "ci_hi", "level"]


def check_level(level: float) -> float:
    """``level`` if it is a confidence level strictly between 0 and 1, else raise."""
    if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise InputError(f"The confidence level must lie strictly between 0 and 1 (e.g. 0.95). "
                         f"Got {level!r} instead.")  # fmt: skip
    return float(level)


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (scipy.special: a lighter import than scipy.stats)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def t_interval(
    values: np.ndarray, level: float, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float, float, float]:
    """Mean, sd, sem and the t-interval of one group's replicate values.

    Parameters
    ----------
    values : ndarray, shape (n,)
    level : float
        Confidence level in (0, 1).
    bounds : (lo, hi), optional
        The range the value lies in by definition (``Value.bounds``; ±inf for an open
        side): the interval is then :func:`bounded_interval`'s, inside the range.

    Returns
    -------
    mean, sd, sem, lo, hi : float
        sd, sem, lo and hi are NaN when n < 2 (no spread to estimate).
    """
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return mean, np.nan, np.nan, np.nan, np.nan
    sd = float(values.std(ddof=1))
    sem = sd / np.sqrt(n)
    q = t_quantile(0.5 + level / 2.0, n - 1)
    lo, hi = bounded_interval(mean, sem, q, bounds)
    return mean, sd, sem, lo, hi


def bounded_interval(
    mean: float, sem: float, q: float, bounds: tuple[float, float] | None
) -> tuple[float, float]:
    """mean ± q·sem on a scale on which the range ``bounds`` is the whole line.

    Both ends finite: u = (x̄ − lo)/(hi − lo) and logit(u) ± q·sem/((hi − lo)·u(1 − u))
    (the delta method), mapped back; one end finite: log(x̄ − lo) ± q·sem/(x̄ − lo) (or
    the same of hi − x̄); none (or ``bounds`` None): x̄ ± q·sem. The interval contains x̄ and
    never leaves the range; near the middle of a wide range it is the plain t-interval.
    A mean on a bound (every replicate there) gives the plain interval clipped to the range.
    """
    lo, hi = bounds if bounds is not None else (-np.inf, np.inf)
    if np.isfinite(lo) and np.isfinite(hi):
        width = hi - lo
        u = (mean - lo) / width
        if 0.0 < u < 1.0:
            centre, half = np.log(u / (1.0 - u)), q * sem / (width * u * (1.0 - u))
            low, high = _expit(centre - half), _expit(centre + half)
            return lo + width * low, lo + width * high
    elif np.isfinite(lo) and mean > lo:
        d = mean - lo
        return lo + d * float(np.exp(-q * sem / d)), lo + d * float(np.exp(q * sem / d))
    elif np.isfinite(hi) and mean < hi:
        d = hi - mean
        return hi - d * float(np.exp(q * sem / d)), hi - d * float(np.exp(-q * sem / d))
    return float(np.clip(mean - q * sem, lo, hi)), float(np.clip(mean + q * sem, lo, hi))


def _expit(z: float) -> float:
    """1/(1 + e^−z) without overflow for large |z|."""
    from scipy.special import expit

    return float(expit(z))


def bounds_note(what: Value) -> str | None:
    """The statement that ``what``'s intervals are on a bounded scale, if they are."""
    if what.bounds is None:
        return None
    lo, hi = what.bounds
    scale = "logit" if np.isfinite(lo) and np.isfinite(hi) else "log"
    return (
        f"{what.label} lies in [{lo:g}, {hi:g}]: its t-interval is taken on the {scale} "
        "scale of that range (delta method), so it stays inside"
    )


def summarize(
    results: pd.DataFrame | str | os.PathLike[str],
    by: str | Sequence[str] | None = None,
    *,
    over: str | Sequence[str] = "seed",
    measure: str = "cka",
    value: str | None = None,
    drift: bool = False,
    level: float = 0.95,
) -> pd.DataFrame:
    """Summarize a measure over seeds, per group of comparisons.

    Parameters
    ----------
    results : DataFrame or path
        A result table (``reprstore cka --out``) or the DataFrame ``compare`` returns.
    by : str or list of str
        Group columns, e.g. ``"b_model,b_layer"``; ``layer`` resolves to ``a_layer`` or
        ``b_layer`` when that is unambiguous. None: one group.
    over : str or list of str
        What replicates are: ``seed`` (``a_seed``/``b_seed``; one replicate per distinct
        seed combination). Rows of one group and replicate are averaged first.
    measure : str
        The measure column (default ``cka``).
    value : str, optional
        ``"cka"`` or ``"1-cka"``; overrides ``measure``/``drift``.
    drift : bool
        Summarize ``1 - measure``.
    level : float
        Confidence level of the t-interval, in (0, 1).

    Returns
    -------
    DataFrame
        One row per group in natural order: the ``by`` columns, then
        :data:`SUMMARY_COLUMNS`. ``attrs["notes"]`` lists only what a user should act on
        (see :func:`pairing_notes`): design columns averaged inside replicates, a
        representation compared with itself pooled with real pairs, mirror pairs counted
        twice, groups with a single replicate. ``attrs["interval"]`` says how a bounded
        value's interval was made (on the logit or log scale of its range).
    """
    level = check_level(level)
    df = read_results(results)
    what = value_of(measure, value, drift)
    keys = resolve_keys(df, by, "--by")
    over_columns = replicate_columns(df, over)
    reps, notes = replicates(df, keys, over_columns, what)
    notes += pairing_notes(df, keys, over_columns)
    rows = [
        _summary_row(keys, group, part, what, level) for group, part in natural_groups(reps, keys)
    ]
    out = pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])
    single = int((out["n"] < 2).sum())
    if single:
        notes.append(f"{single} group(s) have a single replicate: no sd or interval")
    bounded = bounds_note(what)
    if bounded is not None and single < len(out):
        out.attrs["interval"] = bounded  # how, not a note: nothing to act on
    out.attrs["notes"] = notes
    return out


def pairing_notes(df: pd.DataFrame, by: list[str], over: list[str]) -> list[str]:
    """Notes on replicates that are not two runs compared once, each with its remedy.

    - Self-pairs (every key equal on both sides: a representation with itself, CKA 1 by
      definition) pooled in one group with real pairs pull the mean up.
    - Mirror replicates (``a_seed=1, b_seed=0`` beside ``a_seed=0, b_seed=1``) count one
      comparison twice and narrow the interval.

    A group of self-pairs only (a timeline's reference against itself) is no problem.
    """
    notes = []
    own = self_pairs(df)
    if own is not None and own.any():
        mixed = own.groupby([df[k].astype(str) for k in by], sort=False).agg(["any", "all"]) \
            if by else pd.DataFrame({"any": [own.any()], "all": [own.all()]})  # fmt: skip
        count = int((mixed["any"] & ~mixed["all"]).sum())
        if count:
            notes.append(
                f"{int(own.sum())} row(s) compare a representation with itself (the same key on "
                f"both sides) and are averaged with real pairs in {count} group(s): rerun the "
                f"comparison with --differ {_sides(over)[0] if _sides(over) else 'seed'} to "
                "leave them out"
            )
    mirrors = _mirror_replicates(df, by, over)
    if mirrors:
        notes.append(
            f"{mirrors} replicate(s) are the mirror of another (a and b swapped): one "
            "comparison counted twice narrows the interval; rerun the comparison with "
            "--unordered"
        )
    return notes


def _sides(over: list[str]) -> list[str]:
    """Replicate keys held on both sides (``seed`` for ``a_seed``, ``b_seed``)."""
    return [c[2:] for c in over if c.startswith("a_") and f"b_{c[2:]}" in over]


def _mirror_replicates(df: pd.DataFrame, by: list[str], over: list[str]) -> int:
    """Replicates (a, b) of a group whose swap (b, a) is another replicate of it
    (vectorised on integer codes: a million rows stay cheap)."""
    sides = _sides(over)
    if not sides:
        return 0
    a = df[[f"a_{k}" for k in sides]].astype(str)
    b = df[[f"b_{k}" for k in sides]].astype(str)
    b.columns = a.columns
    codes, _ = pd.MultiIndex.from_frame(pd.concat([a, b], ignore_index=True)).factorize()
    ca, cb = codes[: len(df)].astype(np.int64), codes[len(df) :].astype(np.int64)
    group = (pd.MultiIndex.from_frame(df[by].astype(str)).factorize()[0].astype(np.int64)
             if by else np.zeros(len(df), np.int64))  # fmt: skip
    kept = pd.MultiIndex.from_arrays([group, ca, cb]).unique()
    g, x, y = (kept.get_level_values(k).to_numpy() for k in range(3))
    swapped = pd.MultiIndex.from_arrays([g, y, x])
    return int((swapped.isin(kept) & (x != y)).sum())


def _summary_row(
    keys: list[str], group: tuple[str, ...], part: pd.DataFrame, what: Value, level: float
) -> list[object]:
    values = part["value"].to_numpy(dtype=np.float64)
    mean, sd, sem, lo, hi = t_interval(values, level, what.bounds)
    return [*group, what.label, values.size, int(part["rows"].sum()), mean, sd, sem, lo, hi, level]
