"""Orthogonal Procrustes distance (Ding, Denain & Steinhardt 2021).

With X̂ = X̄/‖X̄‖_F, Ŷ = Ȳ/‖Ȳ‖_F: d² = 2 − 2‖X̂ᵀŶ‖_* = 2 − 2‖Cxy‖_*/√(tr Cxx · tr Cyy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.metrics.base import Cross, Measure, Side, clip_unit, singular_values


def nuclear_ratio(a: Side, b: Side, cross: Cross) -> float:
    """‖Cxy‖_* / √(tr Cxx · tr Cyy), in [0, 1]."""
    cxy = cross.cxy(a, b)
    nuc = float(singular_values(cxy).sum())
    value = nuc / np.sqrt(np.trace(a.cov)) / np.sqrt(np.trace(b.cov))
    return clip_unit(value, "The Procrustes similarity", cross.names)


class Procrustes(Measure):
    name = "procrustes"
    summary = "squared orthogonal Procrustes distance 2 − 2‖X̂ᵀŶ‖_* (Ding 2021), in [0, 2]"
    scalars = ("procrustes",)
    titles = (("procrustes", "Procrustes distance"),)
    distances = ("procrustes",)
    ranges = (("procrustes", 0.0, 2.0),)
    workspace_terms = (2.0, 2.0, 3.0)  # the nuclear norm of Cxy: its SVD
    biased_plugin = scalars
    ci_max_ratio = 0.01

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"orthogonal", "scale", "translation"})

    def identity(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"procrustes": 0.0}

    def sample_form(self, opts: Mapping[str, Any]) -> str | None:
        return "factors"

    def partial(self, side: Side, opts: Mapping[str, Any]) -> Side:
        side.check()
        return side

    def finalize(
        self, a: Side, b: Side, cross: Cross | None, opts: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert cross is not None
        if a is b:  # Cxy = Cxx is positive semi-definite: ‖Cxx‖_* = tr Cxx, d² = 0
            return {"procrustes": 0.0}
        return {"procrustes": max(0.0, 2.0 - 2.0 * nuclear_ratio(a, b, cross))}
