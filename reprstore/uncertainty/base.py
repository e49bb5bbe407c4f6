"""What a caller asks of the uncertainty machinery and what it gets back: the options
(validated once, when made), the result type with its interval and test fields, and the
result-file columns they add. Shared by every module of :mod:`reprstore.uncertainty`,
which the engine reaches only through
:meth:`reprstore.uncertainty.UncertaintyOptions.measure`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.errors import InputError
from reprstore.metrics.cka import CKAResult

if TYPE_CHECKING:
    from reprstore.metrics.base import Spec

DEFAULT_REPLICATES = 200
#: Exact permutations are used while R·n·p·q stays below this (multiply-adds).
EXACT_PERMUTATION_MACS = 2e11


@dataclass(frozen=True)
class UncertaintySettings:
    """What to add to each CKA value, validated once.

    Attributes
    ----------
    ci : float or None
        Confidence level in (0, 1), e.g. 0.95; ``None``: no interval.
    bootstrap : int
        Replicates: the number of row groups of the exact estimators' jackknife (fewer
        when they do not fit ``--memory``), the bootstrap resamples of minibatch.
    permutations : int or None
        Permutations R of the test of "A and B are unrelated" (p has resolution 1/(R+1)).
    seed : int
        Seed of the groups, the bootstrap weights and the permutations.
    permute : {"auto", "rows", "batches"}
        Which statistic the test permutes (see module docstring); ``auto`` picks rows
        for the exact estimators while it is cheap.
    report : callable(str), optional
        Receives the plan (passes, memory) before any work.
    """

    ci: float | None = None
    bootstrap: int = DEFAULT_REPLICATES
    permutations: int | None = None
    seed: int = 0
    permute: str = "auto"
    report: Callable[[str], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.ci is not None and not (0.0 < float(self.ci) < 1.0):
            raise InputError(
                f"--ci must be a confidence level between 0 and 1 (e.g. 0.95). Got {self.ci}."
            )
        if int(self.bootstrap) < 2:
            raise InputError(
                f"--bootstrap must be at least 2 replicates (e.g. 200). Got {self.bootstrap}."
            )
        if self.permutations is not None and int(self.permutations) < 1:
            raise InputError(
                f"--permutations must be at least 1 (e.g. 999). Got {self.permutations}."
            )
        if int(self.seed) < 0:
            raise InputError(f"--seed must be a non-negative integer. Got {self.seed}.")
        if self.permute not in ("auto", "rows", "batches"):
            raise InputError(
                f"Unknown permutation scheme {self.permute!r}. Expected auto, rows or batches."
            )

    @property
    def active(self) -> bool:
        return self.ci is not None or self.permutations is not None


@dataclass(frozen=True)
class UncertainResult(CKAResult):
    """A :class:`CKAResult` with its interval and permutation test.

    Attributes
    ----------
    cka_lo, cka_hi, cka_se : float or None
        The interval at ``ci_level`` and the standard error.
    ci_method : str or None
        How they were obtained (e.g. ``jackknife-t, 200 groups``).
    ci_replicates : int or None
        Groups (jackknife) or resamples (bootstrap) used.
    cka_p : float or None
        p = (1 + #{T_π ≥ T}) / (R + 1).
    cka_p_resolution : float or None
        1 / (R + 1), the smallest attainable p.
    cka_p_statistic : float or None
        The observed value T of the permuted statistic.
    permutation_method : str or None
        Which statistic was permuted, and how.
    resample_seed : int or None
    """

    cka_lo: float | None = None
    cka_hi: float | None = None
    cka_se: float | None = None
    ci_level: float | None = None
    ci_method: str | None = None
    ci_replicates: int | None = None
    cka_p: float | None = None
    cka_p_resolution: float | None = None
    cka_p_statistic: float | None = None
    permutations: int | None = None
    permutation_method: str | None = None
    resample_seed: int | None = None


CI_COLUMNS = ["cka_lo", "cka_hi", "cka_se", "ci_level", "ci_method", "ci_replicates"]
P_COLUMNS = [
    "cka_p",
    "cka_p_resolution",
    "cka_p_statistic",
    "permutations",
    "permutation_method",
]
#: The fields of :class:`UncertainResult` named after the cka column (renamed with a suffix).
_CKA_FIELDS = ("cka_lo", "cka_hi", "cka_se", "cka_p", "cka_p_resolution", "cka_p_statistic")


def say(opts: UncertaintySettings, line: str) -> None:
    """Hand one plan line to ``opts.report`` (if any)."""
    if opts.report is not None:
        opts.report(line)


def result_columns(
    opts: UncertaintySettings | None, specs: Sequence[Spec] | None = None
) -> list[str]:
    """The result-file columns ``opts`` adds (after the plain ones) for the measures ``specs``
    (default: one ``cka``): ``<col>_lo``, ``<col>_hi``, ``<col>_se`` of every scalar column,
    ``<col>_p`` of every row-paired one, and the shared columns."""
    if opts is None:
        return []
    if specs is None:
        cols = CI_COLUMNS if opts.ci is not None else []
        cols = cols + (P_COLUMNS if opts.permutations is not None else [])
        return [*cols, "resample_seed"]
    out: list[str] = []
    scalars = [(s, s.column(c)) for s in specs for c in s.measure.columns(s.opts)[0]]
    if opts.ci is not None:
        out += [f"{c}_{k}" for _, c in scalars for k in ("lo", "hi", "se")]
        out += ["ci_level", "ci_method", "ci_replicates"]
    if opts.permutations is not None:
        for s, c in scalars:
            if s.measure.pairing == "rows":
                out.append(f"{c}_p")
                out += [f"{c}_p_resolution", f"{c}_p_statistic"] if s.name == "cka" else []
        out += ["p_resolution"] if any(s.name != "cka" for s in specs) else []
        out += ["permutations", "permutation_method"]
    return [*out, "resample_seed"]


def columns_of(r: CKAResult, column: str = "cka") -> dict[str, Any]:
    """The uncertainty fields of a result as a row's extra columns (empty for a plain one);
    ``column`` is the cka column's name (``cka`` or a suffixed one)."""
    if not isinstance(r, UncertainResult):
        return {}
    fields = (*CI_COLUMNS, *P_COLUMNS, "resample_seed")
    return {(column + c[3:] if c in _CKA_FIELDS else c): getattr(r, c) for c in fields}


def with_uncertainty(r: CKAResult, **fields: Any) -> UncertainResult:
    """``r`` as an :class:`UncertainResult` with ``fields`` set (or updated)."""
    base = {f: getattr(r, f) for f in CKAResult.__dataclass_fields__}
    if isinstance(r, UncertainResult):
        return replace(r, **fields)
    return UncertainResult(**base, **fields)


def clip_interval(lo: float, hi: float) -> tuple[float, float]:
    """An interval for CKA, clipped to [−1, 1] (where CKA lives)."""
    return float(np.clip(lo, -1.0, 1.0)), float(np.clip(hi, -1.0, 1.0))
