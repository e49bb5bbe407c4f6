"""What each measure declares in the registry (titles, distances, ranges) is true of it,
and the figure and uncertainty code read the declarations, not lists of their own."""

from __future__ import annotations

import numpy as np
import pytest

from reprstore.engine.arrays import measure_arrays
from reprstore.metrics.registry import REGISTRY, column_title, get, is_distance
from reprstore.report.style import measure_title

PAIRED = [n for n in REGISTRY if get(n).pairing == "rows"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_declared_columns_are_the_measures_scalars(name: str) -> None:
    m = get(name)
    scalars = set(m.scalars)
    assert {c for c, _ in m.titles} <= scalars
    assert set(m.distances) <= scalars
    assert {c for c, _, _ in m.ranges} <= scalars


@pytest.mark.parametrize("name", PAIRED)
def test_a_representation_against_itself_is_at_the_declared_end(name: str) -> None:
    """Identical inputs are as alike as can be: a distance is 0, a bounded similarity its
    upper bound (closed forms: CKA, CCA, R², RSA and cosine of X with X are 1)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 2.0
    row = measure_arrays([x, x.copy()], [(0, 1)], name).pairs[(0, 1)]
    m = get(name)
    bounds = {c: (lo, hi) for c, lo, hi in m.ranges}
    for column in m.scalars:
        if column in m.distances:
            assert row[column] == pytest.approx(0.0, abs=1e-6), column
        elif column in bounds:
            assert row[column] == pytest.approx(bounds[column][1], abs=1e-6), column


def test_distances_are_declared_by_their_measures() -> None:
    assert is_distance("procrustes") and is_distance("shape")
    assert is_distance("procrustes[kind=x]")
    assert not any(is_distance(c) for c in ("cka", "cca", "rsa", "linreg", "cosine"))


def test_figure_titles_come_from_the_registry() -> None:
    assert column_title("procrustes") == "Procrustes distance"
    assert measure_title("cka[kernel=rbf]") == "CKA [kernel=rbf]"
    assert measure_title("not_a_measure") == "not_a_measure"
