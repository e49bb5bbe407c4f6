"""Measures of one representation (``reprstore describe``).

``pr`` (participation ratio (Σλ)²/Σλ² of Cxx), ``erank`` (exp of the entropy of λ/Σλ,
Roy & Vetterli 2007), ``variance`` (tr Cxx in the stored units), ``sparsity`` (fraction
of entries with |x| ≤ tol) and ``selectivity`` (per unit (μmax − μrest)/(μmax + μrest)
over the class means of a label column, Morcos et al. 2018; the mean over units and the
per-unit values). The last two need a pass of their own over the stored values
(:mod:`reprstore.stats.counts`); the others are functions of the streamed moments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError, InputError
from reprstore.metrics.base import Measure, Option, Side, participation_ratio

#: What ``selectivity:dead`` does with a unit whose class means are all zero (0/0).
DEAD_RULES = ("skip", "zero", "error")


class SingleMeasure(Measure):
    pairing = "single"
    workspace_terms = (0.0, 0.0, 0.0)
    kept_terms = (0.0, 0.0)  # the values only (partial)

    def cross_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def partial(self, side: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        """The measure's values, taken as soon as the pass has the side's moments: a
        describe run keeps a few numbers per representation, not its p × p moments
        (90 representations 3,072 wide held 6.8 GB of them until the end)."""
        return self.describe(side, opts)


class _Spectral(SingleMeasure):
    """A function of the covariance eigenvalues λ (descending): orthogonal, scale and
    translation invariant."""

    workspace_terms = (3.0, 0.0, 0.0)  # the covariance, its copy in eigvalsh, the workspace

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        a.check()
        return {self.name: self.of(a.eigenvalues)}

    def of(self, w: np.ndarray) -> float:
        raise NotImplementedError


class ParticipationRatio(_Spectral):
    name = "pr"
    summary = "participation ratio (Σλ)²/Σλ² of the covariance eigenvalues"
    scalars = ("pr",)
    titles = (("pr", "participation ratio"),)

    def of(self, w: np.ndarray) -> float:
        return participation_ratio(w)


class EffectiveRank(_Spectral):
    name = "erank"
    summary = "effective rank: exp of the entropy of λ/Σλ (Roy & Vetterli 2007)"
    scalars = ("erank",)
    titles = (("erank", "effective rank"),)

    def of(self, w: np.ndarray) -> float:
        p = w[w > 0] / w.sum()
        return float(np.exp(-(p * np.log(p)).sum()))


class Variance(SingleMeasure):
    name = "variance"
    summary = "total variance tr(Cxx) in the stored units"
    scalars = ("variance",)
    titles = (("variance", "total variance"),)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "translation"})

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        a.check(constant=False)
        return {"variance": float(a.spread / a.n) * a.scale**2}


def finite_counts(a: Side) -> Any:
    """The counts pass's result for ``a``; an error if it saw NaN or Inf values."""
    counts = a.extra["counts"]
    if counts.nonfinite:
        raise ComparisonError(
            f"Representation {a.name} has NaN or Inf values in {counts.nonfinite} rows."
        )
    return counts


class Sparsity(SingleMeasure):
    name = "sparsity"
    summary = "fraction of entries with |x| ≤ tol"
    options = (Option("tol", float, 0.0, "entries with |x| ≤ tol count as zero"),)
    scalars = ("sparsity",)
    titles = (("sparsity", "sparsity"),)
    ranges = (("sparsity", 0.0, 1.0),)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"scale"}) if opts["tol"] == 0 else frozenset()

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def special(self, opts: Mapping[str, Any]) -> str | None:
        return "counts"

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        counts = finite_counts(a)
        return {"sparsity": counts.small[opts["tol"]] / counts.entries}


class Selectivity(SingleMeasure):
    name = "selectivity"
    summary = "mean class selectivity (μmax − μrest)/(μmax + μrest) per unit (Morcos 2018)"
    options = (
        Option("label", str, None, "metadata column holding the class labels"),
        Option("dead", str, "skip", "units whose class means are all zero: skip, zero, error",
               choices=DEAD_RULES),
    )  # fmt: skip
    scalars = ("selectivity", "selectivity_dead")
    titles = (("selectivity", "class selectivity"),)
    arrays = ("selectivity_units",)

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"scale"})

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def special(self, opts: Mapping[str, Any]) -> str | None:
        if opts["label"] is None:
            raise InputError(
                "selectivity needs the metadata column of the classes: "
                "--measure selectivity:label=COLUMN."
            )
        return "counts"

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        means = class_means(a, opts["label"])  # (C, p)
        top = means.max(axis=0)
        rest = (means.sum(axis=0) - top) / (means.shape[0] - 1)
        dead = (means == 0).all(axis=0)
        _check_units(a.name, top + rest, dead, opts["dead"])
        units = np.full(means.shape[1], np.nan)
        live = ~dead
        units[live] = (top[live] - rest[live]) / (top[live] + rest[live])
        if opts["dead"] == "zero":
            units[dead] = 0.0  # no class preferred
        value = float(np.nanmean(units)) if opts["dead"] == "skip" else float(units.mean())
        per_unit = [None if np.isnan(u) else float(u) for u in units]  # dead: null
        return {"selectivity": value, "selectivity_dead": int(dead.sum()),
                "selectivity_units": per_unit}  # fmt: skip


def class_means(a: Side, label: str) -> np.ndarray:
    """The (C, p) class means of ``a``'s units over the classes present (at least 2)."""
    counts = finite_counts(a)
    present = counts.class_counts > 0
    if present.sum() < 2:
        raise ComparisonError(
            f"Selectivity needs at least 2 classes in column {label!r}; "
            f"the rows compared hold {int(present.sum())}."
        )
    return np.asarray(counts.class_sums[present] / counts.class_counts[present, None])


def _check_units(name: str, denom: np.ndarray, dead: np.ndarray, rule: str) -> None:
    """Refuse what selectivity cannot define: dead units under ``dead=error``, and units
    whose class means sum to ≤ 0 without all being zero (negative activations)."""
    if rule == "error" and dead.any():
        raise ComparisonError(
            f"Selectivity of {name} is undefined for {int(dead.sum())} dead unit(s) (every "
            "class mean is zero, 0/0): selectivity:dead=skip leaves them out of the mean, "
            "dead=zero counts them as 0."
        )
    if dead.all():
        raise ComparisonError(
            f"Selectivity of {name} is undefined: every unit is dead (every class mean is zero)."
        )
    negative = ~(denom > 0) & ~dead
    if negative.any():
        raise ComparisonError(
            f"Selectivity of {name} is undefined for {int(negative.sum())} unit(s) whose "
            "class means are negative and sum to zero or less: it is defined for "
            "non-negative activations (e.g. after a ReLU)."
        )
